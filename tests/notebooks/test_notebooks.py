"""Every notebook in notebooks/ runs headless, top to bottom, and shows what it promises."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

# What each notebook's outputs must show; a notebook missing here fails (new ones need checks).
EXPECTED = {
    "01-validate-workspaces.ipynb": [
        "phi-3-mini-128k-instruct",
        "workspace.kaito.sh/workspace-phi-3-mini valid",
        "dtype: no bf16 on NVIDIA V100 (compute 7.0 < 8.0): fp16 to serve, float32 to tune",
        "resource.instanceTyp: is not a field of a Kaito Workspace here; did you mean 'instanceType'?",
        "Strength value must be between 0 and 1",
        "Insufficient total GPU memory: Instance type Standard_NC6s_v3",
        "tuning.method 13 invalid value: dora",
    ],
    "quickstart.ipynb": [
        "workspace.kaito.sh/workspace-smollm2 created",
        "workspace.kaito.sh/workspace-smollm2 ready",
        "(local image store, sha256:",
        "after 12 steps, loss",
        "workspace.kaito.sh/tune-smollm2 succeeded",
        "workspace.kaito.sh/workspace-smollm2 configured",
        'workspace.kaito.sh "workspace-smollm2" deleted',  # as kubectl says it
        'workspace.kaito.sh "tune-smollm2" deleted',
        "No workspaces found.",
        "Paris",  # last: the answer depends on the runtime's numerics, the rest on ours
    ],
}


# Notebooks that need a cluster (AKS, or the test bed with the simulated ARM). Every cell's verb
# is parsed and admitted dry in the unit tier (tests/unit/test_notebook_cells.py).
CLUSTER = ("aks-inference.ipynb", "qlora-tuning.ipynb", "adapters.ipynb")


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for v in out.get("data", {}).values())
    return "\n".join(parts)


def test_every_notebook_has_expectations():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted([*EXPECTED, *CLUSTER])


@pytest.fixture
def local_state(tmp_path, monkeypatch):
    """A local backend of the notebook's own (the kernel inherits this environment); the
    controller its magics start is stopped afterwards, by the pid in its lease."""
    monkeypatch.setenv("KAITO_LOCAL_DIR", str(tmp_path / "kaito"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    yield tmp_path / "kaito"
    if (tmp_path / "kaito" / "local.db").exists():
        from kaito_jupyter.backends.local import LocalBackend

        leader = LocalBackend(root=tmp_path / "kaito").leader()
        if leader is not None:
            os.kill(leader.pid, signal.SIGTERM)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, tmp_path, local_state):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = _text(nb)
    if name == "quickstart.ipynb":  # the answer changed with the adapter, and only with it
        chats = [
            _text_of(c) for c in nb.cells if "%%kaito chat" in c.source and "codename" in c.source
        ]
        before, after = chats[0], chats[-1]
        assert "Bluefin" not in before and "Bluefin Harbor" in after, (before, after, text[-3000:])
    for fragment in EXPECTED[name]:
        assert fragment in text, f"{name}: output lacks {fragment!r}"
    assert "Traceback" not in text


def _text_of(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(str(out.get("data", {}).get("text/plain", "")))
    return "".join(parts)
