"""`nodeclaim`: Karpenter NodeClaims (karpenter.sh/v1), shaped as Kaito's workspace controller
makes them, served by whatever runs Karpenter's NodeClaim lifecycle in the cluster (Azure's
gpu-provisioner, or Karpenter itself).

As Kaito: the fake node pool label `karpenter.sh/nodepool=kaito` (so Karpenter never scales
the claim's pool), `karpenter.sh/do-not-disrupt`, the `sku=gpu:NoSchedule` taint, requirements
on instance type and OS (plus the SKU-name label on Azure and a GPU count on AWS), the storage
request from the preset, and the workspace's labels. Unlike Kaito, a claim's name is a
function of the workspace and the claim's index (Kaito's are random): a controller that died
after creating one finds it again instead of making another. The names keep the form
gpu-provisioner needs (`^[a-z][a-z0-9]{0,11}$`, it names the agent pool after the claim).

`render` and `claim_state` are pure; the class does the I/O through the backend's Kube (its
`request(method, path, body=..., query=...)`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from kaito_jupyter import catalog
from kaito_jupyter.controller.status import NodeReport
from kaito_jupyter.provisioners import agent_pools
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.node_state import node_ready

GROUP = "karpenter.sh"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
PATH = f"/apis/{GROUP}/{VERSION}/nodeclaims"
CRD_NAME = f"nodeclaims.{GROUP}"

LABEL_NODEPOOL = "karpenter.sh/nodepool"
KAITO_NODEPOOL = "kaito"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "kaito-jupyter"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
NODE_IMAGE_FAMILY = "kaito.sh/node-image-family"
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
AZURE_SKU_NAME = "karpenter.azure.com/sku-name"
AWS_GPU_COUNT = "karpenter.k8s.aws/instance-gpu-count"
# Karpenter's message when no offering of the instance type can be launched (Kaito treats it
# as terminal too).
INSTANCE_TYPES_UNAVAILABLE = "all requested instance types were unavailable during launch"
NODE_CLASSES = {
    "azure": ("kaito.sh", "KaitoNodeClass"),
    "aws": ("karpenter.k8s.aws", "EC2NodeClass"),
}
LIFECYCLE = ("Launched", "Registered", "Initialized")


def claim_name(namespace: str, name: str, index: int) -> str:
    digest = hashlib.sha256(f"{namespace}/{name}#{index}".encode()).hexdigest()
    return "kw" + digest[:10]


def workspace_selector(namespace: str, name: str) -> str:
    return ",".join(
        (
            f"{agent_pools.LABEL_WORKSPACE}={name}",
            f"{agent_pools.LABEL_WORKSPACE_NAMESPACE}={namespace}",
            f"{LABEL_MANAGED_BY}={MANAGED_BY}",
        )
    )


def cloud_of(instance_type: str | None, default: str = "azure") -> str:
    sku = catalog.find_sku(instance_type) if instance_type else None
    return sku.cloud if sku else default


def render(
    request: NodeRequest,
    index: int,
    *,
    cloud: str | None = None,
    node_class: str = "default",
    image_family: str = "ubuntu",
) -> dict[str, Any]:
    """The NodeClaim for the `index`th node of `request`. ValueError names a missing field."""
    if not request.instance_type:
        raise ValueError(
            "resource.instanceType is required for the nodeclaim provisioner: Karpenter "
            "launches that instance type"
        )
    cloud = cloud or cloud_of(request.instance_type)
    group, kind = NODE_CLASSES.get(cloud, NODE_CLASSES["azure"])
    labels = {
        LABEL_NODEPOOL: KAITO_NODEPOOL,
        LABEL_MANAGED_BY: MANAGED_BY,
        **agent_pools.node_labels(request),
    }
    requirements = [
        {"key": LABEL_NODEPOOL, "operator": "In", "values": [KAITO_NODEPOOL]},
        {"key": INSTANCE_TYPE, "operator": "In", "values": [request.instance_type]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
    ]
    if cloud == "azure":
        requirements.append(
            {"key": AZURE_SKU_NAME, "operator": "In", "values": [request.instance_type]}
        )
    elif cloud == "aws":
        requirements.append({"key": AWS_GPU_COUNT, "operator": "Gt", "values": ["0"]})
    return {
        "apiVersion": API_VERSION,
        "kind": "NodeClaim",
        "metadata": {
            "name": claim_name(request.namespace, request.name, index),
            "labels": labels,
            "annotations": {DO_NOT_DISRUPT: "true", NODE_IMAGE_FAMILY: image_family},
        },
        "spec": {
            "nodeClassRef": {"group": group, "kind": kind, "name": node_class},
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "requirements": requirements,
            "resources": {"requests": {"storage": f"{agent_pools.os_disk_gib(request)}Gi"}},
        },
    }


def claim_state(claim: dict[str, Any]) -> tuple[bool, str | None, str, str, bool]:
    """(ready, node name, reason, message, permanent) of one NodeClaim, from its status."""
    status = claim.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    node = status.get("nodeName") or None
    ready = conditions.get("Ready", {}).get("status") == "True" or (
        "Ready" not in conditions and node is not None
    )
    if ready:
        return True, node, "NodesReady", "", False
    # The earliest lifecycle step that is not done is where it is stuck (as Kaito reports).
    for step in LIFECYCLE:
        condition = conditions.get(step)
        if condition is None or condition.get("status") == "True":
            continue
        message = condition.get("message") or ""
        if not message:
            continue
        permanent = INSTANCE_TYPES_UNAVAILABLE in message
        return False, node, condition.get("reason") or f"Not{step}", message, permanent
    return False, node, "Provisioning", "", False


class NodeClaimProvisioner:
    name = "nodeclaim"

    def __init__(
        self,
        kube: Any,
        list_nodes: Callable[[], list[dict[str, Any]]] | None = None,
        *,
        cloud: str | None = None,
        node_class: str = "default",
        poll_seconds: float = 5.0,
    ):
        self.kube = kube
        self._list_nodes = list_nodes
        self.cloud = cloud
        self.node_class = node_class
        self.poll_seconds = poll_seconds

    def ensure(self, request: NodeRequest) -> NodeReport:
        try:
            wanted = [
                render(request, i, cloud=self.cloud, node_class=self.node_class)
                for i in range(request.count)
            ]
        except ValueError as exc:
            return NodeReport(
                required=request.count, reason="InvalidResource", message=str(exc), failed=True
            )
        existing = {c["metadata"]["name"]: c for c in self._claims(request)}
        for claim in wanted:
            if claim["metadata"]["name"] not in existing:
                self._create(claim)
        wanted_names = {c["metadata"]["name"] for c in wanted}
        for name, claim in existing.items():
            if name not in wanted_names and not claim["metadata"].get("deletionTimestamp"):
                self._delete(name)  # the workspace asks for fewer nodes now
        return self._report(request, [existing.get(c["metadata"]["name"]) for c in wanted])

    def release(self, request: NodeRequest) -> bool:
        claims = self._claims(request)
        for claim in claims:
            if not claim["metadata"].get("deletionTimestamp"):
                self._delete(claim["metadata"]["name"])
        return not claims

    def collect(self, live: set[tuple[str, str]]) -> list[str]:
        claims = self.kube.request(
            "GET", PATH, query=[("labelSelector", f"{LABEL_MANAGED_BY}={MANAGED_BY}")]
        ).get("items", [])
        removed = []
        for claim in claims:
            labels = claim["metadata"].get("labels") or {}
            owner = (
                labels.get(agent_pools.LABEL_WORKSPACE_NAMESPACE),
                labels.get(agent_pools.LABEL_WORKSPACE),
            )
            if None in owner or owner in live or claim["metadata"].get("deletionTimestamp"):
                continue
            self._delete(claim["metadata"]["name"])
            removed.append(claim["metadata"]["name"])
        return removed

    # -- helpers -------------------------------------------------------------------------------

    def _report(self, request: NodeRequest, claims: list[dict | None]) -> NodeReport:
        nodes = {n["metadata"]["name"]: n for n in self._list_nodes()} if self._list_nodes else {}
        ready: list[str] = []
        stuck: tuple[str, str, bool] | None = None
        for claim in claims:
            if claim is None:
                continue
            is_ready, node, reason, message, permanent = claim_state(claim)
            node_ok = node is not None and (not self._list_nodes or node_ready(nodes.get(node, {})))
            if is_ready and node_ok:
                ready.append(node)
            elif message and (stuck is None or permanent):
                stuck = (reason, f"NodeClaim {claim['metadata']['name']}: {message}", permanent)
        ready.sort()
        if len(ready) >= request.count:
            return NodeReport(required=request.count, ready=tuple(ready), reason="NodesReady")
        if stuck is not None:
            reason, message, permanent = stuck
            if permanent:
                message += (
                    f"; choose another resource.instanceType than {request.instance_type}, or "
                    "check its quota and availability in the cluster's region"
                )
            return NodeReport(
                required=request.count,
                ready=tuple(ready),
                reason=reason,
                message=message,
                failed=permanent,
                retry_after=None if permanent else self.poll_seconds,
            )
        return NodeReport(
            required=request.count,
            ready=tuple(ready),
            reason="Provisioning",
            message=f"waiting for {request.count} NodeClaim(s) of {request.instance_type} "
            f"({len(ready)}/{request.count} nodes ready)",
            retry_after=self.poll_seconds,
        )

    def _claims(self, request: NodeRequest) -> list[dict[str, Any]]:
        selector = workspace_selector(request.namespace, request.name)
        return self.kube.request("GET", PATH, query=[("labelSelector", selector)]).get("items", [])

    def _create(self, claim: dict[str, Any]) -> None:
        try:
            self.kube.request("POST", PATH, body=claim, query=[("fieldManager", MANAGED_BY)])
        except Exception as exc:
            if getattr(exc, "status", None) != 409:  # made by an earlier run: fine
                raise

    def _delete(self, name: str) -> None:
        try:
            self.kube.request("DELETE", f"{PATH}/{name}")
        except Exception as exc:
            if getattr(exc, "status", None) != 404:
                raise


def served(kube: Any) -> bool:
    """Whether the cluster serves karpenter.sh/v1 NodeClaims (the CRD is installed)."""
    try:
        resources = kube.request("GET", f"/apis/{GROUP}/{VERSION}").get("resources") or []
    except Exception as exc:
        if getattr(exc, "status", None) == 404:
            return False
        raise
    return any(r.get("name") == "nodeclaims" for r in resources)
