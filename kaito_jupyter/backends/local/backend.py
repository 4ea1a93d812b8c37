"""`LocalBackend`: workspaces in the local SQLite store, run as processes on this machine.

Any process may read and write the store (a kernel, the Jupyter server, the CLI); one of them,
the lease holder, reconciles (reconciler.py): it starts and supervises the runtimes and writes
status. `ensure_controller` starts a detached `kaito controller --backend local` when no live
leader holds the lease, so a served model outlives the kernel that applied it.
"""

from __future__ import annotations

import copy
import fcntl
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kaito_jupyter import catalog, config
from kaito_jupyter.api import conditions as c
from kaito_jupyter.api.wire import StoredWorkspace, read_workspace
from kaito_jupyter.backends.base import Applied, Endpoint, Event, Node, NotFound, WatchEvent
from kaito_jupyter.controller.plan import FINALIZER
from kaito_jupyter.errors import BackendError, Issue

from . import paths
from .lease import holder_alive
from .store import Store

NAMESPACE = "default"
WATCH_INTERVAL_S = 0.1  # how often a watch asks SQLite whether another connection committed
SERVER_FIELDS = ("uid", "creationTimestamp", "generation", "resourceVersion", "finalizers",
                 "deletionTimestamp")  # fmt: skip


class LocalBackend:
    name = "local"

    def __init__(self, settings: config.Settings | None = None, *, root: str | Path | None = None):
        self.settings = settings or config.load()
        self.root = Path(root) if root else paths.state_dir(self.settings)
        self.store = Store(self.root / paths.DB_NAME)

    def target(self) -> str:
        home = str(Path.home())
        shown = str(self.root)
        if shown.startswith(home + os.sep):
            shown = "~" + shown[len(home) :]
        return f"local ({shown})"

    # ------------------------------------------------------------------ admission

    def admission_issues(self, data: dict) -> list[Issue]:
        """What this machine cannot run: GPU memory it lacks, containers, non-hostPath volumes."""
        from kaito_jupyter.provisioners.local import machine

        ws = read_workspace(data)
        issues: list[Issue] = []
        spec = ws.tuning if ws.tuning is not None else ws.inference
        kind = "tuning" if ws.tuning is not None else "inference"
        if ws.inference is not None and ws.inference.template is not None:
            issues.append(
                Issue(
                    "inference.template",
                    "custom containers do not run on the local backend; use a preset, or "
                    "`kaito use kubernetes` to run this workspace on a cluster",
                )
            )
        preset = catalog.find_preset(spec.preset.name) if spec and spec.preset else None
        if preset is not None and not preset.cpu:
            mode = (ws.tuning.method or "qlora").lower() if ws.tuning is not None else "inference"
            need = preset.memory_for(mode if mode in ("lora", "qlora") else "inference")
            here = machine()
            have = here.gpu_memory_gib
            if have < need:
                gpus = f"{len(here.gpus)} x {here.gpus[0].model}" if here.gpus else "no GPU"
                issues.append(
                    Issue(
                        f"{kind}.preset.name",
                        f"Insufficient total GPU memory: this machine ({here.name}) has a total "
                        f"of {have:g}Gi ({gpus}), but preset {preset.name} requires at least "
                        f"{need:g}Gi for {mode}; deploy a CPU-capable preset here (e.g. "
                        f"smollm2-135m-instruct), or `kaito use kubernetes` for a GPU cluster",
                    )
                )
        issues += _volume_issues(ws)
        return issues

    # ------------------------------------------------------------------ writes

    def apply(self, documents: list[dict], *, dry_run: bool = False) -> list[Applied]:
        results: list[Applied] = []
        with self.store.transaction() as db:
            for doc in documents:
                doc = copy.deepcopy(doc)
                meta = doc.setdefault("metadata", {})
                ns = meta.get("namespace") or NAMESPACE
                meta["namespace"] = ns
                name = meta["name"]
                old = self.store.read(db, ns, name)
                new, action = _merge(old, doc)
                if old is not None and old["metadata"].get("deletionTimestamp"):
                    raise BackendError(
                        f"workspace {name} is being deleted; it cannot be changed now",
                        hint=f"wait for `kaito delete {name} --wait`, then apply again",
                    )
                if action != "unchanged" and not dry_run:
                    self.store.write(db, new, "ADDED" if old is None else "MODIFIED")
                results.append(Applied(StoredWorkspace(new), action))
        return results

    def delete(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        ns = self._namespace_of(name, namespace)
        with self.store.transaction() as db:
            data = self.store.read(db, ns, name)
            if data is None:
                raise NotFound(name, where=self.target())
            meta = data["metadata"]
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = c.now()
                if meta.get("finalizers"):
                    self.store.write(db, data, "MODIFIED")
                else:
                    self.store.write(db, data, "DELETED")
        return StoredWorkspace(data)

    def write_status(
        self, namespace: str, name: str, status: dict[str, Any], *, expected_rv: str | None = None
    ) -> StoredWorkspace | None:
        """The reconciler's status write; None if the workspace is gone (or changed under it,
        when `expected_rv` is given: the next reconcile sees the new version)."""
        with self.store.transaction() as db:
            data = self.store.read(db, namespace, name)
            if data is None:
                return None
            if expected_rv is not None and data["metadata"].get("resourceVersion") != expected_rv:
                return None
            data["status"] = status
            return StoredWorkspace(self.store.write(db, data, "MODIFIED"))

    def finalize(self, namespace: str, name: str) -> None:
        """Remove a deleted workspace once what it ran is gone (its finalizer released)."""
        with self.store.transaction() as db:
            data = self.store.read(db, namespace, name)
            if data is not None and data["metadata"].get("deletionTimestamp"):
                data["metadata"]["finalizers"] = [
                    f for f in data["metadata"].get("finalizers") or [] if f != FINALIZER
                ]
                self.store.write(db, data, "DELETED")

    def record_event(
        self, namespace: str, name: str, type_: str, reason: str, message: str, obj: str = ""
    ) -> None:
        self.store.record_event(
            namespace, name, type_, reason, message, obj or f"Workspace/{name}", c.now()
        )

    # ------------------------------------------------------------------ reads

    def get(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        data = self.store.read(self.store.connection(), self._namespace_of(name, namespace), name)
        if data is None:
            raise NotFound(name, where=self.target())
        return StoredWorkspace(data)

    def _namespace_of(self, name: str, namespace: str | None) -> str:
        """The namespace to look in: the one given; else "default", or the only namespace
        holding `name` (this machine has no current namespace; names are what people type)."""
        if namespace:
            return namespace
        rows = (
            self.store.connection()
            .execute("SELECT namespace FROM workspaces WHERE name = ? ORDER BY namespace", (name,))
            .fetchall()
        )
        found = [r[0] for r in rows]
        if NAMESPACE in found or len(found) != 1:
            return NAMESPACE
        return found[0]

    def list(self, namespace: str | None = None) -> list[StoredWorkspace]:
        return [StoredWorkspace(d) for d in self.store.read_all(self.store.connection(), namespace)]

    def watch(
        self, namespace: str | None = None, *, stop: threading.Event | None = None
    ) -> Iterator[WatchEvent]:
        """Every workspace as ADDED, then each change within ~0.1 s of its commit, until `stop`.

        A watch has its own connection and asks `PRAGMA data_version` (which moves when another
        connection commits) every 0.1 s; only then does it read the change log.
        """
        stop = stop or threading.Event()
        db = self.store.connect()
        try:
            db.execute("BEGIN")
            rv = self.store.current_rv(db)
            items = self.store.read_all(db, namespace)
            version = self.store.data_version(db)
            db.execute("COMMIT")
            known = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in items}
            for d in items:
                yield WatchEvent("ADDED", StoredWorkspace(d))
            while not stop.is_set():
                stop.wait(WATCH_INTERVAL_S)
                if stop.is_set():
                    return
                now = self.store.data_version(db)
                if now == version:
                    continue
                version = now
                db.execute("BEGIN")
                try:
                    changes, complete = self.store.changes_since(db, rv)
                    current = self.store.read_all(db, namespace) if not complete else None
                    head = self.store.current_rv(db)
                finally:
                    db.execute("COMMIT")
                if current is not None:  # the log was pruned past us: re-list and diff
                    seen = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in current}
                    for key in known - seen:
                        gone = {"metadata": {"namespace": key[0], "name": key[1]}}
                        yield WatchEvent("DELETED", StoredWorkspace(gone))
                    for d in current:
                        key = (d["metadata"]["namespace"], d["metadata"]["name"])
                        yield WatchEvent(
                            "MODIFIED" if key in known else "ADDED", StoredWorkspace(d)
                        )
                    known, rv = seen, head
                    continue
                for change in changes:
                    rv = change.rv
                    if namespace is not None and change.namespace != namespace:
                        continue
                    key = (change.namespace, change.name)
                    kind = change.type
                    if kind == "DELETED":
                        known.discard(key)
                    else:
                        kind = "MODIFIED" if key in known else "ADDED"
                        known.add(key)
                    yield WatchEvent(kind, StoredWorkspace(change.data))  # type: ignore[arg-type]
        finally:
            db.close()

    def events(self, name: str, namespace: str | None = None) -> list[Event]:
        return [
            Event(time=r[0], type=r[1], reason=r[2], message=r[3], object=r[4], count=r[5])
            for r in self.store.events(self._namespace_of(name, namespace), name)
        ]

    def logs(
        self,
        name: str,
        namespace: str | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        ns = self._namespace_of(name, namespace)
        self.get(name, ns)
        path = paths.log_path(self.root, ns, name)
        stop = stop or threading.Event()
        while not path.exists():
            if not follow:
                return
            if stop.wait(0.2):
                return
        with path.open("r", errors="replace") as f:
            lines = f.readlines()
            for line in lines[-tail:] if tail is not None else lines:
                if tail == 0:
                    break
                yield line.rstrip("\n")
            if not follow:
                return
            inode = os.fstat(f.fileno()).st_ino
            partial = ""
            while not stop.is_set():
                chunk = f.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith("\n"):
                        yield partial.rstrip("\n")
                        partial = ""
                    continue
                try:
                    self.get(name, ns)
                except NotFound:
                    return
                try:  # the log was rotated: follow the new file
                    if path.stat().st_ino != inode:
                        f.close()
                        f = path.open("r", errors="replace")
                        inode = os.fstat(f.fileno()).st_ino
                        continue
                except FileNotFoundError:
                    pass
                stop.wait(0.2)

    def nodes(self) -> list[Node]:
        from kaito_jupyter.provisioners.local import machine

        here = machine()
        running = sorted(
            f"{ns}/{name}" for (ns, name), row in self.store.runtimes().items() if row.get("pid")
        )
        return [
            Node(
                name=here.name,
                instance_type=None,
                gpu_model=here.gpus[0].model if here.gpus else None,
                gpus=len(here.gpus),
                gpus_used=0,
                gpu_memory_gib=here.gpus[0].memory_gib if here.gpus else None,
                ready=True,
                workspaces=tuple(running),
                labels={
                    "kubernetes.io/hostname": here.name,
                    "kaito.sh/local": "true",
                    "kaito.sh/cpus": str(here.cpus),
                },
            )
        ]

    def endpoint(self, name: str, namespace: str | None = None) -> Endpoint:
        ns = self._namespace_of(name, namespace)
        stored = self.get(name, ns)
        row = self.store.runtime(ns, name)
        if stored.workspace.tuning is not None:
            raise BackendError(f"workspace {name} is a tuning workspace; it serves no model")
        if not row or not row.get("port") or row.get("kind") != "inference":
            raise BackendError(
                f"workspace {name} has no running inference server yet",
                hint=f"`kaito wait {name}` waits until it is ready",
            )
        return Endpoint(url=f"http://127.0.0.1:{row['port']}", model=row.get("model"))

    # ------------------------------------------------------------------ the controller

    def leader(self):
        """The live lease row, or None when no controller holds the lease."""
        row = self.store.lease()
        return row if holder_alive(row) else None

    def ensure_controller(self) -> str | None:
        """Start a detached `kaito controller --backend local --idle-exit 300` unless a live
        leader holds the lease. A file lock serialises starters, and the starter waits until
        its controller holds the lease, so concurrent callers start one controller, not two."""
        if self.leader() is not None:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "controller.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.leader() is not None:
                return None
            process = spawn_controller(self.root)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                row = self.leader()
                if row is not None:
                    return (
                        f"started a local controller (pid {row.pid}); it stops after 5 idle minutes"
                    )
                if process.poll() is not None:
                    log = self.root / "controller.log"
                    raise BackendError(
                        f"the local controller exited at start (code {process.returncode})",
                        hint=f"see {log}",
                    )
                time.sleep(0.05)
        raise BackendError(
            "the local controller did not take the lease within 30 s",
            hint=f"see {self.root / 'controller.log'}",
        )


def spawn_controller(root: Path, *, idle_exit: float = 300) -> subprocess.Popen:
    """A controller in its own session (a kernel restart or a closed terminal leaves it be)."""
    env = dict(os.environ, KAITO_LOCAL_DIR=str(root), KAITO_BACKEND="local")
    log = (root / "controller.log").open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "kaito_jupyter.cli", "controller", "--backend", "local",
             "--idle-exit", f"{idle_exit:g}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=root,
            start_new_session=True, close_fds=True,
        )  # fmt: skip
    finally:
        log.close()


