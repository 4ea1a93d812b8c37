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
from .test_workspace_controller import pool, readme, ready, ready_phi3, with_labels


def test_deleting_releases_the_finalizer_and_kubernetes_collects_the_workload(
    kube, backend, controller, testbed, namespace
):
    doc, _ = ready_phi3(kube, backend, testbed, namespace, "delete")
    name = doc["metadata"]["name"]
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
        self.asked = threading.Event()

    def ensure(self, request):
        return self.byo.ensure(request)

    def release(self, request):
        self.releases += 1
        done = self.gate.is_set()
        self.asked.set()
        return done

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
        assert holders[-1].asked.wait(30)  # the provisioner said "not yet"
        held = kube.get(WORKSPACE, name, namespace)
        assert FINALIZER in held["metadata"]["finalizers"]
        assert held["metadata"]["deletionTimestamp"]
        gate.set()
        wait_for(
            kube, WORKSPACE, namespace, lambda objs: name not in objs or None, what="workspace gone"
        )
        assert holders[-1].releases >= 2  # asked again until the provisioner was done
    finally:
        c.stop()


def _kaito(testbed, tmp_path, *args, namespace):
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "KUBECONFIG": str(testbed.kubeconfig),
        "KAITO_BACKEND": "kubernetes",
        "KAITO_PROVISIONER": "byo",
        "KAITO_NAMESPACE": namespace,
        "KAITO_LEASE_NAMESPACE": namespace,  # its own Lease: the session controller holds the default
        "JUPYTER_CONFIG_DIR": str(tmp_path),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "kaito_jupyter.cli", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_kaito_controller_reconciles_headless_until_interrupted(
    kube, testbed, crd_installed, tmp_path
):
    import signal

    from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend

    from .conftest import settings_for

    namespace = new_namespace(kube, "solo")
    pool(testbed, "headless", labels={"apps": "headless"})
    doc = with_labels(readme("inference-phi-3.yaml"), {"apps": "headless"})
    KubernetesBackend(settings_for(testbed, namespace), kube=kube).apply([doc])
    proc = _kaito(testbed, tmp_path, "controller", "--backend", "kubernetes", namespace=namespace)
    try:
        wait_for(
            kube,
            WORKSPACE,
            namespace,
            ready(doc["metadata"]["name"]),
            what="ready by `kaito controller`",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_with_kaitos_operator_running_kaito_jupyter_is_its_client_and_does_not_reconcile(
    kube, testbed, crd_installed, tmp_path
):
    from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend
    from kaito_jupyter.backends.kubernetes.kube import DEPLOYMENT

    from .conftest import settings_for

    namespace = new_namespace(kube, "solo")
    [node] = pool(testbed, "operator", labels={"apps": "operator"})
    operator = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kaito-workspace", "labels": {"app.kubernetes.io/name": "workspace"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "kaito-workspace"}},
            "template": {
                "metadata": {"labels": {"app": "kaito-workspace"}},
                "spec": {
                    "nodeName": node,
                    "tolerations": [{"key": "sku", "operator": "Exists"}],
                    "containers": [{"name": "manager", "image": "mcr.microsoft.com/aks/kaito/workspace:0.12.0"}],
                },
            },
        },
    }  # fmt: skip
    kube.create(DEPLOYMENT, operator, namespace)
    try:
        wait_for(
            kube, DEPLOYMENT, namespace,
            lambda o: (o.get("kaito-workspace", {}).get("status") or {}).get("availableReplicas"),
            what="the operator available",
        )  # fmt: skip
        said = KubernetesBackend(settings_for(testbed, namespace), kube=kube).ensure_controller()
        assert (
            said and f"Kaito's operator ({namespace}/kaito-workspace)" in said and "client" in said
        )
        proc = _kaito(
            testbed, tmp_path, "controller", "--backend", "kubernetes", namespace=namespace
        )
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "not starting a second reconciler" in out
    finally:
        kube.delete(DEPLOYMENT, "kaito-workspace", namespace)
