"""Shared configuration and the kubectl-style table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kaito_jupyter import api, config
from kaito_jupyter.api import conditions, table
from kaito_jupyter.errors import KaitoError

from .samples import INFERENCE, TUNING


def test_defaults_file_and_environment(tmp_path):
    path = tmp_path / "kaito.yaml"
    assert config.load(path, environ={}).backend == "local"
    config.save(config.Settings(backend="kubernetes", namespace="ml"), path)
    assert config.load(path, environ={}).namespace == "ml"
    env = {"KAITO_BACKEND": "local", "KAITO_ARM_ENDPOINT": "https://management.chinacloudapi.cn"}
    s = config.load(path, environ=env)
    assert s.backend == "local" and s.namespace == "ml"
    assert s.azure.credential_scope() == "https://management.chinacloudapi.cn/.default"


def test_bad_settings_name_the_fix(tmp_path):
    path = tmp_path / "kaito.yaml"
    path.write_text("backnd: local\n")
    with pytest.raises(KaitoError, match="unknown setting"):
        config.load(path, environ={})
    with pytest.raises(KaitoError, match="KAITO_BACKEND"):
        config.load(tmp_path / "none.yaml", environ={"KAITO_BACKEND": "docker"})


def test_table_matches_kaitos_columns():
    ws = api.check_dict(INFERENCE).workspace
    ws.metadata.creation_timestamp = "2026-11-23T10:00:00Z"
    conditions.set_condition(ws, conditions.RESOURCE_READY, "True", "NodesReady")
    conditions.set_condition(ws, conditions.INFERENCE_READY, "True", "InferenceReady")
    conditions.set_condition(ws, conditions.WORKSPACE_SUCCEEDED, "True", "Ready")
    tuning = api.check_dict(TUNING).workspace
    text = table.render([ws, tuning], now=datetime(2026, 11, 23, 10, 10, tzinfo=UTC))
    header, first, second = text.splitlines()
    assert header.split() == [
        "NAME",
        "INSTANCE",
        "RESOURCEREADY",
        "INFERENCEREADY",
        "WORKSPACEREADY",
        "AGE",
    ]
    assert first.split() == [
        "workspace-phi-3-mini",
        "Standard_NC6s_v3",
        "True",
        "True",
        "True",
        "10m",
    ]
    # A tuning workspace has no InferenceReady (kubectl shows the column empty).
    assert table.cells(tuning)["INFERENCEREADY"] == ""
    assert second.split()[2:4] == ["Unknown", "Unknown"]


def test_wide_table_has_kaitos_v1beta1_columns_and_workspace_ready():
    ws = api.check_dict(TUNING).workspace
    conditions.set_condition(ws, conditions.JOB_STARTED, "True", "Started")
    conditions.set_condition(ws, conditions.WORKSPACE_SUCCEEDED, "False", "workspacePending")
    conditions.set_condition(ws, conditions.WORKSPACE_READY, "True", "odd but ours to show")
    ws.status.state = "Running"
    ws.status.target_node_count = 1
    header, first = table.render([ws], wide=True).splitlines()
    assert header.split() == list(table.WIDE_COLUMNS)
    assert first.split()[-3:-2] == ["Running"]
    values = table.cells(ws)
    assert (values["JOBSTARTED"], values["WORKSPACESUCCEEDED"]) == ("True", "False")
    # WorkspaceReady is read when written; WorkspaceSucceeded stands in only when it is absent.
    assert values["WORKSPACEREADY"] == "True"
    assert (values["TARGETNODECOUNT"], values["STATE"]) == ("1", "Running")


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(5, "5s"), (150, "2m30s"), (600, "10m"), (4 * 3600 + 60, "4h1m"), (3 * 86400, "3d")],
)
def test_age(seconds, expected):
    now = datetime(2026, 11, 23, tzinfo=UTC)
    then = datetime.fromtimestamp(now.timestamp() - seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert table.age(then, now) == expected


def test_condition_transition_time_moves_only_on_status_change():
    ws = api.check_dict(INFERENCE).workspace
    assert conditions.set_condition(ws, "ResourceReady", "False", "Provisioning", at="t1")
    assert not conditions.set_condition(ws, "ResourceReady", "False", "Provisioning", at="t2")
    assert conditions.set_condition(ws, "ResourceReady", "False", "Quota", "over quota", at="t3")
    assert ws.condition("ResourceReady").last_transition_time == "t1"
    assert conditions.set_condition(ws, "ResourceReady", "True", "Ready", at="t4")
    assert ws.condition("ResourceReady").last_transition_time == "t4"


def test_allowed_private_registries_from_file_and_environment(tmp_path):
    path = tmp_path / "kaito.yaml"
    assert config.load(path, environ={}).allowed_private_registries == []
    path.write_text("allowed_private_registries: [registry.local:5000]\n")
    assert config.load(path, environ={}).allowed_private_registries == ["registry.local:5000"]
    env = {"KAITO_ALLOWED_PRIVATE_REGISTRIES": "127.0.0.1, [::1]:5000"}
    assert config.load(path, environ=env).allowed_private_registries == ["127.0.0.1", "[::1]:5000"]
    path.write_text("allowed_private_registries: registry.local\n")
    with pytest.raises(KaitoError, match="allowed_private_registries must be a list"):
        config.load(path, environ={})


def test_one_cache_root_for_runtimes_and_the_test_bed(tmp_path, monkeypatch):
    from kaito_jupyter.runtimes import weights

    from tests.testbed import versions

    monkeypatch.delenv("KAITO_CACHE_DIR", raising=False)
    monkeypatch.setenv("KAITO_JUPYTER_CACHE", str(tmp_path / "cache"))
    assert (
        config.cache_root() == weights.cache_root() == versions.cache_root() == tmp_path / "cache"
    )
    # The old name still works, with a warning, and yields to the new one.
    monkeypatch.delenv("KAITO_JUPYTER_CACHE")
    monkeypatch.setenv("KAITO_CACHE_DIR", str(tmp_path / "old"))
    with pytest.warns(DeprecationWarning, match="KAITO_JUPYTER_CACHE"):
        assert weights.cache_root() == tmp_path / "old"
    monkeypatch.setenv("KAITO_JUPYTER_CACHE", str(tmp_path / "new"))
    assert config.cache_root() == tmp_path / "new"
    monkeypatch.delenv("KAITO_JUPYTER_CACHE")
    monkeypatch.delenv("KAITO_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config.cache_root() == tmp_path / "home" / ".cache" / "kaito-jupyter"
