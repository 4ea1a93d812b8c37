"""An in-memory `Backend` for the unit tier: the protocol's behaviour (create/configure,
watch that replays then follows, logs that follow, deletion in two steps) with no store or
processes, so the magics and widgets can be driven event by event. The real backends are
tested in their own tiers; the magics are tested against LocalBackend in test_magics_local.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator

from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.base import Applied, Endpoint, Event, Node, NotFound, WatchEvent
from kaito_jupyter.controller import status as st
from kaito_jupyter.errors import BackendError

CREATED = "2026-12-03T14:00:00Z"


class MemoryBackend:
    name = "kubernetes"  # cluster admission rules: the README workspaces as written

    def __init__(self):
        self.items: dict[str, StoredWorkspace] = {}
        self.history: list[WatchEvent] = []
        self.log_lines: dict[str, list[str]] = {}
        self.event_list: dict[str, list[Event]] = {}
        self.node_list: list[Node] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.closed_logs: set[str] = set()  # follow ends once the workload is done
        self.cond = threading.Condition()
        self.version = 0
        self.controller_ensured = 0
        self.watchers = 0  # watches running now: a test driver waits for the cell's to start

    # ---------------------------------------------------------------- what tests drive

    def _emit(self, type_: str, stored: StoredWorkspace) -> None:
        with self.cond:
            self.history.append(WatchEvent(type_, StoredWorkspace(copy.deepcopy(stored.data))))
            self.cond.notify_all()

    def _bump(self, stored: StoredWorkspace) -> None:
        self.version += 1
        stored.metadata["resourceVersion"] = str(self.version)

    def set_status(self, name: str, derived: st.Derived, at: str) -> StoredWorkspace:
        stored = self.items[name]
        status, _ = st.write(
            stored.data.get("status"), derived, generation=stored.generation, at=at
        )
        stored.data["status"] = status
        self._bump(stored)
        self._emit("MODIFIED", stored)
        return stored

    def add_log(self, name: str, *lines: str, done: bool = False) -> None:
        with self.cond:
            self.log_lines.setdefault(name, []).extend(lines)
            if done:
                self.closed_logs.add(name)
            self.cond.notify_all()

    def finish_delete(self, name: str) -> None:
        stored = self.items.pop(name)
        self._emit("DELETED", stored)

    # ------------------------------------------------------------------------ protocol

    def target(self) -> str:
        return "memory (unit tests)"

    def admission_issues(self, data: dict) -> list:
        return []

    def apply(self, documents: list[dict], *, dry_run: bool = False) -> list[Applied]:
        out = []
        for doc in documents:
            doc = copy.deepcopy(doc)
            name = doc["metadata"]["name"]
            old = self.items.get(name)
            if old is not None and old.spec() == StoredWorkspace(doc).spec():
                out.append(Applied(old, "unchanged"))
                continue
            meta = doc["metadata"]
            meta.setdefault("namespace", "default")
            meta["creationTimestamp"] = old.metadata["creationTimestamp"] if old else CREATED
            meta["generation"] = (old.generation + 1) if old else 1
            if old is not None and "status" in old.data:
                doc["status"] = old.data["status"]
            stored = StoredWorkspace(doc)
            if dry_run:
                out.append(Applied(stored, "configured" if old else "created"))
                continue
            self._bump(stored)
            self.items[name] = stored
            self._emit("MODIFIED" if old else "ADDED", stored)
            out.append(Applied(stored, "configured" if old else "created"))
        return out

    def get(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        if name not in self.items:
            raise NotFound(name, namespace)
        return StoredWorkspace(copy.deepcopy(self.items[name].data))

    def list(self, namespace: str | None = None) -> list[StoredWorkspace]:
        return [self.get(n) for n in sorted(self.items)]

    def delete(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        stored = self.items.get(name)
        if stored is None:
            raise NotFound(name, namespace)
        stored.metadata["deletionTimestamp"] = "2026-12-03T15:00:00Z"
        self._bump(stored)
        self._emit("MODIFIED", stored)
        return self.get(name)

    def watch(
        self, namespace: str | None = None, *, stop: threading.Event | None = None
    ) -> Iterator[WatchEvent]:
        with self.cond:
            snapshot = [WatchEvent("ADDED", self.get(n)) for n in sorted(self.items)]
            position = len(self.history)
            self.watchers += 1
            self.cond.notify_all()
        try:
            yield from snapshot
            while not (stop and stop.is_set()):
                with self.cond:
                    if position >= len(self.history):
                        self.cond.wait(0.02)
                    pending = self.history[position:]
                    position = len(self.history)
                yield from pending
        finally:
            with self.cond:
                self.watchers -= 1

    def wait_for_watchers(self, count: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.watchers >= count, timeout=60)

    def events(self, name: str, namespace: str | None = None) -> list[Event]:
        return list(self.event_list.get(name, []))

    def logs(
        self,
        name: str,
        namespace: str | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        if name not in self.items:
            raise NotFound(name, namespace)
        with self.cond:
            lines = list(self.log_lines.get(name, []))
        start = max(len(lines) - tail, 0) if tail else 0
        yield from lines[start:]
        position = len(lines)
        while follow and not (stop and stop.is_set()):
            with self.cond:
                if position >= len(self.log_lines.get(name, [])):
                    if name in self.closed_logs:
                        return
                    self.cond.wait(0.02)
                fresh = self.log_lines.get(name, [])[position:]
                position += len(fresh)
            yield from fresh

    def nodes(self) -> list[Node]:
        return list(self.node_list)

    def endpoint(self, name: str, namespace: str | None = None) -> Endpoint:
        if name not in self.endpoints:
            raise BackendError(f"workspace {name} has no endpoint yet")
        return self.endpoints[name]

    def ensure_controller(self) -> str | None:
        self.controller_ensured += 1
        return None


def ready(nodes: tuple[str, ...] = ("node-0",)) -> st.Derived:
    return st.derive_inference(
        st.NodeReport(required=len(nodes), ready=nodes),
        st.WorkloadReport(exists=True, desired=1, ready=1),
    )


def provisioning(required: int = 1, ready_nodes: tuple[str, ...] = ()) -> st.Derived:
    return st.derive_inference(
        st.NodeReport(
            required=required,
            ready=ready_nodes,
            reason="Provisioning",
            message=f"{len(ready_nodes)} of {required} node(s) ready",
        ),
        st.WorkloadReport(),
    )


def crashing() -> st.Derived:
    return st.derive_inference(
        st.NodeReport(required=1, ready=("node-0",)),
        st.WorkloadReport(
            exists=True,
            desired=1,
            problems=(st.Problem(st.CRASH_LOOP, "the inference server exited with code 1"),),
        ),
    )
