"""Who a process is, beyond its pid: pids are reused, so a pid is matched with its start time.

A lease holder or a runtime is "the same process" only if both the pid and the start time read
from /proc/<pid>/stat match what was recorded (Linux; elsewhere the pid alone is checked).
"""

from __future__ import annotations

import os
from pathlib import Path


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if it is gone or unreadable)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "" if not _exists(pid) else "?"
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    state = fields[0]
    if state in ("Z", "X"):  # a zombie has exited; nothing of it runs
        return ""
    return fields[19]  # field 22 of stat: starttime


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def alive(pid: int, started: str) -> bool:
    """Whether the process `pid` that started at `started` still runs."""
    if pid <= 0:
        return False
    now = start_time(pid)
    if not now:
        return False
    return now == started or "?" in (now, started)


def me() -> tuple[int, str]:
    pid = os.getpid()
    return pid, start_time(pid)
