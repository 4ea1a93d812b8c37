"""Every notebook in notebooks/ runs headless, top to bottom, and shows what it promises."""

from __future__ import annotations

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


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    text = _text(nb)
    for fragment in EXPECTED[name]:
        assert fragment in text, f"{name}: output lacks {fragment!r}"
    assert "Traceback" not in text
