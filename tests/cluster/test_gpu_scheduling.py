"""KWOK GPU nodes look like AKS GPU nodes, and kube-scheduler really places pods on them."""

from __future__ import annotations

import time

from kubernetes import client

from tests.testbed.bed import NodeGroup

SKU = "Standard_NC24ads_A100_v4"
GPU_TOLERATION = {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}


def _wait(condition, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_gpu_node_has_the_labels_capacity_and_taint_of_an_aks_gpu_node(testbed):
    [name] = testbed.add_gpu_nodes(NodeGroup(SKU, 1, pool="labels"))
    node = testbed.core().read_node(name)
    labels = node.metadata.labels
    assert labels["node.kubernetes.io/instance-type"] == SKU
    assert labels["kubernetes.azure.com/agentpool"] == "labels"
    assert labels["agentpool"] == "labels"
    assert labels["kubernetes.azure.com/accelerator"] == "nvidia"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-80GB-PCIe"
    assert labels["nvidia.com/gpu.count"] == "1"
    assert labels["nvidia.com/gpu.memory"] == str(80 * 1024)
    assert node.status.capacity["nvidia.com/gpu"] == "1"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    assert node.status.allocatable["cpu"] == "24"
    assert node.status.allocatable["memory"] == "220Gi"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints or []] == [
        ("sku", "gpu", "NoSchedule")
    ]
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True"


def _gpu_deployment(name: str, pool: str, tolerate: bool = True) -> dict:
    pod_spec = {
        "nodeSelector": {"kubernetes.azure.com/agentpool": pool},
        "containers": [
            {
                "name": "inference",
                "image": "mcr.microsoft.com/aks/kaito/kaito-base:0.0.8",
                "resources": {
                    "requests": {"nvidia.com/gpu": "1"},
                    "limits": {"nvidia.com/gpu": "1"},
                },
            }
        ],
    }
    if tolerate:
        pod_spec["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
        },
    }


def test_deployment_asking_for_a_gpu_is_scheduled_onto_a_gpu_node_and_becomes_ready(testbed):
    nodes = testbed.add_gpu_nodes(NodeGroup("Standard_NC6s_v3", 1, pool="deploy"))
    apps = client.AppsV1Api(testbed.api_client)
    apps.create_namespaced_deployment("default", _gpu_deployment("gpu-smoke", "deploy"))

    def ready():
        status = apps.read_namespaced_deployment_status("gpu-smoke", "default").status
        return (status.ready_replicas or 0) == 1

    _wait(ready, what="deployment gpu-smoke Ready")
    [pod] = testbed.core().list_namespaced_pod("default", label_selector="app=gpu-smoke").items
    assert pod.spec.node_name == nodes[0]
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip.startswith("127.")


def test_pods_without_the_toleration_or_beyond_the_gpu_count_stay_pending(testbed):
    testbed.add_gpu_nodes(NodeGroup("Standard_NC6s_v3", 1, pool="pending"))
    apps = client.AppsV1Api(testbed.api_client)
    core = testbed.core()
    apps.create_namespaced_deployment(
        "default", _gpu_deployment("no-toleration", "pending", tolerate=False)
    )
    two = _gpu_deployment("two-gpus-one-node", "pending")
    two["spec"]["replicas"] = 2
    apps.create_namespaced_deployment("default", two)

    def unschedulable(app: str, expected: int):
        pods = core.list_namespaced_pod("default", label_selector=f"app={app}").items
        stuck = [
            p
            for p in pods
            if any(
                c.type == "PodScheduled" and c.reason == "Unschedulable"
                for c in p.status.conditions or []
            )
        ]
        return stuck if len(stuck) == expected else None

    [stuck] = _wait(lambda: unschedulable("no-toleration", 1), what="an Unschedulable pod")
    message = next(c.message for c in stuck.status.conditions if c.type == "PodScheduled")
    assert "untolerated taint" in message
    # One node with one GPU: the second replica of the same deployment cannot fit.
    [stuck] = _wait(lambda: unschedulable("two-gpus-one-node", 1), what="a pod short of GPUs")
    message = next(c.message for c in stuck.status.conditions if c.type == "PodScheduled")
    assert "Insufficient nvidia.com/gpu" in message
