"""Notebook side: what `%load_ext kaito_jupyter` costs, and that it pulls in no ML stack."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.harness import Context, Goal, Section, median, table

TITLE = "Notebook side: `%load_ext kaito_jupyter`"
GOAL_SECONDS = 0.5
HEAVY = ("torch", "transformers", "peft", "bitsandbytes")

# Runs in a fresh interpreter; prints JSON. `preload_ipython` mimics a kernel, where IPython is
# already imported before the extension loads.
PROBE = r"""
import json, sys, time
if {preload}:
    import IPython.core.magic
t = time.perf_counter()
import kaito_jupyter, kaito_jupyter.magics
elapsed = time.perf_counter() - t
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))
print(json.dumps({{"seconds": elapsed, "heavy": heavy, "modules": len(sys.modules)}}))
"""


def _probe(preload: bool) -> dict:
    code = PROBE.format(preload=preload, heavy=HEAVY)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _top_imports(n: int = 8) -> list[tuple[str, float]]:
    """The slowest top-level modules by cumulative import time (python -X importtime)."""
    err = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import kaito_jupyter, kaito_jupyter.magics"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        # "import time:  self [us] | cumulative | imported package"; nesting is shown by indent.
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # top level: one space after the bar
            rows.append((name.strip(), int(cumulative_us) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def run(ctx: Context) -> Section:
    runs = max(ctx.runs, 10)  # cheap: take more samples than the minimum
    cold = [_probe(preload=False) for _ in range(runs)]
    kernel = [_probe(preload=True) for _ in range(runs)]
    cold_s = median(r["seconds"] for r in cold)
    kernel_s = median(r["seconds"] for r in kernel)
    heavy = sorted({m for r in cold + kernel for m in r["heavy"]})
    top = _top_imports()

    body = [
        "Each sample is a fresh interpreter timing `import kaito_jupyter, kaito_jupyter.magics`, "
        "which is what `%load_ext kaito_jupyter` runs. *Cold* imports IPython too; *in a kernel* "
        "IPython is already loaded, as it is when a notebook runs the magic.",
        "",
        table(
            ["case", f"median of {runs} (s)", "min (s)", "max (s)", "ML modules imported"],
            [
                [
                    "cold (IPython included)",
                    cold_s,
                    min(r["seconds"] for r in cold),
                    max(r["seconds"] for r in cold),
                    ", ".join(heavy) or "none",
                ],
                [
                    "in a kernel",
                    kernel_s,
                    min(r["seconds"] for r in kernel),
                    max(r["seconds"] for r in kernel),
                    ", ".join(heavy) or "none",
                ],
            ],
        ),
        "",
        "Slowest top-level imports (cumulative, one cold sample, `python -X importtime`):",
        "",
        table(["module", "seconds"], [[name, secs] for name, secs in top]),
    ]
    return Section(
        name="notebook",
        title=TITLE,
        markdown="\n".join(body),
        goals=[
            Goal(
                name="`import kaito_jupyter, kaito_jupyter.magics`, cold",
                target=f"<= {GOAL_SECONDS} s",
                measured=f"{cold_s:.3f} s (in a kernel: {kernel_s:.3f} s)",
                met=cold_s <= GOAL_SECONDS,
            ),
            Goal(
                name="no torch, transformers, peft or bitsandbytes imported",
                target="none",
                measured=", ".join(heavy) or "none",
                met=not heavy,
            ),
        ],
        commands=["python -m benchmarks --only notebook"],
    )
