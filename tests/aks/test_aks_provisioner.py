"""The `aks` provisioner (kaito_jupyter/provisioners/aks.py) through the real Azure SDK against
the simulated ARM, whose agent pools become KWOK nodes in the bed's real Kubernetes.

Every call to the provisioner returns at once; `drive` calls it again as the reconciler
would, after the report's retry_after.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid

import pytest
from kubernetes.client import CoreV1Api

from kaito_jupyter.provisioners import agent_pools, selection
from kaito_jupyter.provisioners.aks import AksProvisioner
from kaito_jupyter.provisioners.azure_client import write_cluster_user_kubeconfig
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.collector import Collector
from kaito_jupyter.provisioners.pacing import Pacer

SKU = "Standard_NC6s_v3"


def node_lister(api):
    """The cluster's Nodes as the API server serves them (dicts), as the controller's node
    informer hands them to a provisioner."""

    def list_nodes() -> list[dict]:
        response = CoreV1Api(api).list_node(_preload_content=False)
        return json.loads(response.data)["items"]

    return list_nodes


@pytest.fixture
def nodes_api(testbed):
    api = testbed.new_api_client()
    try:
        yield node_lister(api)
    finally:
        api.close()


@pytest.fixture
def provisioner(azure_settings, nodes_api):
    # A quick backoff and a generous budget: the tests wait for ARM, not for the pacer.
    pacer = Pacer(calls_per_minute=600, base_delay=0.2, max_delay=2.0)
    return AksProvisioner(azure_settings, nodes_api, pacer=pacer, poll_seconds=0.5)


def _request(name: str, count: int = 1, sku: str = SKU, **extra) -> NodeRequest:
    return NodeRequest(
        namespace="default",
        name=name,
        uid=str(uuid.uuid4()),
        instance_type=sku,
        count=count,
        labels={"apps": name},
        os_disk_gib=extra.pop("os_disk_gib", 100),
        **extra,
    )


def settled(report) -> bool:
    # The pool's operation is over and all its nodes are Ready.
    return report.reason == "NodesReady" and report.satisfied


def drive(prov, request, until, *, limit: float = 90):
    """ensure() again and again, as the reconciler would, until `until(report)`."""
    deadline = time.monotonic() + limit
    reports = []
    while True:
        report = prov.ensure(request)
        reports.append(report)
        if until(report):
            return reports
        if time.monotonic() > deadline:
            raise AssertionError(f"never got there; the last reports: {reports[-3:]}")
        time.sleep(min(report.retry_after or 0.5, 2.0))


def release(prov, request, *, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not prov.release(request):
        assert time.monotonic() < deadline, "the pool was never deleted"
        time.sleep(0.5)


def _pool_nodes(testbed, pool: str):
    return testbed.core().list_node(label_selector=f"kubernetes.azure.com/agentpool={pool}").items


def test_a_workspace_gets_its_pool_and_ready_nodes_then_delete_removes_them(
    provisioner, arm, testbed
):
    request = _request("phi-3-aks", count=2)
    pool = agent_pools.pool_name("default", "phi-3-aks")
    arm.faults.add("slow_operation", pool=pool, seconds=2)

    first = provisioner.ensure(request)
    assert first.reason == "Provisioning" and not first.satisfied and not first.failed
    assert first.message.startswith(f"provisioning agent pool {pool} (0/2 nodes ready")
    reports = drive(provisioner, request, settled)
    assert any(r.reason == "Provisioning" and "nodes ready" in r.message for r in reports)
    ready = reports[-1]
    assert ready.reason == "NodesReady" and len(ready.ready) == 2

    nodes = _pool_nodes(testbed, pool)
    assert sorted(n.metadata.name for n in nodes) == list(ready.ready)
    for node in nodes:
        labels = node.metadata.labels
        assert labels["kaito.sh/workspace"] == "phi-3-aks"
        assert labels["kaito.sh/workspacenamespace"] == "default"
        assert labels["apps"] == "phi-3-aks"
        assert labels["node.kubernetes.io/instance-type"] == SKU
        assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
            ("sku", "gpu", "NoSchedule")
        ]

    [put] = arm.requests("agentPools.createOrUpdate", pool=pool)
    body = put["body"]["properties"]
    assert body["vmSize"] == SKU and body["count"] == 2 and body["mode"] == "User"
    assert body["osDiskSizeGB"] == 100
    assert body["tags"]["kaito-workspace"] == "phi-3-aks"
    assert body["tags"]["kaito-managed-by"] == "kaito-jupyter"

    # Ready is steady: more reconciles make no more writes.
    provisioner.ensure(request)
    assert len(arm.requests("agentPools.createOrUpdate", pool=pool)) == 1

    release(provisioner, request)
    assert _pool_nodes(testbed, pool) == []
    assert pool not in {p["name"] for p in arm.pools.list()}
    assert [e["status"] for e in arm.requests("agentPools.delete", pool=pool)][:1] == [202]


def test_quota_error_is_an_actionable_condition_and_creates_nothing(provisioner, arm, testbed):
    request = _request("big-model", count=2, sku="Standard_NC24ads_A100_v4")
    pool = agent_pools.pool_name("default", "big-model")
    arm.faults.add("quota_exceeded", pool=pool, limit=24, usage=20)

    report = provisioner.ensure(request)
    assert report.failed and report.reason == "QuotaExceeded"
    message = report.message
    assert "standardNCADSA100v4Family" in message
    assert "eastus" in message
    assert "needs 48 more vCPUs, the limit is 24, 20 are in use" in message
    assert "Request at least 68 vCPUs of standardNCADSA100v4Family in eastus" in message
    assert "resource.instanceType" in message
    assert pool not in {p["name"] for p in arm.pools.list()}
    assert _pool_nodes(testbed, pool) == []

    # Held: the next reconciles show the same failure without calling ARM again.
    calls = len(arm.requests(pool=pool))
    again = provisioner.ensure(request)
    assert (again.reason, again.failed, again.message) == ("QuotaExceeded", True, message)
    assert again.retry_after and again.retry_after > 60
    assert len(arm.requests(pool=pool)) == calls
    # The hold delays creates, never the workspace's deletion.
    assert provisioner.release(request) is True


def test_quota_error_found_by_the_operation_removes_the_failed_pool(provisioner, arm, testbed):
    request = _request("late-quota", sku="Standard_NC24ads_A100_v4")
    pool = agent_pools.pool_name("default", "late-quota")
    arm.faults.add("quota_exceeded", pool=pool, phase="operation", limit=0, usage=0)

    reports = drive(provisioner, request, lambda r: r.failed)
    assert reports[0].reason == "Provisioning"
    assert reports[-1].reason == "QuotaExceeded"
    assert "standardNCADSA100v4Family vCPU quota in eastus" in reports[-1].message
    # Nothing half-created: the Failed pool AKS leaves behind is deleted.
    deadline = time.monotonic() + 30
    while pool in {p["name"] for p in arm.pools.list()}:
        assert time.monotonic() < deadline, "the failed pool was left behind"
        time.sleep(0.3)
    assert [e["status"] for e in arm.requests("agentPools.delete", pool=pool)] == [202]
    assert _pool_nodes(testbed, pool) == []


def test_an_unavailable_vm_size_says_to_pick_another(provisioner, arm):
    request = _request("h100", sku="Standard_ND96isr_H100_v5")
    arm.faults.add("invalid_vm_size", vm_size="Standard_ND96isr_H100_v5")
    report = provisioner.ensure(request)
    assert report.failed and report.reason == "InstanceTypeUnavailable"
    assert "Standard_ND96isr_H100_v5 is not available to this subscription in eastus" in (
        report.message
    )
    assert "az vm list-skus" in report.message and "resource.instanceType" in report.message


def test_throttling_holds_every_call_until_retry_after(provisioner, arm, testbed):
    request = _request("throttled")
    pool = agent_pools.pool_name("default", "throttled")
    arm.faults.add("throttle", operation="agentPools.get", pool=pool, retry_after=2, times=1)

    report = provisioner.ensure(request)
    assert report.reason == "ArmThrottled" and not report.failed
    assert report.retry_after >= 2
    assert "retrying after 2s" in report.message
    # Inside the Retry-After window nothing reaches ARM, for any workspace.
    provisioner.ensure(request)
    provisioner.ensure(_request("bystander"))
    assert len(arm.requests("agentPools.get", pool=pool)) == 1
    assert arm.requests(pool=agent_pools.pool_name("default", "bystander")) == []

    drive(provisioner, request, settled)
    first, second = arm.requests("agentPools.get", pool=pool)[:2]
    assert first["status"] == 429 and second["status"] == 404
    assert second["time"] - first["time"] >= 2
    release(provisioner, request)


def test_server_errors_back_off_and_recover(provisioner, arm, testbed):
    request = _request("flaky")
    pool = agent_pools.pool_name("default", "flaky")
    arm.faults.add("server_error", operation="agentPools.createOrUpdate", pool=pool, times=2)

    first = provisioner.ensure(request)
    assert first.reason == "ArmUnavailable" and not first.failed
    assert "retrying with backoff" in first.message
    drive(provisioner, request, settled)
    puts = [e["status"] for e in arm.requests("agentPools.createOrUpdate", pool=pool)]
    assert puts == [500, 500, 201]
    assert provisioner.pacer.attempts(pool) == 0  # the backoff is reset by the success
    release(provisioner, request)


def test_a_restarted_controller_finds_its_pool_instead_of_making_another(
    provisioner, azure_settings, arm, nodes_api
):
    request = _request("restarted")
    pool = agent_pools.pool_name("default", "restarted")
    arm.faults.add("slow_operation", pool=pool, seconds=2)
    assert provisioner.ensure(request).reason == "Provisioning"

    # A new process: no memory of the create.
    pacer = Pacer(calls_per_minute=600, base_delay=0.2)
    fresh = AksProvisioner(azure_settings, nodes_api, pacer=pacer, poll_seconds=0.5)
    drive(fresh, request, settled)
    assert len(arm.requests("agentPools.createOrUpdate", pool=pool)) == 1
    release(fresh, request)


def test_scaling_the_workspace_scales_its_pool(provisioner, arm, testbed):
    request = _request("scaled", count=1)
    pool = agent_pools.pool_name("default", "scaled")
    drive(provisioner, request, settled)
    bigger = _request("scaled", count=2)
    reports = drive(provisioner, bigger, settled)
    assert len(reports[-1].ready) == 2 and len(_pool_nodes(testbed, pool)) == 2
    counts = [e["body"]["properties"]["count"] for e in arm.requests("agentPools.createOrUpdate")]
    assert counts[-2:] == [1, 2]
    release(provisioner, bigger)


def test_a_pool_with_another_owner_is_never_touched(provisioner, arm, azure_settings, aks):
    from azure.mgmt.containerservice.models import AgentPool

    request = _request("squatted")
    pool = agent_pools.pool_name("default", "squatted")
    rg, cluster = azure_settings.azure.resource_group, azure_settings.azure.cluster_name
    aks.agent_pools.begin_create_or_update(
        rg, cluster, pool, AgentPool(count=1, vm_size=SKU, mode="User")
    ).result()
    report = provisioner.ensure(request)
    assert report.failed and report.reason == "AgentPoolNameTaken"
    assert provisioner.release(request) is True  # nothing of this workspace's to delete
    assert provisioner.collect(set()) == []
    assert pool in {p["name"] for p in arm.pools.list()}
    assert arm.requests("agentPools.delete", pool=pool) == []
    aks.agent_pools.begin_delete(rg, cluster, pool).result()


def test_orphan_pools_are_collected(provisioner, arm, testbed):
    kept, orphan = _request("kept"), _request("orphan")
    for request in (kept, orphan):
        drive(provisioner, request, settled)
    provisioner.collect_grace_seconds = 0
    removed = provisioner.collect({("default", "kept")})
    orphan_pool = agent_pools.pool_name("default", "orphan")
    assert removed == [orphan_pool]
    deadline = time.monotonic() + 30
    while _pool_nodes(testbed, orphan_pool):
        assert time.monotonic() < deadline, "the orphan's nodes were never removed"
        time.sleep(0.3)
    names = {p["name"] for p in arm.pools.list()}
    assert agent_pools.pool_name("default", "kept") in names and "nodepool1" in names
    # A pool younger than the grace period is not an orphan yet (its workspace may be new).
    provisioner.collect_grace_seconds = 3600
    assert provisioner.collect(set()) == []
    release(provisioner, kept)


def test_connect_by_aks_coordinates_alone(azure_settings, testbed, tmp_path):
    path = write_cluster_user_kubeconfig(azure_settings, str(tmp_path / "aks.kubeconfig"))
    assert (tmp_path / "aks.kubeconfig").stat().st_mode & 0o777 == 0o600
    from kubernetes import config

    api = config.new_client_from_config(config_file=path)
    try:
        names = {n["metadata"]["name"] for n in node_lister(api)()}
    finally:
        api.close()
    assert any(name.startswith("aks-nodepool1-") for name in names)


def test_auto_picks_aks_for_the_configured_cluster_only(azure_settings, nodes_api):
    assert azure_settings.provisioner == "aks"  # what `run --arm` exports
    auto = dataclasses.replace(azure_settings, provisioner="auto")
    assert selection.choose(auto, None, nodes_api) == "aks"
    other = dataclasses.replace(
        auto, azure=dataclasses.replace(auto.azure, cluster_name="someone-elses")
    )
    assert selection.choose(other, None, nodes_api) == "byo"


def test_the_collector_sweeps_only_while_leading_and_synced(provisioner, arm):
    orphan = _request("swept")
    drive(provisioner, orphan, settled)
    provisioner.collect_grace_seconds = 0
    leading, synced = [False], [False]
    collector = Collector(provisioner, set, lambda: leading[0], synced=lambda: synced[0])
    assert collector.collect_once() == []  # a follower never decides what is an orphan
    leading[0] = True
    assert collector.collect_once() == []  # nor a leader whose informer has not synced
    synced[0] = True
    assert collector.collect_once() == [agent_pools.pool_name("default", "swept")]
    assert collector.removed == [agent_pools.pool_name("default", "swept")]
    release(provisioner, orphan)
