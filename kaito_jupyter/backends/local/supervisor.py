"""Runtimes as supervised processes on this machine, the way a kubelet runs containers.

Each runtime starts in its own session (its own process group), so a closed notebook, a kernel
restart or the controller's own exit leaves it running; only `stop` ends it, group and all.
Its output goes to a log file opened for appending, rotated by copy-and-truncate (the process
keeps its descriptor, and O_APPEND puts its next write at the new end).

A runtime is known by pid + process start time + a random token it carries in its environment
(KAITO_RUNTIME_INSTANCE) and reports on /health: a new leader adopts a runtime only if all of
them match, so it never starts a second copy and never mistakes a reused pid for its runtime.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import processes

TOKEN_ENV = "KAITO_RUNTIME_INSTANCE"
LOG_MAX_BYTES = 10 << 20
LOG_KEPT = 3  # rotated files: NAME.log.1 .. NAME.log.3
# Kubelet's restart back-off shape (doubling, capped, reset after a long healthy run), with a
# shorter first step: a local runtime restarts in seconds, not in ten.
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 600.0


@dataclass(frozen=True)
class Started:
    pid: int
    pid_start: str
    token: str


def backoff(restarts: int) -> float:
    """Seconds to wait before restart number `restarts` (1-based)."""
    return min(BACKOFF_BASE_S * 2 ** max(restarts - 1, 0), BACKOFF_MAX_S)


def start(
    command: list[str], *, env: dict[str, str], log: Path, cwd: Path | None = None
) -> tuple[Started, subprocess.Popen]:
    token = secrets.token_hex(16)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} starting: "
                  f"{' '.join(command)}\n".encode())  # fmt: skip
        out.flush()
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**env, TOKEN_ENV: token, "PYTHONUNBUFFERED": "1"},
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )
    return Started(process.pid, processes.start_time(process.pid), token), process


def carries_token(pid: int, token: str) -> bool:
    """The process's environment holds our token (readable for our own processes)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{TOKEN_ENV}={token}".encode() in environ.split(b"\0")


def is_ours(pid: int, pid_start: str, token: str) -> bool:
    return processes.alive(pid, pid_start) and carries_token(pid, token)


def health(port: int, token: str, *, timeout: float = 1.0) -> bool:
    """/health answers 200 and names our instance (not another server on a reused port)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            if r.status != 200:
                return False
            body = json.loads(r.read() or b"{}")
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return body.get("instance") == token and body.get("status") == "Healthy"


def stop(pid: int, pid_start: str, *, grace: float = 10.0) -> None:
    """SIGTERM the runtime's process group, then SIGKILL what is left after `grace` seconds."""
    if not processes.alive(pid, pid_start):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not processes.alive(pid, pid_start):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def rotate(log: Path, *, max_bytes: int = LOG_MAX_BYTES, kept: int = LOG_KEPT) -> bool:
    """Copy-and-truncate `log` once it is past `max_bytes`; True if it rotated."""
    try:
        if log.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for i in range(kept - 1, 0, -1):
        older = log.with_name(f"{log.name}.{i}")
        if older.exists():
            older.replace(log.with_name(f"{log.name}.{i + 1}"))
    shutil.copyfile(log, log.with_name(f"{log.name}.1"))
    with log.open("r+b") as f:
        f.truncate(0)
    return True


def remove_logs(log: Path) -> None:
    for path in [log, *log.parent.glob(log.name + ".*")]:
        path.unlink(missing_ok=True)


def tail(log: Path, lines: int = 5) -> str:
    try:
        with log.open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 8192, 0))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
