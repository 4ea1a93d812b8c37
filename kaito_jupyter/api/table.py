"""The kubectl-style table of workspaces (`kaito get`, `%kaito get`).

Columns are those of Kaito's own `kubectl get workspace` output:
NAME INSTANCE RESOURCEREADY INFERENCEREADY WORKSPACEREADY AGE.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from kaito_jupyter.api.conditions import (
    INFERENCE_READY,
    JOB_STARTED,
    RESOURCE_READY,
    WORKSPACE_SUCCEEDED,
    status_of,
)
from kaito_jupyter.api.model import Workspace

COLUMNS = ("NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE")


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


def row(ws: Workspace, now: datetime | None = None) -> tuple[str, ...]:
    # For a tuning workspace the "inference" column reports whether its job started.
    second = JOB_STARTED if ws.tuning is not None else INFERENCE_READY
    return (
        ws.name,
        (ws.resource.instance_type if ws.resource else None) or "",
        status_of(ws, RESOURCE_READY),
        status_of(ws, second),
        status_of(ws, WORKSPACE_SUCCEEDED),
        age(ws.metadata.creation_timestamp, now),
    )


def render(workspaces: Iterable[Workspace], now: datetime | None = None) -> str:
    rows = [COLUMNS, *(row(ws, now) for ws in workspaces)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )
