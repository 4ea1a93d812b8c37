"""The real azure-mgmt-containerservice client drives the simulated ARM: agent pools are
created, polled, read, listed and deleted, and their nodes come and go in the bed."""

from __future__ import annotations

import base64
import time

import yaml
from azure.mgmt.containerservice.models import AgentPool

SKU = "Standard_NC6s_v3"


def _pool(count: int = 1, workspace: str = "ws") -> AgentPool:
    return AgentPool(
        count=count,
        vm_size=SKU,
        mode="User",
        os_type="Linux",
        node_labels={"kaito.sh/workspace": workspace},
        node_taints=["sku=gpu:NoSchedule"],
    )


def _pool_nodes(testbed, pool: str) -> list:
    selector = f"kubernetes.azure.com/agentpool={pool}"
    return testbed.core().list_node(label_selector=selector).items


def test_create_get_list_delete_an_agent_pool(aks, arm, azure_settings, testbed):
    rg, cluster = azure_settings.azure.resource_group, azure_settings.azure.cluster_name
    poller = aks.agent_pools.begin_create_or_update(rg, cluster, "wsphi", _pool(2, "phi"))
    assert not poller.done()
    assert aks.agent_pools.get(rg, cluster, "wsphi").provisioning_state == "Creating"
    created = poller.result()
    assert created.provisioning_state == "Succeeded"
    assert created.vm_size == SKU and created.count == 2

    nodes = _pool_nodes(testbed, "wsphi")
    assert len(nodes) == 2
    for node in nodes:
        assert node.metadata.labels["kaito.sh/workspace"] == "phi"
        assert node.metadata.labels["node.kubernetes.io/instance-type"] == SKU
        assert node.metadata.labels["nvidia.com/gpu.product"] == "Tesla-V100-PCIE-16GB"
        assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
            ("sku", "gpu", "NoSchedule")
        ]
        assert node.status.capacity["nvidia.com/gpu"] == "1"
    testbed.wait_nodes_ready([n.metadata.name for n in nodes])

    assert aks.agent_pools.get(rg, cluster, "wsphi").provisioning_state == "Succeeded"
    listed = {p.name: p for p in aks.agent_pools.list(rg, cluster)}
    assert listed["wsphi"].node_labels == {"kaito.sh/workspace": "phi"}
    assert listed["nodepool1"].mode == "System"  # every AKS cluster has its system pool

    aks.agent_pools.begin_delete(rg, cluster, "wsphi").result()
    assert _pool_nodes(testbed, "wsphi") == []
    assert "wsphi" not in {p.name for p in aks.agent_pools.list(rg, cluster)}

    puts = arm.requests("agentPools.createOrUpdate", pool="wsphi")
    assert [e["status"] for e in puts] == [201]
    assert puts[0]["api_version"] == aks._config.api_version
    assert puts[0]["body"]["properties"]["nodeTaints"] == ["sku=gpu:NoSchedule"]
    assert arm.requests("operations.get"), "the SDK polled the Azure-AsyncOperation URL"
    assert [e["status"] for e in arm.requests("agentPools.delete", pool="wsphi")] == [202]


def test_scaling_a_pool_adds_and_removes_nodes(aks, azure_settings, testbed):
    rg, cluster = azure_settings.azure.resource_group, azure_settings.azure.cluster_name
    aks.agent_pools.begin_create_or_update(rg, cluster, "wsscale", _pool(1)).result()
    assert len(_pool_nodes(testbed, "wsscale")) == 1
    grown = aks.agent_pools.begin_create_or_update(rg, cluster, "wsscale", _pool(3)).result()
    assert grown.count == 3
    assert len(_pool_nodes(testbed, "wsscale")) == 3
    aks.agent_pools.begin_create_or_update(rg, cluster, "wsscale", _pool(1)).result()
    assert len(_pool_nodes(testbed, "wsscale")) == 1
    aks.agent_pools.begin_delete(rg, cluster, "wsscale").result()
    assert _pool_nodes(testbed, "wsscale") == []


def test_managed_cluster_and_its_user_kubeconfig(aks, azure_settings, testbed):
    rg, cluster = azure_settings.azure.resource_group, azure_settings.azure.cluster_name
    managed = aks.managed_clusters.get(rg, cluster)
    assert managed.provisioning_state == "Succeeded"
    assert managed.kubernetes_version == "1.37.2"
    assert "nodepool1" in {p.name for p in managed.agent_pool_profiles}

    credentials = aks.managed_clusters.list_cluster_user_credentials(rg, cluster)
    [kubeconfig] = credentials.kubeconfigs
    value = kubeconfig.value
    text = value.decode() if isinstance(value, (bytes, bytearray)) else base64.b64decode(value)
    server = yaml.safe_load(text)["clusters"][0]["cluster"]["server"]
    assert server == testbed.endpoints.server


def test_a_slow_operation_stays_in_progress_until_it_is_done(aks, arm, azure_settings):
    rg, cluster = azure_settings.azure.resource_group, azure_settings.azure.cluster_name
    arm.faults.add("slow_operation", pool="wsslow", seconds=4)
    started = time.monotonic()
    poller = aks.agent_pools.begin_create_or_update(rg, cluster, "wsslow", _pool(1))
    time.sleep(1.5)
    assert not poller.done()
    assert aks.agent_pools.get(rg, cluster, "wsslow").provisioning_state == "Creating"
    assert poller.result().provisioning_state == "Succeeded"
    assert time.monotonic() - started >= 4
    aks.agent_pools.begin_delete(rg, cluster, "wsslow").result()
