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
# Not in Kaito v0.12's API, but the README's `kubectl get workspace` shows a WORKSPACEREADY
# column: kaito-jupyter keeps writing it (True exactly when WorkspaceSucceeded is).
WORKSPACE_READY = "WorkspaceReady"

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


def merge_condition(
    conditions: list[dict],
    type_: str,
    status: str,
    reason: str,
    message: str = "",
    *,
    generation: int | None = None,
    at: str | None = None,
) -> bool:
    """Set one condition in a list of condition dicts (as stored), in place.

    The transition time moves only when the status changes. Returns True if anything changed,
    so callers write status only when it did.
    """
    wanted = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }
    for cond in conditions:
        if cond.get("type") != type_:
            continue
        if all(cond.get(k) == v for k, v in wanted.items()):
            return False
        moved = cond.get("status") != status or not cond.get("lastTransitionTime")
        cond.update(wanted)
        if moved:
            cond["lastTransitionTime"] = at or now()
        if generation is None:
            cond.pop("observedGeneration", None)
        return True
    entry = {**wanted, "lastTransitionTime": at or now()}
    if generation is None:
        entry.pop("observedGeneration")
    conditions.append(entry)
    return True


def set_condition(
    ws: Workspace,
    type_: str,
    status: str,
    reason: str,
    message: str = "",
    *,
    at: str | None = None,
) -> bool:
    """Set a condition on a typed Workspace in place (see merge_condition)."""
    if ws.status is None:
        ws.status = WorkspaceStatus()
    stored = [c.to_dict() for c in ws.status.conditions or []]
    changed = merge_condition(
        stored, type_, status, reason, message, generation=ws.metadata.generation, at=at
    )
    if changed:
        ws.status.conditions = [Condition.model_validate(c) for c in stored]
    return changed
