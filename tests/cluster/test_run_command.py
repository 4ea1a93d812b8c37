"""`python -m tests.testbed run ... -- COMMAND`: COMMAND sees the bed (and, with --arm, the
product's Azure settings), its exit code comes back, and nothing the bed started outlives it,
even when the runner is told to stop mid-command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Run inside the bed: the product loads its settings from the environment `run --arm` exported,
# builds its ARM client, and reads the cluster through it; kubectl-free, the kubernetes client
# lists the GPU nodes.
PROBE = """
from kaito_jupyter import config
from kaito_jupyter.provisioners.azure_client import container_service_client
from kubernetes import client, config as kube_config
import os, urllib.request

settings = config.load()
with container_service_client(settings) as aks:
    cluster = aks.managed_clusters.get(settings.azure.resource_group, settings.azure.cluster_name)
print("cluster", cluster.name, cluster.provisioning_state)
kube_config.load_kube_config()
nodes = client.CoreV1Api().list_node().items
print("nodes", sorted(n.metadata.labels["node.kubernetes.io/instance-type"] for n in nodes))
with urllib.request.urlopen("http://" + os.environ["KAITO_TESTBED_REGISTRY"] + "/v2/") as r:
    print("registry", r.status)
"""


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tests.testbed", "run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and str(os.getpid()) != proc.name:
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_run_with_arm_and_registry_exports_product_settings(tmp_path):
    workdir = tmp_path / "bed"
    result = _run(
        [
            "--arm",
            "--registry",
            "--gpu-nodes",
            "Standard_NC24ads_A100_v4=2:agentpool=wsa100,kaito.sh/workspace=a100",
            "--workdir",
            str(workdir),
            "--",
            sys.executable,
            "-c",
            PROBE,
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cluster kaito-testbed Succeeded" in result.stdout
    # The system pool's CPU node, and the two GPU nodes asked for.
    expected = "['Standard_D4s_v3', 'Standard_NC24ads_A100_v4', 'Standard_NC24ads_A100_v4']"
    assert f"nodes {expected}" in result.stdout
    assert "registry 200" in result.stdout
    log = (workdir / "arm" / "arm-requests.jsonl").read_text()
    assert '"operation": "managedClusters.get"' in log
    assert _processes_mentioning(str(workdir)) == []


def test_run_returns_the_command_exit_code_and_leaves_nothing_running(tmp_path):
    workdir = tmp_path / "bed"
    result = _run(["--workdir", str(workdir), "--", "sh", "-c", "kubectl get ns default; exit 7"])
    assert result.returncode == 7, result.stderr[-3000:]
    assert "default" in result.stdout
    assert _processes_mentioning(str(workdir)) == []


def test_sigterm_during_the_command_tears_everything_down(tmp_path):
    workdir = tmp_path / "bed"
    marker = tmp_path / "command-started"
    # A sleep no other process on this shared machine runs (a plain `sleep 300` once was).
    child = f"sleep 300.{os.getpid()}"
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.testbed",
            "run",
            "--workdir",
            str(workdir),
            "--",
            "sh",
            "-c",
            # A background child of COMMAND, too: the whole process group is reaped.
            f"{child} & touch {marker}; wait",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert runner.poll() is None, runner.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.2)
    assert _processes_mentioning(str(workdir)), "the bed should be running now"
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert _processes_mentioning(str(workdir)) == []
    assert _processes_mentioning(child) == []
