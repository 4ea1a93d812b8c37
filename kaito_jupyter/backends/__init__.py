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

    `options` are the backend's own (local: idle_exit, lease_seconds, stop; kubernetes:
    namespace, stop). Returns the process's exit status.
    """
    if backend == "local":
        from kaito_jupyter.backends.local.controller import run

        return run(settings, **options)
    if backend == "kubernetes":
        from kaito_jupyter.backends.kubernetes import KubernetesBackend

        # namespace None: every namespace; unset: the workspaces of the configured one.
        options.setdefault("namespace", settings.namespace)
        said = KubernetesBackend(settings).run_controller(**options)
        if said:  # it did not start one (Kaito's own operator reconciles, say)
            print(said)
        return 0
    from kaito_jupyter.errors import KaitoError

    raise KaitoError(
        f"no controller for backend {backend!r}", hint="use --backend local or kubernetes"
    )
