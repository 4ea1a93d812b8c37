"""The nodes that run workspaces, live: refreshed whenever the backend's watch reports a
workspace change (placements and provisioning follow workspaces)."""

from __future__ import annotations

import threading
from dataclasses import replace

import ipywidgets as w

from kaito_jupyter.backends.base import Backend, Node
from kaito_jupyter.widgets.follow import Follower
from kaito_jupyter.widgets.state import NodesState


class NodesWidget(w.VBox, Follower):
    def __init__(self, backend: Backend | None = None, nodes: list[Node] | None = None):
        w.VBox.__init__(self)
        Follower.__init__(self)
        self.backend = backend
        self.view = w.HTML()
        self.children = (self.view,)
        self.state = NodesState(tuple(nodes or ()))
        self._render()

    def show(self, nodes: list[Node]) -> None:
        self.state = NodesState(tuple(nodes))
        self._render()

    def follow(self) -> NodesWidget:
        from kaito_jupyter.backends import open_backend

        backend = self.backend = self.backend or open_backend()

        def run(stop: threading.Event) -> None:
            self.show(backend.nodes())
            for _event in backend.watch(stop=stop):
                self.show(backend.nodes())

        self._start(run, "kaito-nodes")
        return self

    def _failed(self, message: str) -> None:
        self.state = replace(self.state, error=message)
        self._render()

    def _render(self) -> None:
        self.view.value = self.state.html()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = self.state.text()
        bundle["text/html"] = self.state.html()
        return bundle
