"""Idle timeout on the simulated AKS: a workspace with `kaito.sh/idle-timeout` and no request
for that long has its agent pool scaled to zero (ResourceReady=False ScaledToZeroIdle);
`kaito wake` (commands.wake) brings the pool's node back and the workspace to ready.

The test bed's KWOK pods serve nothing, so the runtime's /metrics counter cannot be read here:
the controller is given a request counter this test drives (`Reconciler(activity=...)`, the
same seam `PrometheusActivity` fills in a real cluster)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
import yaml

from kaito_jupyter import commands
from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend
from kaito_jupyter.backends.kubernetes.install import install
from kaito_jupyter.backends.kubernetes.kube import NODE, WORKSPACE, Kube
from kaito_jupyter.controller import idle
from kaito_jupyter.errors import KaitoError
from kaito_jupyter.provisioners import agent_pools
from tests.aks.test_aks_workspace import aks_controller_for
from tests.cluster.conftest import new_namespace, settings_for, wait_for

WORKSPACES = Path(__file__).resolve().parents[2] / "notebooks" / "workspaces"
NAME = "workspace-phi-3-mini"


class Counter:
    """A request counter the test moves (what /metrics would say)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.lock = threading.Lock()
        self.reads = 0

    def requests(self, namespace: str, name: str) -> float | None:
        with self.lock:
            self.reads += 1
            return self.value


@pytest.fixture
def kube(testbed):
    k = Kube(str(testbed.kubeconfig))
    install(k)
    yield k
    k.close()


def _resource(obj: dict | None) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == "ResourceReady":
            return c
    return {}


def test_an_idle_workspace_scales_its_pool_to_zero_and_wakes(kube, azure_settings, arm, testbed):
    namespace = new_namespace(kube, "solo-idle")
    counter = Counter()
    controller = aks_controller_for(
        kube, azure_settings, namespace, f"kaito-idle-{uuid.uuid4().hex[:6]}", activity=counter
    )
    controller.start()
    assert controller.elector.leading.wait(30), "the controller never took its Lease"
    try:
        backend = KubernetesBackend(settings_for(testbed, namespace), kube=kube)
        doc = yaml.safe_load((WORKSPACES / "inference-phi-3.yaml").read_text())
        doc["metadata"]["annotations"] = {idle.IDLE_TIMEOUT: "3s"}
        commands.apply(yaml.safe_dump(doc), backend=backend, namespace=namespace)
        pool = agent_pools.pool_name(namespace, NAME)

        wait_for(
            kube,
            WORKSPACE,
            namespace,
            lambda objs: (objs.get(NAME) or {}).get("status", {}).get("state") == "Ready",
            timeout=120,
            what="the workspace Ready on its pool's node",
        )
        # No request for 3s: the pool goes to zero nodes and the condition says why.
        asleep = wait_for(
            kube,
            WORKSPACE,
            namespace,
            lambda objs: (
                _resource(objs.get(NAME)).get("reason") == idle.SCALED_TO_ZERO_IDLE
                and not (objs[NAME]["status"].get("workerNodes") or [])
                and objs[NAME]
            ),
            timeout=120,
            what="ResourceReady=False ScaledToZeroIdle",
        )
        assert counter.reads > 0  # the controller read the counter it was given
        resource = _resource(asleep)
        assert resource["status"] == "False"
        assert "scaled to zero after 3s with no request" in resource["message"]
        assert f"kaito wake {NAME}" in resource["message"]
        assert idle.SCALED_TO_ZERO in asleep["metadata"]["annotations"]
        wait_for(
            kube,
            NODE,
            None,
            lambda objs: (
                not any(
                    (n["metadata"].get("labels") or {}).get("kubernetes.azure.com/agentpool")
                    == pool
                    for n in objs.values()
                )
            ),
            timeout=120,
            what="the pool's node gone",
        )
        assert arm.pools.get(pool)["properties"]["count"] == 0  # the pool is kept, at 0
        puts = arm.requests("agentPools.createOrUpdate", pool=pool)
        assert [p["status"] for p in puts][:1] == [201] and len(puts) >= 2

        # A chat on a sleeping workspace says so and wakes it; so does `kaito wake`.
        with pytest.raises(KaitoError, match="scaled to zero after being idle"):
            list(commands.chat(NAME, [{"role": "user", "content": "hi"}], backend=backend))
        commands.wake(NAME, backend=backend)
        with counter.lock:
            counter.value += 1  # a request once awake keeps it awake a while longer
        woken = wait_for(
            kube,
            WORKSPACE,
            namespace,
            lambda objs: (
                _resource(objs.get(NAME)).get("status") == "True"
                and idle.SCALED_TO_ZERO not in (objs[NAME]["metadata"].get("annotations") or {})
                and objs[NAME]
            ),
            timeout=120,
            what="ResourceReady=True again after the wake",
        )
        assert len(woken["status"]["workerNodes"]) == 1
        assert arm.pools.get(pool)["properties"]["count"] == 1

        backend.delete(NAME, namespace)
        wait_for(
            kube, WORKSPACE, namespace, lambda objs: NAME not in objs, timeout=120, what="deleted"
        )
        assert pool not in {p["name"] for p in arm.pools.list()}
        assert not controller.errors, controller.errors
    finally:
        controller.stop()
