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


def run_controller(settings: config.Settings, backend: Backend, **options) -> str | None:
    """Run the backend's reconciler in this process until interrupted (`kaito controller`).
    Returns a sentence when it did not start one (Kaito's own operator runs, say)."""
    if backend.name == "kubernetes":
        # namespace None: every namespace; unset: the workspaces of the configured one.
        options.setdefault("namespace", settings.namespace)
        return backend.run_controller(**options)  # type: ignore[attr-defined]
    raise NotImplementedError(f"`kaito controller` for the {backend.name} backend")
