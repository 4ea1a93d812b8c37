"""What the widgets show, as pure values: built from stored workspaces, watch events and the
tuning job's progress records, rendered as HTML and text with no widget library at all.

The widgets (status.py, tuning.py, ...) hold one of these and re-render on each change; where
widgets cannot render (nbconvert, plain IPython) the same HTML or text is the output.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kaito_jupyter.api import conditions as c
from kaito_jupyter.api.wire import StoredWorkspace

_COLOUR = {"True": "#1a7f37", "False": "#cf222e", "Unknown": "#6e7781"}
_PHASE_COLOUR = {
    "ready": "#1a7f37",
    "succeeded": "#1a7f37",
    "failed": "#cf222e",
    "pending": "#9a6700",
    "deleting": "#6e7781",
    "deleted": "#6e7781",
}


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """12s, 3m05s, 1h02m: how long a step took or is left."""
    if seconds is None:
        return ""
    s = max(round(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# ------------------------------------------------------------------------------------ status


@dataclass(frozen=True)
class Step:
    """One condition on the timeline: where it stands and when it last moved."""

    type: str
    status: str
    reason: str
    message: str
    at: datetime | None
    elapsed: float | None  # seconds from the workspace's creation to this transition


@dataclass(frozen=True)
class StatusState:
    name: str
    mode: str = "inference"
    phase: str = "pending"
    state: str = ""
    created: datetime | None = None
    steps: tuple[Step, ...] = ()
    nodes_ready: int = 0
    nodes_target: int = 1
    nodes_message: str = ""
    error: str = ""  # the watch broke: what and why

    @classmethod
    def empty(cls, name: str) -> StatusState:
        return cls(name=name)

    @classmethod
    def from_stored(cls, stored: StoredWorkspace) -> StatusState:
        from kaito_jupyter.commands import phase

        ws = stored.workspace
        created = parse_time(stored.metadata.get("creationTimestamp"))
        steps = []
        for cond in stored.status.conditions or []:
            at = parse_time(cond.last_transition_time)
            elapsed = (at - created).total_seconds() if at and created else None
            steps.append(
                Step(cond.type, cond.status, cond.reason or "", cond.message or "", at, elapsed)
            )
        # The timeline reads in the order things happened; undated ones last.
        steps.sort(key=lambda s: (s.at is None, s.at or datetime.min.replace(tzinfo=UTC)))
        status = stored.status
        target = status.target_node_count
        if target is None:
            target = ws.resource.node_count if ws.resource else 1
        resource = ws.condition(c.RESOURCE_READY)
        ready = len(status.worker_nodes or [])
        if resource is not None and resource.status == "True":
            ready = max(ready, target)
        return cls(
            name=stored.name,
            mode=ws.mode,
            phase=phase(stored),
            state=status.state or "",
            created=created,
            steps=tuple(steps),
            nodes_ready=min(ready, target) if target else ready,
            nodes_target=target or 0,
            nodes_message="" if resource is None else (resource.message or resource.reason or ""),
        )

    def on_event(self, event_type: str, stored: StoredWorkspace) -> StatusState:
        """The state after one watch event for this workspace."""
        if event_type == "DELETED":
            return replace(self, phase="deleted")
        return StatusState.from_stored(stored)

    @property
    def done(self) -> bool:
        return self.phase in ("ready", "succeeded", "failed", "deleted")

    def lines(self) -> list[str]:
        out = [f"{self.name}: {self.phase}" + (f" ({self.state})" if self.state else "")]
        out.append(f"  nodes {self.nodes_ready}/{self.nodes_target}  {self.nodes_message}".rstrip())
        for s in self.steps:
            when = f"+{duration(s.elapsed)}" if s.elapsed is not None else ""
            tail = f" {s.reason}" + (f": {s.message}" if s.message else "") if s.reason else ""
            out.append(f"  {when:>8}  {s.type} {s.status}{tail}")
        if self.error:
            out.append(f"  watch stopped: {self.error}")
        return out

    def text(self) -> str:
        return "\n".join(self.lines())

    def html(self) -> str:
        colour = _PHASE_COLOUR.get(self.phase, "#6e7781")
        rows = []
        for s in self.steps:
            when = f"+{duration(s.elapsed)}" if s.elapsed is not None else ""
            dot = _COLOUR.get(s.status, "#6e7781")
            rows.append(
                "<tr>"
                f"<td style='color:#6e7781;text-align:right'>{esc(when)}</td>"
                f"<td><span style='color:{dot}'>&#9679;</span> <b>{esc(s.type)}</b></td>"
                f"<td style='color:{dot}'>{esc(s.status)}</td>"
                f"<td>{esc(s.reason)}</td><td>{esc(s.message)}</td></tr>"
            )
        pct = 100 * self.nodes_ready / self.nodes_target if self.nodes_target else 100
        bar = (
            "<div style='display:flex;align-items:center;gap:8px'>"
            f"<span>nodes {self.nodes_ready}/{self.nodes_target}</span>"
            "<div style='width:160px;height:8px;background:#eaeef2;border-radius:4px'>"
            f"<div style='width:{pct:.0f}%;height:8px;background:#2da44e;border-radius:4px'></div>"
            f"</div><span style='color:#6e7781'>{esc(self.nodes_message)}</span></div>"
        )
        error = (
            f"<div style='color:#cf222e'>watch stopped: {esc(self.error)}</div>"
            if self.error
            else ""
        )
        return (
            f"<div class='kaito-status'><div><b>{esc(self.name)}</b> "
            f"<span style='color:{colour}'>{esc(self.phase)}</span> "
            f"<span style='color:#6e7781'>{esc(self.state)}</span></div>{bar}"
            f"<table>{''.join(rows)}</table>{error}</div>"
        )


# ------------------------------------------------------------------------------------ tuning


def parse_record(line: str) -> dict[str, Any] | None:
    """A tuning progress record (runtimes/tuning/progress.py) from a log line, else None."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("event"), str) else None


