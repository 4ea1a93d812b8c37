"""The cluster notebooks, executed headless against the test bed: a real kube-apiserver with KWOK
GPU nodes, the simulated ARM behind the `aks` provisioner, and kaito-jupyter's controller in
this process (as the Jupyter server extension would run it). The kernel is a real ipykernel
that reaches all of it through the kubernetes backend, as a notebook on AKS does.

What does not run: the cells tagged `needs-gpu` (chat, and logs). KWOK fakes the pods, so no
inference server answers and no kubelet serves logs; those verbs are exercised against real
servers in the unit tier (a loopback SSE server) and the runtime tier (the local backend's
SmolLM2).
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from kaito_jupyter import config

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# What each notebook's outputs must show after running on the bed.
EXPECTED = {
    "aks-inference.ipynb": [
        "using the kubernetes backend (namespace {ns}, AKS cluster",
        "workspace.kaito.sh/workspace-phi-3-mini created",
        "workspace.kaito.sh/workspace-phi-3-mini ready",
        # the status widget's saved text, refreshed when the wait ended
        "InferenceReady True WorkspaceInferenceStatusSuccess",
        "Standard_NC6s_v3",
        "('ready',",  # ws.phase, ws.conditions: the object `ws = %kaito get` returned
        "'InferenceReady': 'True'",
        'workspace.kaito.sh "workspace-phi-3-mini" deleting',
    ],
    "qlora-tuning.ipynb": [
        "workspace.kaito.sh/workspace-tuning-phi-3 created",
        "workspace.kaito.sh/workspace-tuning-phi-3 succeeded",
        "WorkspaceSucceeded True",
        "workspace.kaito.sh/tuning-phi-3-dolly created (dry run)",
        "image: myacr.azurecr.io/phi-3-dolly:0.0.1",
        "workspace-tuning-phi-3",
        'workspace.kaito.sh "workspace-tuning-phi-3" deleting',
    ],
    "adapters.ipynb": [
        "workspace.kaito.sh/workspace-phi-3-mini-adapter created",
        "workspace.kaito.sh/workspace-phi-3-mini-adapter ready",
        "strength: '0.7'",
        "workspace.kaito.sh/workspace-phi-3-dolly created (dry run)",
        'workspace.kaito.sh "workspace-phi-3-mini-adapter" deleting',
    ],
}


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


@pytest.fixture
def cluster_env(testbed, arm, tmp_path, monkeypatch):
    """The kernel's and the controller's environment: the bed's kubeconfig, a fresh namespace,
    the simulated ARM's coordinates and credentials; and the controller, leading."""
    from kaito_jupyter.backends.kubernetes.backend import KubernetesBackend
    from kaito_jupyter.backends.kubernetes.kube import NAMESPACE, Kube

    arm.configure(provisioning_seconds=0.5)
    for key, value in arm.environment().items():
        monkeypatch.setenv(key, value)
    # "solo-": the cluster tier's session controller leaves such namespaces alone, and this
    # one's Lease is its own (in a shared bed the session controller holds the default one).
    namespace = f"solo-nb-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("KAITO_LEASE_NAMESPACE", namespace)
    monkeypatch.setenv("KUBECONFIG", str(testbed.kubeconfig))
    monkeypatch.setenv("KAITO_BACKEND", "kubernetes")
    monkeypatch.setenv("KAITO_NAMESPACE", namespace)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    kube = Kube(str(testbed.kubeconfig))
    kube.create(
        NAMESPACE, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    backend = KubernetesBackend(config.load(), kube=kube)
    backend.ensure_crd()
    controller = backend.controller(
        namespace=namespace, lease_duration=4.0, renew_deadline=3.0, retry_period=0.5
    ).start()
    assert controller.elector.leading.wait(60), "the controller never took its Lease"
    try:
        yield namespace
    finally:
        controller.stop()
        kube.close()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cluster_notebook_runs_on_the_testbed(name, cluster_env):
    namespace = cluster_env
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    ran = copy.deepcopy(nb)
    ran.cells = [c for c in nb.cells if "needs-gpu" not in c.get("metadata", {}).get("tags", [])]
    assert len(ran.cells) < len(nb.cells)
    NotebookClient(
        ran, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    errors = [o for c in ran.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = _text(ran)
    for fragment in EXPECTED[name]:
        fragment = fragment.replace("{ns}", namespace)
        assert fragment in text, f"{name}: output lacks {fragment!r}\n{text[-3000:]}"
    assert "Traceback" not in text
    assert "error:" not in text, text
