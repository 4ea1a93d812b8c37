"""Run a notebook headless and print each cell's output as the cell finishes (`make demo`).

    python notebooks/run.py notebooks/quickstart.ipynb

The notebook runs in its own directory, through a real kernel (the magics, the command layer and
the local backend, as a person in JupyterLab would). Exit status 1 if a cell fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def _text(output) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return f"{output.get('ename')}: {output.get('evalue')}\n"
    data = output.get("data", {})
    return data.get("text/plain", "") + ("\n" if data.get("text/plain") else "")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0] if argv else Path(__file__).with_name("quickstart.ipynb")).resolve()
    nb = nbformat.read(path, as_version=4)
    started = time.monotonic()
    clock: dict[str, float] = {}

    def before(cell, cell_index, **_):
        clock["cell"] = time.monotonic()
        source = cell.source.strip()
        shown = "\n".join(f"    {line}" for line in source.splitlines()[:3])
        more = " ..." if len(source.splitlines()) > 3 else ""
        print(f"\n[{cell_index}] {shown.strip()}{more}", flush=True)

    def after(cell, cell_index, **_):
        text = "".join(_text(output) for output in cell.get("outputs", []))  # streamed pieces
        if text.strip():
            print("    " + text.rstrip("\n").replace("\n", "\n    "), flush=True)
        print(f"    ({time.monotonic() - clock['cell']:.1f} s)", flush=True)

    client = NotebookClient(
        nb,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        on_cell_execute=lambda **kw: before(**kw) if kw["cell"].cell_type == "code" else None,
        on_cell_executed=lambda **kw: after(**kw) if kw["cell"].cell_type == "code" else None,
    )
    print(f"running {path.name} headless", flush=True)
    try:
        client.execute()
    except CellExecutionError as exc:
        print(f"\na cell failed:\n{exc}", file=sys.stderr)
        return 1
    failed = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    print(f"\n{path.name}: {len(nb.cells)} cells in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
