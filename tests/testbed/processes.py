"""Start the bed's programs so that none of them outlives the bed.

Three layers, because each covers a way the others miss:
- every program gets its own process group, and teardown signals the whole group;
- every program asks the kernel (prctl PR_SET_PDEATHSIG) for SIGKILL when its parent dies,
  which covers a Python process killed with SIGKILL, where no Python code runs;
- an atexit hook stops whatever is still registered when the interpreter exits normally or
  through an unhandled exception.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies.

    Called in the child between fork and exec. PDEATHSIG fires when the forking *thread*
    exits, so programs must be started from a thread that lives as long as the bed (the main
    one).
    """
    _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


class ProcessFailed(RuntimeError):
    pass


class Program:
    """One running program, its log file and how to stop it."""

    def __init__(self, name: str, popen: subprocess.Popen, log_path: Path):
        self.name = name
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        if not self.running():
            raise ProcessFailed(
                f"{self.name} exited with {self.popen.returncode}; last lines of "
                f"{self.log_path}:\n{self.log_tail()}"
            )

    def stop(self, grace: float = 5.0) -> None:
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # The group may hold children even after the leader exited; kill it either way.
        _signal_group(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Supervisor:
    """Starts programs and stops all of them, newest first, exactly once."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.programs: list[Program] = []
        self._lock = threading.Lock()
        _live.add(self)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Program:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        program = Program(name, popen, log_path)
        with self._lock:
            self.programs.append(program)
        return program

    def stop_all(self) -> None:
        with self._lock:
            programs, self.programs = self.programs, []
        for program in reversed(programs):
            program.stop()
        _live.discard(self)


_live: set[Supervisor] = set()


@atexit.register
def _stop_everything() -> None:
    for supervisor in list(_live):
        supervisor.stop_all()


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    programs: list[Program] = (),
    interval: float = 0.2,
) -> None:
    """Poll `condition` until true; fail early, with its log, if a program it needs has died."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        for program in programs:
            program.check_running()
        try:
            if condition():
                return
        except Exception as exc:  # the thing polled is not up yet; remember why
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    logs = "".join(f"\n--- {p.name} ({p.log_path}):\n{p.log_tail()}" for p in programs)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s{detail}{logs}")
