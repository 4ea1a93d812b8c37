"""Tuning output as an image: the tuning job pushes its adapter to a real registry on loopback, in
Kaito's adapter layout, and the inference server pulls the same image back as an adapter source.
Strength 1.0 and 0.0 give different answers; strength 0.0 is the base model."""

from __future__ import annotations

import base64
import json

import pytest
from kaito_jupyter.runtimes import oci

from tests.runtime import tiny
from tests.runtime.conftest import InferenceServer
from tests.runtime.tuning_helpers import conversations, events, run_tuning, write_dataset

PROMPT = {
    "messages": [{"role": "user", "content": "What colour is the sky?"}],
    "temperature": 0,
    "max_tokens": 16,
}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return tiny.build_model(tmp_path_factory.mktemp("tiny") / "model")


def test_tuned_adapter_round_trips_through_the_registry(oci_registry, tiny_model, tmp_path):
    data = write_dataset(tmp_path / "chats.jsonl", conversations(64, seed=2))
    config = tmp_path / "training_config.yaml"
    config.write_text(json.dumps({"training_config": {
        "LoraConfig": {"r": 8, "lora_alpha": 64},
        "TrainingArguments": {"learning_rate": 5e-3, "max_length": 128, "lr_scheduler_type": "constant"},
    }}))  # fmt: skip
    secret = tmp_path / "push-secret" / ".dockerconfigjson"  # a mounted dockerconfigjson secret
    secret.parent.mkdir()
    auth = base64.b64encode(b"kaito:unused-on-an-open-registry").decode()
    secret.write_text(json.dumps({"auths": {oci_registry: {"auth": auth}}}))
    image = f"{oci_registry}/adapters/tiny-tuned:v1"

    result = run_tuning(tmp_path, "--model", str(tiny_model), "--method", "qlora", "--input", str(data),
                        "--output", image, "--config", str(config), "--max-steps", "30",
                        "--push-secret", str(secret.parent),
                        KAITO_TUNING_WORKDIR=str(tmp_path / "work"),
                        KAITO_ALLOWED_PRIVATE_REGISTRIES=oci_registry)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    done = events(result.stdout)[-1]
    assert done["event"] == "completed" and done["image"] == image
    manifest = oci.inspect(image)
    assert manifest["digest"] == done["digest"]
    assert manifest["annotations"][oci.ANNOTATION_MODEL_NAME] == str(tiny_model)
    # Checkpoints and progress live in a work directory keyed by the image, for resume.
    assert len(list((tmp_path / "work").glob("*/progress.jsonl"))) == 1

    server = InferenceServer(
        ["--model", str(tiny_model), "--served-model-name", "tiny",
         "--adapter", f"tuned={image}:1.0", "--adapter", f"off={image}:0.0"],
        tmp_path / "server.log",
        env={"KAITO_JUPYTER_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    try:
        answers = {}
        for model in ("tuned", "off", "tiny"):
            status, body = server.post("/v1/chat/completions", {**PROMPT, "model": model})
            assert status == 200, body
            answers[model] = body["choices"][0]["message"]["content"]
        assert answers["tuned"] != answers["off"]
        assert answers["off"] == answers["tiny"]
    finally:
        assert server.stop() == 0
