"""Injected ARM faults reach the SDK as Azure's do: HttpResponseError with ARM's error code,
429s retried after Retry-After, 500s retried and then surfaced."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerservice.models import AgentPool

from kaito_jupyter.provisioners.azure_client import container_service_client


def _pool(vm_size: str = "Standard_NC24ads_A100_v4", count: int = 1) -> AgentPool:
    return AgentPool(count=count, vm_size=vm_size, mode="User", node_taints=["sku=gpu:NoSchedule"])


def _names(settings):
    return settings.azure.resource_group, settings.azure.cluster_name


def test_quota_exceeded_is_a_400_with_the_compute_quota_message(aks, arm, azure_settings):
    rg, cluster = _names(azure_settings)
    arm.faults.add("quota_exceeded", pool="wsquota", limit=24, usage=20)
    with pytest.raises(HttpResponseError) as raised:
        aks.agent_pools.begin_create_or_update(rg, cluster, "wsquota", _pool(count=2))
    error = raised.value
    assert error.status_code == 400
    assert error.error.code == "QuotaExceeded"
    assert "exceeding approved standardNCADSA100v4Family Cores quota" in error.error.message
    assert "Current Limit: 24, Current Usage: 20, Additional Required: 48" in error.error.message
    [entry] = arm.requests("agentPools.createOrUpdate", pool="wsquota")
    assert (entry["status"], entry["fault"], entry["error_code"]) == (
        400,
        "quota_exceeded",
        "QuotaExceeded",
    )


def test_quota_exceeded_during_the_operation_fails_the_poller(aks, arm, azure_settings, testbed):
    rg, cluster = _names(azure_settings)
    arm.faults.add("quota_exceeded", pool="wslate", phase="operation")
    poller = aks.agent_pools.begin_create_or_update(rg, cluster, "wslate", _pool())
    with pytest.raises(HttpResponseError) as raised:
        poller.result()
    assert raised.value.error.code == "QuotaExceeded"
    assert aks.agent_pools.get(rg, cluster, "wslate").provisioning_state == "Failed"
    nodes = testbed.core().list_node(label_selector="kubernetes.azure.com/agentpool=wslate")
    assert nodes.items == []
    aks.agent_pools.begin_delete(rg, cluster, "wslate").result()


def test_invalid_vm_size(aks, arm, azure_settings):
    rg, cluster = _names(azure_settings)
    arm.faults.add("invalid_vm_size", vm_size="Standard_ND96isr_H100_v5")
    with pytest.raises(HttpResponseError) as raised:
        aks.agent_pools.begin_create_or_update(
            rg, cluster, "wsh100", _pool(vm_size="Standard_ND96isr_H100_v5")
        )
    assert raised.value.status_code == 400
    assert raised.value.error.code == "BadRequest"
    assert "The VM size of AgentPoolProfile:wsh100 is not allowed" in raised.value.error.message
    # A size the simulator has never heard of is refused the same way, with no fault set.
    with pytest.raises(HttpResponseError) as unknown:
        aks.agent_pools.begin_create_or_update(rg, cluster, "wsodd", _pool(vm_size="Standard_X1"))
    assert unknown.value.error.code == "BadRequest"


def test_throttling_is_retried_after_retry_after(aks, arm, azure_settings):
    rg, cluster = _names(azure_settings)
    arm.faults.add("throttle", operation="agentPools.get", retry_after=2, times=1)
    pool = aks.agent_pools.get(rg, cluster, "nodepool1")
    assert pool.name == "nodepool1"
    first, second = arm.requests("agentPools.get", pool="nodepool1")[-2:]
    assert (first["status"], first["error_code"]) == (429, "TooManyRequests")
    assert second["status"] == 200
    assert second["time"] - first["time"] >= 2  # the SDK waited as Retry-After asked


def test_server_errors_are_retried_then_surface(arm, azure_settings):
    rg, cluster = _names(azure_settings)
    with container_service_client(
        azure_settings, retry_total=2, retry_backoff_factor=0.05
    ) as client:
        arm.faults.add("server_error", operation="agentPools.list", times=1)
        assert "nodepool1" in {p.name for p in client.agent_pools.list(rg, cluster)}

        arm.faults.add("server_error", operation="agentPools.list", times=None)
        with pytest.raises(HttpResponseError) as raised:
            list(client.agent_pools.list(rg, cluster))
    assert raised.value.status_code == 500
    assert raised.value.error.code == "InternalServerError"
    statuses = [e["status"] for e in arm.requests("agentPools.list")[-3:]]
    assert statuses == [500, 500, 500]  # the first try and two retries


def test_faults_can_be_injected_over_http(arm, azure_settings):
    import requests

    admin = arm.environment()["KAITO_TESTBED_ARM_ADMIN"]
    verify = arm.environment()["KAITO_AZURE_CA_BUNDLE"]
    added = requests.post(
        f"{admin}/faults", json={"kind": "throttle", "retry_after": 1}, verify=verify, timeout=5
    )
    assert added.status_code == 201
    assert [f.kind for f in arm.faults.list()] == ["throttle"]
    assert requests.delete(f"{admin}/faults", verify=verify, timeout=5).status_code == 204
    assert arm.faults.list() == []
