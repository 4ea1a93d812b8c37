"""End to end on the simulated AKS: Kaito's README inference workspace, verbatim, through the
real workspace controller with the `aks` provisioner. Its agent pool is created through the
Azure SDK, the pool's KWOK nodes join the bed, kube-scheduler puts the workspace's pod on one
of them; deleting the workspace deletes the pool (the finalizer waits for it)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml

from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend
from kaito_jupyter.backends.kubernetes.controller import Controller
from kaito_jupyter.backends.kubernetes.install import install
from kaito_jupyter.backends.kubernetes.kube import NODE, POD, WORKSPACE, Kube
from kaito_jupyter.controller.plan import FINALIZER
from kaito_jupyter.provisioners import agent_pools
from kaito_jupyter.provisioners.aks import AksProvisioner
from kaito_jupyter.provisioners.base import NodeRequest
from kaito_jupyter.provisioners.pacing import Pacer
from tests.cluster.conftest import condition, new_namespace, settings_for, wait_for

WORKSPACES = Path(__file__).resolve().parents[2] / "notebooks" / "workspaces"
NAME = "workspace-phi-3-mini"


@pytest.fixture
def kube(testbed):
    k = Kube(str(testbed.kubeconfig))
    install(k)
    yield k
    k.close()


def aks_controller_for(kube, azure_settings, namespace, lease_name, **options):
    def provisioner(list_nodes):
        pacer = Pacer(calls_per_minute=600, base_delay=0.2, max_delay=2.0)
        return AksProvisioner(azure_settings, list_nodes, pacer=pacer, poll_seconds=0.5)

    return Controller(
        kube,
        provisioner,
        namespace=namespace,
        lease_name=lease_name,
        lease_duration=4.0,
        renew_deadline=3.0,
        retry_period=0.5,
        **options,
    )


@pytest.fixture
def aks_controller(kube, azure_settings, arm):
    """A controller of its own (namespace `solo-*`, its own Lease) on the aks provisioner."""
    namespace = new_namespace(kube, "solo-aks")
    lease = f"kaito-aks-{uuid.uuid4().hex[:6]}"
    controller = aks_controller_for(kube, azure_settings, namespace, lease)
    controller.start()
    assert controller.elector.leading.wait(30), "the controller never took its Lease"
    try:
        yield controller, namespace
    finally:
        controller.stop()


def test_readme_workspace_gets_an_agent_pool_runs_on_it_and_deleting_removes_it(
    kube, aks_controller, testbed, arm
):
    controller, namespace = aks_controller
    backend = KubernetesBackend(settings_for(testbed, namespace), kube=kube)
    doc = yaml.safe_load((WORKSPACES / "inference-phi-3.yaml").read_text())
    assert doc["resource"]["instanceType"] == "Standard_NC6s_v3"
    pool = agent_pools.pool_name(namespace, NAME)
    arm.faults.add("slow_operation", pool=pool, seconds=3)
    backend.apply([doc])

    provisioning = wait_for(
        kube,
        WORKSPACE,
        namespace,
        lambda objs: (
            NAME in objs
            and any(
                c["type"] == "ResourceReady" and c["reason"] == "Provisioning"
                for c in objs[NAME].get("status", {}).get("conditions", [])
            )
            and objs[NAME]
        ),
        what="ResourceReady=False Provisioning",
    )
    [resource] = [c for c in provisioning["status"]["conditions"] if c["type"] == "ResourceReady"]
    assert resource["message"].startswith(f"provisioning agent pool {pool} (")

    ws = wait_for(
        kube,
        WORKSPACE,
        namespace,
        lambda objs: condition(objs.get(NAME), "ResourceReady") == "True" and objs[NAME],
        timeout=120,
        what="ResourceReady",
    )
    assert FINALIZER in ws["metadata"]["finalizers"]
    nodes = kube.list(NODE, label_selector=f"kubernetes.azure.com/agentpool={pool}")["items"]
    names = [n["metadata"]["name"] for n in nodes]
    assert len(names) == 1 and ws["status"]["workerNodes"] == names
    labels = nodes[0]["metadata"]["labels"]
    assert labels["apps"] == "phi-3" and labels["kaito.sh/workspace"] == NAME

    pod = wait_for(
        kube,
        POD,
        namespace,
        lambda objs: next(
            (p for p in objs.values() if (p.get("spec") or {}).get("nodeName") in names), None
        ),
        what="the workspace's pod scheduled on the pool's node",
    )
    assert pod["metadata"]["labels"]["kaito.sh/workspace"] == NAME
    [put] = arm.requests("agentPools.createOrUpdate", pool=pool)
    assert put["status"] == 201

    backend.delete(NAME, namespace)
    wait_for(
        kube,
        WORKSPACE,
        namespace,
        lambda objs: NAME not in objs,
        timeout=120,
        what="the workspace gone, its finalizer released",
    )
    assert pool not in {p["name"] for p in arm.pools.list()}
    assert kube.list(NODE, label_selector=f"kubernetes.azure.com/agentpool={pool}")["items"] == []
    assert [e["status"] for e in arm.requests("agentPools.delete", pool=pool)][:1] == [202]
    assert not controller.errors, controller.errors


def test_of_two_controllers_one_provisions(kube, azure_settings, arm, testbed):
    namespace = new_namespace(kube, "solo-aks2")
    lease = f"kaito-aks-{uuid.uuid4().hex[:6]}"
    controllers = [
        aks_controller_for(kube, azure_settings, namespace, lease, name=f"c{i}") for i in (1, 2)
    ]
    for c in controllers:
        c.start()
    try:
        backend = KubernetesBackend(settings_for(testbed, namespace), kube=kube)
        doc = yaml.safe_load((WORKSPACES / "inference-phi-3.yaml").read_text())
        backend.apply([doc])
        wait_for(
            kube,
            WORKSPACE,
            namespace,
            lambda objs: condition(objs.get(NAME), "ResourceReady") == "True",
            timeout=120,
            what="ResourceReady",
        )
        assert [c.leading for c in controllers].count(True) == 1
        pool = agent_pools.pool_name(namespace, NAME)
        assert [e["status"] for e in arm.requests("agentPools.createOrUpdate", pool=pool)] == [201]
        backend.delete(NAME, namespace)
        wait_for(
            kube, WORKSPACE, namespace, lambda objs: NAME not in objs, timeout=120, what="deleted"
        )
        assert pool not in {p["name"] for p in arm.pools.list()}
    finally:
        for c in controllers:
            c.stop()


def test_the_controller_collects_a_pool_whose_workspace_is_gone(kube, azure_settings, arm, testbed):
    namespace = new_namespace(kube, "solo-aks3")
    controller = aks_controller_for(
        kube, azure_settings, namespace, f"kaito-aks-{uuid.uuid4().hex[:6]}"
    )
    controller.provisioner.collect_grace_seconds = 0
    controller.collector.interval = 0.5
    # A pool made for a workspace of this namespace that no longer exists (deleted while no
    # controller ran), and one of another namespace, which this controller does not watch.
    ghost = NodeRequest(namespace, "ghost", "u", "Standard_NC6s_v3", 1)
    elsewhere = NodeRequest("solo-not-watched", "other", "u", "Standard_NC6s_v3", 1)
    for request in (ghost, elsewhere):
        controller.provisioner.ensure(request)
    controller.start()
    try:
        ghost_pool = agent_pools.pool_name(namespace, "ghost")
        deadline = time.monotonic() + 60
        while ghost_pool in {p["name"] for p in arm.pools.list()}:
            assert time.monotonic() < deadline, "the orphan pool was never collected"
            time.sleep(0.5)
        assert ghost_pool in controller.collector.removed
        other_pool = agent_pools.pool_name("solo-not-watched", "other")
        assert other_pool in {p["name"] for p in arm.pools.list()}
        assert arm.requests("agentPools.delete", pool=other_pool) == []
    finally:
        controller.stop()
        while not controller.provisioner.release(elsewhere):
            time.sleep(0.5)


def test_a_quota_error_is_in_resource_ready_and_a_warning_event(kube, aks_controller, testbed, arm):
    from kaito_jupyter.backends.kubernetes.kube import EVENT

    _, namespace = aks_controller
    backend = KubernetesBackend(settings_for(testbed, namespace), kube=kube)
    doc = yaml.safe_load((WORKSPACES / "inference-phi-3.yaml").read_text())
    pool = agent_pools.pool_name(namespace, NAME)
    arm.faults.add("quota_exceeded", pool=pool, limit=0, usage=0)
    backend.apply([doc])
    ws = wait_for(
        kube,
        WORKSPACE,
        namespace,
        lambda objs: (
            NAME in objs
            and any(
                c["type"] == "ResourceReady" and c["reason"] == "QuotaExceeded"
                for c in objs[NAME].get("status", {}).get("conditions", [])
            )
            and objs[NAME]
        ),
        what="ResourceReady=False QuotaExceeded",
    )
    [resource] = [c for c in ws["status"]["conditions"] if c["type"] == "ResourceReady"]
    assert resource["status"] == "False"
    assert "standardNCSv3Family vCPU quota in eastus" in resource["message"]
    assert "Request at least 6 vCPUs of standardNCSv3Family in eastus" in resource["message"]
    event = wait_for(
        kube,
        EVENT,
        namespace,
        lambda objs: next((e for e in objs.values() if e.get("reason") == "QuotaExceeded"), None),
        what="a QuotaExceeded Event",
    )
    assert event["type"] == "Warning" and event["message"] == resource["message"]
    assert pool not in {p["name"] for p in arm.pools.list()}  # nothing half-created
    backend.delete(NAME, namespace)
    wait_for(kube, WORKSPACE, namespace, lambda objs: NAME not in objs, what="deleted")
