"""The kubernetes backend: Workspace custom resources, reconciled into GPU workloads.

`KubernetesBackend` (backend.py) is what `open_backend()` returns; the controller lives in
controller.py + reconciler.py, the pure rendering in render.py.
"""

from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesBackend"]