def _merge(old: dict | None, doc: dict) -> tuple[dict, str]:
    """The object to store when `doc` is applied over `old`: the user's fields replaced (as
    `kubectl apply` of the whole object), server fields and status kept; generation moves only
    when the spec does."""
    meta = doc["metadata"]
    user_meta = {k: v for k, v in meta.items() if k not in SERVER_FIELDS}
    body = {k: v for k, v in doc.items() if k not in ("metadata", "status")}
    if old is None:
        new = {
            **body,
            "metadata": {
                **user_meta,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": c.now(),
                "generation": 1,
                "finalizers": [FINALIZER],
            },
        }
        return new, "created"
    old_body = {k: v for k, v in old.items() if k not in ("metadata", "status")}
    old_meta = old["metadata"]
    server = {k: old_meta[k] for k in SERVER_FIELDS if k in old_meta}
    old_user = {k: v for k, v in old_meta.items() if k not in SERVER_FIELDS}
    if body == old_body and user_meta == old_user:
        return copy.deepcopy(old), "unchanged"
    new = {**body, "metadata": {**user_meta, **server}}
    if body != old_body:
        new["metadata"]["generation"] = int(old_meta.get("generation") or 1) + 1
    if "status" in old:
        new["status"] = old["status"]
    return new, "configured"


