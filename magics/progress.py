"""`--wait`: live progress until each workspace is ready, succeeded or failed.

In a Jupyter kernel the progress is a widget per workspace (a status timeline, or a tuning
progress bar with the loss curve), following the backend's watch in the background; elsewhere
(plain IPython, a terminal) a line per condition change. Either way the cell blocks on the
command layer's `wait`, which the watch drives too.
"""

from __future__ import annotations

from kaito_jupyter import commands
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends import Backend
from kaito_jupyter.widgets.state import StatusState, Step, duration


def step_line(name: str, step: Step) -> str:
    when = f"+{duration(step.elapsed)}" if step.elapsed is not None else ""
    why = f" {step.reason}" if step.reason else ""
    what = f": {step.message}" if step.message else ""
    return f"  {when:>7}  {name}  {step.type}={step.status}{why}{what}"


class TextProgress:
    """Prints each condition as it changes (type, status or reason), once."""

    def __init__(self, name: str):
        self.name = name
        self.seen: dict[str, tuple[str, str, str]] = {}

    def __call__(self, stored: StoredWorkspace) -> None:
        state = StatusState.from_stored(stored)
        for step in state.steps:
            key = (step.status, step.reason, step.message)
            if self.seen.get(step.type) != key:
                self.seen[step.type] = key
                print(step_line(self.name, step), flush=True)


def wait_for(
    applied: list[StoredWorkspace],
    *,
    backend: Backend,
    timeout: float | None,
    widgets: bool,
) -> dict[str, StoredWorkspace]:
    shown = []  # (widget, its display handle)
    if widgets:
        from IPython.display import display

        from kaito_jupyter.widgets import StatusWidget, TuningWidget

        for stored in applied:
            if stored.workspace.tuning is not None:
                widget = TuningWidget(stored.name, backend).follow()
            else:
                widget = StatusWidget(stored.name, backend, stored).follow()
            shown.append((widget, display(widget, display_id=True)))
    final: dict[str, StoredWorkspace] = {}
    try:
        for stored in applied:
            on_change = None if widgets else TextProgress(stored.name)
            done = commands.wait(stored.name, backend=backend, timeout=timeout, on_change=on_change)
            final[stored.name] = done
            if not widgets:
                state = StatusState.from_stored(done)
                took = (
                    f" in {duration(max((s.elapsed or 0) for s in state.steps))}"
                    if state.steps
                    else ""
                )
                print(f"{stored.name}: {state.phase}{took}", flush=True)
    finally:
        from kaito_jupyter.backends.base import WatchEvent

        for widget, handle in shown:
            widget.stop()
            widget.join(1.0)  # its own watch may lag the wait's by an event: give it the last
            if widget.name in final:
                widget.on_watch_event(WatchEvent("MODIFIED", final[widget.name]))
            # The live view needs nothing more; this refreshes the static text and HTML saved
            # with the notebook (what nbconvert and plain frontends show) to the final state.
            if handle is not None:
                handle.update(widget)
    return final
