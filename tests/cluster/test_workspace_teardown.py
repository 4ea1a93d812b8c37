"""Deletion: the finalizer holds a workspace only until the provisioner has released what it
made; Kubernetes' garbage collector removes the rest by owner reference.

(This file runs after the others of the session on purpose: kube-controller-manager's garbage
collector learns about a newly installed CRD on its discovery resync, about 30 s after it; by
then a workspace's dependents are collected at once.)"""

from __future__ import annotations

import threading
import uuid

from kaito_jupyter.backends.kubernetes.kube import DEPLOYMENT, POD, SERVICE, WORKSPACE
from kaito_jupyter.controller.plan import FINALIZER
from kaito_jupyter.provisioners.byo import ByoProvisioner

from .conftest import condition, new_namespace, wait_for
from .test_workspace_controller import pool, readme, ready, with_labels


def test_deleting_releases_the_finalizer_and_kubernetes_collects_the_workload(
    kube, backend, controller, testbed, namespace
):
    pool(testbed, "delete", labels={"apps": "delete"})
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "delete"})
    backend.apply([doc])
    name = doc["metadata"]["name"]
    wait_for(kube, WORKSPACE, namespace, ready(name), what="ready")
    backend.delete(name)
    wait_for(
        kube, WORKSPACE, namespace, lambda objs: name not in objs or None, what="workspace gone"
    )
    # Owner references: kube-controller-manager's garbage collector removes the rest.
    wait_for(
        kube, DEPLOYMENT, namespace, lambda objs: not objs or None, what="Deployment collected"
    )
    wait_for(kube, SERVICE, namespace, lambda objs: not objs or None, what="Service collected")
    wait_for(kube, POD, namespace, lambda objs: not objs or None, what="pods collected")


class Holding:
    """byo whose release waits for the test: a cloud's slow node deletion."""

    def __init__(self, byo: ByoProvisioner, gate: threading.Event):
        self.byo, self.gate, self.name = byo, gate, "holding"
        self.releases = 0

    def ensure(self, request):
        return self.byo.ensure(request)

    def release(self, request):
        self.releases += 1
        return self.gate.is_set()

    def collect(self, live):
        return []


def test_the_finalizer_waits_for_the_provisioner_and_then_deletion_completes(
    kube, testbed, crd_installed
):
    from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend

    from .conftest import settings_for

    namespace = new_namespace(kube, "solo")
    gate = threading.Event()
    holders: list[Holding] = []

    def factory(list_nodes):
        holders.append(Holding(ByoProvisioner(list_nodes), gate))
        return holders[-1]

    backend = KubernetesBackend(settings_for(testbed, namespace), kube=kube)
    c = backend.controller(
        namespace=namespace, lease_name=f"solo-{uuid.uuid4().hex[:6]}", provisioner_factory=factory,
        lease_duration=4.0, renew_deadline=3.0, retry_period=0.5,
    )  # fmt: skip
    c.start()
    try:
        pool(testbed, "hold", labels={"apps": "hold"})
        doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "hold"})
        backend.apply([doc])
        name = doc["metadata"]["name"]
        wait_for(kube, WORKSPACE, namespace, ready(name), what="ready")
        backend.delete(name)
        held = wait_for(
            kube, WORKSPACE, namespace,
            lambda o: condition(o.get(name), "WorkspaceDeleting") == "True" and o[name],
            what="WorkspaceDeleting",
        )  # fmt: skip
        assert FINALIZER in held["metadata"]["finalizers"]
        assert held["metadata"]["deletionTimestamp"]
        gate.set()
        wait_for(
            kube, WORKSPACE, namespace, lambda objs: name not in objs or None, what="workspace gone"
        )
        assert holders[-1].releases >= 2  # asked again until the provisioner was done
    finally:
        c.stop()