def _volume_issues(ws) -> list[Issue]:
    """Volumes locally are directories on this machine: only hostPath (or a plain path)."""
    found: list[tuple[str, dict | None]] = []
    if ws.inference is not None:
        for i, adapter in enumerate(ws.inference.adapters or ()):
            if adapter.source is not None:
                found.append(
                    (f"inference.adapters[{i}].source.volumeSource", adapter.source.volume)
                )
    if ws.tuning is not None:
        if ws.tuning.input is not None:
            found.append(("tuning.input.volumeSource", ws.tuning.input.volume))
        if ws.tuning.output is not None:
            found.append(("tuning.output.volumeSource", ws.tuning.output.volume))
    issues = []
    for path, volume in found:
        if volume is None:
            continue
        host = volume.get("hostPath") if isinstance(volume, dict) else None
        if not isinstance(host, dict) or not isinstance(host.get("path"), str):
            kinds = ", ".join(sorted(volume)) if isinstance(volume, dict) else "?"
            issues.append(
                Issue(
                    path,
                    f"the local backend mounts only hostPath volumes (a directory on this "
                    f"machine), not {kinds}; give hostPath: {{path: /a/directory}}",
                )
            )
        elif not host["path"].startswith("/"):
            issues.append(Issue(f"{path}.hostPath.path", "must be an absolute path"))
    return issues


def host_path(volume: dict | None) -> str | None:
    if isinstance(volume, dict) and isinstance(volume.get("hostPath"), dict):
        return volume["hostPath"].get("path")
    return None
