"""A workspace's status, live: its conditions as a timeline with elapsed times, and the
node-provisioning progress, updated from the backend's watch."""

from __future__ import annotations

import threading

import ipywidgets as w

from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.base import Backend, WatchEvent
from kaito_jupyter.widgets.follow import Follower
from kaito_jupyter.widgets.state import StatusState


class StatusWidget(w.VBox, Follower):
    def __init__(
        self, name: str, backend: Backend | None = None, stored: StoredWorkspace | None = None
    ):
        w.VBox.__init__(self)
        Follower.__init__(self)
        self.name = name
        self.backend = backend
        self.view = w.HTML()
        self.nodes_bar = w.IntProgress(value=0, min=0, max=1, description="nodes")
        self.children = (self.nodes_bar, self.view)
        self.done = threading.Event()  # set once ready, succeeded, failed or deleted
        self.state = StatusState.from_stored(stored) if stored else StatusState.empty(name)
        self._render()

    def on_watch_event(self, event: WatchEvent) -> None:
        """One watch event (others' events are ignored): the next state, rendered."""
        if event.workspace.name != self.name:
            return
        self.state = self.state.on_event(event.type, event.workspace)
        self._render()

    def follow(self) -> StatusWidget:
        """Follow the backend's watch in a background thread; returns self for display."""
        from kaito_jupyter.backends import open_backend

        backend = self.backend = self.backend or open_backend()

        def run(stop: threading.Event) -> None:
            for event in backend.watch(stop=stop):
                self.on_watch_event(event)

        self._start(run, f"kaito-status-{self.name}")
        return self

    def _failed(self, message: str) -> None:
        from dataclasses import replace

        self.state = replace(self.state, error=message)
        self._render()

    def _render(self) -> None:
        s = self.state
        self.nodes_bar.max = max(s.nodes_target, 1)
        self.nodes_bar.value = min(s.nodes_ready, self.nodes_bar.max)
        self.nodes_bar.bar_style = "success" if s.nodes_ready >= s.nodes_target else "info"
        self.view.value = s.html()
        if s.done:
            self.done.set()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.state.text()
        bundle["text/html"] = self.state.html()
        return bundle
