"""The `local` backend: workspaces in a SQLite store, runtimes as supervised local processes."""

from kaito_jupyter.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
