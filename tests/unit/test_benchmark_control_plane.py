"""The control-plane benchmark's pure pieces: which audit events count as the reconciler's API
writes, the workspace mix it applies, and its percentiles."""

from __future__ import annotations

import json

from benchmarks.control_plane import controller_writes, percentile, workspaces


def test_only_the_controllers_writes_after_the_offset_are_counted(tmp_path):
    log = tmp_path / "audit.log"
    before = json.dumps({"verb": "create", "userAgent": "kaito-jupyter", "objectRef": {}})
    log.write_text(before + "\n")
    offset = log.stat().st_size
    events = [
        {"verb": "patch", "userAgent": "kaito-jupyter", "objectRef": {"resource": "deployments"}},
        {
            "verb": "patch",
            "userAgent": "kaito-jupyter",
            "objectRef": {"resource": "workspaces", "subresource": "status"},
        },
        {"verb": "get", "userAgent": "kaito-jupyter", "objectRef": {"resource": "workspaces"}},
        {"verb": "create", "userAgent": "kaito-bench", "objectRef": {"resource": "workspaces"}},
        {"verb": "update", "userAgent": "kube-scheduler/v1", "objectRef": {"resource": "pods"}},
    ]
    with log.open("a") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
        f.write("not json\n")
    counts = controller_writes(log, offset)
    assert counts == {"patch deployments": 1, "patch workspaces/status": 1}


def test_the_workspaces_alternate_inference_and_tuning_each_on_its_own_label():
    docs = workspaces(4, "x")
    assert [("tuning" in d) for d in docs] == [False, True, False, True]
    labels = [d["resource"]["labelSelector"]["matchLabels"]["bench"] for d in docs]
    assert labels == ["x-000", "x-001", "x-002", "x-003"]
    assert len({d["metadata"]["name"] for d in docs}) == 4


def test_percentiles_of_one_and_of_many():
    assert percentile([3.0], 95) == 3.0
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.5
