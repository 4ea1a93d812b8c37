"""Reconcile one Workspace: level-triggered and idempotent.

Each call reads the workspace as it is now, works out what should exist (nodes through the
provisioner, then the objects `render` makes from the pure plan), applies them with
server-side apply as `kaito-jupyter`, reads back what the workload does, and writes the
conditions `controller.status` derives. Running it twice in a row changes nothing the second
time; killed half-way, the next run finishes the job (nothing it does depends on having done
the previous step in the same process).

Owner references let Kubernetes collect the objects when the workspace goes; the finalizer
holds the workspace only for what Kubernetes cannot collect (a provisioner's agent pools or
NodeClaims), and is released once the provisioner says they are gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from kaito_jupyter.api import conditions as c
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.kubernetes import render as r
from kaito_jupyter.backends.kubernetes import workload as w
from kaito_jupyter.backends.kubernetes.events import Recorder
from kaito_jupyter.backends.kubernetes.kube import (
    DEPLOYMENT,
    JOB,
    JSON_PATCH,
    SERVICE,
    STATEFULSET,
    WORKSPACE,
    Kube,
)
from kaito_jupyter.backends.kubernetes.reads import Reads
from kaito_jupyter.controller import idle
from kaito_jupyter.controller import status as s
from kaito_jupyter.controller.plan import (
    FINALIZER,
    HASH_ANNOTATION,
    Plan,
    PlanError,
    plan,
)
from kaito_jupyter.errors import ProvisioningError
from kaito_jupyter.provisioners.base import NodeRequest, Provisioner

log = logging.getLogger(__name__)

RELEASE_RETRY = 2.0  # seconds between looks while a provisioner releases nodes


class ObjectConflict(Exception):
    """An object the workspace needs exists already and belongs to something else."""


@dataclass(frozen=True)
class Applied:
    """What our last server-side apply of one object sent and got back."""

    digest: str  # of the rendered object
    uid: str
    generation: int | None  # None for kinds without one (Service)
    resource_version: str


@dataclass
class Outcome:
    requeue_after: float | None = None
    status_written: bool = False
    # status.state moved: what reads it (readiness once established, the idle timeout) must
    # see the new one, and the controller does not reconcile on its own status writes.
    state_moved: bool = False


def node_request(stored: StoredWorkspace, p: Plan | None = None) -> NodeRequest:
    ws = stored.workspace
    res = ws.resource
    labels = res.label_selector.as_map() if res and res.label_selector else {}
    preset = p.preset if p else None
    return NodeRequest(
        namespace=stored.namespace,
        name=stored.name,
        uid=str(stored.metadata.get("uid") or ""),
        instance_type=res.instance_type if res else None,
        count=res.node_count if res else 1,
        labels=labels,
        preferred_nodes=tuple(res.preferred_nodes or ()) if res else (),
        gpus_per_node=p.gpus_per_node if p else 0,
        os_disk_gib=preset.disk_gib if preset else None,
    )


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        provisioner: Provisioner,
        *,
        options: r.RenderOptions | None = None,
        recorder: Recorder | None = None,
        kaito_runtime: str = "vllm",
        node_gpus=None,
        activity=None,
        reads: Reads | None = None,
        clock=time.monotonic,
    ):
        self.kube = kube
        self.reads = reads or Reads(kube)
        # (kind, namespace, name) -> our last apply of it: an unchanged object is not sent again.
        self._applied: dict[tuple[str, str, str], Applied] = {}
        self._applied_lock = threading.Lock()  # workers reconcile different workspaces at once
        self.provisioner = provisioner
        self.options = options or r.RenderOptions()
        self.recorder = recorder or Recorder(kube)
        self.kaito_runtime = kaito_runtime
        # name -> allocatable GPUs, for nodes whose instance type the catalog does not know.
        self.node_gpus = node_gpus or (lambda name: 0)
        # The idle timeout's request counter (`activity.ActivitySource`); None: read /metrics.
        self.activity = activity
        self.clock = clock
        self.idle = idle.IdleTracker()

    # -- entry --------------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> Outcome:
        obj = self.kube.find(WORKSPACE, name, namespace)
        if obj is None:
            self._forget_applied(namespace, name)
            return Outcome()  # gone: owner references collect what it had
        stored = StoredWorkspace(obj)
        if stored.deleting:
            return self._finalize(stored)
        if FINALIZER not in (stored.metadata.get("finalizers") or []):
            obj = self._add_finalizer(stored)
            stored = StoredWorkspace(obj)
        ws = stored.workspace
        try:
            p = plan(ws, kaito_runtime=self.kaito_runtime)
        except PlanError as exc:
            message = exc.message + (f"; {exc.hint}" if exc.hint else "")
            derived = s.derive_invalid(ws.mode, exc.reason, message)
            return Outcome(
                status_written=self._write_status(stored, derived, warn=(exc.reason, message))
            )
        request = node_request(stored, p)
        stored, asleep, idle_requeue = self._idle_timeout(stored, p)
        if asleep:
            request = dataclasses.replace(request, scaled_to_zero=True)
        try:
            nodes = self.provisioner.ensure(request)
        except ProvisioningError as exc:
            nodes = s.NodeReport(
                required=request.count, reason="ProvisioningFailed", message=str(exc), failed=True
            )
        if asleep:
            # Its pool has no nodes on purpose: say so, rather than "waiting for nodes".
            nodes = s.NodeReport(
                required=request.count,
                reason=idle.SCALED_TO_ZERO_IDLE,
                message=f"scaled to zero after {_annotation(stored, idle.IDLE_TIMEOUT)} with no "
                f"request ({nodes.message or 'no nodes'}); `kaito wake {stored.name}` or a chat "
                "brings it back",
                failed=nodes.failed,
                retry_after=nodes.retry_after,
            )
        fresh: dict[str, dict] = {}
        if nodes.satisfied:
            try:
                fresh = self._apply_objects(stored, p, list(nodes.ready))
            except ObjectConflict as exc:
                # Never take over someone else's object: say so, and wait for it to go.
                derived = s.derive_invalid(ws.mode, "ObjectConflict", str(exc))
                return Outcome(
                    status_written=self._write_status(
                        stored, derived, warn=("ObjectConflict", str(exc))
                    )
                )
        if asleep:
            self._remove_workload(stored, p)  # nothing left pending; a wake re-creates it
            report = s.WorkloadReport()
        else:
            report = self._observe(p, fresh)
        if p.mode == "tuning":
            derived = s.derive_tuning(nodes, report)
        else:
            established = (stored.status.state or "") in (c.STATE_READY, c.STATE_NOT_READY)
            derived = s.derive_inference(nodes, report, established=established)
        written = self._write_status(stored, derived)
        requeue = [t for t in (nodes.retry_after, idle_requeue) if t is not None]
        return Outcome(
            requeue_after=min(requeue) if requeue else None,
            status_written=written,
            state_moved=written and (stored.status.state or "") != derived.state,
        )

    # -- idle timeout -------------------------------------------------------------------------

    def _idle_timeout(self, stored: StoredWorkspace, p: Plan):
        """Scale to zero a workspace quiet for its `kaito.sh/idle-timeout`; wake one asked to.
        Returns (the workspace as now stored, whether it is scaled to zero, when to look again).
        """
        key = (stored.namespace, stored.name)
        annotations = stored.metadata.get("annotations") or {}
        timeout = idle.timeout_of(annotations) if p.mode == "inference" else None
        now = self.clock()
        if idle.SCALED_TO_ZERO in annotations:
            if timeout is not None and not idle.wake_pending(annotations):
                return stored, True, None
            # Woken (or the timeout removed): bring the nodes back, a whole timeout ahead.
            stored = StoredWorkspace(self._annotate(stored, {idle.SCALED_TO_ZERO: None}))
            self.idle.reset(key, now)
            self.recorder.record(stored.data, "Normal", "Woken", "scaling back up from zero")
            return stored, False, None
        if timeout is None:
            self.idle.forget(key)
            return stored, False, None
        if (stored.status.state or "") != c.STATE_READY:
            self.idle.reset(key, now)  # provisioning or starting is not idleness
            return stored, False, None
        source = self.activity
        if source is None:
            from kaito_jupyter.backends.kubernetes.activity import PrometheusActivity

            source = self.activity = PrometheusActivity(self.kube)
        quiet = self.idle.observe(key, source.requests(*key), now)
        if quiet < timeout:
            return stored, False, max(timeout - quiet, 0.1)
        stored = StoredWorkspace(self._annotate(stored, {idle.SCALED_TO_ZERO: idle.stamp()}))
        self.recorder.record(
            stored.data,
            "Normal",
            idle.SCALED_TO_ZERO_IDLE,
            f"no request for {annotations[idle.IDLE_TIMEOUT]}: scaling its nodes to zero",
        )
        return stored, True, None

    def _remove_workload(self, stored: StoredWorkspace, p: Plan) -> None:
        owner = self._owner(stored)
        for kind in (DEPLOYMENT, STATEFULSET):
            found = self.kube.find(kind, stored.name, stored.namespace)
            if found is not None and _owned_by(found, owner):
                self.kube.delete(kind, stored.name, stored.namespace)

    def _annotate(self, stored: StoredWorkspace, changes: dict[str, str | None]) -> dict:
        return self.kube.patch(
            WORKSPACE,
            stored.name,
            stored.namespace,
            {
                "metadata": {
                    "resourceVersion": stored.resource_version,
                    "annotations": changes,
                }
            },
        )

    # -- objects ------------------------------------------------------------------------------

    def _owner(self, stored: StoredWorkspace) -> r.Owner:
        return r.Owner(
            name=stored.name,
            namespace=stored.namespace,
            uid=str(stored.metadata.get("uid")),
            api_version=str(stored.data.get("apiVersion") or "kaito.sh/v1beta1"),
        )

    def _gpus(self, p: Plan, nodes: list[str]) -> int:
        if p.gpus_per_node:
            return p.gpus_per_node
        counts = [self.node_gpus(n) for n in nodes]
        return min(counts) if counts else 0

    def _apply_objects(self, stored: StoredWorkspace, p: Plan, nodes: list[str]) -> dict:
        """Apply what the plan renders; returns kind -> the workload as the server answered our
        apply (or as it was), for `_observe` to use where a cache has not caught up yet."""
        owner = self._owner(stored)
        fresh: dict[str, dict] = {}
        objects = r.render(p, owner, nodes, self.options, gpus=self._gpus(p, nodes))
        ns, name = stored.namespace, stored.name
        created = []
        for obj in objects:
            kind = obj["kind"]
            existing = self.reads.find(
                KINDS_BY_NAME[kind], obj["metadata"]["name"], ns, confirm_missing=True
            )
            if existing is not None and not _owned_by(existing, owner):
                raise ObjectConflict(
                    f"{kind} {ns}/{obj['metadata']['name']} exists and does not belong to "
                    f"workspace {name}: delete it, or name the workspace differently"
                )
            if kind == "Job" and existing is not None:
                old_hash = ((existing.get("metadata") or {}).get("annotations") or {}).get(
                    HASH_ANNOTATION
                )
                if old_hash == p.spec_hash:
                    fresh[kind] = existing
                    continue  # a Job's pod template is immutable; the same spec needs nothing
                self.kube.delete(JOB, name, ns, propagation="Foreground")
                continue  # recreated once the old one is gone (its deletion requeues us)
            key = (kind, ns, obj["metadata"]["name"])
            digest = _digest(obj)
            with self._applied_lock:
                last = self._applied.get(key)
            if (
                existing is not None
                and last is not None
                and last.digest == digest
                and _as_applied(existing, last, obj)
            ):
                fresh[kind] = existing
                continue  # what we would send is what the server holds from our last apply
            answer = fresh[kind] = self.kube.apply(obj)
            with self._applied_lock:
                self._applied[key] = _applied(answer, digest)
            if existing is None:
                created.append(f"{kind} {obj['metadata']['name']}")
        if created:
            # One Event for the objects this reconcile made, not one per object.
            self.recorder.record(stored.data, "Normal", "Created", "created " + ", ".join(created))
        # A change of node count swaps Deployment and StatefulSet: remove the other one.
        if p.mode == "inference":
            stale = [DEPLOYMENT] if p.node_count > 1 else [STATEFULSET]
            if p.node_count <= 1:
                stale_svc = r.headless_name(name)
                svc = self.reads.find(SERVICE, stale_svc, ns)
                if svc is not None and _owned_by(svc, owner):
                    self.kube.delete(SERVICE, stale_svc, ns)
            for kind in stale:
                found = self.reads.find(kind, name, ns)
                if found is not None and _owned_by(found, owner):
                    self.kube.delete(kind, name, ns)
        return fresh

    def _forget_applied(self, namespace: str, name: str) -> None:
        with self._applied_lock:
            for key in [k for k in self._applied if k[1] == namespace and _named_for(k[2], name)]:
                del self._applied[key]

    def _observe(self, p: Plan, fresh: dict[str, dict] | None = None) -> s.WorkloadReport:
        # A workload just made is not in the cache yet: the apply's answer says it exists (a
        # status of "no workload" would be written now and taken back a moment later).
        fresh = fresh or {}
        pods = self.reads.pods(p.namespace, p.name)
        if p.mode == "tuning":
            job = self.reads.find(JOB, p.name, p.namespace) or fresh.get("Job")
            return w.tuning_report(job, pods)
        kind = STATEFULSET if p.node_count > 1 else DEPLOYMENT
        workload = self.reads.find(kind, p.name, p.namespace) or fresh.get(kind.kind)
        return w.inference_report(workload, pods, p.spec_hash)

    # -- status -------------------------------------------------------------------------------

    def _write_status(
        self, stored: StoredWorkspace, derived: s.Derived, *, warn: tuple[str, str] | None = None
    ) -> bool:
        old = stored.data.get("status") if isinstance(stored.data.get("status"), dict) else {}
        new, changed = s.write(old, derived, generation=stored.generation)
        if not changed:
            return False
        # A merge patch keeps keys it does not name: null the ones `write` dropped (workerNodes
        # of a workspace scaled to zero).
        patch = {**{k: None for k in old or {} if k not in new}, **new}
        self.kube.patch(
            WORKSPACE,
            stored.name,
            stored.namespace,
            # resourceVersion makes the write conditional: a newer object means a newer reconcile.
            {"metadata": {"resourceVersion": stored.resource_version}, "status": patch},
            sub="status",
        )
        self._record_transitions(stored, old or {}, new, warn)
        return True

    def _record_transitions(self, stored: StoredWorkspace, old: dict, new: dict, warn) -> None:
        before = {x.get("type"): x for x in old.get("conditions") or []}
        for cond in new.get("conditions") or []:
            prev = before.get(cond["type"]) or {}
            if (prev.get("status"), prev.get("reason"), prev.get("message")) == (
                cond.get("status"),
                cond.get("reason"),
                cond.get("message"),
            ):
                continue
            if (
                cond["type"] in (c.INFERENCE_READY, c.JOB_STARTED, c.RESOURCE_READY)
                and cond["status"] == "False"
            ):
                if cond.get("reason") in _WARNING_REASONS or (
                    cond["type"] == c.RESOURCE_READY and _failed(new)
                ):
                    self.recorder.record(
                        stored.data, "Warning", cond["reason"], cond.get("message") or ""
                    )
            elif cond["type"] == c.WORKSPACE_SUCCEEDED and cond["status"] == "True":
                self.recorder.record(
                    stored.data, "Normal", "WorkspaceSucceeded", cond.get("message") or ""
                )
        if warn and not any(x.get("reason") == warn[0] for x in before.values()):
            self.recorder.record(stored.data, "Warning", warn[0], warn[1])

    # -- deletion -----------------------------------------------------------------------------

    def _add_finalizer(self, stored: StoredWorkspace) -> dict[str, Any]:
        finalizers = list(stored.metadata.get("finalizers") or [])
        return self.kube.patch(
            WORKSPACE,
            stored.name,
            stored.namespace,
            {
                "metadata": {
                    "resourceVersion": stored.resource_version,
                    "finalizers": [*finalizers, FINALIZER],
                }
            },
        )

    def _finalize(self, stored: StoredWorkspace) -> Outcome:
        finalizers = list(stored.metadata.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return Outcome()
        self._write_status(stored, s.derive_deleting())
        if not self.provisioner.release(node_request(stored)):
            return Outcome(requeue_after=RELEASE_RETRY)
        self._forget_applied(stored.namespace, stored.name)
        remaining = [f for f in finalizers if f != FINALIZER]
        self.kube.patch(
            WORKSPACE,
            stored.name,
            stored.namespace,
            [
                {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
                {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
            ],
            content_type=JSON_PATCH,
        )
        self.recorder.record(
            stored.data, "Normal", "Released", "external resources released; finalizer removed"
        )
        return Outcome()


KINDS_BY_NAME = {
    "Job": JOB,
    "Deployment": DEPLOYMENT,
    "StatefulSet": STATEFULSET,
    "Service": SERVICE,
}


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _applied(answer: dict[str, Any], digest: str) -> Applied:
    meta = answer.get("metadata") or {}
    generation = meta.get("generation")
    return Applied(
        digest=digest,
        uid=str(meta.get("uid") or ""),
        generation=int(generation) if generation is not None else None,
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def _as_applied(live: dict[str, Any], last: Applied, rendered: dict[str, Any]) -> bool:
    """Whether `live` is still the object our last apply left: the same object (a deleted and
    re-made one has another uid), its spec untouched (a spec edit raises the generation; a kind
    without one, Service, is compared by resourceVersion, which only edits move), and the labels,
    annotations and owner references we set still there (metadata edits raise no generation)."""
    meta = live.get("metadata") or {}
    if str(meta.get("uid") or "") != last.uid or meta.get("deletionTimestamp"):
        return False
    if last.generation is not None:
        if meta.get("generation") != last.generation:
            return False
    elif str(meta.get("resourceVersion") or "") != last.resource_version:
        return False
    want = rendered.get("metadata") or {}
    for field in ("labels", "annotations"):
        have = meta.get(field) or {}
        if any(have.get(k) != v for k, v in (want.get(field) or {}).items()):
            return False
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or []}
    return all(ref.get("uid") in owners for ref in want.get("ownerReferences") or [])


def _named_for(object_name: str, workspace: str) -> bool:
    # A workspace's objects are named after it (its Service, headless Service, workload).
    return object_name == workspace or object_name.startswith(workspace + "-")


_WARNING_REASONS = {
    s.IMAGE_PULL_ERROR,
    s.CRASH_LOOP,
    s.OOM_KILLED,
    s.CONTAINER_START_ERROR,
    s.EVICTED,
    s.UNSCHEDULABLE,
    "WorkspaceTuningJobStatusFailed",
}


def _annotation(stored: StoredWorkspace, key: str) -> str:
    return str((stored.metadata.get("annotations") or {}).get(key) or "")


def _failed(status: dict) -> bool:
    return any(x.get("reason") == "workspaceFailed" for x in status.get("conditions") or [])


def _owned_by(obj: dict[str, Any], owner: r.Owner) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == owner.uid for ref in refs)
