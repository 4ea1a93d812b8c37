"""The local backend's pure parts of supervision: back-off, log rotation, the image store,
ConfigMap files, pid identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest

from kaito_jupyter.backends.local import config_maps, processes, supervisor
from kaito_jupyter.backends.local.image_store import ImageStore
from kaito_jupyter.errors import KaitoError


def test_backoff_doubles_and_is_capped():
    assert [supervisor.backoff(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert supervisor.backoff(50) == supervisor.BACKOFF_MAX_S


def test_rotation_copies_and_truncates_while_the_writer_appends(tmp_path):
    log = tmp_path / "ws.log"
    writer = log.open("ab")  # as the runtime holds it: O_APPEND
    writer.write(b"a" * 100)
    writer.flush()
    assert not supervisor.rotate(log, max_bytes=1000)
    assert supervisor.rotate(log, max_bytes=50, kept=2)
    writer.write(b"next\n")
    writer.flush()
    assert log.read_bytes() == b"next\n"  # the writer's next line lands at the new start
    assert (tmp_path / "ws.log.1").read_bytes() == b"a" * 100
    writer.write(b"b" * 100)
    writer.flush()
    supervisor.rotate(log, max_bytes=50, kept=2)
    assert (tmp_path / "ws.log.2").read_bytes() == b"a" * 100
    assert (tmp_path / "ws.log.1").read_bytes().startswith(b"next\n")
    supervisor.remove_logs(log)
    assert list(tmp_path.iterdir()) == []
    writer.close()


def test_a_started_process_is_known_by_pid_start_time_and_token(tmp_path):
    started, process = supervisor.start(
        # It must outlive the checks: its stdin is /dev/null, so it sleeps rather than reads.
        [sys.executable, "-c", "import time; time.sleep(60)"], env=dict(os.environ),
        log=tmp_path / "p.log",
    )  # fmt: skip
    try:
        assert supervisor.is_ours(started.pid, started.pid_start, started.token)
        assert not supervisor.is_ours(started.pid, started.pid_start, "another-token")
        assert not supervisor.is_ours(started.pid, "1", started.token)
        assert os.getsid(started.pid) == started.pid  # its own session
    finally:
        supervisor.stop(started.pid, started.pid_start, grace=5)
    process.wait(10)
    assert not processes.alive(started.pid, started.pid_start)
    assert "starting:" in (tmp_path / "p.log").read_text()


def test_health_refuses_a_server_that_is_not_ours():
    assert not supervisor.health(1, "token")  # nothing listens on port 1


def _adapter(directory):
    directory.mkdir()
    (directory / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (directory / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (directory / "README.md").write_text("not part of the image")
    return directory


def test_the_image_store_keeps_kaitos_adapter_layout(tmp_path):
    store = ImageStore(tmp_path / "oci")
    digest = store.put_adapter("kaito-demo/adapter:v1", _adapter(tmp_path / "a"), preset="p")
    assert store.find("kaito-demo/adapter:v1") == digest
    assert store.find("oci://kaito-demo/adapter:v1") == digest
    assert store.find("kaito-demo/adapter:v2") is None
    assert store.references() == ["kaito-demo/adapter:v1"]
    index = json.loads((tmp_path / "oci" / "index.json").read_text())
    assert json.loads((tmp_path / "oci" / "oci-layout").read_text())["imageLayoutVersion"]
    manifest = json.loads(store._blob(index["manifests"][0]["digest"]).read_text())
    assert manifest["annotations"]["sh.kaito.model.name"] == "p"
    with tarfile.open(store._blob(manifest["layers"][0]["digest"])) as tar:
        assert sorted(tar.getnames()) == [
            "data", "data/adapter_config.json", "data/adapter_model.safetensors",
        ]  # fmt: skip
    out = store.extract_adapter("kaito-demo/adapter:v1", tmp_path / "cache")
    assert json.loads((out / "adapter_config.json").read_text()) == {"r": 8}
    assert store.extract_adapter("kaito-demo/adapter:v1", tmp_path / "cache") == out
    # The same tag again replaces the entry; the same content gives the same digest.
    assert store.put_adapter("kaito-demo/adapter:v1", tmp_path / "a") != ""
    assert len(json.loads((tmp_path / "oci" / "index.json").read_text())["manifests"]) == 1


def test_the_image_store_refuses_what_is_not_a_reference(tmp_path):
    with pytest.raises(ValueError):
        ImageStore(tmp_path / "oci").put_adapter("Not A Reference", _adapter(tmp_path / "a"))


def test_config_maps_are_files_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_LOCAL_DIR", str(tmp_path))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    written = config_maps.save("qlora-quick", "training_config:\n  LoraConfig: {r: 8}\n")
    assert written == tmp_path / "configmaps" / "qlora-quick.yaml"
    with pytest.raises(KaitoError, match="DNS-1123"):
        config_maps.save("../escape", "a: 1")
    with pytest.raises(KaitoError, match="expected a mapping"):
        config_maps.save("list", "- 1")


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    started = processes.start_time(child.pid)
    assert processes.alive(child.pid, started)
    child.stdin.close()
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    assert not processes.alive(child.pid, started)
    child.wait()
    assert not processes.alive(child.pid, started)
