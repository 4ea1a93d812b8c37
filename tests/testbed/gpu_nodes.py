"""KWOK GPU nodes shaped like the nodes of an AKS GPU agent pool.

Labels are the ones AKS puts on a node (instance type, agent pool, accelerator) and the ones
NVIDIA GPU feature discovery adds (product, count, memory in MiB per GPU); capacity carries
`nvidia.com/gpu` as the device plugin advertises it; the taint is the one Kaito's pools use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from tests.testbed.control_plane import KWOK_NODE_ANNOTATION

SKUS_FILE = Path(__file__).resolve().parents[2] / "presets" / "skus.yaml"

GPU_TAINT = {"key": "sku", "value": "gpu", "effect": "NoSchedule"}
# kube-controller-manager taints a node until it reports Ready.
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
# AKS's default for kubenet and Azure CNI overlay clusters.
MAX_PODS = 110
# The pool a `--gpu-nodes` spec lands in unless it names one with `agentpool=...`.
DEFAULT_POOL = "gpu"


@cache
def skus() -> dict[str, dict]:
    """Every SKU in presets/skus.yaml, across clouds, by instance type."""
    table = yaml.safe_load(SKUS_FILE.read_text())
    return {name: spec for cloud in table.values() for name, spec in cloud.items()}


def sku(instance_type: str) -> dict:
    try:
        return skus()[instance_type]
    except KeyError:
        raise ValueError(
            f"unknown SKU {instance_type!r}: presets/skus.yaml knows {', '.join(sorted(skus()))}"
        ) from None


@dataclass
class NodeGroup:
    """N nodes of one SKU in one agent pool, with extra labels."""

    instance_type: str
    count: int
    pool: str = DEFAULT_POOL
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict] = field(default_factory=lambda: [dict(GPU_TAINT)])

    def node_names(self) -> list[str]:
        return [node_name(self.pool, i) for i in range(self.count)]

    def nodes(self, subscription: str = "00000000-0000-0000-0000-000000000000") -> list[dict]:
        return [
            gpu_node(
                name, self.instance_type, self.pool, self.labels, self.taints, index, subscription
            )
            for index, name in enumerate(self.node_names())
        ]


def is_ready(node) -> bool:
    """Ready, and past the node lifecycle controller's not-ready taint: pods can land on it.

    `node` is a kubernetes.client V1Node.
    """
    conditions = node.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    tainted = any(t.key == NOT_READY_TAINT for t in node.spec.taints or [])
    return ready and not tainted


def node_name(pool: str, index: int) -> str:
    # AKS names VMSS nodes aks-<pool>-<8 digits>-vmss<6 digits>.
    return f"aks-{pool}-{_pool_id(pool)}-vmss{index:06d}"


def parse_group(spec: str) -> NodeGroup:
    """`SKU=N[:label=value,...]`, as `--gpu-nodes` takes it; `agentpool=` names the pool."""
    head, _, label_part = spec.partition(":")
    instance_type, _, count = head.partition("=")
    if not count.isdigit():
        raise ValueError(f"--gpu-nodes {spec!r}: expected SKU=N[:label=value,...]")
    sku(instance_type)
    labels = {}
    for item in filter(None, label_part.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"--gpu-nodes {spec!r}: label {item!r} is not key=value")
        labels[key] = value
    pool = labels.pop("agentpool", None) or labels.pop("kubernetes.azure.com/agentpool", None)
    return NodeGroup(instance_type, int(count), pool or DEFAULT_POOL, labels)


def gpu_node(
    name: str,
    instance_type: str,
    pool: str,
    labels: dict[str, str] | None = None,
    taints: list[dict] | None = None,
    index: int = 0,
    subscription: str = "00000000-0000-0000-0000-000000000000",
    resource_group: str = "MC_testbed",
) -> dict:
    """A Node object for one VM of a GPU agent pool; KWOK manages it once created."""
    spec = sku(instance_type)
    gpus = int(spec["gpus"])
    gpu_labels = {
        "kubernetes.azure.com/mode": "user",
        "kubernetes.azure.com/accelerator": "nvidia",
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": spec["gpu_product"],
        "nvidia.com/gpu.count": str(gpus),
        # GPU feature discovery reports one GPU's memory, in MiB.
        "nvidia.com/gpu.memory": str(int(spec["gpu_memory_gib"]) * 1024),
        **(labels or {}),
    }
    resources = _resources(spec["vcpus"], spec["memory_gib"])
    resources["nvidia.com/gpu"] = str(gpus)
    taints = taints if taints is not None else [GPU_TAINT]
    return _aks_node(
        name,
        instance_type,
        pool,
        gpu_labels,
        resources,
        taints,
        index,
        subscription,
        resource_group,
    )


# The system pool's VM size in the simulated cluster, and its shape.
SYSTEM_VM_SIZE = "Standard_D4s_v3"
SYSTEM_VM = {"vcpus": 4, "memory_gib": 16}


def system_node(
    name: str,
    pool: str = "nodepool1",
    index: int = 0,
    subscription: str = "00000000-0000-0000-0000-000000000000",
    resource_group: str = "MC_testbed",
) -> dict:
    """A CPU node of the cluster's system pool: no GPU, no taint, where ordinary pods go."""
    resources = _resources(SYSTEM_VM["vcpus"], SYSTEM_VM["memory_gib"])
    labels = {"kubernetes.azure.com/mode": "system"}
    return _aks_node(
        name, SYSTEM_VM_SIZE, pool, labels, resources, [], index, subscription, resource_group
    )


def _resources(vcpus, memory_gib) -> dict[str, str]:
    return {
        "cpu": str(vcpus),
        "memory": f"{memory_gib}Gi",
        "pods": str(MAX_PODS),
        "ephemeral-storage": "128Gi",
    }


def _aks_node(
    name: str,
    instance_type: str,
    pool: str,
    labels: dict[str, str],
    resources: dict[str, str],
    taints: list[dict],
    index: int,
    subscription: str,
    resource_group: str,
) -> dict:
    key, value = KWOK_NODE_ANNOTATION
    all_labels = {
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": instance_type,
        "beta.kubernetes.io/instance-type": instance_type,
        "kubernetes.azure.com/agentpool": pool,
        "agentpool": pool,
        "type": "kwok",
        **labels,
    }
    vmss = f"aks-{pool}-{_pool_id(pool)}-vmss"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels, "annotations": {key: value}},
        "spec": {
            "taints": [dict(t) for t in taints],
            "providerID": (
                f"azure:///subscriptions/{subscription}/resourceGroups/{resource_group}"
                f"/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{index}"
            ),
        },
        # Node status survives create; KWOK's node-ready stage keeps capacity and allocatable.
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def _pool_id(pool: str) -> str:
    # A stable 8-digit id per pool name (AKS derives one per cluster); hash() is salted per
    # process, and a pool must map to the same node names in every run.
    value = 0
    for char in pool:
        value = (value * 131 + ord(char)) % 10**8
    return f"{value:08d}"
