"""The local backend's store, lease and backend: SQLite in a temporary directory, no runtimes.

Processes here are real (other Python interpreters writing the same file); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

from kaito_jupyter import backends, config
from kaito_jupyter.backends.local import LocalBackend, paths, processes
from kaito_jupyter.backends.local.lease import Lease, holder_alive
from kaito_jupyter.backends.local.store import LeaseRow, Store
from kaito_jupyter.errors import BackendError, KaitoError
from kaito_jupyter.provisioners import local as local_provisioner


def smollm2(name: str = "ws-a", **inference) -> dict:
    return {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "inference": {"preset": {"name": "smollm2-135m-instruct"}, **inference},
    }


@pytest.fixture
def backend(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("KAITO_LOCAL_DIR", str(tmp_path / "state"))
    return LocalBackend(config.load())


def events_until(backend, stop_after: int, action) -> list:
    """Collect watch events in a thread while `action` runs; stop after `stop_after` events."""
    stop = threading.Event()
    seen: list = []
    ready = threading.Event()

    def follow():
        for event in backend.watch(stop=stop):
            seen.append(event)
            ready.set()
            if len(seen) >= stop_after:
                stop.set()

    thread = threading.Thread(target=follow)
    thread.start()
    ready.wait(30)
    action()
    thread.join(60)
    stop.set()
    assert not thread.is_alive()
    return seen


# ------------------------------------------------------------------------ paths and config


def test_state_dir_defaults_to_the_jupyter_data_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("KAITO_LOCAL_DIR", raising=False)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    assert paths.state_dir(config.load()) == tmp_path / "data" / "kaito"
    monkeypatch.delenv("JUPYTER_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.state_dir(config.load()) == tmp_path / "xdg" / "jupyter" / "kaito"


def test_state_dir_from_kaito_yaml_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("KAITO_LOCAL_DIR", raising=False)
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "kaito.yaml").write_text(f"local_dir: {tmp_path / 'file'}\n")
    assert paths.state_dir(config.load()) == tmp_path / "file"
    monkeypatch.setenv("KAITO_LOCAL_DIR", str(tmp_path / "env"))
    assert paths.state_dir(config.load()) == tmp_path / "env"
    assert LocalBackend(config.load()).target() == f"local ({tmp_path / 'env'})"


# ------------------------------------------------------------------------ apply, get, delete


def test_apply_creates_then_is_unchanged_then_configured(backend):
    [created] = backend.apply([smollm2()])
    assert created.action == "created"
    meta = backend.get("ws-a").metadata
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"]
    assert meta["namespace"] == "default"
    rv = int(meta["resourceVersion"])
    assert backend.apply([smollm2()])[0].action == "unchanged"
    assert backend.get("ws-a").resource_version == str(rv)
    changed = smollm2(adapters=[{"source": {"name": "a", "image": "x/a:1"}, "strength": "0.5"}])
    assert backend.apply([changed])[0].action == "configured"
    after = backend.get("ws-a")
    assert after.generation == 2 and int(after.resource_version) > rv
    assert after.metadata["uid"] == meta["uid"]


def test_label_change_keeps_generation(backend):
    backend.apply([smollm2()])
    doc = smollm2()
    doc["metadata"]["labels"] = {"team": "ml"}
    assert backend.apply([doc])[0].action == "configured"
    assert backend.get("ws-a").generation == 1
    assert backend.get("ws-a").metadata["labels"] == {"team": "ml"}


def test_apply_is_all_or_none(backend):
    backend.apply([smollm2("ws-b")])
    backend.delete("ws-b")  # being deleted: an update is refused
    with pytest.raises(BackendError, match="ws-b is being deleted"):
        backend.apply([smollm2("ws-new"), smollm2("ws-b")])
    with pytest.raises(backends.NotFound):
        backend.get("ws-new")


def test_dry_run_stores_nothing(backend):
    [applied] = backend.apply([smollm2()], dry_run=True)
    assert applied.action == "created"
    assert backend.list() == []


def test_status_survives_an_update(backend):
    backend.apply([smollm2()])
    backend.write_status("default", "ws-a", {"state": "Ready"})
    backend.apply([smollm2(adapters=[{"source": {"name": "a", "image": "x/a:1"}}])])
    assert backend.get("ws-a").data["status"] == {"state": "Ready"}


def test_delete_marks_then_finalize_removes(backend):
    backend.apply([smollm2()])
    stored = backend.delete("ws-a")
    assert stored.deleting
    assert backend.get("ws-a").deleting  # the finalizer holds it until the controller is done
    backend.finalize("default", "ws-a")
    with pytest.raises(backends.NotFound, match='workspace "ws-a" not found'):
        backend.get("ws-a")
    with pytest.raises(backends.NotFound):
        backend.delete("ws-a")


def test_unknown_fields_are_kept(backend):
    doc = smollm2()
    doc["inference"]["futureField"] = {"x": 1}
    backend.apply([doc])
    assert backend.get("ws-a").data["inference"]["futureField"] == {"x": 1}


def test_events_are_counted_like_kubernetes(backend):
    backend.apply([smollm2()])
    for _ in range(3):
        backend.record_event("default", "ws-a", "Warning", "BackOff", "restarting")
    backend.record_event("default", "ws-a", "Normal", "Ready", "ready")
    events = backend.events("ws-a")
    assert [(e.reason, e.count) for e in events] == [("BackOff", 3), ("Ready", 1)]
    assert events[0].object == "Workspace/ws-a"


# ------------------------------------------------------------------------ watch


def test_watch_lists_then_follows_changes(backend):
    backend.apply([smollm2("ws-old")])

    def changes():
        backend.apply([smollm2("ws-a")])
        backend.write_status("default", "ws-a", {"state": "Pending"})
        backend.delete("ws-a")
        backend.finalize("default", "ws-a")

    seen = events_until(backend, 5, changes)
    assert [(e.type, e.workspace.name) for e in seen] == [
        ("ADDED", "ws-old"),
        ("ADDED", "ws-a"),
        ("MODIFIED", "ws-a"),
        ("MODIFIED", "ws-a"),
        ("DELETED", "ws-a"),
    ]
    assert seen[2].workspace.data["status"] == {"state": "Pending"}
    assert seen[3].workspace.deleting


def test_watch_sees_another_process_commit(backend, tmp_path):
    script = textwrap.dedent(
        """
        from kaito_jupyter import config
        from kaito_jupyter.backends.local import LocalBackend
        LocalBackend(config.load()).apply([{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
            "metadata": {"name": "from-elsewhere"},
            "inference": {"preset": {"name": "smollm2-135m-instruct"}}}])
        """
    )
    seen = events_until(
        backend, 1, lambda: subprocess.run([sys.executable, "-c", script], check=True)
    )
    assert [(e.type, e.workspace.name) for e in seen] == [("ADDED", "from-elsewhere")]


def test_watch_relists_when_the_log_was_pruned(backend):
    from kaito_jupyter.backends.local import store as store_mod

    backend.apply([smollm2("ws-a"), smollm2("ws-b")])

    def churn():
        db = backend.store.connection()
        with backend.store.transaction() as tx:
            backend.store.write(tx, dict(backend.get("ws-a").data), "MODIFIED")
        backend.delete("ws-b")
        backend.finalize("default", "ws-b")
        db.execute("DELETE FROM changes")  # as if CHANGES_KEPT were exceeded
        with backend.store.transaction() as tx:
            backend.store.write(tx, dict(backend.get("ws-a").data), "MODIFIED")

    assert store_mod.CHANGES_KEPT > 0
    seen = events_until(backend, 4, churn)
    kinds = [(e.type, e.workspace.name) for e in seen]
    assert kinds[:2] == [("ADDED", "ws-a"), ("ADDED", "ws-b")]
    assert ("DELETED", "ws-b") in kinds[2:] and ("MODIFIED", "ws-a") in kinds[2:]


# ------------------------------------------------------------------------ crash safety


def test_a_process_killed_mid_transaction_leaves_the_store_whole(backend, tmp_path):
    backend.apply([smollm2("before")])
    script = textwrap.dedent(
        f"""
        import os, sys
        from kaito_jupyter.backends.local.store import Store
        store = Store({str(backend.store.path)!r})
        with store.transaction() as db:
            data = {{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                    "metadata": {{"name": "half", "namespace": "default"}}}}
            store.write(db, data, "ADDED")
            print("written", flush=True)
            sys.stdin.readline()   # killed here, before COMMIT
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "written"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    names = [s.name for s in backend.list()]
    assert names == ["before"]
    db = sqlite3.connect(backend.store.path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    backend.apply([smollm2("after")])  # the write lock was released with the process
    assert [s.name for s in backend.list()] == ["after", "before"]


def test_a_writer_killed_at_random_leaves_only_whole_workspaces(backend):
    script = textwrap.dedent(
        f"""
        from kaito_jupyter.backends.local.store import Store
        store = Store({str(backend.store.path)!r})
        i = 0
        while True:
            with store.transaction() as db:
                for j in range(5):   # five workspaces per transaction, each one large
                    data = {{"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace",
                            "metadata": {{"name": f"w{{i}}-{{j}}", "namespace": "default"}},
                            "inference": {{"preset": {{"name": "smollm2-135m-instruct"}}}},
                            "pad": "x" * 20000}}
                    store.write(db, data, "ADDED")
            i += 1
            if i == 20:
                print("going", flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "going"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    fresh = Store(backend.store.path)
    db = fresh.connect()
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = fresh.read_all(db)
    assert len(rows) >= 100 and len(rows) % 5 == 0  # whole transactions only
    assert all(r["pad"] == "x" * 20000 for r in rows)


# ------------------------------------------------------------------------ lease


def _dead_process() -> tuple[int, str]:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE
    )
    started = processes.start_time(child.pid)
    child.communicate(b"\n")
    return child.pid, started


def test_one_holder_at_a_time(backend):
    first = Lease(backend.store, duration=60)
    second = Lease(backend.store, duration=60)
    assert first.try_acquire()
    assert not second.try_acquire()
    assert first.try_acquire()  # renewing
    assert first.holds() and not second.holds()
    first.release()
    assert second.try_acquire()
    assert backend.store.lease().transitions == 0  # released, then taken: a fresh row


def test_an_expired_lease_is_taken_over(backend):
    first = Lease(backend.store, duration=60)
    assert first.try_acquire()
    with backend.store.transaction() as db:  # its holder stopped renewing long ago
        row = backend.store.lease(db)
        backend.store.put_lease(db, LeaseRow(**{**row.__dict__, "renewed": row.renewed - 120}))
    second = Lease(backend.store, duration=60)
    assert second.try_acquire()
    assert backend.store.lease().transitions == 1
    assert not first.holds() and not first.try_acquire()


def test_a_dead_holder_loses_the_lease_at_once(backend):
    pid, started = _dead_process()
    with backend.store.transaction() as db:
        now = __import__("time").time()
        backend.store.put_lease(db, LeaseRow("gone", pid, started, now, now, 3600, 0))
    assert not holder_alive(backend.store.lease())
    assert backend.leader() is None
    assert Lease(backend.store, duration=60).try_acquire()


def test_a_reused_pid_is_not_the_holder(backend):
    pid, started = processes.me()
    with backend.store.transaction() as db:
        now = __import__("time").time()
        backend.store.put_lease(db, LeaseRow("other", pid, "12345", now, now, 3600, 0))
    assert not holder_alive(backend.store.lease())
    assert processes.alive(pid, started)


# ------------------------------------------------------------------------ admission


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as it is here: no NVIDIA GPU (the same answer on any test machine)."""
    monkeypatch.setattr(local_provisioner, "_nvidia_smi", lambda: ())
    monkeypatch.setattr(local_provisioner, "_proc_gpus", lambda *a: ())
    local_provisioner.machine.cache_clear()
    yield
    local_provisioner.machine.cache_clear()


def test_a_gpu_preset_is_refused_with_the_fit_message(backend, no_gpu):
    doc = smollm2()
    doc["inference"]["preset"]["name"] = "phi-3-mini-4k-instruct"
    [issue] = backend.admission_issues(doc)
    assert issue.path == "inference.preset.name"
    assert issue.message.startswith("Insufficient total GPU memory: this machine (")
    assert "has a total of 0Gi (no GPU), but preset phi-3-mini-4k-instruct requires at least" in (
        issue.message
    )
    assert "smollm2-135m-instruct" in issue.message


def test_cpu_presets_need_no_gpu_and_no_instance_type(backend, no_gpu):
    assert backend.admission_issues(smollm2()) == []


def test_containers_and_other_volumes_are_refused_locally(backend):
    doc = {"apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "t"},
           "inference": {"template": {"spec": {"containers": []}}}}  # fmt: skip
    assert [i.path for i in backend.admission_issues(doc)] == ["inference.template"]
    tune = {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "t"},
        "tuning": {"preset": {"name": "smollm2-135m-instruct"}, "method": "qlora",
                   "input": {"volumeSource": {"persistentVolumeClaim": {"claimName": "d"}}},
                   "output": {"volumeSource": {"hostPath": {"path": "relative"}}}},
    }  # fmt: skip
    found = {i.path: i.message for i in backend.admission_issues(tune)}
    assert "only hostPath" in found["tuning.input.volumeSource"]
    assert found["tuning.output.volumeSource.hostPath.path"] == "must be an absolute path"


def test_the_command_layer_admits_through_the_backend(backend, no_gpu):
    from kaito_jupyter import commands
    from kaito_jupyter.errors import ValidationError

    text = "apiVersion: kaito.sh/v1beta1\nkind: Workspace\nmetadata:\n  name: big\n"
    text += "inference:\n  preset:\n    name: phi-3-mini-4k-instruct\n"
    with pytest.raises(ValidationError) as caught:
        commands.admit(text, backend=backend)
    [issue] = caught.value.issues
    assert issue.line == 7 and "Insufficient total GPU memory" in issue.message


# ------------------------------------------------------------------------ the rest


def test_nodes_is_this_machine(backend, no_gpu):
    [node] = backend.nodes()
    assert node.gpus == 0 and node.ready and node.instance_type is None
    assert node.labels["kaito.sh/local"] == "true"


def test_endpoint_needs_a_running_server(backend):
    backend.apply([smollm2()])
    with pytest.raises(BackendError, match="no running inference server yet"):
        backend.endpoint("ws-a")
    backend.store.put_runtime("default", "ws-a", {"kind": "inference", "port": 5123,
                                                  "model": "smollm2-135m-instruct"})  # fmt: skip
    endpoint = backend.endpoint("ws-a")
    assert endpoint.url == "http://127.0.0.1:5123" and endpoint.model == "smollm2-135m-instruct"


def test_logs_tail_reads_the_runtime_log(backend):
    backend.apply([smollm2()])
    assert list(backend.logs("ws-a")) == []
    log = paths.log_path(backend.root, "default", "ws-a")
    log.parent.mkdir(parents=True)
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    assert list(backend.logs("ws-a", tail=2)) == ["line 8", "line 9"]
    with pytest.raises(backends.NotFound):
        list(backend.logs("nope"))


def test_run_controller_names_the_backends_it_knows():
    with pytest.raises(KaitoError, match="no controller for backend 'nomad'"):
        backends.run_controller(config.Settings(), "nomad")


def test_newer_schema_is_refused(tmp_path):
    store = Store(tmp_path / "s.db")
    store.connection().execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(BackendError, match="newer kaito-jupyter"):
        Store(tmp_path / "s.db")


def test_runtime_rows_round_trip(backend):
    backend.store.put_runtime("default", "ws-a", {"pid": 1, "token": "t"})
    assert backend.store.runtime("default", "ws-a") == {"pid": 1, "token": "t"}
    assert json.dumps(backend.store.runtimes()[("default", "ws-a")])
    backend.store.drop_runtime("default", "ws-a")
    assert backend.store.runtime("default", "ws-a") is None


def test_a_local_tuning_image_needs_no_push_secret():
    from kaito_jupyter import api
    from kaito_jupyter.errors import ValidationError

    text = textwrap.dedent(
        """
        apiVersion: kaito.sh/v1beta1
        kind: Workspace
        metadata: {name: tune}
        tuning:
          preset: {name: smollm2-135m-instruct}
          method: qlora
          input: {urls: ["https://example.com/d.jsonl"]}
          output: {image: kaito-demo/adapter:v1}
        """
    )
    assert api.check_text(text, target="local")
    with pytest.raises(ValidationError, match="imagePushSecret"):
        api.check_text(text, target="cluster")


def test_status_of_an_older_generation_reads_pending(backend):
    from kaito_jupyter import commands
    from kaito_jupyter.controller import status as st

    backend.apply([smollm2()])
    ready = st.derive_inference(
        st.NodeReport(required=1, ready=("here",)),
        st.WorkloadReport(exists=True, desired=1, ready=1),
    )
    status, _ = st.write(None, ready, generation=1)
    backend.write_status("default", "ws-a", status)
    assert commands.phase(backend.get("ws-a")) == "ready"
    backend.apply([smollm2(adapters=[{"source": {"name": "a", "image": "x/a:1"}}])])
    assert commands.phase(backend.get("ws-a")) == "pending"  # generation 2, status of 1


def test_a_name_is_found_in_its_only_namespace(backend):
    doc = smollm2("ws-ml")
    doc["metadata"]["namespace"] = "ml"
    backend.apply([doc, smollm2("ws-a")])
    assert backend.get("ws-ml").namespace == "ml"
    assert backend.get("ws-a").namespace == "default"
    other = smollm2("ws-a")
    other["metadata"]["namespace"] = "ml"
    backend.apply([other])
    assert backend.get("ws-a").namespace == "default"  # default wins a tie
    assert backend.get("ws-a", "ml").namespace == "ml"
    assert backend.delete("ws-ml").namespace == "ml"


def test_logs_follow_new_lines_until_stopped(backend):
    backend.apply([smollm2()])
    log = paths.log_path(backend.root, "default", "ws-a")
    log.parent.mkdir(parents=True)
    log.write_text("old\n")
    stop = threading.Event()
    lines = backend.logs("ws-a", follow=True, stop=stop)
    assert next(lines) == "old"
    with log.open("a") as f:
        f.write("new 1\nnew ")
        f.flush()
        f.write("2\n")
    assert next(lines) == "new 1"
    assert next(lines) == "new 2"  # a line written in two pieces arrives whole
    stop.set()
    assert list(lines) == []
