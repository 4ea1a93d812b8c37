"""Training for real, through the CLI, on a tiny random Llama: LoRA and QLoRA lower the loss,
progress goes to stdout and the progress file, and a job killed mid-run resumes from its last
checkpoint and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from kaito_jupyter.runtimes.tuning import progress
from safetensors.torch import load_file

from .tuning_helpers import (
    conversations,
    events,
    run_tuning,
    tuning_command,
    tuning_env,
    write_dataset,
)

STEP_FIELDS = {"step", "total_steps", "epoch", "loss", "eval_loss", "learning_rate", "trained_tokens",
               "tokens_per_second", "eta_seconds"}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_dataset(
        tmp_path_factory.mktemp("data") / "chats.parquet", conversations(160, seed=1)
    )


def _config(path, **training):
    body = {
        "training_config": {
            "LoraConfig": {"r": 8, "lora_alpha": 64, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                        "gate_proj", "up_proj", "down_proj"]},
            "TrainingArguments": {"learning_rate": 5e-3, "max_length": 128, "lr_scheduler_type": "constant",
                                  "logging_steps": 1, **training},
            "DatasetConfig": {"train_test_split": 0.9},
        }
    }  # fmt: skip
    path.write_text(json.dumps(body))
    return path


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_tiny_model_loss_decreases(tmp_path, tiny_model, data, method):
    out = tmp_path / "adapter"
    config = _config(tmp_path / "config.yaml", save_steps=0, eval_steps=20)
    result = run_tuning(tmp_path, "--model", str(tiny_model), "--method", method, "--input", str(data),
                        "--output", str(out), "--config", str(config), "--max-steps", "40")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    printed = events(result.stdout)
    assert printed == progress.read(out / "progress.jsonl")  # stdout and the file agree
    steps = [e for e in printed if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, 41))
    assert steps[0].keys() >= STEP_FIELDS
    first = sum(e["loss"] for e in steps[:5]) / 5
    last = sum(e["loss"] for e in steps[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    evals = [e["eval_loss"] for e in printed if e["event"] == "eval"]
    assert len(evals) == 2 and evals[1] < evals[0]
    done = printed[-1]
    assert done["event"] == "completed" and done["steps"] == 40
    assert done["eval_loss"] == pytest.approx(evals[1], abs=1e-6)

    # The standard peft layout, naming its base, and nothing left of the work in progress.
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["peft_type"] == "LORA" and adapter_config["r"] == 8
    assert adapter_config["base_model_name_or_path"] == str(tiny_model)
    weights = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k for k in weights) and all(
        v.dtype == torch.float32 for v in weights.values()
    )
    assert not (out / "checkpoints").exists()


def _wait_for_checkpoint(path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e["event"] == "checkpoint" and e["step"] >= step for e in progress.read(path)):
            return
        assert process.poll() is None, "the job ended before it was killed"
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint at step {step} within {timeout} s")


def test_a_killed_job_resumes_from_its_checkpoint(tmp_path, tiny_model, data):
    config = _config(tmp_path / "config.yaml", save_steps=20)
    args = ["--model", str(tiny_model), "--method", "qlora", "--input", str(data), "--config", str(config),
            "--max-steps", "150"]  # fmt: skip
    killed = tmp_path / "killed"
    job = subprocess.Popen(tuning_command(*args, "--output", str(killed)), env=tuning_env(tmp_path),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        _wait_for_checkpoint(killed / "progress.jsonl", 40, job)
    finally:
        job.send_signal(signal.SIGKILL)
        job.wait()
    before = progress.read(killed / "progress.jsonl")
    assert before[-1]["event"] != "completed"
    saved = max(e["step"] for e in before if e["event"] == "checkpoint")

    again = run_tuning(tmp_path, *args, "--output", str(killed))
    assert again.returncode == 0, again.stderr[-3000:]
    after = events(again.stdout)
    resumed = next(e for e in after if e["event"] == "resumed")
    assert resumed["step"] == saved
    steps = [e["step"] for e in after if e["event"] == "step"]
    assert steps == list(range(saved + 1, 151))
    assert after[-1]["event"] == "completed" and after[-1]["resumed_from"] == saved

    # The same adapter as a job that was never interrupted: same data order, same updates.
    straight = tmp_path / "straight"
    whole = run_tuning(tmp_path, *args, "--output", str(straight))
    assert whole.returncode == 0, whole.stderr[-3000:]
    got = load_file(killed / "adapter_model.safetensors")
    want = load_file(straight / "adapter_model.safetensors")
    assert got.keys() == want.keys()
    for key in got:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-6, msg=key)
