"""Backpressure and lifecycle, driven by the server's state (the engine or the tokenizer held
at a point, Gate), never by sleeps: a full queue answers 429, a drain finishes what runs and
refuses the rest with 503, SIGTERM exits 0, and a 4 MiB prompt being tokenized does not stall
another request's stream."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.runtime.conftest import Gate, InferenceServer, ThreadServer, wait_for

LONG = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "Once upon a time"}],
    "max_tokens": 300,
    "min_tokens": 300,
}


def post(server, body: dict) -> tuple[int, dict]:
    response = requests.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    return response.status_code, response.json()


def data_lines(response):
    for line in response.iter_lines():
        if line:
            assert line.startswith(b"data: "), line
            yield line[len(b"data: ") :]


def test_full_queue_answers_429(tiny_model):
    server = ThreadServer(tiny_model, max_batch=1, max_queue=1)
    forward = server.engine.runner.forward = Gate(server.engine.runner.forward)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(post, server, LONG)
            wait_for(lambda: forward.entered.is_set() and server.engine.running == 1, "one running")
            second = pool.submit(post, server, LONG)
            wait_for(lambda: server.engine.queue_depth == 1, "one waiting")
            third = requests.post(server.url + "/v1/chat/completions", json=LONG, timeout=60)
            assert third.status_code == 429 and third.headers["Retry-After"] == "1"
            assert third.json()["error"]["code"] == "queue_full"
            forward.open()
            for done in (first, second):
                status, body = done.result(timeout=120)
                assert status == 200 and body["usage"]["completion_tokens"] == 300, body
        assert requests.get(server.url + "/health", timeout=10).status_code == 200
    finally:
        forward.open()
        server.close()


def test_a_drain_finishes_what_runs_and_refuses_the_rest(tiny_model):
    server = ThreadServer(tiny_model)
    forward = server.engine.runner.forward = Gate(server.engine.runner.forward)
    try:
        response = requests.post(
            server.url + "/v1/chat/completions",
            json={**LONG, "stream": True},
            stream=True,
            timeout=120,
        )
        lines = data_lines(response)
        assert json.loads(next(lines))["choices"][0]["delta"]["role"] == "assistant"
        wait_for(lambda: forward.entered.is_set() and server.engine.running == 1, "running")
        drained = server.shutdown()  # what SIGTERM starts
        wait_for(lambda: server.server.state.draining, "draining")
        late = requests.post(server.url + "/v1/chat/completions", json=LONG, timeout=30)
        assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
        health = requests.get(server.url + "/health", timeout=30)
        assert health.status_code == 503 and health.json() == {"status": "Draining"}
        forward.open()
        rest = list(lines)
        assert rest[-1] == b"[DONE]"
        assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "length"
        drained.result(timeout=120)
    finally:
        forward.open()
        server.close()


def test_sigterm_drains_and_exits_0(tiny_model, tmp_path):
    server = InferenceServer(
        ["--model", str(tiny_model), "--served-model-name", "tiny"], tmp_path / "s.log"
    )
    try:
        response = requests.post(
            server.url + "/v1/chat/completions",
            json={**LONG, "stream": True},
            stream=True,
            timeout=120,
        )
        lines = data_lines(response)
        next(lines)  # the stream has started
        server.terminate()
        rest = list(lines)
        assert rest[-1] == b"[DONE]"
        assert json.loads(rest[-2])["choices"][0]["finish_reason"] == "length"
        assert server.process.wait(timeout=60) == 0
        assert "stopped (drained)" in server.logs()
    finally:
        server.stop()


def test_a_huge_prompt_does_not_stall_other_streams(tiny_model):
    """While a 4 MiB prompt is held inside the tokenizer, another request's stream goes on:
    tokenization and chat templates run off the event loop. The engine runs only the
    iterations the test allows, so the stream cannot end on its own meanwhile."""
    server = ThreadServer(tiny_model, max_body=8 << 20)
    forward = server.engine.runner.forward = Gate(server.engine.runner.forward)
    real = server.served.tokenizer
    hold = Gate(real, when=lambda text, **kwargs: len(text) > 1 << 20)

    class Tokenizer:  # the served tokenizer, with calls on huge texts held at the gate
        def __call__(self, text, **kwargs):
            return hold(text, **kwargs)

        def __getattr__(self, name):
            return getattr(real, name)

    server.served.tokenizer = Tokenizer()
    text: list[str] = []
    try:
        response = requests.post(
            server.url + "/v1/chat/completions",
            json={**LONG, "stream": True, "temperature": 0},
            stream=True,
            timeout=120,
        )
        lines = data_lines(response)

        def read():
            for line in lines:
                if line != b"[DONE]":
                    delta = json.loads(line)["choices"][0]["delta"]
                    text.append(delta.get("content") or "")

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        huge = {"model": "tiny", "messages": [{"role": "user", "content": "word " * (4 << 18)}]}
        with ThreadPoolExecutor(1) as pool:
            big = pool.submit(post, server, huge)
            wait_for(hold.entered.is_set, "the 4 MiB prompt reaching the tokenizer")
            before = len("".join(text))
            forward.allow(12)  # twelve more tokens of the other stream
            wait_for(
                lambda: len("".join(text)) > before,
                "the other stream's tokens while the 4 MiB prompt is tokenized",
                timeout=30,
            )
            assert requests.get(server.url + "/health", timeout=30).status_code == 200
            hold.open()
            status, body = big.result(timeout=120)
            assert status == 400 and body["error"]["code"] == "context_length_exceeded"
        forward.open()
        reader.join(120)
        assert not reader.is_alive()
    finally:
        hold.open()
        forward.open()
        server.close()
