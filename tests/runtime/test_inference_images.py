"""Weights and adapters from OCI images in a real registry on loopback, the way Kaito ships
them: weights under /workspace/tfs/weights, adapters under /data."""

from __future__ import annotations

from kaito_jupyter.runtimes import oci

from tests.runtime.conftest import InferenceServer

CHAT = {
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0,
    "max_tokens": 12,
}


def test_weights_and_adapter_images(oci_registry, tiny_model, tiny_adapters, tiny_server, tmp_path):
    weights = f"{oci_registry}/models/tiny:1.0"
    adapter = f"{oci_registry}/adapters/one:v1"
    oci.push_directory(tiny_model, weights, prefix="workspace/tfs/weights")
    oci.push_directory(
        tiny_adapters["one"], adapter, annotations={oci.ANNOTATION_MODEL_NAME: "tiny"}
    )

    cache = tmp_path / "cache"
    server = InferenceServer(
        [
            "--model",
            f"oci://{weights}",
            "--served-model-name",
            "tiny",
            "--adapter",
            f"pulled={adapter}:0.5",
            "--adapter",
            f"pulled-full={adapter}",
        ],
        tmp_path / "server.log",
        env={"KAITO_JUPYTER_CACHE": str(cache)},
    )
    try:
        assert "pulling weights image" in server.logs()
        assert any((cache / "weights").iterdir())
        # The same weights and adapter as the directory-based server: the same answers.
        for model, local in (("tiny", "tiny"), ("pulled", "one-half"), ("pulled-full", "one")):
            got = server.post("/v1/chat/completions", {**CHAT, "model": model})[1]
            want = tiny_server.post("/v1/chat/completions", {**CHAT, "model": local})[1]
            assert got["choices"][0]["message"] == want["choices"][0]["message"], model
    finally:
        assert server.stop() == 0


def test_missing_image_is_a_clear_error(oci_registry, tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kaito_jupyter.runtimes.inference",
            "--model",
            f"oci://{oci_registry}/models/absent:1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "KAITO_JUPYTER_CACHE": str(tmp_path)},
    )
    assert result.returncode == 2
    assert "error: could not pull weights image" in result.stderr


def test_unreachable_hub_is_a_clear_error(tmp_path):
    """A preset whose weights live on the Hugging Face hub, with the hub unreachable."""
    import os
    import subprocess
    import sys

    from kaito_jupyter.runtimes.local_server import free_port

    env = {
        **os.environ,
        "KAITO_JUPYTER_CACHE": str(tmp_path),
        "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
        "HF_HUB_DISABLE_XET": "1",
    }
    command = [sys.executable, "-m", "kaito_jupyter.runtimes.inference", "--preset", "gpt-oss-120b"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "error: could not download openai/gpt-oss-120b@" in result.stderr
    assert "hint:" in result.stderr
