"""The server extension's wire format: the TypeScript interfaces are generated from the Python
models and up to date; the views render the core's values into them (pure, no server)."""

from __future__ import annotations

from pathlib import Path

from kaito_jupyter import cost
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.base import Node
from kaito_jupyter.server import views, wire

ROOT = Path(__file__).resolve().parents[2]


def test_wire_ts_is_generated_from_the_python_models():
    on_disk = (ROOT / "labextension" / "src" / "wire.ts").read_text()
    assert on_disk == wire.typescript(), (
        "labextension/src/wire.ts is stale: run "
        "`python -m kaito_jupyter.server.wire > labextension/src/wire.ts`"
    )
    for model in wire.MODELS:
        assert f"export interface I{model.__name__} {{" in on_disk


def test_summary_of_a_failed_workspace_keeps_the_reason():
    stored = StoredWorkspace(
        {
            "apiVersion": "kaito.sh/v1beta1",
            "kind": "Workspace",
            "metadata": {"name": "ws", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "resource": {"instanceType": "Standard_NC24ads_A100_v4", "count": 2},
            "inference": {"preset": {"name": "phi-4"}},
            "status": {
                "workerNodes": ["n1", "n2"],
                "conditions": [
                    {
                        "type": "ResourceReady",
                        "status": "False",
                        "reason": "QuotaExceeded",
                        "message": "no quota for NC A100 v4",
                    },
                    {
                        "type": "WorkspaceSucceeded",
                        "status": "False",
                        "reason": "workspaceFailed",
                        "message": "x",
                    },
                ],
            },
        }
    )
    row = views.summary(stored, prices={"n1": 3.5, "n2": 3.5})
    assert (row.phase, row.instanceType, row.nodeCount, row.costPerHour) == (
        "failed", "Standard_NC24ads_A100_v4", 2, 7.0
    )  # fmt: skip
    assert row.conditions[0].reason == "QuotaExceeded"
    # Not every node priced: the list price of what it asks for, with where that comes from.
    partial = views.summary(stored, prices={"n1": 3.5})
    assert partial.costPerHour == cost.hourly_cost("Standard_NC24ads_A100_v4", 2)
    assert partial.costBasis == cost.basis_note("Standard_NC24ads_A100_v4")


def test_presets_list_only_skus_that_fit():
    listed = {p.name: p for p in views.presets().items}
    skus = {s.name: s for s in views.skus().items}
    big = listed["llama-3.3-70b-instruct"]
    assert big.fits
    assert all(skus[s].gpus * skus[s].gpuMemoryGib >= big.gpuMemoryGib for s in big.fits)


def test_node_view():
    n = views.node(Node("n", "Standard_NC6s_v3", "V100", 1, 1, 16, workspaces=("default/ws",)))
    assert n.model_dump()["workspaces"] == ["default/ws"]
