"""`python -m tests.testbed build|run`: the shell's way into the test bed.

    python -m tests.testbed build
    python -m tests.testbed run [--arm] [--registry] [--gpu-nodes SKU=N[:label=value,...]]
                                [--workdir DIR] [--keep] -- COMMAND...

`run` brings the bed up, runs COMMAND with KUBECONFIG (and, with --arm, the Azure settings)
in its environment, tears everything down and exits with COMMAND's exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.testbed import build
from tests.testbed.gpu_nodes import parse_group
from tests.testbed.processes import die_with_parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.testbed")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build (or find in the cache) the control-plane binaries")
    run = commands.add_parser("run", help="bring the bed up, run COMMAND in it, tear it down")
    run.add_argument("--arm", action="store_true", help="also start the simulated ARM")
    run.add_argument("--registry", action="store_true", help="also start an OCI registry")
    run.add_argument(
        "--gpu-nodes",
        action="append",
        default=[],
        metavar="SKU=N[:label=value,...]",
        help="KWOK GPU nodes to create (repeatable); agentpool=NAME picks the pool",
    )
    run.add_argument("--workdir", type=Path, help="where the bed keeps its files (default: temp)")
    run.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    args = parser.parse_args(argv)
    if args.command == "build":
        return build.main()
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        parser.error("run needs a command after --")
    try:
        groups = [parse_group(spec) for spec in args.gpu_nodes]
    except ValueError as exc:
        parser.error(str(exc))
    return run_command(command, groups, args.arm, args.registry, args.workdir, args.keep)


class _Terminated(Exception):
    def __init__(self, signum: int):
        self.signum = signum


def run_command(command, groups, arm, registry, workdir, keep) -> int:
    from tests.testbed.bed import Testbed

    own_dir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="kaito-testbed-"))
    child: subprocess.Popen | None = None

    def on_signal(signum, _frame):
        # While COMMAND runs it gets the signal and decides; we tear down after it exits.
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)
            return
        raise _Terminated(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, on_signal)

    bed = Testbed(workdir, gpu_nodes=groups, arm=arm, registry=registry)
    try:
        started = time.monotonic()
        bed.start()
        print(
            f"testbed: up in {time.monotonic() - started:.1f} s; KUBECONFIG={bed.kubeconfig}",
            file=sys.stderr,
            flush=True,
        )
        env = {**os.environ, **bed.environment()}
        child = _start_command(command, env)
        returncode = _wait(child)
        return returncode if returncode >= 0 else 128 - returncode
    except _Terminated as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    finally:
        # Ignore further signals while tearing down: a second Ctrl-C must not leave strays.
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        if child is not None:
            _reap_group(child)
        bed.stop()
        if own_dir and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif keep:
            print(f"testbed: kept {workdir}", file=sys.stderr)


def _start_command(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    interactive = sys.stdin.isatty()

    def become_job():
        # COMMAND runs as its own process group, so that whatever it leaves behind is
        # signalled with it; on a terminal it becomes the foreground job, so Ctrl-C and
        # keyboard input reach it as if it ran alone.
        os.setpgid(0, 0)
        if interactive:
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(sys.stdin.fileno(), os.getpgrp())
            signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(signum, signal.SIG_DFL)
        die_with_parent(signal.SIGTERM)

    try:
        return subprocess.Popen(command, env=env, preexec_fn=become_job)
    except FileNotFoundError:
        raise SystemExit(f"testbed: command not found: {command[0]}") from None


def _wait(child: subprocess.Popen) -> int:
    while True:
        try:
            return child.wait()
        except _Terminated:
            # Raised by the handler only when the child already exited; loop to collect it.
            continue


def _reap_group(child: subprocess.Popen) -> None:
    if sys.stdin.isatty():
        # Take the terminal back from COMMAND's process group.
        with contextlib.suppress(OSError):
            previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            os.tcsetpgrp(sys.stdin.fileno(), os.getpgrp())
            signal.signal(signal.SIGTTOU, previous)
    for signum, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0)):
        try:
            os.killpg(child.pid, signum)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(child.pid):
            time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
