"""The inference server's edges that need no model: where it listens by default, and stop
strings (bounded in count and length, matched in linear time)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kaito_jupyter.runtimes.inference import cli, text
from kaito_jupyter.runtimes.inference.validation import (
    MAX_STOP_CHARS,
    MAX_STOPS,
    ClientError,
    Fields,
)

ROOT = Path(__file__).resolve().parents[2]


def test_the_server_listens_on_loopback_unless_told_otherwise():
    assert cli.parser().parse_args(["--preset", "smollm2-135m-instruct"]).host == "127.0.0.1"
    # The container image listens on every interface itself: pods are reached from outside.
    dockerfile = (ROOT / "runtimes" / "Dockerfile").read_text()
    [entrypoint] = [line for line in dockerfile.splitlines() if line.startswith("ENTRYPOINT")]
    command = json.loads(entrypoint.removeprefix("ENTRYPOINT"))
    assert command[command.index("--host") + 1] == "0.0.0.0"


def test_stop_lists_are_bounded_with_errors_naming_the_field():
    assert Fields({"stop": "END"}).stop() == ["END"]
    assert Fields({"stop": ["a"] * MAX_STOPS}).stop() == ["a"] * MAX_STOPS
    with pytest.raises(ClientError) as err:
        Fields({"stop": ["a"] * (MAX_STOPS + 1)}).stop()
    assert err.value.status == 400 and err.value.param == "stop"
    assert f"at most {MAX_STOPS} strings" in err.value.message
    long = ["ok", "x" * (MAX_STOP_CHARS + 1)]
    with pytest.raises(ClientError) as err:
        Fields({"stop": long}).stop()
    assert err.value.status == 400 and err.value.param == "stop"
    assert err.value.message.startswith(f"stop[1] is {MAX_STOP_CHARS + 1} characters long")
    with pytest.raises(ClientError) as err:
        Fields({"stop": "x" * (MAX_STOP_CHARS + 1)}).stop()  # one string counts too
    assert err.value.param == "stop"


def naive(stops: list[str], chunks: list[str]) -> tuple[str, bool]:
    """What a stop matcher must emit: per push, cut at the earliest stop string found in the
    text held so far, else emit all but the longest end that begins a stop string."""
    stops = [s for s in stops if s]
    out, pending = "", ""
    for chunk in chunks:
        pending += chunk
        found = [i for i in (pending.find(s) for s in stops) if i >= 0]
        if found:
            return out + pending[: min(found)], True
        hold = max(
            (n for s in stops for n in range(1, len(s)) if pending.endswith(s[:n])), default=0
        )
        out, pending = out + pending[: len(pending) - hold], pending[len(pending) - hold :]
    return out + pending, False


def run(matcher: text.StopMatcher, chunks: list[str]) -> tuple[str, bool]:
    out = ""
    for chunk in chunks:
        out += matcher.push(chunk)
        if matcher.stopped:
            return out, True
    return out + matcher.flush(), False


@given(
    stops=st.lists(st.text("ab", min_size=1, max_size=6), max_size=4),
    chunks=st.lists(st.text("abc", max_size=5), max_size=12),
)
def test_stop_matching_agrees_with_the_definition(stops, chunks):
    assert run(text.StopMatcher(stops), chunks) == naive(stops, chunks)


def lines_run(fn) -> int:
    """Python lines executed inside runtimes/inference/text.py while `fn` runs: a count of work
    that does not depend on the machine's speed."""
    count = 0
    target = text.__file__

    def tracer(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != target:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def test_an_adversarial_stop_list_costs_linear_work():
    """Stops that almost match everywhere, against a stream of "a"s one character per push:
    the held text grows to 1023 characters, and checking each prefix of each stop against its
    end would run ~500 steps per character; the automata run a few per stop."""
    stops = ["a" * 511 + "b" + "a" * 512, "a" * 1023 + "c", "ab" * 512]
    chars = 1500
    matcher = text.StopMatcher(stops)
    emitted: list[str] = []
    work = lines_run(lambda: [emitted.append(matcher.push("a")) for _ in range(chars)])
    # Only the last 1023 characters may still begin "a"*1023 + "c": the rest was emitted.
    assert not matcher.stopped and "".join(emitted) == "a" * (chars - 1023)
    assert work / (chars * len(stops)) < 20, work  # lines per character per stop
    assert matcher.flush() == "a" * 1023  # held, never lost
