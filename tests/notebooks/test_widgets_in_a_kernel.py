"""The widgets in a real Jupyter kernel (ipykernel through nbclient): `apply --wait` shows a
status widget that the backend's watch moves to ready from a background thread (the widget
state nbclient saved holds the final timeline, not the first), and each widget output carries
the static HTML and text that nbconvert and plain frontends show instead (for --wait, refreshed
to the final state when the wait ends)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

REPO = Path(__file__).resolve().parents[2]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

SETUP = f"""
import sys, threading
sys.path.insert(0, {str(REPO)!r})
from tests.unit.memory_backend import MemoryBackend, provisioning, ready
backend = MemoryBackend()
get_ipython().magics_manager.registry["KaitoMagics"].session.backend_override = backend

def controller():
    backend.wait_for_watchers(2)  # the widget's watch and the wait's
    backend.set_status("workspace-phi-3-mini", provisioning(1), "2026-12-03T14:00:07Z")
    backend.set_status("workspace-phi-3-mini", ready(), "2026-12-03T14:03:30Z")

threading.Thread(target=controller, daemon=True).start()
"""

APPLY = """%%kaito apply --wait --timeout 120
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata:
  name: workspace-phi-3-mini
resource:
  instanceType: "Standard_NC6s_v3"
  labelSelector:
    matchLabels:
      apps: phi-3
inference:
  preset:
    name: phi-3-mini-4k-instruct
"""


def test_status_widget_follows_the_watch_in_a_kernel(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    nb = new_notebook()
    nb.cells = [
        new_code_cell("%load_ext kaito_jupyter"),
        new_code_cell(SETUP),
        new_code_cell(APPLY),
        new_code_cell("%kaito status workspace-phi-3-mini"),
        new_code_cell("%kaito nodes --watch"),
    ]
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors

    apply_outputs = nb.cells[2].outputs
    widget_out = next(o for o in apply_outputs if WIDGET_VIEW in o.get("data", {}))
    # The fallback saved with the notebook was refreshed when the wait ended: the final state.
    assert "+3m30s" in widget_out["data"]["text/html"]
    assert widget_out["data"]["text/plain"].startswith("workspace-phi-3-mini: ready (Ready)")
    text = "".join(o.get("text", "") for o in apply_outputs)
    assert "workspace.kaito.sh/workspace-phi-3-mini created" in text
    result = next(o for o in apply_outputs if o.output_type == "execute_result")
    assert result["data"]["text/plain"] == "workspace.kaito.sh/workspace-phi-3-mini ready"

    # The widget's saved state: its HTML view was moved to ready by the watch thread.
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    views = [m["state"].get("value", "") for m in state.values() if m["model_name"] == "HTMLModel"]
    assert any("ready" in v and "+3m30s" in v for v in views), views

    status = next(o for o in nb.cells[3].outputs if o.output_type == "execute_result")
    assert WIDGET_VIEW in status["data"]
    assert status["data"]["text/plain"].splitlines()[0] == "workspace-phi-3-mini: ready (Ready)"
    assert "ResourceReady" in status["data"]["text/html"]

    nodes = next(o for o in nb.cells[4].outputs if o.output_type == "execute_result")
    assert WIDGET_VIEW in nodes["data"] and "No nodes found." in nodes["data"]["text/plain"]
    nbformat.validate(nb)
