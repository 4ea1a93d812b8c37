"""Reading stored workspaces leniently, and the command layer's pure parts."""

from __future__ import annotations

import pytest

from kaito_jupyter import api, commands
from kaito_jupyter.api.wire import StoredWorkspace, read_workspace
from kaito_jupyter.errors import KaitoError

from .samples import INFERENCE, with_


def test_a_workspace_from_a_newer_kaito_is_read_and_its_unknown_fields_kept():
    newer = with_(
        INFERENCE,
        inference__futureKnob={"x": 1},
        resource__partition={"mode": "mig", "futureField": 2},
        status={"conditions": [], "benchmarkResult": {"tps": 3}, "state": "Ready"},
    )
    newer["metadata"].update(uid="u1", resourceVersion="42", managedFields=[{"manager": "k"}])
    with pytest.raises(KaitoError):
        api.check_dict(newer)  # admission stays strict
    ws = read_workspace(newer)
    assert ws.preset_name == "phi-3-mini-4k-instruct" and ws.status.state == "Ready"
    stored = StoredWorkspace(newer)
    assert (stored.resource_version, stored.generation) == ("42", 0)
    # The stored object is what gets written back: nothing dropped.
    assert stored.with_status({"state": "NotReady"}).data["inference"]["futureKnob"] == {"x": 1}
    assert "managedFields" not in stored.spec()["metadata"]


def test_unreadable_values_leave_a_listable_view():
    broken = with_(INFERENCE, resource="not a mapping")
    ws = read_workspace(broken)
    assert ws.name == "workspace-phi-3-mini" and ws.resource is None


def test_deploy_builds_kaitos_shape():
    data = commands.deploy_workspace(
        "phi-3-mini-4k",
        instance_type="Standard_NC6s_v3",
        adapters=[("myacr.azurecr.io/adapters/phi-3-a:0.0.1", 0.5)],
    )
    checked = api.check_dict(data)
    assert checked.workspace.name == "workspace-phi-3-mini-4k-instruct"
    assert data["resource"]["labelSelector"] == {
        "matchLabels": {"apps": "workspace-phi-3-mini-4k-instruct"}
    }
    adapter = data["inference"]["adapters"][0]
    assert adapter == {
        "source": {"name": "phi-3-a", "image": "myacr.azurecr.io/adapters/phi-3-a:0.0.1"},
        "strength": "0.5",
    }
    local = commands.deploy_workspace("smollm2", name="chat")
    assert "resource" not in local
    api.check_dict(local, target="local")


def test_tune_builds_kaitos_shape_with_local_directories_as_host_paths(tmp_path):
    data = commands.tune_workspace(
        "smollm2", method="qlora", inputs=[str(tmp_path / "data")], output=str(tmp_path / "out")
    )
    assert data["tuning"]["input"]["volumeSource"] == {"hostPath": {"path": str(tmp_path / "data")}}
    assert data["tuning"]["output"]["volumeSource"]["hostPath"]["path"] == str(tmp_path / "out")
    remote = commands.tune_workspace(
        "phi-3-mini-128k-instruct",
        method="qlora",
        inputs=["https://example.com/a.parquet", "https://example.com/b.parquet"],
        output="myacr.azurecr.io/tuned:1",
        push_secret="acr-push",
        instance_type="Standard_NC6s_v3",
    )
    api.check_dict(remote)
    assert len(remote["tuning"]["input"]["urls"]) == 2
    with pytest.raises(KaitoError, match="not a mix"):
        commands.tune_workspace(
            "smollm2", method="qlora", inputs=["https://e.com/a.csv", "/data"], output="/o"
        )


def test_phase_reads_conditions():
    def stored(**status):
        return StoredWorkspace(with_(INFERENCE, status=status))

    ok = {"type": "WorkspaceSucceeded", "status": "True", "reason": "workspaceSucceeded"}
    bad = {"type": "WorkspaceSucceeded", "status": "False", "reason": "workspaceFailed"}
    assert commands.phase(stored(conditions=[ok])) == "ready"
    assert commands.phase(stored(conditions=[bad])) == "failed"
    assert commands.phase(stored(conditions=[])) == "pending"
    deleting = StoredWorkspace(with_(INFERENCE, metadata__deletionTimestamp="2026-12-03T00:00:00Z"))
    assert commands.phase(deleting) == "deleting"


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("myacr.azurecr.io/adapters/Phi-3_A:0.0.1", "phi-3-a"),
        ("/home/me/out/adapter/", "adapter"),
        ("registry:5000/x@sha256:" + "a" * 64, "x"),
    ],
)
def test_adapter_names_are_dns_labels(source, name):
    assert commands.adapter_name(source) == name
