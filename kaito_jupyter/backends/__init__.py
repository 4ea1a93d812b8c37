"""Backends: where workspaces live and run. `open_backend()` gives the configured one.

Each backend module is imported only when chosen, so the kubernetes client is never loaded for
the local backend and `import kaito_jupyter` stays light.
"""

from __future__ import annotations

from kaito_jupyter import config
from kaito_jupyter.backends.base import (
    Applied,
    Backend,
    Endpoint,
    Event,
    Node,
    NotFound,
    WatchEvent,
)

__all__ = [
    "Applied",
    "Backend",
    "Endpoint",
    "Event",
    "Node",
    "NotFound",
    "WatchEvent",
    "open_backend",
    "run_controller",
]


def open_backend(settings: config.Settings | None = None) -> Backend:
    """The backend the shared configuration names (kaito.yaml, then KAITO_BACKEND)."""
    settings = settings or config.load()
    if settings.backend == "kubernetes":
        from kaito_jupyter.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings)
    from kaito_jupyter.backends.local import LocalBackend

    return LocalBackend(settings)


def run_controller(settings: config.Settings, backend: str, **options) -> int:
    """`kaito controller --backend NAME`: reconcile that backend's workspaces until stopped.

    Each backend adds its branch here; `options` are its own (local: idle_exit, lease_seconds).
    Returns the process's exit status.
    """
    if backend == "local":
        from kaito_jupyter.backends.local.controller import run

        return run(settings, **options)
    from kaito_jupyter.errors import KaitoError

    raise KaitoError(
        f"no controller for backend {backend!r} in this version", hint="use --backend local"
    )
