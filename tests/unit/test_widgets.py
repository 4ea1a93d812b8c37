"""The widgets' state transitions, driven by backend watch events and tuning progress records,
and their static fallbacks (text and HTML) for where widgets do not render."""

from __future__ import annotations

import json
import threading

import yaml

from kaito_jupyter import commands
from kaito_jupyter.backends.base import Endpoint, Node, WatchEvent
from kaito_jupyter.controller import status as st
from kaito_jupyter.widgets import ChatWidget, NodesWidget, StatusWidget, TuningWidget
from kaito_jupyter.widgets.state import StatusState, TuningState, loss_svg, parse_record

from .memory_backend import MemoryBackend, crashing, provisioning, ready
from .samples import INFERENCE, TUNING
from .test_magics import chat_server  # noqa: F401  (the loopback SSE server fixture)

NAME = "workspace-phi-3-mini"
TUNE = "workspace-tuning-phi-3"


def _applied(backend: MemoryBackend, doc=INFERENCE):
    return commands.apply(yaml.safe_dump(doc), backend=backend)[0].workspace


def test_status_widget_walks_the_timeline_from_watch_events():
    backend = MemoryBackend()
    stored = _applied(backend)
    widget = StatusWidget(NAME, backend, stored)
    assert widget.state.phase == "pending" and widget.state.steps == ()
    assert (widget.nodes_bar.value, widget.nodes_bar.max) == (0, 1)

    at_10s = backend.set_status(NAME, provisioning(2, ("n0",)), "2026-12-03T14:00:10Z")
    widget.on_watch_event(WatchEvent("MODIFIED", at_10s))
    assert widget.state.phase == "pending"
    assert (widget.nodes_bar.value, widget.nodes_bar.max) == (1, 2)
    resource = widget.state.steps[0]
    assert (resource.type, resource.status, resource.reason, resource.elapsed) == (
        "ResourceReady",
        "False",
        "Provisioning",
        10.0,
    )
    assert "1 of 2 node(s) ready" in widget.view.value

    other = WatchEvent("MODIFIED", _applied(backend, {**INFERENCE, "metadata": {"name": "x"}}))
    widget.on_watch_event(other)  # another workspace's event changes nothing
    assert widget.state.nodes_ready == 1

    at_3m = backend.set_status(NAME, ready(("n0", "n1")), "2026-12-03T14:03:00Z")
    widget.on_watch_event(WatchEvent("MODIFIED", at_3m))
    assert widget.state.phase == "ready" and widget.done.is_set()
    assert (widget.nodes_bar.value, widget.nodes_bar.bar_style) == (2, "success")
    assert [s.elapsed for s in widget.state.steps] == [180.0] * 4
    text = widget._repr_mimebundle_()["text/plain"].splitlines()
    assert text[0] == f"{NAME}: ready (Ready)"
    assert text[2] == "    +3m00s  ResourceReady True ResourcesReady: all resources are ready"


def test_status_widget_shows_failure_and_deletion():
    backend = MemoryBackend()
    _applied(backend)
    failed = backend.set_status(NAME, crashing(), "2026-12-03T14:01:00Z")
    state = StatusState.empty(NAME).on_event("MODIFIED", failed)
    assert state.phase == "failed" and state.done
    assert "ContainerCrashLoopBackOff" in state.html()
    assert state.on_event("DELETED", failed).phase == "deleted"


def test_status_widget_follows_the_watch_in_the_background():
    backend = MemoryBackend()
    _applied(backend)
    widget = StatusWidget(NAME, backend).follow()
    backend.wait_for_watchers(1)
    backend.set_status(NAME, provisioning(1), "2026-12-03T14:00:05Z")
    backend.set_status(NAME, ready(), "2026-12-03T14:02:00Z")
    assert widget.done.wait(30), widget.state.text()
    assert widget.state.phase == "ready"
    widget.stop()
    widget.join(30)
    assert not widget.following


def test_a_broken_watch_shows_in_the_widget():
    class Broken(MemoryBackend):
        def watch(self, namespace=None, *, stop=None):
            yield from ()
            raise ConnectionError("apiserver went away")

    widget = StatusWidget(NAME, Broken()).follow()
    widget.join(30)
    assert widget.state.error == "ConnectionError: apiserver went away"
    assert "watch stopped: ConnectionError" in widget.view.value


def _tuning(started: bool, succeeded: bool = False, failed: bool = False) -> st.Derived:
    return st.derive_tuning(
        st.NodeReport(required=1, ready=("n0",)),
        st.WorkloadReport(
            exists=True, desired=1, started=started, succeeded=succeeded, failed=failed
        ),
    )


def _record(event: str, **fields) -> str:
    return json.dumps({"event": event, "time": 1.0, **fields})


