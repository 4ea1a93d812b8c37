"""`byo`: the nodes already in the cluster that match the workspace's label selector (or its
preferredNodes), as with Kaito on a cluster whose GPU nodes someone else made. Nothing is
created, so there is nothing to release or collect."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kaito_jupyter.controller.status import NodeReport
from kaito_jupyter.provisioners.agent_pools import LABEL_WORKSPACE, LABEL_WORKSPACE_NAMESPACE
from kaito_jupyter.provisioners.base import NodeRequest

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


def _ready(node: dict[str, Any]) -> bool:
    conds = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
    spec = node.get("spec") or {}
    cordoned = bool(spec.get("unschedulable"))
    not_ready_taint = any(
        t.get("key") in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
        for t in spec.get("taints") or []
    )
    return (
        ready
        and not cordoned
        and not not_ready_taint
        and not (node.get("metadata") or {}).get("deletionTimestamp")
    )


def made_for_another(labels: dict[str, str], request: NodeRequest) -> bool:
    """A node a provisioner made for another workspace (its agent pool's, its NodeClaim's):
    never ours to schedule on, even when our selector matches its labels (it carries the
    other workspace's selector labels too)."""
    owner = labels.get(LABEL_WORKSPACE)
    if owner is None:
        return False
    return (owner, labels.get(LABEL_WORKSPACE_NAMESPACE)) != (request.name, request.namespace)


def matches(node: dict[str, Any], request: NodeRequest) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in request.labels.items()):
        return False
    if made_for_another(labels, request):
        return False
    if (
        request.instance_type
        and labels.get(INSTANCE_TYPE_LABEL, "").lower() != request.instance_type.lower()
    ):
        return False
    return bool(request.labels or request.instance_type or request.preferred_nodes)


class ByoProvisioner:
    """Reads nodes through `list_nodes` (the backend's node informer, or a list call)."""

    name = "byo"

    def __init__(self, list_nodes: Callable[[], list[dict[str, Any]]]):
        self.list_nodes = list_nodes

    def ensure(self, request: NodeRequest) -> NodeReport:
        nodes = self.list_nodes()
        preferred = set(request.preferred_nodes)
        candidates = [n for n in nodes if matches(n, request) or n["metadata"]["name"] in preferred]
        ready = sorted(n["metadata"]["name"] for n in candidates if _ready(n))
        # Preferred nodes first, then by name: stable, so the workload does not move around.
        ready.sort(key=lambda name: (name not in preferred, name))
        chosen = tuple(ready[: request.count])
        if len(chosen) >= request.count:
            return NodeReport(required=request.count, ready=chosen, reason="NodesReady")
        selector = ", ".join(f"{k}={v}" for k, v in sorted(request.labels.items())) or "(none)"
        kind = f" of instance type {request.instance_type}" if request.instance_type else ""
        message = (
            f"{len(chosen)} of {request.count} node(s){kind} matching the label selector {selector} "
            f"are ready ({len(candidates)} match); the byo provisioner creates no nodes: label "
            f"existing GPU nodes to match, or choose the aks or nodeclaim provisioner"
        )
        return NodeReport(
            required=request.count, ready=chosen, reason="NoMatchingNodes", message=message
        )

    def release(self, request: NodeRequest) -> bool:
        return True

    def collect(self, live: set[tuple[str, str]]) -> list[str]:
        return []
