"""Where the reconciler reads a workspace's own objects: the controller's informer caches when
it has them, the API server otherwise (a bare `Reconciler`, as tests and tools make one).

Why: a reconcile that GETs its Deployment, Service, pods and leftovers waits on several round
trips that the controller's watches already answered. A cache can lag a moment behind the API
server; that is safe here because every change to these objects queues the workspace again
(after the cache holds it), so a reconcile that read a stale copy is followed by one that
reads the fresh one. Where a stale miss could do harm (an object we are about to apply may
exist and belong to someone else), `find(..., confirm_missing=True)` asks the API server.
"""

from __future__ import annotations

from typing import Any

from kaito_jupyter.backends.kubernetes.kube import POD, Kind, Kube
from kaito_jupyter.controller.plan import WORKSPACE_LABEL


class Reads:
    def __init__(self, kube: Kube, caches: dict[str, Any] | None = None):
        self.kube = kube
        # kind name -> an Informer of that kind holding every object labelled with the
        # workspace label in the namespaces reconciled.
        self.caches = caches or {}

    def _cache(self, kind: Kind):
        informer = self.caches.get(kind.kind)
        return informer if informer is not None and informer.synced.is_set() else None

    def find(
        self, kind: Kind, name: str, namespace: str, *, confirm_missing: bool = False
    ) -> dict[str, Any] | None:
        cache = self._cache(kind)
        if cache is None:
            return self.kube.find(kind, name, namespace)
        found = cache.get(namespace, name)
        if found is None and confirm_missing:
            # Not labelled as ours (someone else's object), or just made: the server knows.
            return self.kube.find(kind, name, namespace)
        return found

    def pods(self, namespace: str, workspace: str) -> list[dict[str, Any]]:
        cache = self._cache(POD)
        if cache is None:
            listed = self.kube.list(POD, namespace, label_selector=f"{WORKSPACE_LABEL}={workspace}")
            return listed.get("items") or []
        return [
            p
            for p in cache.items()
            if (p.get("metadata") or {}).get("namespace") == namespace
            and ((p.get("metadata") or {}).get("labels") or {}).get(WORKSPACE_LABEL) == workspace
        ]
