"""Plain-text views of workspaces for the CLI and the magics: progress, describe, nodes, events.

Pure functions over the command layer's values; each surface prints what they return.
"""

from __future__ import annotations

from collections.abc import Sequence

from kaito_jupyter import cost
from kaito_jupyter.api import conditions as c
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends import Event, Node
from kaito_jupyter.presentation import table


def progress_line(stored: StoredWorkspace) -> str:
    """One line per status change: the conditions, and why the first False one is False."""
    ws = stored.workspace
    if stored.deleting:
        return f"{stored.name}: deleting"
    conds = ws.status.conditions if ws.status and ws.status.conditions else []
    shown = [x for x in conds if x.type != c.WORKSPACE_READY]
    if not shown:
        return f"{stored.name}: waiting for the controller"
    parts = " ".join(f"{x.type}={x.status}" for x in shown)
    blocking = next((x for x in shown if x.status != "True"), None)
    why = f" ({blocking.reason}: {blocking.message})" if blocking and blocking.message else ""
    return f"{stored.name}: {parts}{why}"


def conditions_table(stored: StoredWorkspace) -> str:
    ws = stored.workspace
    conds = ws.status.conditions if ws.status and ws.status.conditions else []
    return table(
        ("TYPE", "STATUS", "REASON", "MESSAGE"),
        [(x.type, x.status, x.reason or "", x.message or "") for x in conds],
    )


def events_table(events: Sequence[Event]) -> str:
    return table(
        ("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"),
        [
            (e.time, e.type, e.reason + (f" (x{e.count})" if e.count > 1 else ""), e.object,
             e.message)
            for e in events
        ],
    )  # fmt: skip


def nodes_table(nodes: Sequence[Node]) -> str:
    return table(
        ("NAME", "INSTANCE", "GPU", "GPUS", "GPU MEMORY", "READY", "WORKSPACES"),
        [
            (
                n.name,
                n.instance_type or "-",
                n.gpu_model or "none",
                f"{n.gpus_used}/{n.gpus}",
                f"{n.gpu_memory_gib:g}Gi" if n.gpu_memory_gib else "-",
                "True" if n.ready else "False",
                ",".join(n.workspaces) or "-",
            )
            for n in nodes
        ],
    )


def describe_text(description) -> str:
    """`kaito describe`: what the workspace asks, where it runs, its conditions and events."""
    stored = description.workspace
    ws = stored.workspace
    spec = ws.tuning if ws.tuning is not None else ws.inference
    lines = [
        f"Name:          {stored.name}",
        f"Namespace:     {stored.namespace}",
        f"Mode:          {ws.mode}",
        f"Preset:        {ws.preset_name or 'custom template'}",
        f"Instance type: {(ws.resource.instance_type if ws.resource else None) or '-'}",
        f"Runtime:       {description.runtime or '-'}",
        f"State:         {stored.status.state or '-'}",
        f"Created:       {stored.metadata.get('creationTimestamp', '-')}",
    ]
    if stored.deleting:
        lines.append(f"Deleting:      since {stored.metadata.get('deletionTimestamp')}")
    if ws.inference is not None and ws.inference.adapters:
        lines.append("Adapters:")
        for a in ws.inference.adapters:
            src = a.source
            where = (src.image if src else None) or (src.volume if src else None) or "-"
            lines.append(f"  {src.name if src else '?'}: {where} (strength {a.strength_value:g})")
    if ws.tuning is not None and spec is not None:
        lines.append(f"Method:        {ws.tuning.method or 'qlora'}")
    if description.endpoint is not None:
        lines.append(f"Endpoint:      {description.endpoint.url}")
    if description.nodes:
        lines.append(f"Nodes:         {', '.join(n.name for n in description.nodes)}")
    if ws.resource is not None and ws.resource.instance_type:
        lines.append(f"Cost:          {cost.workspace_line(ws, description.nodes)}")
    if description.plan_problem:
        lines.append(f"Problem:       {description.plan_problem}")
    lines += ["", "Conditions:", _indent(conditions_table(stored))]
    lines += [
        "",
        "Events:",
        _indent(events_table(description.events) if description.events else "<none>"),
    ]
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
