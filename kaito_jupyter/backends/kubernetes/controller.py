"""The workspace controller on a cluster: informers feed a work queue, workers reconcile, and
only the holder of the Lease works.

Informers watch Workspaces, the pods, Deployments, StatefulSets, Jobs and Services labelled
with `kaito.sh/workspace` (a change to any of them queues its workspace), and Nodes (a node
coming, going or changing shape queues the workspaces it can satisfy or break:
controller.node_interest). Followers keep their caches
warm and campaign; when a leader dies another takes over within the lease duration and
queues every workspace it knows, so nothing waits for the next change.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from typing import Any

from kaito_jupyter.backends.kubernetes import render as r
from kaito_jupyter.backends.kubernetes.events import Recorder
from kaito_jupyter.backends.kubernetes.informer import Informer, key_of
from kaito_jupyter.backends.kubernetes.kube import (
    DEPLOYMENT,
    JOB,
    LEASE,
    NODE,
    POD,
    SERVICE,
    STATEFULSET,
    WORKSPACE,
    ApiError,
    Kube,
)
from kaito_jupyter.backends.kubernetes.reads import Reads
from kaito_jupyter.backends.kubernetes.reconciler import Reconciler
from kaito_jupyter.controller.lease import Conflict, LeaderElector
from kaito_jupyter.controller.node_interest import concerns
from kaito_jupyter.controller.plan import WORKSPACE_LABEL
from kaito_jupyter.controller.queue import WorkQueue
from kaito_jupyter.provisioners.collector import Collector, LiveSet

log = logging.getLogger(__name__)

LEASE_NAME = "kaito-jupyter-controller"
# Reconciles of different workspaces are independent and spend their time waiting on the API
# server, not computing: more of them in flight overlap those waits. On the 2-core test bed 2 to
# 16 workers measured the same (the API server there is the limit, docs/benchmarks.md); 8 is
# for a remote API server, where each round trip is network time. (cli.py's --workers help
# names it too.)
DEFAULT_WORKERS = 8


class KubeLeaseStore:
    """The Lease API for controller.lease (409 becomes Conflict)."""

    def __init__(self, kube: Kube):
        self.kube = kube

    def read(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.find(LEASE, name, namespace)

    def create(self, lease: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.kube.create(LEASE, lease, lease["metadata"]["namespace"])
        except ApiError as exc:
            if exc.status == 409:
                raise Conflict(str(exc)) from None
            raise

    def replace(self, lease: dict[str, Any]) -> dict[str, Any]:
        meta = lease["metadata"]
        try:
            return self.kube.request("PUT", LEASE.path(meta["namespace"], meta["name"]), body=lease)
        except ApiError as exc:
            if exc.status == 409:
                raise Conflict(str(exc)) from None
            raise


def identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _without_status(obj: dict[str, Any]) -> str:
    """The workspace as a user or another controller changes it: all but status and the
    bookkeeping every write moves."""
    meta = {
        k: v
        for k, v in (obj.get("metadata") or {}).items()
        if k not in ("resourceVersion", "managedFields")
    }
    rest = {k: v for k, v in obj.items() if k not in ("status", "metadata")}
    return json.dumps([meta, rest], sort_keys=True, default=str)


def _gpus(node: dict[str, Any]) -> int:
    try:
        return int(((node.get("status") or {}).get("allocatable") or {}).get(r.GPU_RESOURCE) or 0)
    except ValueError:
        return 0


class Controller:
    def __init__(
        self,
        kube: Kube,
        provisioner_factory,
        *,
        namespace: str | None = None,  # None: every namespace
        lease_namespace: str = "kube-system",
        lease_name: str = LEASE_NAME,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        workers: int = DEFAULT_WORKERS,
        options: r.RenderOptions | None = None,
        kaito_runtime: str = "vllm",
        name: str | None = None,
        accept=None,  # namespace -> bool: which namespaces' workspaces this one reconciles
        activity=None,  # the idle timeout's request counter; None: the runtime's /metrics
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.kube = kube
        # Every worker, watch, the Lease and the Event sender keep a connection: without room
        # for all of them the pool drops some and each request pays a new TLS handshake.
        kube.widen_pool(workers + 16)
        self.namespace = namespace
        self.identity = name or identity()
        self.queue = WorkQueue()
        selector = WORKSPACE_LABEL
        self.workspaces = Informer(kube, WORKSPACE, namespace, name="workspaces")
        self.nodes = Informer(kube, NODE, name="nodes")
        self.owned = [
            Informer(kube, kind, namespace, label_selector=selector, name=kind.plural)
            for kind in (POD, DEPLOYMENT, STATEFULSET, JOB, SERVICE)
        ]
        self._reconciled: set[tuple[str, str]] = set()  # keys this process reconciled once
        self._seen: dict[tuple[str, str], str] = {}  # key -> the workspace without its status
        self._seen_lock = threading.Lock()
        self.workspaces.add_handler(self._workspace_changed)
        for inf in self.owned:
            inf.add_handler(self._owned_changed)
        self._node_shapes: dict[str, tuple] = {}
        self.nodes.add_handler(self._node_changed)
        self.provisioner = provisioner_factory(lambda: self.nodes.items())
        if hasattr(self.provisioner, "on_change"):
            # A provisioner whose work finishes out of band (an ARM operation) says so at once,
            # rather than the workspace waiting for its next timed look.
            self.provisioner.on_change = lambda namespace, name: self.queue.add((namespace, name))
        # Orphans of the provisioner (pools, claims of workspaces that are gone), swept while
        # leading, judged only within the namespaces this controller watches.
        self.collector = Collector(
            self.provisioner,
            lambda: LiveSet(
                {key_of(o) for o in self.workspaces.items()},
                lambda ns: (self.namespace is None or ns == self.namespace) and self.accept(ns),
            ),
            lambda: self.leading,
            synced=self.workspaces.synced.is_set,
        )
        self.recorder = Recorder(kube, host=self.identity, background=True)
        self.reconciler = Reconciler(
            kube,
            self.provisioner,
            options=options,
            recorder=self.recorder,
            reads=Reads(kube, {inf.kind.kind: inf for inf in self.owned}),
            kaito_runtime=kaito_runtime,
            node_gpus=self._node_gpus,
            activity=activity,
        )
        self.elector = LeaderElector(
            KubeLeaseStore(kube),
            lease_namespace,
            lease_name,
            self.identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            on_started_leading=self.enqueue_all,
        )
        self.workers = workers
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.accept = accept or (lambda namespace: True)
        self.reconciles = 0
        self.requeues = 0  # reconciles that asked to look again later (waiting on nodes, say)
        self.retries = 0  # reconciles that failed and were queued again with backoff
        self.errors: list[str] = []

    def _node_gpus(self, name: str) -> int:
        node = self.nodes.get("", name)
        return _gpus(node) if node else 0

    def _workspace_changed(self, type_: str, obj: dict[str, Any]) -> None:
        key = key_of(obj)
        if type_ == "DELETED":
            self._seen.pop(key, None)
            self._reconciled.discard(key)
            self.queue.add(key)
            return
        # Our own status writes come back as changes: only the rest of the object is news.
        # (A reconcile whose write moved status.state looks again itself: Outcome.state_moved.)
        signature = _without_status(obj)
        with self._seen_lock:
            if self._seen.get(key) == signature:
                return
            self._seen[key] = signature
        # A workspace not reconciled yet goes ahead of re-reconciles of the others.
        self.queue.add(key, first=key not in self._reconciled)

    def _owned_changed(self, _type: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        ws = (meta.get("labels") or {}).get(WORKSPACE_LABEL)
        if ws:
            self.queue.add((meta.get("namespace") or "", ws))

    def _node_changed(self, type_: str, node: dict[str, Any]) -> None:
        """Queue the workspaces a node's change of shape can matter to (not on each
        heartbeat, and not every workspace: node_interest.concerns)."""
        meta = node.get("metadata") or {}
        name = meta.get("name", "")
        labels = dict(meta.get("labels") or {})
        if type_ == "DELETED":
            before = self._node_shapes.pop(name, None)
            self.enqueue_concerned(name, labels, before[0] if before else None)
            return
        spec, st = node.get("spec") or {}, node.get("status") or {}
        shape = (
            tuple(sorted(labels.items())),
            bool(spec.get("unschedulable")),
            tuple(sorted((t.get("key"), t.get("effect")) for t in spec.get("taints") or [])),
            tuple(sorted((c.get("type"), c.get("status")) for c in st.get("conditions") or [])),
            _gpus(node),
            bool(meta.get("deletionTimestamp")),
        )
        before = self._node_shapes.get(name)
        if before != shape:
            self._node_shapes[name] = shape
            self.enqueue_concerned(name, labels, before[0] if before else None)

    def enqueue_concerned(self, node: str, labels: dict, old_labels: tuple | None) -> None:
        # The labels it had matter too: a node that stopped matching leaves a workspace short.
        old = dict(old_labels) if old_labels is not None else None
        for obj in self.workspaces.items():
            if concerns(node, labels, obj) or (old is not None and concerns(node, old, obj)):
                self.queue.add(key_of(obj))

    def enqueue_all(self) -> None:
        for obj in self.workspaces.items():
            self.queue.add(key_of(obj))

    @property
    def leading(self) -> bool:
        return self.elector.leading.is_set()

    # -- workers ------------------------------------------------------------------------------

    def _work(self) -> None:
        # Reconciling from half-filled caches would report nodes missing that only had not
        # been listed yet: wait for the first lists.
        while not self._stop.is_set() and not self.wait_synced(timeout=1):
            pass
        while not self._stop.is_set():
            key = self.queue.get(timeout=0.5)
            if key is None:
                continue
            try:
                namespace, name = key
                if not self.leading or not self.accept(namespace):
                    continue  # followers do not reconcile; the new leader queues everything
                outcome = self.reconciler.reconcile(namespace, name)
                self._reconciled.add(key)
                self.reconciles += 1
                self.queue.forget(key)
                if outcome.state_moved:
                    self.queue.add(key)  # comes back after done(): once more, with the new state
                elif outcome.requeue_after:
                    self.requeues += 1
                    self.queue.add_after(key, outcome.requeue_after)
            except Exception as exc:
                # One bad workspace never stops the others: log it and retry it with backoff.
                self.retries += 1
                delay = self.queue.add_rate_limited(key)
                status = getattr(exc, "status", None)
                if status != 409:  # a conflict is a newer version arriving: normal
                    self.errors.append(f"{key}: {exc}")
                    log.warning("reconcile %s/%s failed (retry in %.1fs): %s", *key, delay, exc)
            finally:
                self.queue.done(key)

    def start(self) -> Controller:
        for inf in (self.workspaces, self.nodes, *self.owned):
            inf.start()
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.elector.start()
        self.collector.start()
        return self

    def wait_synced(self, timeout: float = 30) -> bool:
        return all(inf.synced.wait(timeout) for inf in (self.workspaces, self.nodes, *self.owned))

    def stop(self, *, release: bool = True) -> None:
        """Stop; `release=False` leaves the Lease to expire, as a crashed process would."""
        self._stop.set()
        self.queue.shutdown()
        self.collector.stop()
        self.elector.stop(release=release)
        for inf in (self.workspaces, self.nodes, *self.owned):
            inf.stop()
        for t in self._threads:
            t.join(timeout=10)
        self.recorder.flush()
        # One line a benchmark (or an operator) can read: what this process's reconcilers did.
        log.info(
            "controller stopped: %d reconciles, %d requeues, %d retries",
            self.reconciles,
            self.requeues,
            self.retries,
        )

    def run_forever(self, stop: threading.Event | None = None) -> None:
        self.start()
        try:
            (stop or threading.Event()).wait()
        finally:
            self.stop()
