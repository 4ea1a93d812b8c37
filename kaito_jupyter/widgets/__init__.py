"""Notebook widgets over the backend's state: status, nodes, chat, tuning progress.

    from kaito_jupyter.widgets import StatusWidget
    StatusWidget("workspace-phi-3-mini").follow()

Each widget updates from the backend's watch in a background thread (never by re-running a
cell) and carries a static HTML and text rendering for where widgets do not render (nbconvert,
plain IPython). ipywidgets is imported only when a widget is made: `state` is pure.
"""

from __future__ import annotations

__all__ = ["ChatWidget", "NodesWidget", "StatusWidget", "TuningWidget", "widgets_render"]

_WHERE = {
    "StatusWidget": "status",
    "NodesWidget": "nodes",
    "ChatWidget": "chat",
    "TuningWidget": "tuning",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)


def widgets_render(shell=None) -> bool:
    """Whether a live widget can show here: a Jupyter kernel (ipykernel), not plain IPython."""
    if shell is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
