"""What a benchmark section returns, and small helpers every section shares."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = DOCS / "benchmarks"  # per-section JSON and PNGs


@dataclass
class Goal:
    """One goal from the issue, with what was measured against it."""

    name: str  # e.g. "aggregate tok/s at 16 streams vs transformers serve --continuous-batching"
    target: str  # e.g. ">= 1.3x"
    measured: str  # e.g. "1.52x (154.1 vs 101.3 tok/s)"
    met: bool


@dataclass
class Section:
    name: str  # module name, e.g. "serving"
    title: str
    markdown: str  # the section body: setup, tables, image links (relative to docs/)
    goals: list[Goal] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # exact commands, for the page
    versions: dict[str, str] = field(default_factory=dict)
    cpu: str = ""  # what it ran on (sections are re-run one at a time, maybe elsewhere)

    def save(self) -> Path:
        from kaito_jupyter.runtimes import cpu

        if not self.cpu:
            flags = ", ".join(cpu.isa_flags())
            self.cpu = f"{cpu.model_name()}" + (f" ({flags})" if flags else "")
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, path: Path) -> Section:
        data = json.loads(path.read_text())
        data["goals"] = [Goal(**g) for g in data.get("goals", [])]
        return cls(**data)


@dataclass
class Context:
    runs: int = 3  # repeated runs per measurement; report medians
    quick: bool = False  # fewer/shorter cases, for trying the harness itself
    out: Path = RESULTS  # where PNGs go (link them as benchmarks/<file>.png from docs/)


def median(values) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
