"""Whether a Node (a dict, as the API server serves it) can take a workspace's pods."""

from __future__ import annotations

from typing import Any

NOT_READY_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})


def node_ready(node: dict[str, Any]) -> bool:
    """Ready, schedulable, not being deleted, past the node lifecycle controller's taints."""
    metadata = node.get("metadata") or {}
    spec = node.get("spec") or {}
    if metadata.get("deletionTimestamp") or spec.get("unschedulable"):
        return False
    conditions = (node.get("status") or {}).get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        return False
    return not any(t.get("key") in NOT_READY_TAINTS for t in spec.get("taints") or [])


def labelled(nodes: list[dict[str, Any]], key: str, value: str) -> list[dict[str, Any]]:
    return [n for n in nodes if ((n.get("metadata") or {}).get("labels") or {}).get(key) == value]
