"""The kubectl-style table of workspaces (`kaito get`, `%kaito get`).

Columns are those of Kaito's own `kubectl get workspace` output in its README:
NAME INSTANCE RESOURCEREADY INFERENCEREADY WORKSPACEREADY AGE; wide adds JOBSTARTED,
WORKSPACESUCCEEDED, TARGETNODECOUNT and STATE (Kaito v1beta1's printer columns), and COST/H,
the list price per hour of the workspace's nodes (`kaito_jupyter.cost`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from kaito_jupyter import cost
from kaito_jupyter.api.conditions import (
    INFERENCE_READY,
    JOB_STARTED,
    RESOURCE_READY,
    WORKSPACE_READY,
    WORKSPACE_SUCCEEDED,
    status_of,
)
from kaito_jupyter.api.model import Workspace

# Kaito's README (`kubectl get workspace`); `-o wide` adds the v1beta1 printer columns.
COLUMNS = ("NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE")
WIDE_COLUMNS = (
    "NAME",
    "INSTANCE",
    "RESOURCEREADY",
    "INFERENCEREADY",
    "JOBSTARTED",
    "WORKSPACESUCCEEDED",
    "WORKSPACEREADY",
    "TARGETNODECOUNT",
    "STATE",
    "COST/H",
    "AGE",
)


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """Kubernetes-style age: 45s, 10m, 3h, 2d (with one finer unit below a few hours/days)."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = int(((now or datetime.now(UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 2:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def workspace_ready(ws: Workspace) -> str:
    """WorkspaceReady, or WorkspaceSucceeded for workspaces Kaito's operator manages (v0.12
    writes only that one; it means the same)."""
    if ws.condition(WORKSPACE_READY) is not None:
        return status_of(ws, WORKSPACE_READY)
    return status_of(ws, WORKSPACE_SUCCEEDED)


def cells(ws: Workspace, now: datetime | None = None, nodes: Iterable = ()) -> dict[str, str]:
    """Every column's value for one workspace; `nodes` (the backend's) price COST/H."""
    status = ws.status
    count = status.target_node_count if status else None
    return {
        "NAME": ws.name,
        "INSTANCE": (ws.resource.instance_type if ws.resource else None) or "",
        "RESOURCEREADY": status_of(ws, RESOURCE_READY),
        "INFERENCEREADY": status_of(ws, INFERENCE_READY) if ws.tuning is None else "",
        "JOBSTARTED": status_of(ws, JOB_STARTED) if ws.tuning is not None else "",
        "WORKSPACESUCCEEDED": status_of(ws, WORKSPACE_SUCCEEDED),
        "WORKSPACEREADY": workspace_ready(ws),
        "TARGETNODECOUNT": "" if count is None else str(count),
        "STATE": (status.state if status else None) or "",
        "COST/H": cost.hourly_text(cost.workspace_hourly(ws, list(nodes))),
        "AGE": age(ws.metadata.creation_timestamp, now),
    }


def row(
    ws: Workspace,
    now: datetime | None = None,
    columns: tuple[str, ...] = COLUMNS,
    nodes: Iterable = (),
) -> tuple[str, ...]:
    values = cells(ws, now, nodes)
    return tuple(values[col] for col in columns)


def render(
    workspaces: Iterable[Workspace],
    now: datetime | None = None,
    *,
    wide: bool = False,
    nodes: Iterable = (),
) -> str:
    columns = WIDE_COLUMNS if wide else COLUMNS
    nodes = list(nodes)
    rows = [columns, *(row(ws, now, columns, nodes) for ws in workspaces)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
