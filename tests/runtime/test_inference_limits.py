"""Backpressure and lifecycle: a full queue answers 429, SIGTERM drains running requests."""

from __future__ import annotations

import json
import threading
import time

import requests

from tests.runtime.conftest import InferenceServer

LONG = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "Once upon a time"}],
    "max_tokens": 300,
    "min_tokens": 300,
}


def test_full_queue_answers_429(tiny_model, tmp_path):
    server = InferenceServer(
        [
            "--model",
            str(tiny_model),
            "--served-model-name",
            "tiny",
            "--max-batch",
            "1",
            "--max-queue",
            "1",
        ],
        tmp_path / "server.log",
    )
    try:
        results: list = []

        def call():
            r = requests.post(server.url + "/v1/chat/completions", json=LONG, timeout=120)
            results.append((r.status_code, r.headers.get("Retry-After"), r.json()))

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
        statuses = sorted(status for status, _, _ in results)
        assert 429 in statuses and 200 in statuses, results
        for status, retry, body in results:
            if status == 429:
                assert retry == "1" and body["error"]["code"] == "queue_full"
            else:
                assert status == 200 and body["usage"]["completion_tokens"] == 300
        assert server.get("/health")[0] == 200
    finally:
        assert server.stop() == 0


def test_sigterm_drains_running_requests(tiny_model, tmp_path):
    server = InferenceServer(
        ["--model", str(tiny_model), "--served-model-name", "tiny"], tmp_path / "s.log"
    )
    response = requests.post(
        server.url + "/v1/chat/completions", json={**LONG, "stream": True}, stream=True, timeout=120
    )
    lines = response.iter_lines()
    assert next(line for line in lines if line).startswith(b"data: ")
    server.terminate()
    time.sleep(0.2)
    # New work is refused while the running stream finishes.
    try:
        late = requests.post(server.url + "/v1/chat/completions", json=LONG, timeout=10)
        assert late.status_code == 503
        assert server.get("/health")[0] == 503
    except requests.ConnectionError:
        pass  # or the listener is already gone: both mean no new work
    rest = [line for line in lines if line]
    assert rest[-1] == b"data: [DONE]"
    chunks = [json.loads(line[6:]) for line in rest[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert server.process.wait(timeout=60) == 0
    assert "drained" in server.logs()
    server.stop()
