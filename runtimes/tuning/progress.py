"""Progress reporting: JSON lines on stdout, the same lines appended to a progress file, and the
failure reason where Kubernetes (and the local supervisor) read it.

The progress file is what the controller and the widgets follow: `<work dir>/progress.jsonl`
unless `--progress-file` or KAITO_TUNING_PROGRESS_FILE names another. Every line is one JSON
object with an `event`: `started`, `step`, `eval`, `checkpoint`, `completed` or `failed`.
`step` lines carry step, total_steps, epoch, loss, learning_rate, trained_tokens,
tokens_per_second and eta_seconds; `eval` lines carry eval_loss.

A failure is also written, as {"reason": CamelCase, "message": ...}, to the container's
termination message file: KAITO_TERMINATION_LOG if set, else /dev/termination-log when it exists
(Kubernetes mounts it). The controller turns it into the JobStarted/WorkspaceSucceeded
condition's reason and message.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

TERMINATION_LOG = "/dev/termination-log"
_TERMINATION_LIMIT = 4096  # bytes Kubernetes keeps of a termination message


def termination_log_path() -> Path | None:
    explicit = os.environ.get("KAITO_TERMINATION_LOG")
    if explicit:
        return Path(explicit)
    default = Path(TERMINATION_LOG)
    return default if default.exists() else None


def write_termination_message(reason: str, message: str) -> Path | None:
    """Write the failure where the controller reads it; returns the path written, if any."""
    path = termination_log_path()
    if path is None:
        return None
    body = {"reason": reason, "message": message}
    text = json.dumps(body)
    if len(text.encode()) > _TERMINATION_LIMIT:
        body["message"] = message[: _TERMINATION_LIMIT - 200] + "..."
        text = json.dumps(body)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError:
        return None
    return path


class Progress:
    """Emits progress events to stdout and to the progress file."""

    def __init__(self, path: Path | None, *, stream=None):
        self.path = path
        self.stream = stream or sys.stdout
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        line = json.dumps(record, default=_plain)
        print(line, file=self.stream, flush=True)
        if self.path is not None:
            with open(self.path, "a") as handle:
                handle.write(line + "\n")
        return record


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return str(value)


def read(path: Path) -> list[dict[str, Any]]:
    """Every complete event in a progress file (a torn last line is skipped)."""
    events = []
    if not path.exists():
        return events
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
