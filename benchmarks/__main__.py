"""`python -m benchmarks [--only serving,tuning,notebook,control_plane,freshness] [--runs 3] [--quick]`

Runs the chosen sections (all by default), stores each result under docs/benchmarks/, and
re-assembles docs/benchmarks.md from every stored section.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks.harness import DOCS, RESULTS, Context, Section, table

SECTIONS = ("serving", "tuning", "notebook", "control_plane", "freshness")  # page order
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "trl", "tornado")


def _proc_field(path: str, key: str) -> str | None:
    """The value of `key` in a /proc file of "key: value" lines, or None."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), None)


def _memory_gib() -> str:
    total_kib = _proc_field("/proc/meminfo", "MemTotal")
    return f"{int(total_kib.split()[0]) / 2**20:.0f} GiB" if total_kib else "unknown"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    from kaito_jupyter.runtimes import cpu

    rows = [
        ["CPU", f"{cpu.model_name()}, {os.cpu_count()} logical cores"],
        # Which kernels run (oneDNN's, llama.cpp's) follows from these: a figure is tied to them.
        ["ISA flags", ", ".join(cpu.isa_flags()) or "none of " + ", ".join(cpu.ISA_FLAGS)],
        ["native bf16 products", "yes" if cpu.native_bf16() else "no"],
        ["memory", _memory_gib()],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Python", platform.python_version()],
        *[[pkg, _version(pkg)] for pkg in PACKAGES],
        ["commit", _commit()],
        ["date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")],
    ]
    return table(["", ""], rows)


def assemble(env: str) -> str:
    sections = []
    for name in SECTIONS:
        path = RESULTS / f"{name}.json"
        if path.exists():
            sections.append(Section.load(path))
    goal_rows = [
        [s.title, g.name, g.target, g.measured, "met" if g.met else "**not met**"]
        for s in sections
        for g in s.goals
    ]
    parts = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks`). Every peer runs in the same invocation as ours, "
        "on the same inputs; figures are medians of repeated runs on a shared, noisy machine.",
        "",
        "## Machine and versions",
        "",
        "The machine of the latest run; each section names the CPU it was measured on.",
        "",
        env,
        "",
        "## Goals",
        "",
        table(["section", "goal", "target", "measured", "status"], goal_rows)
        if goal_rows
        else "_no sections run yet_",
    ]
    for s in sections:
        parts += ["", f"## {s.title}", ""]
        if s.cpu:
            parts += [f"Measured on: {s.cpu}.", ""]
        if s.commands:
            parts += ["Commands:", "", "```sh", *s.commands, "```", ""]
        parts.append(s.markdown)
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--only", help=f"comma-separated sections ({', '.join(SECTIONS)})")
    ap.add_argument(
        "--runs", type=int, default=3, help="repeated runs per measurement (median reported)"
    )
    ap.add_argument("--quick", action="store_true", help="fewer, shorter cases: to try the harness")
    args = ap.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [c for c in chosen if c not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.runs < 3 and not args.quick:
        ap.error(
            "--runs must be at least 3 (medians of at least 3 runs); use --quick to try things"
        )
    ctx = Context(runs=args.runs, quick=args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        started = time.monotonic()
        section = importlib.import_module(f"benchmarks.{name}").run(ctx)
        section.save()
        print(f"== {name} done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    page = DOCS / "benchmarks.md"
    page.write_text(assemble(machine()))
    print(f"wrote {page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
