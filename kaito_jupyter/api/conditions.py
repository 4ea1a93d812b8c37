"""Workspace status conditions: Kaito's condition types and pure helpers to read and set them."""

from __future__ import annotations

from datetime import UTC, datetime

from kaito_jupyter.api.model import Condition, Workspace, WorkspaceStatus

# Kaito's condition types (kaito.sh v1alpha1/v1beta1).
NODE_CLAIM_READY = "NodeClaimReady"
NODES_READY = "NodesReady"
RESOURCE_READY = "ResourceReady"
INFERENCE_READY = "InferenceReady"
JOB_STARTED = "JobStarted"
WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
WORKSPACE_DELETING = "WorkspaceDeleting"

# v1beta1 status.state values.
STATE_PENDING = "Pending"
STATE_READY = "Ready"
STATE_NOT_READY = "NotReady"
STATE_RUNNING = "Running"
STATE_SUCCEEDED = "Succeeded"
STATE_FAILED = "Failed"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_of(ws: Workspace, type_: str) -> str:
    """ "True", "False" or "Unknown" (also when the condition is absent)."""
    cond = ws.condition(type_)
    return cond.status if cond else "Unknown"


def set_condition(
    ws: Workspace,
    type_: str,
    status: str,
    reason: str,
    message: str = "",
    *,
    at: str | None = None,
) -> bool:
    """Set a condition in place. The transition time moves only when the status changes.

    Returns True if anything changed (so callers write status only when it did).
    """
    if ws.status is None:
        ws.status = WorkspaceStatus()
    conditions = list(ws.status.conditions or [])
    generation = ws.metadata.generation
    for i, cond in enumerate(conditions):
        if cond.type != type_:
            continue
        if (cond.status, cond.reason, cond.message, cond.observed_generation) == (
            status,
            reason,
            message,
            generation,
        ):
            return False
        moved = cond.status != status
        conditions[i] = Condition(
            type=type_,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            message=message,
            lastTransitionTime=(at or now()) if moved else cond.last_transition_time,
            observedGeneration=generation,
        )
        ws.status.conditions = conditions
        return True
    conditions.append(
        Condition(
            type=type_,
            status=status,  # type: ignore[arg-type]
            reason=reason,
            message=message,
            lastTransitionTime=at or now(),
            observedGeneration=generation,
        )
    )
    ws.status.conditions = conditions
    return True
