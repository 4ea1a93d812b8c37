"""A tuning job's progress, live: a progress bar with the ETA and the loss curve, from the
job's progress records (runtimes/tuning/progress.py) as its log streams them, and its final
state from the backend's watch."""

from __future__ import annotations

import threading
from dataclasses import replace

import ipywidgets as w

from kaito_jupyter.api import conditions as c
from kaito_jupyter.backends.base import Backend, WatchEvent
from kaito_jupyter.widgets.follow import Follower
from kaito_jupyter.widgets.state import StatusState, TuningState, duration, parse_record


class TuningWidget(w.VBox, Follower):
    def __init__(self, name: str, backend: Backend | None = None):
        w.VBox.__init__(self)
        Follower.__init__(self)
        self.name = name
        self.backend = backend
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="step 0/?")
        self.eta = w.Label("")
        self.curve = w.HTML()
        self.children = (w.HBox([self.bar, self.eta]), self.curve)
        self.state = TuningState(name)
        self.status = StatusState.empty(name)
        self.done = threading.Event()
        self._logs_started = False
        self._lock = threading.Lock()
        self._render()

    def on_record(self, record: dict) -> None:
        """One progress record (started, step, eval, checkpoint, completed, failed)."""
        with self._lock:
            self.state = self.state.feed(record)
        self._render()

    def on_log_line(self, line: str) -> None:
        record = parse_record(line)
        if record is not None:
            self.on_record(record)

    def on_watch_event(self, event: WatchEvent) -> None:
        if event.workspace.name != self.name:
            return
        self.status = self.status.on_event(event.type, event.workspace)
        if self.status.phase == "failed" and self.state.event != "failed":
            cond = event.workspace.workspace.condition(c.JOB_STARTED)
            why = f"{cond.reason}: {cond.message}" if cond and cond.reason else "failed"
            with self._lock:
                self.state = replace(self.state, event="failed", message=why)
        self._render()

    def follow(self) -> TuningWidget:
        """Follow the watch; once the job has started, follow its log for progress records."""
        from kaito_jupyter.backends import open_backend

        backend = self.backend = self.backend or open_backend()

        def logs(stop: threading.Event) -> None:
            for line in backend.logs(self.name, follow=True, stop=stop):
                self.on_log_line(line)

        def watch(stop: threading.Event) -> None:
            for event in backend.watch(stop=stop):
                self.on_watch_event(event)
                if event.workspace.name != self.name or self._logs_started:
                    continue
                ws = event.workspace.workspace
                started = ws.condition(c.JOB_STARTED)
                if (started and started.status == "True") or self.status.done:
                    self._logs_started = True
                    self._start(logs, f"kaito-tuning-logs-{self.name}")

        self._start(watch, f"kaito-tuning-{self.name}")
        return self

    def _failed(self, message: str) -> None:
        with self._lock:
            self.state = replace(self.state, message=f"watch stopped: {message}")
        self._render()

    def _render(self) -> None:
        s = self.state
        total = s.total if s.total is not None else "?"
        self.bar.value = s.fraction
        self.bar.description = f"step {s.step}/{total}"
        self.bar.bar_style = {"completed": "success", "failed": "danger"}.get(s.event, "info")
        eta = f"ETA {duration(s.eta_seconds)}" if s.eta_seconds else ""
        self.eta.value = "  ".join(x for x in (eta, s.message) if x)
        self.curve.value = s.html()
        if s.event in ("completed", "failed") or self.status.phase in ("succeeded", "failed"):
            self.done.set()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        # The progress, then the workspace's conditions (the job's own account is there too).
        status = self.status.lines()[2:] if self.status.steps else []
        bundle["text/plain"] = "\n".join([self.state.text(), *status])
        bundle["text/html"] = self.state.html() + (self.status.html() if status else "")
        return bundle