@dataclass(frozen=True)
class TuningState:
    """The tuning job's progress, folded from its records."""

    name: str
    event: str = "waiting"  # the last record's event: started, step, eval, completed, failed
    step: int = 0
    total: int | None = None
    epoch: float | None = None
    eta_seconds: float | None = None
    tokens_per_second: float | None = None
    loss: tuple[tuple[int, float], ...] = ()
    eval_loss: tuple[tuple[int, float], ...] = ()
    message: str = ""

    def feed(self, record: dict[str, Any]) -> TuningState:
        event = record.get("event", "")
        step = _int(record.get("step"), self.step)
        changes: dict[str, Any] = {"event": event, "step": step}
        if event == "step":
            changes["message"] = ""
            changes["total"] = _int(record.get("total_steps"), self.total)
            changes["epoch"] = _float(record.get("epoch"), self.epoch)
            changes["eta_seconds"] = _float(record.get("eta_seconds"), None)
            changes["tokens_per_second"] = _float(record.get("tokens_per_second"), None)
            loss = _float(record.get("loss"), None)
            if loss is not None:
                changes["loss"] = (*[p for p in self.loss if p[0] != step], (step, loss))
        elif event == "eval":
            value = _float(record.get("eval_loss"), None)
            if value is not None:
                changes["eval_loss"] = (*self.eval_loss, (step, value))
        elif event == "completed":
            changes["step"] = _int(record.get("steps"), self.total or self.step)
            changes["eta_seconds"] = 0.0
            changes["message"] = "adapter written"
        elif event == "failed":
            changes["step"] = self.step
            changes["message"] = f"{record.get('reason', 'Failed')}: {record.get('message', '')}"
        elif event in ("started", "resumed"):
            changes["message"] = f"{event} ({record.get('method') or 'step ' + str(step)})"
        else:
            changes["step"] = self.step
        return replace(self, **changes)

    @property
    def fraction(self) -> float:
        if self.event == "completed":
            return 1.0
        if not self.total:
            return 0.0
        return min(self.step / self.total, 1.0)

    def text(self) -> str:
        total = self.total if self.total is not None else "?"
        last = f"  loss {self.loss[-1][1]:.4f}" if self.loss else ""
        eta = f"  ETA {duration(self.eta_seconds)}" if self.eta_seconds else ""
        tail = f"  {self.message}" if self.message else ""
        doing = "training" if self.event in ("step", "eval", "checkpoint") else self.event
        return f"{self.name}: {doing} step {self.step}/{total}{last}{eta}{tail}"

    def html(self) -> str:
        pct = 100 * self.fraction
        return (
            f"<div class='kaito-tuning'><div>{esc(self.text())}</div>"
            "<div style='width:320px;height:10px;background:#eaeef2;border-radius:5px'>"
            f"<div style='width:{pct:.0f}%;height:10px;background:#0969da;border-radius:5px'>"
            f"</div></div>{loss_svg(self.loss, self.eval_loss)}</div>"
        )


