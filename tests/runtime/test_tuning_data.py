"""The tuning job's input side: configs, data sources, formats and the failure reasons the
controller shows. Runs the CLI in-process (bad input fails before any model is loaded)."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kaito_jupyter.runtimes.tuning import cli, config, progress, records, sources

from kaito_jupyter.errors import RuntimeFailure

from .tuning_helpers import conversations, write_dataset

KAITO_QLORA_PARAMS = """
training_config:
  ModelConfig:
    torch_dtype: "bfloat16"
    local_files_only: true
    device_map: "auto"
  QuantizationConfig:
    load_in_4bit: true
    bnb_4bit_quant_type: "nf4"
    bnb_4bit_compute_dtype: "bfloat16"
    bnb_4bit_use_double_quant: true
  LoraConfig:
    r: 8
    lora_alpha: 8
    lora_dropout: 0.0
  TrainingArguments:
    output_dir: "/mnt/results"
    ddp_find_unused_parameters: false
    save_strategy: "no"
    per_device_train_batch_size: 1
  DataCollator:
    mlm: true
  DatasetConfig:
    shuffle_dataset: true
    train_test_split: 1
"""


@pytest.fixture
def job(tmp_path, tiny_model, monkeypatch):
    """Run the CLI in-process; returns (exit code, termination message, progress events)."""
    log = tmp_path / "termination-log"
    monkeypatch.setenv("KAITO_TERMINATION_LOG", str(log))

    def run(*args: str, method: str = "lora"):
        out = tmp_path / "out"
        code = cli.main(
            ["--model", str(tiny_model), "--method", method, "--output", str(out), *args]
        )
        message = json.loads(log.read_text()) if log.exists() else None
        return code, message, progress.read(out / "progress.jsonl")

    return run


def test_kaitos_default_configmaps_load(tmp_path):
    path = tmp_path / "qlora.yaml"
    path.write_text(KAITO_QLORA_PARAMS)
    cfg = config.load(path, "qlora")
    assert cfg.quantization.load_in_4bit and cfg.quantization.double_quant
    assert cfg.quantization.quant_type == "nf4"
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 8.0, 0.0)
    assert cfg.dataset.train_test_split == 1
    assert any("device_map" in note for note in cfg.notes)

    # The ConfigMap manifest itself is accepted too, and lora refuses 4-bit.
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "data": {"training_config.yaml": KAITO_QLORA_PARAMS},
    }
    path.write_text(yaml.safe_dump(configmap))
    assert config.load(path, "qlora").lora.r == 8
    with pytest.raises(
        RuntimeFailure, match=r"for method lora, QuantizationConfig\.load_in_4bit must not be true"
    ):
        config.load(path, "lora")
    assert not config.load(None, "lora").quantization.load_in_4bit


def test_unknown_keys_are_refused_with_the_accepted_ones(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("training_config:\n  TrainingArguments:\n    learning_rte: 0.001\n")
    with pytest.raises(RuntimeFailure) as err:
        config.load(path, "qlora")
    assert err.value.reason == "InvalidTuningConfig"
    assert "unknown key TrainingArguments.learning_rte" in err.value.message
    assert (
        "learning_rate" in err.value.message and err.value.hint == "did you mean 'learning_rate'?"
    )
    path.write_text("training_config:\n  LoraConfg:\n    r: 4\n")
    with pytest.raises(RuntimeFailure, match="unknown section 'LoraConfg'"):
        config.load(path, "qlora")
    path.write_text("training_config:\n  LoraConfig:\n    r: eight\n")
    with pytest.raises(RuntimeFailure, match=r"LoraConfig\.r must be int"):
        config.load(path, "qlora")


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("d.parquet", "messages"),
        ("d.jsonl", "messages"),
        ("d.json", "prompt"),
        ("d.csv", "prompt"),
        ("d.csv", "messages"),
    ],
)
def test_every_format_and_row_shape_reads(tmp_path, name, shape):
    chats = conversations(6)
    path = write_dataset(tmp_path / name, chats, shape=shape)
    got = records.load([path], config.Dataset())
    assert len(got) == 6
    assert got[0][-1] == next(m for m in chats[0] if m["role"] == "assistant")
    if shape == "messages":
        assert got == chats


def test_bad_data_fails_with_a_reason_where_the_controller_reads_it(job, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, message, events = job("--input", str(empty))
    assert code == 1
    assert message["reason"] == "EmptyDataset"
    assert events[-1]["event"] == "failed" and events[-1]["reason"] == "EmptyDataset"

    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"question_text": "hi", "reply": "hello"}) + "\n")
    code, message, _ = job("--input", str(wrong))
    assert code == 1 and message["reason"] == "InvalidDatasetColumns"
    assert "question_text" in message["message"] and "messages" in message["message"]

    silent = write_dataset(tmp_path / "silent.jsonl", [[{"role": "user", "content": "hello?"}]])
    code, message, _ = job("--input", str(silent))
    assert code == 1 and message["reason"] == "NoAssistantTurn"

    big = write_dataset(tmp_path / "big.parquet", conversations(50))
    code, message, _ = job("--input", str(big), "--max-dataset-bytes", "100")
    assert code == 1 and message["reason"] == "DatasetTooLarge"
    assert "budget" in message["message"]

    code, message, _ = job("--input", str(tmp_path / "nowhere.parquet"))
    assert code == 1 and message["reason"] == "InvalidInput"


def _serve(directory: Path):
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(directory))
    )
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_urls_obey_the_ssrf_rules_unless_private_hosts_are_allowed(tmp_path, monkeypatch):
    served = tmp_path / "www"
    write_dataset(served / "train.jsonl", conversations(4))
    server = _serve(served)
    url = f"http://127.0.0.1:{server.server_address[1]}/train.jsonl"
    budget = sources.DiskBudget(10**9)
    try:
        monkeypatch.delenv(sources.ALLOW_PRIVATE_ENV, raising=False)
        with pytest.raises(RuntimeFailure) as err:
            sources.fetch([url], tmp_path / "work", budget=budget)
        assert err.value.reason == "InvalidInputURL" and "this machine" in err.value.message
        for blocked in (
            "http://169.254.169.254/latest/meta-data",
            "http://metadata.google.internal/x",
            "file:///etc/passwd",
        ):
            with pytest.raises(RuntimeFailure):
                sources.check_url(blocked)

        monkeypatch.setenv(sources.ALLOW_PRIVATE_ENV, "1")
        [path] = sources.fetch([url], tmp_path / "work", budget=budget)
        assert len(records.load([path], config.Dataset())) == 4
        # Metadata endpoints stay refused even then: the switch is about private data hosts.
        with pytest.raises(RuntimeFailure, match="metadata"):
            sources.check_url("http://metadata.google.internal/x")
    finally:
        server.shutdown()


def test_an_unreachable_url_fails_after_retries(job, monkeypatch):
    monkeypatch.setenv(sources.ALLOW_PRIVATE_ENV, "1")
    monkeypatch.setattr(sources.time, "sleep", lambda s: None)  # the backoff, not the test, waits
    code, message, _ = job("--input", "http://127.0.0.1:9/train.parquet")
    assert code == 1 and message["reason"] == "DatasetDownloadFailed"
    assert "after 5 attempts" in message["message"]
