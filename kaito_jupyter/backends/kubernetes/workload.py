"""What a workspace's workload is doing, read from its pods and Job: a `WorkloadReport`.

Pod failures are classified with Kaito's condition reasons: an image that cannot be pulled,
a container in CrashLoopBackOff or killed for memory, a pod the scheduler cannot place (with
the scheduler's own message, which says which nodes lacked what). A crash-looping replica
counts as a problem even while its Ready flag lags, so InferenceReady never says True over it.
"""

from __future__ import annotations

from typing import Any

from kaito_jupyter.controller import status as s
from kaito_jupyter.controller.plan import HASH_ANNOTATION

PULL_REASONS = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")
START_REASONS = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def pod_problems(pod: dict[str, Any]) -> list[s.Problem]:
    """The classified failures of one pod (none for a healthy or merely starting pod)."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    out: list[s.Problem] = []
    if status.get("reason") == "Evicted":
        out.append(
            s.Problem(s.EVICTED, f"pod {name} was evicted: {status.get('message', '')}".strip())
        )
    scheduled = _condition(pod, "PodScheduled")
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        out.append(
            s.Problem(s.UNSCHEDULABLE, f"pod {name}: {scheduled.get('message') or 'unschedulable'}")
        )
    statuses = [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]
    for cs in statuses:
        state = cs.get("state") or {}
        last = cs.get("lastState") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason") or ""
        container = cs.get("name", "?")
        if reason in PULL_REASONS:
            out.append(
                s.Problem(
                    s.IMAGE_PULL_ERROR,
                    f"pod {name} container {container}: {reason}: cannot pull image "
                    f"{cs.get('image', '')}: {waiting.get('message') or ''}".rstrip(": "),
                )
            )
        elif reason == "CrashLoopBackOff":
            killed = (last.get("terminated") or {}).get("reason") == "OOMKilled"
            if killed:
                out.append(
                    s.Problem(
                        s.OOM_KILLED,
                        f"pod {name} container {container} was killed for exceeding its memory (OOMKilled) and is restarting",
                    )
                )
            else:
                code = (last.get("terminated") or {}).get("exitCode")
                tail = f" (last exit code {code})" if code is not None else ""
                out.append(
                    s.Problem(
                        s.CRASH_LOOP,
                        f"pod {name} container {container} is in CrashLoopBackOff{tail}: {waiting.get('message') or ''}".rstrip(
                            ": "
                        ),
                    )
                )
        elif reason in START_REASONS:
            out.append(
                s.Problem(
                    s.CONTAINER_START_ERROR,
                    f"pod {name} container {container}: {reason}: {waiting.get('message') or ''}".rstrip(
                        ": "
                    ),
                )
            )
        elif (state.get("terminated") or {}).get("reason") == "OOMKilled" or (
            (last.get("terminated") or {}).get("reason") == "OOMKilled" and not cs.get("ready")
        ):
            out.append(
                s.Problem(
                    s.OOM_KILLED,
                    f"pod {name} container {container} was killed for exceeding its memory (OOMKilled)",
                )
            )
    return out


def _ready(pod: dict[str, Any]) -> bool:
    cond = _condition(pod, "Ready")
    return bool(cond and cond.get("status") == "True") and not (pod.get("metadata") or {}).get(
        "deletionTimestamp"
    )


def _hash(pod: dict[str, Any]) -> str | None:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)


def inference_report(
    workload: dict[str, Any] | None, pods: list[dict[str, Any]], spec_hash: str
) -> s.WorkloadReport:
    if workload is None:
        return s.WorkloadReport(exists=False)
    desired = int((workload.get("spec") or {}).get("replicas") or 0)
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    current = (
        ((workload.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
        == spec_hash
        and all(_hash(p) == spec_hash for p in live)
        and len(live) >= desired
    )
    ready = sum(1 for p in live if _ready(p) and _hash(p) == spec_hash)
    problems = tuple(pr for p in live for pr in pod_problems(p))
    return s.WorkloadReport(
        exists=True, desired=desired, ready=ready, current=current, problems=problems
    )


def tuning_report(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> s.WorkloadReport:
    if job is None:
        return s.WorkloadReport(exists=False)
    st = job.get("status") or {}
    failed_cond = _condition(job, "Failed")
    complete = _condition(job, "Complete")
    problems = tuple(pr for p in pods for pr in pod_problems(p))
    message = ""
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("message"):
                message = term["message"].strip().splitlines()[-1][:500]
    if failed_cond and failed_cond.get("status") == "True":
        message = message or failed_cond.get("message") or "tuning job failed"
        return s.WorkloadReport(
            exists=True, desired=1, started=True, failed=True, problems=problems, message=message
        )
    if complete and complete.get("status") == "True":
        return s.WorkloadReport(
            exists=True,
            desired=1,
            started=True,
            succeeded=True,
            message=message or "tuning job succeeded",
        )
    running = int(st.get("active") or 0) > 0 and any(
        (p.get("status") or {}).get("phase") == "Running" for p in pods
    )
    return s.WorkloadReport(
        exists=True,
        desired=1,
        started=running or bool(st.get("succeeded")),
        problems=problems,
        message=message,
    )
