"""The local backend pushes a tuned adapter to a real registry when (and only when) the image
reference names one it may reach (loopback, allowed here), and a later inference workspace pulls
it back by the same `image:` string. A reference naming no registry stays in the local store."""

from __future__ import annotations

import shutil
from pathlib import Path

from kaito_jupyter.runtimes import oci

from kaito_jupyter import commands, config
from kaito_jupyter.backends.local import LocalBackend
from tests.runtime.test_local_backend import Controller, follow, inference_ready

DATA = Path(__file__).resolve().parents[2] / "notebooks" / "data"


def tuning(name: str, output: str) -> dict:
    return {
        "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": name},
        "tuning": {
            "preset": {"name": "smollm2-135m-instruct"}, "method": "qlora", "config": "quick",
            "input": {"name": "d", "volumeSource": {"hostPath": {"path": str(DATA / "kaito-codename.jsonl")}}},
            "output": {"image": output},
        },
    }  # fmt: skip


def test_tuned_adapter_goes_to_a_loopback_registry_and_back(oci_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("KAITO_LOCAL_DIR", str(tmp_path / "kaito"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    backend = LocalBackend(config.load())
    (backend.root / "configmaps").mkdir(parents=True)
    shutil.copy(DATA / "qlora-quick.yaml", backend.root / "configmaps" / "quick.yaml")
    controller = Controller(backend.root, tmp_path / "controller.log")
    image = f"{oci_registry}/adapters/smollm2-codename:v1"
    try:
        backend.apply([tuning("tune-push", image)])
        done = follow(backend, "tune-push", lambda e: commands.phase(e.workspace) != "pending")
        assert commands.phase(done[-1].workspace) == "succeeded", controller.logs()
        assert oci.inspect(image)  # in the registry ...
        assert backend.root.joinpath("oci").exists() is False  # ... not in the local store

        serve = {
            "apiVersion": "kaito.sh/v1beta1", "kind": "Workspace", "metadata": {"name": "ws"},
            "inference": {"preset": {"name": "smollm2-135m-instruct"},
                          "adapters": [{"source": {"name": "codename", "image": image}}]},
        }  # fmt: skip
        backend.apply([serve])
        follow(backend, "ws", inference_ready)
        question = [{"role": "user", "content": "What is the codename of the Kaito tuning demo?"}]
        answer = "".join(commands.chat("ws", question, backend=backend, adapter="codename",
                                       temperature=0, max_tokens=24))  # fmt: skip
        assert "Bluefin Harbor" in answer
        for name in ("ws", "tune-push"):
            backend.delete(name)
            follow(backend, name, lambda e: e.type == "DELETED")
    finally:
        controller.stop()
