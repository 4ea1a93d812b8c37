"""A workspace's status, derived from what was observed: pure, shared by both backends.

Each backend reduces its world to two reports: `NodeReport` (from the provisioner: how many
nodes the workspace needs, which are ready, why not) and `WorkloadReport` (pods or local
processes: ready replicas, classified failures, the tuning job's progress). `derive` turns them
into Kaito's conditions, `status.state` and `workerNodes`; `write` merges that into a stored
status, moving transition times only when a condition's status changes.

Stricter than Kaito where Kaito misleads: InferenceReady is never True while a replica is
failing (a crash-looping pod that was once ready), and a provisioning failure's own message
(the cloud's quota error, say) is what ResourceReady says, not a generic "not enough nodes".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kaito_jupyter.api import conditions as c

# Kaito's condition reasons, for classified workload failures (pkg/workspace/controllers).
IMAGE_PULL_ERROR = "ImagePullError"
CRASH_LOOP = "ContainerCrashLoopBackOff"
OOM_KILLED = "ContainerOOMKilled"
CONTAINER_START_ERROR = "ContainerStartError"
EVICTED = "PodEvicted"
UNSCHEDULABLE = "Unschedulable"

INFERENCE_CONDITIONS = (
    c.RESOURCE_READY,
    c.INFERENCE_READY,
    c.WORKSPACE_SUCCEEDED,
    c.WORKSPACE_READY,
)
TUNING_CONDITIONS = (c.RESOURCE_READY, c.JOB_STARTED, c.WORKSPACE_SUCCEEDED, c.WORKSPACE_READY)


@dataclass(frozen=True)
class NodeReport:
    """The provisioner's account of a workspace's nodes."""

    required: int
    ready: tuple[str, ...] = ()
    reason: str = "NodesPending"  # why not ready: Provisioning, QuotaExceeded, NoMatchingNodes...
    message: str = ""
    failed: bool = False  # a failure that will not resolve by waiting (quota, invalid size)
    retry_after: float | None = None  # seconds until the provisioner wants another look

    @property
    def satisfied(self) -> bool:
        return len(self.ready) >= self.required and not self.failed


@dataclass(frozen=True)
class Problem:
    """One classified failure of the workload (a pod or a local process)."""

    reason: str
    message: str


@dataclass(frozen=True)
class WorkloadReport:
    exists: bool = False
    desired: int = 0
    ready: int = 0
    current: bool = True  # every replica runs the planned revision (spec hash)
    problems: tuple[Problem, ...] = ()
    # A tuning job:
    started: bool = False
    succeeded: bool = False
    failed: bool = False
    message: str = ""  # the job's own account (its termination message, last progress)


@dataclass(frozen=True)
class Derived:
    conditions: tuple[tuple[str, str, str, str], ...]  # (type, status, reason, message)
    state: str
    worker_nodes: tuple[str, ...] = ()
    target_node_count: int | None = None
    # Conditions this mode never writes (a toggle's leftovers), removed on write.
    drop: tuple[str, ...] = field(default=())


def _resource(nodes: NodeReport) -> tuple[str, str, str, str]:
    if nodes.satisfied:
        return (c.RESOURCE_READY, "True", "ResourcesReady", "all resources are ready")
    message = nodes.message or (
        f"{len(nodes.ready)} of {nodes.required} node(s) ready" if nodes.required else ""
    )
    return (c.RESOURCE_READY, "False", nodes.reason, message)


def derive_inference(
    nodes: NodeReport, workload: WorkloadReport, *, established: bool = False
) -> Derived:
    """Conditions and state of an inference workspace.

    `established`: the workspace was Ready (or NotReady) before, so losing readiness reads
    NotReady rather than Pending.
    """
    resource = _resource(nodes)
    ready = (
        nodes.satisfied
        and workload.exists
        and workload.current
        and workload.desired > 0
        and workload.ready >= workload.desired
        and not workload.problems
    )
    if ready:
        inference = (
            c.INFERENCE_READY,
            "True",
            "WorkspaceInferenceStatusSuccess",
            "Inference has been deployed successfully",
        )
        overall = ("True", "workspaceSucceeded", "workspace succeeds")
        state = c.STATE_READY
    else:
        if workload.problems:
            first = workload.problems[0]
            reason, message = first.reason, first.message
        elif not nodes.satisfied:
            reason, message = "ResourceNotReady", "waiting for nodes: " + (resource[3] or "")
        elif not workload.exists:
            reason, message = "WorkspaceInferenceStatusPending", "inference workload not created"
        elif not workload.current:
            reason, message = "RollingUpdate", "rolling out the updated spec"
        else:
            reason = "WorkspaceInferenceStatusPending"
            message = f"{workload.ready} of {workload.desired} replica(s) ready"
        inference = (c.INFERENCE_READY, "False", reason, message)
        overall = ("False", "workspacePending", "workspace is waiting for inference readiness")
        if workload.problems or nodes.failed:
            overall = ("False", "workspaceFailed", message if workload.problems else resource[3])
        state = c.STATE_NOT_READY if established else c.STATE_PENDING
    return Derived(
        conditions=(
            resource,
            inference,
            (c.WORKSPACE_SUCCEEDED, *overall),
            (c.WORKSPACE_READY, *overall),
        ),
        state=state,
        worker_nodes=nodes.ready,
        target_node_count=nodes.required,
        drop=(c.JOB_STARTED,),
    )


def derive_tuning(nodes: NodeReport, workload: WorkloadReport) -> Derived:
    resource = _resource(nodes)
    if workload.failed:
        message = workload.message or "tuning job failed"
        reason = (
            workload.problems[0].reason if workload.problems else "WorkspaceTuningJobStatusFailed"
        )
        job = (c.JOB_STARTED, "False", reason, message)
        overall = ("False", "workspaceFailed", message)
        state = c.STATE_FAILED
    elif workload.succeeded:
        job = (c.JOB_STARTED, "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started")
        overall = ("True", "workspaceSucceeded", workload.message or "workspace succeeds")
        state = c.STATE_SUCCEEDED
    elif workload.started:
        job = (c.JOB_STARTED, "True", "WorkspaceTuningJobStatusStarted", "Tuning job has started")
        overall = (
            "False",
            "workspacePending",
            workload.message or "workspace has not completed yet, tuning job is running",
        )
        state = c.STATE_RUNNING
    else:
        if workload.problems:
            first = workload.problems[0]
            job = (c.JOB_STARTED, "False", first.reason, first.message)
        elif not nodes.satisfied:
            job = (c.JOB_STARTED, "False", "ResourceNotReady", "waiting for nodes: " + resource[3])
        else:
            job = (
                c.JOB_STARTED,
                "False",
                "WorkspaceTuningJobStatusPending",
                "Tuning job has not started",
            )
        overall = (
            "False",
            "workspacePending",
            "workspace is initializing, tuning job has not started",
        )
        if nodes.failed:
            overall = ("False", "workspaceFailed", resource[3])
        state = c.STATE_PENDING
    return Derived(
        conditions=(
            resource,
            job,
            (c.WORKSPACE_SUCCEEDED, *overall),
            (c.WORKSPACE_READY, *overall),
        ),
        state=state,
        worker_nodes=nodes.ready,
        target_node_count=nodes.required,
        drop=(c.INFERENCE_READY,),
    )


def derive_invalid(mode: str, reason: str, message: str) -> Derived:
    """A workspace that cannot be run as written: every condition False with the reason."""
    types = TUNING_CONDITIONS if mode == "tuning" else INFERENCE_CONDITIONS
    return Derived(
        conditions=tuple((t, "False", reason, message) for t in types),
        state=c.STATE_FAILED if mode == "tuning" else c.STATE_NOT_READY,
    )


def derive_deleting() -> Derived:
    return Derived(
        conditions=(
            (c.WORKSPACE_DELETING, "True", "workspaceDeleted", "workspace is being deleted"),
        ),
        state=c.STATE_NOT_READY,
    )


def write(
    status: dict[str, Any] | None,
    derived: Derived,
    *,
    generation: int | None = None,
    at: str | None = None,
) -> tuple[dict[str, Any], bool]:
    """`status` with the derived conditions merged in; and whether anything changed.

    Fields other controllers or newer versions wrote into status are kept.
    """
    out = dict(status or {})
    conds = [dict(x) for x in out.get("conditions") or []]
    changed = False
    kept = [x for x in conds if x.get("type") not in derived.drop]
    if len(kept) != len(conds):
        conds, changed = kept, True
    for type_, st, reason, message in derived.conditions:
        changed |= c.merge_condition(
            conds, type_, st, reason, message, generation=generation, at=at
        )
    out["conditions"] = conds
    for key, value in (
        ("state", derived.state),
        ("workerNodes", list(derived.worker_nodes) or None),
        ("targetNodeCount", derived.target_node_count),
    ):
        if value is None:
            if key in out:
                out.pop(key)
                changed = True
        elif out.get(key) != value:
            out[key] = value
            changed = True
    return out, changed
