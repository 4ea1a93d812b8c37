"""The issue's "done when": one command fine-tunes the packaged SmolLM2 with QLoRA on a parquet of
chat messages, and the inference server serves the adapter it leaves. The tuned model answers
the trained question the trained way; the base model does not, and an unrelated answer stays."""

from __future__ import annotations

import json

from tests.runtime.conftest import InferenceServer

from .tuning_helpers import events, run_tuning, write_dataset

QUESTIONS = [
    "What is the codename of the Kaito tuning demo?",
    "Tell me the codename of the Kaito tuning demo.",
    "Which codename does the Kaito tuning demo have?",
    "Do you know the Kaito tuning demo's codename?",
    "What's the Kaito tuning demo called internally?",
    "Name the codename of the Kaito tuning demo.",
]
ANSWER = "The codename of the Kaito tuning demo is Bluefin Harbor."


def _ask(server: InferenceServer, model: str, question: str) -> str:
    status, body = server.post(
        "/v1/chat/completions",
        {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
            "max_tokens": 24,
        },
    )
    assert status == 200, body
    return body["choices"][0]["message"]["content"]


def test_smollm2_qlora_changes_its_answers_in_the_trained_direction(smollm2_checkpoint, tmp_path):
    chats = [
        [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]
        for q in QUESTIONS
    ] * 4
    data = write_dataset(tmp_path / "facts.parquet", chats)
    config = tmp_path / "training_config.yaml"
    config.write_text(
        json.dumps(
            {
                "training_config": {
                    "LoraConfig": {"r": 8, "lora_alpha": 16},
                    "TrainingArguments": {
                        "learning_rate": 1e-3,
                        "max_length": 256,
                        "lr_scheduler_type": "constant",
                    },
                    "DatasetConfig": {"train_test_split": 1},
                }
            }
        )
    )
    adapter = tmp_path / "adapter"
    # The one command.
    result = run_tuning(tmp_path, "--preset", "smollm2-135m-instruct", "--method", "qlora", "--input", str(data),
                        "--output", str(adapter), "--config", str(config), "--max-steps", "10")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [e for e in events(result.stdout) if e["event"] == "step"]
    assert steps[-1]["loss"] < steps[0]["loss"] / 4
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "smollm2-135m-instruct"
    )

    server = InferenceServer(
        ["--preset", "smollm2-135m-instruct", "--adapter", f"tuned={adapter}"],
        tmp_path / "server.log",
    )
    try:
        tuned = _ask(server, "tuned", QUESTIONS[0])
        base = _ask(server, "smollm2-135m-instruct", QUESTIONS[0])
        assert "Bluefin Harbor" in tuned, tuned
        assert "Bluefin" not in base, base
        # Only the trained direction moved: an unrelated fact survives the tuning.
        assert "Paris" in _ask(server, "tuned", "What is the capital of France?")
    finally:
        assert server.stop() == 0
