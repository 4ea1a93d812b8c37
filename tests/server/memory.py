"""A Backend that keeps workspaces in memory, for the REST tests: the store of the protocol
with a watch, and nothing else. The test plays the controller (`set_ready`, `set_failed`), so
each state the sidebar shows is reached on purpose; chat goes to a real inference server.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator

from kaito_jupyter.api import conditions as c
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.base import Applied, Endpoint, Event, Node, NotFound, WatchEvent
from kaito_jupyter.errors import BackendError


class MemoryBackend:
    name = "local"
    endpoint_url: str | None = None  # the inference server chat goes to, set by the test

    def __init__(self, settings=None):
        self.items: dict[tuple[str, str], dict] = {}
        self.version = 0
        self.changed = threading.Condition()
        self.history: list[WatchEvent] = []
        self.controller_calls = 0
        self.log_lines: list[str] = []
        self.log_stops: list[threading.Event] = []  # one per followed log stream

    def target(self) -> str:
        return "local (memory)"

    def admission_issues(self, data):
        return []

    def _bump(self, kind: str, data: dict) -> None:
        with self.changed:
            self.version += 1
            data.setdefault("metadata", {})["resourceVersion"] = str(self.version)
            self.history.append(WatchEvent(kind, StoredWorkspace(copy.deepcopy(data))))
            self.changed.notify_all()

    def apply(self, documents, *, dry_run=False):
        out = []
        for doc in documents:
            doc = copy.deepcopy(doc)
            meta = doc.setdefault("metadata", {})
            key = (meta.get("namespace") or "default", meta["name"])
            old = self.items.get(key)
            action = "created" if old is None else "configured"
            if not dry_run:
                meta.setdefault("creationTimestamp", c.now())
                if old is not None:
                    doc["status"] = old.get("status")
                self.items[key] = doc
                self._bump("ADDED" if old is None else "MODIFIED", doc)
            out.append(Applied(StoredWorkspace(copy.deepcopy(doc)), action))
        return out

    def _find(self, name, namespace=None) -> dict:
        try:
            return self.items[(namespace or "default", name)]
        except KeyError:
            raise NotFound(name, namespace) from None

    def get(self, name, namespace=None):
        return StoredWorkspace(copy.deepcopy(self._find(name, namespace)))

    def list(self, namespace=None):
        return [
            StoredWorkspace(copy.deepcopy(d))
            for (ns, _), d in sorted(self.items.items())
            if namespace is None or ns == namespace
        ]

    def delete(self, name, namespace=None):
        data = self.items.pop((namespace or "default", name), None)
        if data is None:
            raise NotFound(name, namespace)
        self._bump("DELETED", data)
        return StoredWorkspace(data)

    def watch(self, namespace=None, *, stop=None) -> Iterator[WatchEvent]:
        stop = stop or threading.Event()
        with self.changed:
            seen = len(self.history)
            snapshot = self.list(namespace)
        for stored in snapshot:
            yield WatchEvent("ADDED", stored)
        while not stop.is_set():
            with self.changed:
                start = seen
                self.changed.wait_for(lambda s=start: len(self.history) > s or stop.is_set(), 0.2)
                fresh = self.history[seen:]
                seen = len(self.history)
            yield from fresh

    def events(self, name, namespace=None):
        self._find(name, namespace)
        return [
            Event(
                time=c.now(),
                type="Normal",
                reason="Applied",
                message="stored",
                object=f"Workspace/{name}",
            )
        ]

    def logs(self, name, namespace=None, *, follow=False, tail=None, stop=None):
        self._find(name, namespace)
        lines = list(self.log_lines)
        if tail:
            lines = lines[-tail:]
        yield from lines
        if follow:
            stop = stop or threading.Event()
            self.log_stops.append(stop)
            stop.wait()

    def nodes(self):
        used = tuple(f"{ns}/{n}" for (ns, n) in self.items)
        return [
            Node(
                name="gpu-node-1",
                instance_type="Standard_NC24ads_A100_v4",
                gpu_model="A100",
                gpus=1,
                gpus_used=len(used),
                gpu_memory_gib=80,
                workspaces=used,
                price_per_hour=3.67,
            )
        ]

    def endpoint(self, name, namespace=None):
        self._find(name, namespace)
        if not self.endpoint_url:
            raise BackendError(f"workspace {name} has no endpoint yet")
        return Endpoint(url=self.endpoint_url, model="smollm2-135m-instruct")

    def ensure_controller(self):
        self.controller_calls += 1
        return None

    # ------------------------------------------------------------------ the test's controller

    def set_status(self, name: str, conditions: list[dict], *, nodes=("gpu-node-1",)) -> None:
        data = self._find(name)
        status = {"conditions": conditions, "workerNodes": list(nodes)}
        data["status"] = status
        self._bump("MODIFIED", data)

    def set_ready(self, name: str) -> None:
        now = c.now()
        self.set_status(
            name,
            [
                {
                    "type": t,
                    "status": "True",
                    "reason": "Ready",
                    "message": "",
                    "lastTransitionTime": now,
                }
                for t in (c.RESOURCE_READY, c.INFERENCE_READY, c.WORKSPACE_SUCCEEDED)
            ],
        )


def factory(settings):
    if settings.backend == "kubernetes":  # as with no cluster to reach
        raise BackendError("no kubeconfig: cannot reach a cluster", hint="set KUBECONFIG")
    return MemoryBackend(settings)
