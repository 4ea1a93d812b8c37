"""What the tuning tests build at test time: chat datasets in every file format, and a runner for
the tuning CLI. The tiny model is tests/runtime/tiny.py's (the `tiny_model` fixture)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from kaito_jupyter import config

COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
THINGS = ["apple", "sky", "grass", "sun", "plum", "carrot", "night", "snow", "lemon", "leaf"]


def conversations(count: int, seed: int = 0) -> list[list[dict]]:
    """Learnable chats: a fixed colour per thing, in a fixed sentence."""
    rng = random.Random(seed)
    color = {thing: COLORS[i % len(COLORS)] for i, thing in enumerate(THINGS)}
    out = []
    for _ in range(count):
        thing = rng.choice(THINGS)
        chat = [
            {"role": "user", "content": f"What colour is the {thing}?"},
            {
                "role": "assistant",
                "content": f"The {thing} is {color[thing]}, always {color[thing]}.",
            },
        ]
        if rng.random() < 0.3:
            chat.insert(0, {"role": "system", "content": "Answer in one sentence."})
        out.append(chat)
    return out


def write_dataset(path: Path, chats: list[list[dict]], *, shape: str = "messages") -> Path:
    """Write chats as parquet, csv, json or jsonl (by suffix), as messages or prompt/response."""
    if shape == "messages":
        rows = [{"messages": chat} for chat in chats]
    else:
        rows = [
            {
                "prompt": next(m["content"] for m in chat if m["role"] == "user"),
                "response": next(m["content"] for m in chat if m["role"] == "assistant"),
            }
            for chat in chats
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif path.suffix == ".csv":
        import csv

        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()}
                )
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


def tuning_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAITO_")}
    env.update(
        OMP_NUM_THREADS="1",
        KAITO_TERMINATION_LOG=str(tmp_path / "termination-log"),
        KAITO_JUPYTER_CACHE=str(config.cache_root()),
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def tuning_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "kaito_jupyter.runtimes.tuning", *args]


def run_tuning(
    tmp_path: Path, *args: str, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        tuning_command(*args),
        env=tuning_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def events(stdout: str) -> list[dict]:
    out = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
