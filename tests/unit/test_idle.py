"""Idle timeout, the pure parts: Go-style durations, admission of the annotation, the quiet
clock, wake requests, the /metrics counter, and `commands.wake` / a chat on a sleeping one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from kaito_jupyter import api, commands
from kaito_jupyter.backends.kubernetes.activity import request_count
from kaito_jupyter.controller import idle
from kaito_jupyter.errors import KaitoError, ValidationError
from kaito_jupyter.provisioners import agent_pools
from kaito_jupyter.provisioners.base import NodeRequest

from .memory_backend import MemoryBackend
from .samples import INFERENCE, TUNING, with_
from .test_magics import backend, ip, kaito  # noqa: F401  (fixtures)

NAME = "workspace-phi-3-mini"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("1h30m", 5400), ("90s", 90), ("1.5h", 5400), ("500ms", 0.5), ("2h0m3s", 7203)],
)
def test_go_durations(text, seconds):
    assert idle.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "30 minutes", "m", "1d", "-5m", "5m junk"])
def test_not_durations(text):
    with pytest.raises(ValueError):
        idle.parse_duration(text)


def test_admission_names_the_annotation_and_the_fix():
    ok = api.check_dict(with_(INFERENCE, metadata__annotations={idle.IDLE_TIMEOUT: "30m"}))
    assert idle.timeout_of(ok.workspace.metadata.annotations) == 1800
    with pytest.raises(ValidationError) as bad:
        api.check_dict(with_(INFERENCE, metadata__annotations={idle.IDLE_TIMEOUT: "30 minutes"}))
    assert idle.IDLE_TIMEOUT in str(bad.value) and '"30m"' in str(bad.value)
    with pytest.raises(ValidationError, match="under a second"):
        api.check_dict(with_(INFERENCE, metadata__annotations={idle.IDLE_TIMEOUT: "0s"}))
    with pytest.raises(ValidationError, match="inference workspaces only"):
        api.check_dict(with_(TUNING, metadata__annotations={idle.IDLE_TIMEOUT: "30m"}))
    assert idle.timeout_of({}) is None and idle.timeout_of({idle.IDLE_TIMEOUT: "x"}) is None


def test_tracker_counts_quiet_time_from_the_last_change():
    t = idle.IdleTracker()
    key = ("ns", "ws")
    assert t.observe(key, 5, 100.0) == 0
    assert t.observe(key, 5, 130.0) == 30
    assert t.observe(key, 6, 140.0) == 0  # a request: the clock starts again
    assert t.observe(key, 6, 200.0) == 60
    assert t.observe(key, None, 300.0) == 0  # unreadable never counts as idle
    t.reset(key, 400.0)
    assert t.observe(key, 6, 410.0) == 0  # first reading after a wake starts afresh


def test_a_wake_newer_than_the_scale_down_wakes():
    at = datetime(2026, 12, 3, 12, tzinfo=UTC)
    scaled = {idle.SCALED_TO_ZERO: idle.stamp(at)}
    assert not idle.wake_pending(scaled)
    assert not idle.wake_pending({**scaled, idle.WAKE_REQUESTED: idle.stamp(at - timedelta(1))})
    assert idle.wake_pending({**scaled, idle.WAKE_REQUESTED: idle.stamp(at + timedelta(1))})
    assert not idle.wake_pending({idle.WAKE_REQUESTED: idle.stamp(at)})  # not asleep


def test_request_count_from_metrics_text():
    text = (
        "# HELP kaito_inference_requests_total Requests by API and status\n"
        "# TYPE kaito_inference_requests_total counter\n"
        'kaito_inference_requests_total{api="chat",status="200"} 3.0\n'
        'kaito_inference_requests_total{api="openai",status="200"} 4.0 1700000000\n'
        "kaito_inference_prompt_tokens_total 99\n"
        "vllm:request_success_total 2\n"
    )
    assert request_count(text) == 9.0
    assert request_count("other_total 1\n") is None


def test_a_scaled_to_zero_pool_has_count_zero():
    request = NodeRequest("ns", "ws", "u", "Standard_NC6s_v3", 2, scaled_to_zero=True)
    assert agent_pools.render(request).count == 0
    with pytest.raises(ValueError, match=r"resource\.count"):
        agent_pools.render(NodeRequest("ns", "ws", "u", "Standard_NC6s_v3", 0))


def test_wake_stamps_the_annotation_and_a_chat_on_a_sleeping_workspace_wakes_it():
    b = MemoryBackend()
    doc = with_(INFERENCE, metadata__annotations={idle.IDLE_TIMEOUT: "30m"})
    commands.apply(yaml.safe_dump(doc), backend=b)
    woken = commands.wake(NAME, backend=b)
    ann = woken.metadata["annotations"]
    assert idle.parse_time(ann[idle.WAKE_REQUESTED]) is not None
    assert ann[idle.IDLE_TIMEOUT] == "30m"
    # Asleep (the controller's annotation): a chat says so and asks for a wake.
    asleep = with_(doc, metadata__annotations={
        idle.IDLE_TIMEOUT: "30m", idle.SCALED_TO_ZERO: idle.stamp(datetime.now(UTC) + timedelta(1))
    })  # fmt: skip
    b.apply([asleep])
    with pytest.raises(KaitoError, match="scaled to zero after being idle") as exc:
        commands.chat(NAME, [{"role": "user", "content": "hi"}], backend=b)
    assert f"kaito wait {NAME}" in (exc.value.hint or "")
    assert idle.WAKE_REQUESTED in b.get(NAME).metadata["annotations"]
    with pytest.raises(KaitoError, match="tuning workspace"):
        commands.apply(yaml.safe_dump(TUNING), backend=b)
        commands.wake("workspace-tuning-phi-3", backend=b)


def test_magic_wake(ip, backend):  # noqa: F811
    doc = with_(INFERENCE, metadata__annotations={idle.IDLE_TIMEOUT: "30m"})
    kaito(ip, "apply", yaml.safe_dump(doc))
    woken = kaito(ip, f"wake {NAME}")
    assert woken._text() == f"workspace.kaito.sh/{NAME} waking (its nodes take a few minutes)"
    assert idle.WAKE_REQUESTED in backend.get(NAME).metadata["annotations"]


def test_cli_wake_is_a_verb():
    from kaito_jupyter import cli

    assert cli.parser().parse_args(["wake", NAME]).func is cli.cmd_wake
