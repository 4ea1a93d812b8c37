"""Jobs run to completion on KWOK GPU nodes: the pod annotations in tests/testbed/kwok_stages.py
decide how long a pod runs and how it exits, and the real job controller does the rest."""

from __future__ import annotations

import time

from kubernetes import client

from tests.testbed.bed import NodeGroup
from tests.testbed.kwok_stages import EXIT_CODE, RUN_FOR


def _job(name: str, annotations: dict[str, str]) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kubernetes.azure.com/agentpool": "jobs"},
                    "tolerations": [
                        {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}
                    ],
                    "containers": [
                        {
                            "name": "tuning",
                            "image": "mcr.microsoft.com/aks/kaito/kaito-tuning:0.0.1",
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                },
            },
        },
    }


def _finished(batch: client.BatchV1Api, name: str, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = batch.read_namespaced_job_status(name, "default")
        conditions = {c.type: c.status for c in job.status.conditions or []}
        if conditions.get("Complete") == "True" or conditions.get("Failed") == "True":
            return conditions
        time.sleep(0.3)
    raise AssertionError(f"job {name} did not finish in {timeout} s")


def test_a_job_completes(testbed):
    testbed.add_gpu_nodes(NodeGroup("Standard_NC6s_v3", 1, pool="jobs"))
    batch = client.BatchV1Api(testbed.api_client)
    started = time.monotonic()
    batch.create_namespaced_job("default", _job("tuning-ok", {RUN_FOR: "2s"}))
    conditions = _finished(batch, "tuning-ok")
    assert conditions.get("Complete") == "True"
    assert time.monotonic() - started >= 2
    job = batch.read_namespaced_job_status("tuning-ok", "default")
    assert job.status.succeeded == 1
    [pod] = testbed.core().list_namespaced_pod("default", label_selector="job-name=tuning-ok").items
    assert pod.status.phase == "Succeeded"
    assert pod.status.container_statuses[0].state.terminated.exit_code == 0


def test_a_job_whose_pod_exits_non_zero_fails(testbed):
    testbed.add_gpu_nodes(NodeGroup("Standard_NC6s_v3", 1, pool="jobs"))
    batch = client.BatchV1Api(testbed.api_client)
    batch.create_namespaced_job("default", _job("tuning-oom", {EXIT_CODE: "137", RUN_FOR: "0.5s"}))
    conditions = _finished(batch, "tuning-oom")
    assert conditions.get("Failed") == "True"
    job = batch.read_namespaced_job_status("tuning-oom", "default")
    failed = next(c for c in job.status.conditions if c.type == "Failed")
    assert failed.reason == "BackoffLimitExceeded"
    [pod] = (
        testbed.core().list_namespaced_pod("default", label_selector="job-name=tuning-oom").items
    )
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 137
    assert terminated.reason == "Error"
