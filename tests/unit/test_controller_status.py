"""Status (pure): node and workload reports to Kaito's conditions, state and workerNodes."""

from __future__ import annotations

from kaito_jupyter.controller.status import (
    NodeReport,
    Problem,
    WorkloadReport,
    derive_inference,
    derive_invalid,
    derive_tuning,
    write,
)


def conds(derived) -> dict[str, tuple[str, str]]:
    return {t: (s, r) for t, s, r, _ in derived.conditions}


READY_NODES = NodeReport(required=1, ready=("aks-ws1-0",))


def test_inference_ready_only_when_every_replica_is_ready_and_healthy():
    d = derive_inference(READY_NODES, WorkloadReport(exists=True, desired=1, ready=1))
    assert conds(d)["InferenceReady"] == ("True", "WorkspaceInferenceStatusSuccess")
    assert conds(d)["WorkspaceSucceeded"][0] == conds(d)["WorkspaceReady"][0] == "True"
    assert (d.state, d.worker_nodes, d.target_node_count) == ("Ready", ("aks-ws1-0",), 1)


def test_a_crash_looping_replica_that_was_ready_is_not_inference_ready():
    # Kaito's known pain: InferenceReady True while the pod crash-loops.
    looping = WorkloadReport(
        exists=True,
        desired=1,
        ready=1,
        problems=(Problem("ContainerCrashLoopBackOff", 'container "model" restarted 5 times'),),
    )
    d = derive_inference(READY_NODES, looping, established=True)
    assert conds(d)["InferenceReady"] == ("False", "ContainerCrashLoopBackOff")
    assert conds(d)["WorkspaceSucceeded"] == ("False", "workspaceFailed")
    assert d.state == "NotReady"


def test_the_provisioners_own_failure_message_is_what_resource_ready_says():
    quota = NodeReport(
        required=1,
        reason="QuotaExceeded",
        message="standardNCSv3Family quota in eastus: limit 0, usage 0, need 6",
        failed=True,
    )
    d = derive_inference(quota, WorkloadReport())
    status, reason, message = next(c[1:] for c in d.conditions if c[0] == "ResourceReady")
    assert (status, reason) == ("False", "QuotaExceeded") and "standardNCSv3Family" in message
    assert conds(d)["WorkspaceSucceeded"] == ("False", "workspaceFailed")
    assert d.state == "Pending"


def test_waiting_for_nodes_is_pending_not_failed():
    d = derive_inference(NodeReport(required=2, ready=("n1",)), WorkloadReport())
    assert conds(d)["ResourceReady"] == ("False", "NodesPending")
    assert conds(d)["InferenceReady"] == ("False", "ResourceNotReady")
    assert conds(d)["WorkspaceSucceeded"] == ("False", "workspacePending")


def test_tuning_lifecycle():
    pending = derive_tuning(READY_NODES, WorkloadReport(exists=True))
    assert conds(pending)["JobStarted"][0] == "False" and pending.state == "Pending"
    running = derive_tuning(READY_NODES, WorkloadReport(exists=True, started=True))
    assert conds(running)["JobStarted"][0] == "True" and running.state == "Running"
    done = derive_tuning(READY_NODES, WorkloadReport(exists=True, started=True, succeeded=True))
    assert conds(done)["WorkspaceSucceeded"] == ("True", "workspaceSucceeded")
    assert done.state == "Succeeded"
    failed = derive_tuning(
        READY_NODES,
        WorkloadReport(exists=True, started=True, failed=True, message="EmptyDataset: no rows"),
    )
    assert conds(failed)["WorkspaceSucceeded"] == ("False", "workspaceFailed")
    assert failed.state == "Failed"
    assert "InferenceReady" in failed.drop


def test_write_keeps_foreign_fields_and_moves_transition_times_only_on_status_change():
    stored = {"conditions": [], "benchmarkResult": {"tps": 10}}
    pending = derive_inference(NodeReport(required=1), WorkloadReport())
    s1, changed = write(stored, pending, generation=1, at="t1")
    assert changed and s1["benchmarkResult"] == {"tps": 10}
    s2, changed = write(s1, pending, generation=1, at="t2")
    assert not changed and s2 == s1
    ready = derive_inference(READY_NODES, WorkloadReport(exists=True, desired=1, ready=1))
    s3, changed = write(s2, ready, generation=1, at="t3")
    by_type = {c["type"]: c for c in s3["conditions"]}
    assert changed and by_type["InferenceReady"]["lastTransitionTime"] == "t3"
    assert by_type["InferenceReady"]["observedGeneration"] == 1
    assert s3["workerNodes"] == ["aks-ws1-0"] and s3["state"] == "Ready"
    # A toggle's leftovers go: a tuning status drops InferenceReady.
    s4, _ = write(s3, derive_tuning(READY_NODES, WorkloadReport()), generation=2, at="t4")
    assert "InferenceReady" not in {c["type"] for c in s4["conditions"]}


def test_invalid_sets_every_condition_with_the_reason():
    d = derive_invalid("inference", "UnsupportedPreset", "preset 'x' is not in the catalog")
    assert {s for _, s, _, _ in d.conditions} == {"False"}
    assert {r for _, _, r, _ in d.conditions} == {"UnsupportedPreset"}
