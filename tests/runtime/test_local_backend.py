"""The local backend for real: `kaito controller --backend local` processes reconciling a SQLite
store into SmolLM2 inference servers on this machine, as issue 12 asks.

Controllers and runtimes are real processes, started here and stopped by their own pids.
Progress is followed through the backend's watch; waits have generous deadlines and nothing
asserts how long anything took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from kaito_jupyter import commands, config
from kaito_jupyter.api import conditions as c
from kaito_jupyter.backends.local import LocalBackend, paths, processes
from kaito_jupyter.controller import status as st
from tests.testbed.processes import wait_until

PRESET = "smollm2-135m-instruct"


def workspace(name: str, preset: str = PRESET) -> dict:
    return {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name},
            "inference": {"preset": {"name": preset}}}  # fmt: skip


class Controller:
    """One `kaito controller --backend local` process, its output in a file."""

    def __init__(self, root: Path, log: Path, *extra: str):
        env = {**os.environ, "KAITO_LOCAL_DIR": str(root), "OMP_NUM_THREADS": "1"}
        self.log_path = log
        self.out = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kaito_jupyter.cli", "controller", "--backend", "local",
             "--lease-seconds", "3", *extra],
            env=env, stdout=self.out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            if sig == signal.SIGSTOP:
                return
            self.process.wait(60)
        self.out.close()


@pytest.fixture
def local(tmp_path, monkeypatch):
    """A backend on its own directory; at the end every controller this test started and every
    runtime in its store is stopped, by pid."""
    monkeypatch.setenv("KAITO_LOCAL_DIR", str(tmp_path / "kaito"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    backend = LocalBackend(config.load())
    started: list[Controller] = []

    def controller(*extra: str) -> Controller:
        one = Controller(backend.root, tmp_path / f"controller-{len(started)}.log", *extra)
        started.append(one)
        return one

    backend.controller = controller  # type: ignore[attr-defined]
    yield backend
    for one in started:
        if one.process.poll() is None:
            os.kill(one.pid, signal.SIGCONT)
        one.stop(signal.SIGKILL)
    for row in backend.store.runtimes().values():
        if row.get("pid") and processes.alive(row["pid"], row["pid_start"]):
            os.killpg(row["pid"], signal.SIGKILL)


def follow(backend, name: str, until, *, timeout: float = 600) -> list:
    """Every version of `name` the watch delivers, until `until(stored)` holds."""
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set)
    timer.start()
    seen = []
    try:
        for event in backend.watch(stop=stop):
            if event.workspace.name != name:
                continue
            seen.append(event)
            if until(event):
                return seen
    finally:
        timer.cancel()
    raise AssertionError(
        f"{name}: not there after {timeout:.0f} s; saw {[summary(e) for e in seen]}"
    )


def summary(event) -> str:
    ws = event.workspace.workspace
    conds = ws.status.conditions if ws.status and ws.status.conditions else []
    return f"{event.type} " + " ".join(f"{x.type}={x.status}:{x.reason}" for x in conds)


def inference_ready(event) -> bool:
    return event.type != "DELETED" and commands.phase(event.workspace) == "ready"


def test_apply_chat_kill_adopt_delete(local, tmp_path):
    first = local.controller()
    local.apply([workspace("ws-smol")])
    seen = follow(local, "ws-smol", inference_ready)
    assert any(
        (x := e.workspace.workspace.condition(c.INFERENCE_READY)) and x.status == "False"
        for e in seen
    ), "it was pending before it was ready"
    stored = local.get("ws-smol")
    assert stored.status.state == c.STATE_READY
    assert stored.status.worker_nodes == [local.nodes()[0].name]

    # It answers, on loopback, as the model the preset names.
    endpoint = local.endpoint("ws-smol")
    assert endpoint.url.startswith("http://127.0.0.1:")
    models = json.loads(urllib.request.urlopen(endpoint.url + "/v1/models", timeout=30).read())
    assert [m["id"] for m in models["data"]] == [PRESET]
    answer = "".join(commands.chat("ws-smol", [{"role": "user", "content": "Say hello."}],
                                   backend=local, max_tokens=8, temperature=0))  # fmt: skip
    assert answer.strip()

    # A killed runtime is restarted, and the conditions say it crashed meanwhile.
    row = local.store.runtime("default", "ws-smol")
    os.killpg(row["pid"], signal.SIGKILL)
    seen = follow(local, "ws-smol", lambda e: inference_ready(e) and
                  local.store.runtime("default", "ws-smol")["pid"] != row["pid"])  # fmt: skip
    crashed = [
        x
        for e in seen
        if (x := e.workspace.workspace.condition(c.INFERENCE_READY)) and x.reason == st.CRASH_LOOP
    ]
    assert crashed and "was killed by signal 9" in crashed[0].message
    restarted = local.store.runtime("default", "ws-smol")
    assert restarted["restarts"] == 1 and not processes.alive(row["pid"], row["pid_start"])
    reasons = [e.reason for e in local.events("ws-smol")]
    assert reasons[:2] == ["Started", "Ready"] and "BackOff" in reasons

    # A new leader adopts the running server: same pid, no second copy.
    first.stop(signal.SIGKILL)
    second = local.controller()
    wait_until(lambda: "Adopted" in [e.reason for e in local.events("ws-smol")],
               timeout=120, what="the new controller adopts the server")  # fmt: skip
    assert local.store.lease().pid == second.pid
    assert local.store.runtime("default", "ws-smol")["pid"] == restarted["pid"]
    assert commands.phase(local.get("ws-smol")) == "ready"
    assert _processes_with_token(restarted["token"]) == [restarted["pid"]]

    # A served model outlives its controller; only delete stops it.
    local.delete("ws-smol")
    follow(local, "ws-smol", lambda e: e.type == "DELETED")
    assert not processes.alive(restarted["pid"], restarted["pid_start"])
    assert local.store.runtimes() == {}
    assert not paths.log_path(local.root, "default", "ws-smol").exists()
    second.stop()


def _processes_with_token(token: str) -> list[int]:
    """Every process on this machine carrying the runtime's token: its copies."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if f"KAITO_RUNTIME_INSTANCE={token}".encode() in environ.split(b"\0"):
                found.append(int(entry.name))
    return found