def _int(value: Any, default: Any) -> Any:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _float(value: Any, default: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


def loss_svg(
    points: Sequence[tuple[int, float]],
    eval_points: Sequence[tuple[int, float]] = (),
    *,
    width: int = 320,
    height: int = 120,
) -> str:
    """The loss curve as inline SVG (no plotting library): training solid, eval dashed."""
    every = [*points, *eval_points]
    if not every:
        return ""
    xs = [p[0] for p in every]
    ys = [p[1] for p in every]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = 24

    def xy(p: tuple[int, float]) -> str:
        x = pad + (p[0] - x0) / (x1 - x0) * (width - 2 * pad)
        y = height - pad - (p[1] - y0) / (y1 - y0) * (height - 2 * pad)
        return f"{x:.1f},{y:.1f}"

    def line(ps: Sequence[tuple[int, float]], style: str) -> str:
        if not ps:
            return ""
        return f"<polyline fill='none' {style} points='{' '.join(xy(p) for p in ps)}'/>"

    return (
        f"<svg class='kaito-loss' width='{width}' height='{height}' "
        f"xmlns='http://www.w3.org/2000/svg'>"
        f"<text x='2' y='12' font-size='10'>loss {y1:.3g}</text>"
        f"<text x='2' y='{height - 4}' font-size='10'>{y0:.3g}</text>"
        f"<text x='{width - pad}' y='{height - 4}' font-size='10'>step {x1}</text>"
        + line(points, "stroke='#0969da' stroke-width='1.5'")
        + line(eval_points, "stroke='#cf222e' stroke-dasharray='4 2'")
        + "</svg>"
    )


# ------------------------------------------------------------------------------------- nodes

NODE_COLUMNS = ("NAME", "INSTANCE TYPE", "GPU", "GPUS", "USED", "READY", "WORKSPACES")


def node_row(node) -> tuple[str, ...]:
    return (
        node.name,
        node.instance_type or "",
        node.gpu_model or "",
        str(node.gpus),
        str(node.gpus_used),
        "True" if node.ready else "False",
        ",".join(node.workspaces) or "-",
    )


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(x) for x in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "   ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def html_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(value: object) -> str:
        colour = _COLOUR.get(str(value))
        style = f" style='color:{colour}'" if colour else ""
        return f"<td{style}>{esc(value)}</td>"

    head = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(x) for x in r) + "</tr>" for r in rows)
    return f"<table class='kaito-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class NodesState:
    nodes: tuple[Any, ...] = ()
    error: str = ""

    def text(self) -> str:
        body = (
            text_table(NODE_COLUMNS, [node_row(n) for n in self.nodes])
            if self.nodes
            else "No nodes found."
        )
        return body + (f"\nwatch stopped: {self.error}" if self.error else "")

    def html(self) -> str:
        body = (
            html_table(NODE_COLUMNS, [node_row(n) for n in self.nodes])
            if self.nodes
            else "<i>No nodes found.</i>"
        )
        err = f"<div style='color:#cf222e'>watch stopped: {esc(self.error)}</div>"
        return body + (err if self.error else "")


# -------------------------------------------------------------------------------------- chat


@dataclass
class ChatState:
    """A chat widget's transcript: finished turns, and the answer streaming in."""

    workspace: str
    turns: list[tuple[str, str]] = field(default_factory=list)  # (role, text)
    streaming: str | None = None
    error: str = ""

    def html(self) -> str:
        parts = []
        for role, text in self.turns:
            parts.append(_bubble(role, text))
        if self.streaming is not None:
            parts.append(_bubble("assistant", self.streaming + "\u258d"))
        if self.error:
            parts.append(f"<div style='color:#cf222e'>{esc(self.error)}</div>")
        return "<div class='kaito-chat'>" + "".join(parts) + "</div>"

    def text(self) -> str:
        lines = [f"{role}: {text}" for role, text in self.turns]
        if self.streaming is not None:
            lines.append(f"assistant: {self.streaming}")
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines) or f"(no messages with {self.workspace} yet)"


def _bubble(role: str, text: str) -> str:
    colour = "#ddf4ff" if role == "user" else "#f6f8fa"
    return (
        f"<div style='background:{colour};padding:4px 8px;margin:4px 0;border-radius:6px;"
        f"white-space:pre-wrap'><b>{esc(role)}</b>: {esc(text)}</div>"
    )