def test_tuning_state_folds_progress_records():
    s = TuningState(TUNE)
    s = s.feed({"event": "started", "method": "qlora"})
    assert (s.event, s.fraction, s.message) == ("started", 0.0, "started (qlora)")
    s = s.feed({"event": "step", "step": 10, "total_steps": 40, "loss": 2.5, "eta_seconds": 90})
    s = s.feed({"event": "eval", "step": 10, "eval_loss": 2.7})
    s = s.feed({"event": "step", "step": 20, "total_steps": 40, "loss": 1.5, "eta_seconds": 60})
    assert (s.step, s.total, s.fraction, s.eta_seconds) == (20, 40, 0.5, 60.0)
    assert s.loss == ((10, 2.5), (20, 1.5)) and s.eval_loss == ((10, 2.7),)
    assert s.text() == f"{TUNE}: training step 20/40  loss 1.5000  ETA 1m00s"
    s = s.feed({"event": "completed", "steps": 40, "loss": 1.2})
    assert (s.fraction, s.eta_seconds, s.message) == (1.0, 0.0, "adapter written")
    failed = TuningState(TUNE).feed({"event": "failed", "reason": "OutOfMemory", "message": "x"})
    assert failed.message == "OutOfMemory: x"
    assert parse_record("tuning: 3 steps") is None and parse_record("{not json") is None
    assert parse_record(_record("step", step=1)) == {"event": "step", "time": 1.0, "step": 1}


def test_loss_curve_is_inline_svg():
    svg = loss_svg([(1, 2.0), (2, 1.0)], [(2, 1.5)], width=100, height=50)
    assert svg.startswith("<svg") and svg.count("<polyline") == 2
    assert "points='24.0,26.0 76.0,26.0'" not in svg  # a falling curve, not flat
    assert loss_svg([]) == ""


def test_tuning_widget_follows_watch_then_log_records():
    backend = MemoryBackend()
    _applied(backend, TUNING)
    widget = TuningWidget(TUNE, backend).follow()
    backend.wait_for_watchers(1)
    backend.add_log(TUNE, "loading weights", _record("started", method="qlora"))
    backend.set_status(TUNE, _tuning(started=True), "2026-12-03T14:01:00Z")
    backend.add_log(
        TUNE,
        _record("step", step=5, total_steps=10, loss=2.0, eta_seconds=30),
        _record("step", step=10, total_steps=10, loss=1.0, eta_seconds=0),
        _record("completed", steps=10),
        done=True,
    )
    backend.set_status(TUNE, _tuning(started=True, succeeded=True), "2026-12-03T14:05:00Z")
    assert widget.done.wait(30), widget.state.text()
    widget.stop()
    widget.join(30)
    assert widget.state.loss == ((5, 2.0), (10, 1.0))
    assert (widget.bar.value, widget.bar.bar_style, widget.bar.description) == (
        1.0,
        "success",
        "step 10/10",
    )
    assert "<svg" in widget.curve.value
    assert widget._repr_mimebundle_()["text/html"].count("<polyline") == 1


def test_tuning_widget_shows_a_failed_job_from_the_watch():
    backend = MemoryBackend()
    _applied(backend, TUNING)
    widget = TuningWidget(TUNE, backend)
    failed = backend.set_status(TUNE, _tuning(started=True, failed=True), "2026-12-03T14:02:00Z")
    widget.on_watch_event(WatchEvent("MODIFIED", failed))
    assert widget.state.event == "failed" and widget.bar.bar_style == "danger"
    assert widget.done.is_set()


def test_nodes_widget_refreshes_on_watch_events():
    backend = MemoryBackend()
    widget = NodesWidget(backend).follow()
    backend.wait_for_watchers(1)
    assert "No nodes found." in widget.view.value
    backend.node_list = [Node("gpu-0", "Standard_NC6s_v3", "V100", 1, 1, 16, True, (NAME,))]
    _applied(backend)  # a workspace event: the widget looks at the nodes again
    shown = threading.Event()
    widget.view.observe(lambda change: shown.set() if "gpu-0" in change["new"] else None, "value")
    if "gpu-0" not in widget.view.value:
        assert shown.wait(30)
    widget.stop()
    assert "gpu-0" in widget._repr_mimebundle_()["text/plain"]


def test_chat_widget_streams_keeps_history_and_picks_adapters(chat_server):  # noqa: F811
    url, bodies = chat_server
    backend = MemoryBackend()
    _applied(backend)
    backend.set_status(NAME, ready(), "2026-12-03T14:03:00Z")
    backend.endpoints[NAME] = Endpoint(url, model="base")
    widget = ChatWidget(NAME, backend, adapters=["phi-3-adapter"])
    assert list(widget.adapter.options) == ["(base model)", "phi-3-adapter"]
    widget.send("What is QLoRA?", wait=True)
    assert widget.state.turns == [("user", "What is QLoRA?"), ("assistant", "QLoRA is 4-bit.")]
    assert bodies[0]["model"] == "base"
    widget.adapter.value = "phi-3-adapter"
    widget.prompt.value = "And LoRA?"
    widget.send(widget.prompt.value, wait=True)
    assert bodies[1]["model"] == "phi-3-adapter"
    assert [m["role"] for m in bodies[1]["messages"]] == ["user", "assistant", "user"]
    assert widget.conversation.turns[-1] == {"role": "assistant", "content": "QLoRA is 4-bit."}
    assert "QLoRA is 4-bit." in widget._repr_mimebundle_()["text/html"]
    widget.new()
    assert widget.state.turns == [] and widget.conversation.turns == []


def test_chat_widget_shows_errors_and_keeps_the_prompt():
    backend = MemoryBackend()
    _applied(backend)  # pending: not ready to chat
    widget = ChatWidget(NAME, backend)
    widget.send("Hi", wait=True)
    assert widget.state.turns == [] and widget.prompt.value == "Hi"
    assert widget.state.error.startswith(f"workspace {NAME} is not ready to chat")
    assert not widget.send_button.disabled