def test_a_bad_workspace_starts_nothing(local):
    controller = local.controller()
    # Written past admission (by a newer version, or by hand): an unknown preset, and a GPU
    # preset this machine cannot hold.
    with local.store.transaction() as db:
        for name, preset in (("ws-unknown", "llama-9-400b"), ("ws-big", "phi-3-mini-4k-instruct")):
            data = workspace(name, preset)
            data["metadata"].update(namespace="default", generation=1)
            local.store.write(db, data, "ADDED")
    done = {}
    for name in ("ws-unknown", "ws-big"):
        seen = follow(
            local, name, lambda e: bool(e.workspace.workspace.condition(c.INFERENCE_READY))
        )
        done[name] = seen[-1].workspace.workspace
    unknown = done["ws-unknown"].condition(c.INFERENCE_READY)
    assert unknown.status == "False" and unknown.reason == "UnsupportedPreset"
    big = done["ws-big"].condition(c.WORKSPACE_SUCCEEDED)
    assert big.reason == "WorkspaceInvalid" and "Insufficient total GPU memory" in big.message
    assert local.store.runtimes() == {}
    assert not (local.root / "logs").exists()
    assert "inference server started" not in controller.logs()
    assert [e.reason for e in local.events("ws-unknown")] == ["UnsupportedPreset"]


def test_one_of_two_controllers_reconciles_and_a_stale_lease_is_taken_over(local):
    a = local.controller()
    b = local.controller()
    wait_until(lambda: local.leader() is not None, timeout=60, what="a leader")
    leader, standby = (a, b) if local.leader().pid == a.pid else (b, a)
    wait_until(lambda: "leading" in leader.logs(), timeout=60, what="the leader says so")
    assert "leading" not in standby.logs()

    # The leader stops renewing (stopped, not dead): after the lease's 3 s the standby leads.
    os.kill(leader.pid, signal.SIGSTOP)
    wait_until(lambda: (local.store.lease() or leader).pid == standby.pid, timeout=60,
               what="the standby takes the stale lease")  # fmt: skip
    assert local.store.lease().transitions == 1
    os.kill(leader.pid, signal.SIGCONT)
    wait_until(lambda: "lost the lease" in leader.logs(), timeout=60,
               what="the old leader notices it lost the lease")  # fmt: skip
    assert local.store.lease().pid == standby.pid

    # The leader is killed: its dead pid frees the lease at once for the other.
    os.kill(standby.pid, signal.SIGKILL)
    wait_until(lambda: local.store.lease().pid == leader.pid, timeout=60,
               what="the surviving controller takes over")  # fmt: skip


def test_ensure_controller_starts_one_detached_controller(local):
    message = local.ensure_controller()
    assert message and "started a local controller" in message
    leader = local.leader()
    assert leader is not None
    assert local.ensure_controller() is None  # a live leader: nothing more to start
    assert os.getsid(leader.pid) == leader.pid  # its own session: outlives this process
    os.kill(leader.pid, signal.SIGTERM)
    wait_until(lambda: local.leader() is None, timeout=60, what="the controller releases the lease")


DATA = Path(__file__).resolve().parents[2] / "notebooks" / "data"


def test_a_killed_tuning_job_is_retried_and_its_adapter_lands_in_the_local_store(local):
    import shutil

    (local.root / "configmaps").mkdir(parents=True)
    shutil.copy(DATA / "qlora-quick.yaml", local.root / "configmaps" / "quick.yaml")
    local.controller()
    local.apply([{
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "tune"},
        "tuning": {
            "preset": {"name": PRESET}, "method": "qlora", "config": "quick",
            "input": {"name": "d", "volumeSource": {"hostPath": {"path": str(DATA / "kaito-codename.jsonl")}}},
            "output": {"image": "kaito-demo/retried:v1"},
        },
    }])  # fmt: skip

    def stepping(event) -> bool:
        cond = event.workspace.workspace.condition(c.WORKSPACE_SUCCEEDED)
        return bool(cond and "tuning: step" in (cond.message or ""))

    follow(local, "tune", stepping)
    first = local.store.runtime("default", "tune")
    os.killpg(first["pid"], signal.SIGKILL)
    done = follow(local, "tune", lambda e: commands.phase(e.workspace) != "pending")
    final = done[-1].workspace
    assert commands.phase(final) == "succeeded", [summary(e) for e in done]
    message = final.workspace.condition(c.WORKSPACE_SUCCEEDED).message
    assert "kaito-demo/retried:v1 (local image store" in message and "12 steps" in message
    row = local.store.runtime("default", "tune")
    assert row["attempts"] == 1 and row["pid"] != first["pid"]
    reasons = [e.reason for e in local.events("tune")]
    assert reasons == ["Started", "BackOff", "Started", "Completed"]
    from kaito_jupyter.backends.local.image_store import ImageStore

    assert ImageStore(local.root / "oci").find("kaito-demo/retried:v1")
