"""The inference server over HTTP, on the tiny model with adapters: every endpoint, streaming,
the openai client, bad input, disconnects, 64 concurrent clients."""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

CHAT = {
    "model": "tiny",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


def chat(server, **extra):
    return server.post(
        "/v1/chat/completions", {**CHAT, "temperature": 0, "max_tokens": 16, **extra}
    )


def sse_events(response) -> list:
    """The data payloads of an SSE response, JSON-decoded except the final [DONE]."""
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def running(server) -> float:
    _, text = server.get("/metrics")
    match = re.search(rb"^kaito_inference_running_requests (\S+)$", text, re.M)
    return float(match.group(1))


def wait_idle(server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(server) == 0, "a slot stayed busy"


def test_health(tiny_server):
    for path in ("/health", "/healthz"):
        status, body = tiny_server.get(path)
        assert status == 200 and json.loads(body) == {"status": "Healthy"}


def test_models_lists_base_and_adapters(tiny_server):
    status, body = tiny_server.get("/v1/models")
    cards = json.loads(body)["data"]
    assert status == 200
    assert [c["id"] for c in cards] == ["tiny", "one", "two", "one-off", "one-half"]
    assert all(c["object"] == "model" for c in cards)
    assert {c["parent"] for c in cards[1:]} == {"tiny"}
    assert [c["strength"] for c in cards[1:]] == [1.0, 1.0, 0.0, 0.5]


def test_chat_completion(tiny_server):
    status, body = chat(tiny_server)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 16


def test_completions_with_echo(tiny_server):
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    status, plain = tiny_server.post("/v1/completions", body)
    assert status == 200 and plain["object"] == "text_completion"
    status, echoed = tiny_server.post("/v1/completions", {**body, "echo": True})
    assert echoed["choices"][0]["text"] == "Once upon a time" + plain["choices"][0]["text"]
    # A prompt of token ids, and the default of 16 new tokens.
    status, ids = tiny_server.post(
        "/v1/completions", {"model": "tiny", "prompt": [5, 6, 7], "temperature": 0}
    )
    assert status == 200 and ids["usage"]["prompt_tokens"] == 3
    assert ids["usage"]["completion_tokens"] <= 16


def test_kaito_chat(tiny_server):
    kwargs = {"max_length": 30, "do_sample": False}
    status, body = tiny_server.post(
        "/chat", {"prompt": "Once upon a time", "generate_kwargs": kwargs}
    )
    assert status == 200 and set(body) == {"Result"}
    assert body["Result"].startswith("Once upon a time") and len(body["Result"]) > 16
    status, short = tiny_server.post(
        "/chat",
        {"prompt": "Once upon a time", "return_full_text": False, "generate_kwargs": kwargs},
    )
    assert body["Result"] == "Once upon a time" + short["Result"]
    status, body = tiny_server.post(
        "/chat",
        {
            "messages": [{"role": "user", "content": "hello"}],
            "generate_kwargs": {"max_new_tokens": 12, "num_beams": 2, "do_sample": False},
        },
    )
    assert status == 200 and isinstance(body["Result"], str)
    # Kaito's defaults sample (do_sample true, top_k 10): still an answer.
    status, body = tiny_server.post("/chat", {"prompt": "The quick brown fox"})
    assert status == 200 and body["Result"].startswith("The quick brown fox")


def test_streaming_chat_equals_non_streaming(tiny_server):
    _, whole = chat(tiny_server, max_tokens=20)
    with requests.post(
        tiny_server.url + "/v1/chat/completions",
        json={
            **CHAT,
            "temperature": 0,
            "max_tokens": 20,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        stream=True,
        timeout=60,
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_streaming_completion(tiny_server):
    body = {"model": "tiny", "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
    _, whole = tiny_server.post("/v1/completions", body)
    with requests.post(
        tiny_server.url + "/v1/completions", json={**body, "stream": True}, stream=True, timeout=60
    ) as response:
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert text == whole["choices"][0]["text"]


def test_stop_strings_cut_the_text(tiny_server):
    _, whole = chat(tiny_server, max_tokens=24)
    text = whole["choices"][0]["message"]["content"]
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), text
    _, cut = chat(tiny_server, max_tokens=24, stop=[stop, "never-there"])
    assert cut["choices"][0]["message"]["content"] == text[: text.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"


def test_openai_client(tiny_server):
    client = openai.OpenAI(base_url=tiny_server.url + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data][:1] == ["tiny"]
    reply = client.chat.completions.create(
        model="tiny", messages=CHAT["messages"], max_tokens=10, temperature=0
    )
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 10
    stream = client.chat.completions.create(
        model="one", messages=CHAT["messages"], max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    completion = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=5, temperature=0, seed=3
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=CHAT["messages"])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=CHAT["messages"], max_tokens=0)
    assert info.value.body["param"] == "max_tokens"


def test_adapters_over_http(tiny_server):
    def answer(model):
        status, body = chat(tiny_server, model=model, max_tokens=16)
        assert status == 200, body
        return body["choices"][0]["message"]["content"]

    base = answer("tiny")
    assert answer("one-off") == base  # strength 0 is the base model
    assert answer("one") != base
    assert answer("two") != base
    assert answer("one-half") not in (base, answer("one"))


BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b"", 400, None),
    (json.dumps({**CHAT, "messages": "hi"}).encode(), 400, "messages"),
    (json.dumps({**CHAT, "messages": []}).encode(), 400, "messages"),
    (json.dumps({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, None),
    (json.dumps({**CHAT, "messages": [{"role": "user", "content": 5}]}).encode(), 400, None),
    (json.dumps({**CHAT, "max_tokens": 0}).encode(), 400, "max_tokens"),
    (json.dumps({**CHAT, "max_tokens": -3}).encode(), 400, "max_tokens"),
    (json.dumps({**CHAT, "max_tokens": "ten"}).encode(), 400, "max_tokens"),
    (json.dumps({**CHAT, "max_tokens": True}).encode(), 400, "max_tokens"),
    (json.dumps({**CHAT, "max_tokens": 100000}).encode(), 400, "max_tokens"),
    (json.dumps({**CHAT, "temperature": -1}).encode(), 400, "temperature"),
    (json.dumps({**CHAT, "temperature": "warm"}).encode(), 400, "temperature"),
    (json.dumps({**CHAT, "top_p": 0}).encode(), 400, "top_p"),
    (json.dumps({**CHAT, "stop": 5}).encode(), 400, "stop"),
    (json.dumps({**CHAT, "stop": ["x"] * 17}).encode(), 400, "stop"),
    (json.dumps({**CHAT, "stop": ["x" * 1025]}).encode(), 400, "stop"),
    (json.dumps({**CHAT, "seed": 1.5}).encode(), 400, "seed"),
    (json.dumps({**CHAT, "n": 2}).encode(), 400, "n"),
    (json.dumps({**CHAT, "stream": "yes"}).encode(), 400, "stream"),
    (json.dumps({**CHAT, "model": "nope"}).encode(), 404, "model"),
    (json.dumps({**CHAT, "model": 7}).encode(), 400, "model"),
    (
        json.dumps({**CHAT, "messages": [{"role": "user", "content": "word " * 600}]}).encode(),
        400,
        None,
    ),
]


@pytest.mark.parametrize(("raw", "status", "param"), BAD)
def test_bad_chat_requests(tiny_server, raw, status, param):
    response = requests.post(tiny_server.url + "/v1/chat/completions", data=raw, timeout=30)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param:
        assert error["param"] == param


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/completions", {"model": "tiny", "prompt": ""}, 400),
        ("/v1/completions", {"model": "tiny", "prompt": {"a": 1}}, 400),
        ("/v1/completions", {"model": "tiny", "prompt": [1, 99999]}, 400),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "best_of": 3}, 400),
        ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": 0}, 400),
        ("/v1/completions", {"model": "tiny", "prompt": "x " * 600}, 400),
        ("/chat", {}, 400),
        ("/chat", {"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, 400),
        ("/chat", {"prompt": 3}, 400),
        ("/chat", {"prompt": "x", "generate_kwargs": "fast"}, 400),
        ("/chat", {"prompt": "x", "generate_kwargs": {"max_length": 0}}, 400),
        ("/chat", {"prompt": "x", "generate_kwargs": {"max_new_tokens": 10**6}}, 400),
        ("/chat", {"prompt": "x", "generate_kwargs": {"temperature": "hot"}}, 400),
        ("/chat", {"prompt": "x", "generate_kwargs": {"num_beams": 99}}, 400),
        ("/chat", {"prompt": "word " * 100, "generate_kwargs": {"max_length": 50}}, 400),
    ],
)
def test_bad_requests_other_endpoints(tiny_server, path, body, status):
    got, answer = tiny_server.post(path, body)
    assert got == status, answer
    assert answer["error"]["message"]


def test_oversized_body_and_unknown_routes(tiny_server):
    big = json.dumps({**CHAT, "padding": "x" * (200 * 1024)})
    response = requests.post(tiny_server.url + "/v1/chat/completions", data=big, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    response = requests.get(tiny_server.url + "/v2/nothing", timeout=10)
    assert response.status_code == 404 and response.json()["error"]["message"]
    response = requests.get(tiny_server.url + "/v1/chat/completions", timeout=10)
    assert response.status_code == 405 and response.json()["error"]["message"]
    # Still serving.
    assert chat(tiny_server)[0] == 200


def test_disconnects_free_their_slots(tiny_server):
    # A streaming client that reads one chunk and leaves.
    response = requests.post(
        tiny_server.url + "/v1/chat/completions",
        json={**CHAT, "max_tokens": 400, "stream": True, "min_tokens": 400},
        stream=True,
        timeout=30,
    )
    lines = response.iter_lines()
    assert next(line for line in lines if line).startswith(b"data: ")
    assert running(tiny_server) == 1
    response.close()
    wait_idle(tiny_server)
    # A non-streaming client that leaves while its answer is computed: it must have started
    # (holding a slot) before it leaves, or the test would prove nothing.
    body = json.dumps({**CHAT, "max_tokens": 400, "min_tokens": 400}).encode()
    with socket.create_connection(("127.0.0.1", tiny_server.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 60
        while running(tiny_server) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert running(tiny_server) == 1, "the request never started"
    wait_idle(tiny_server)
    assert chat(tiny_server)[0] == 200


def stream_text(server, body: dict) -> str:
    with requests.post(
        server.url + "/v1/chat/completions", json={**body, "stream": True}, stream=True, timeout=120
    ) as response:
        assert response.status_code == 200
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])


def test_64_concurrent_clients(tiny_server):
    """64 clients at once, a third streaming, on three models: each gets the answer it gets
    alone (batching changes no output)."""
    models = ["tiny", "one", "two"]
    alone = {m: chat(tiny_server, model=m, max_tokens=16)[1] for m in models}
    want = {m: body["choices"][0]["message"]["content"] for m, body in alone.items()}
    assert stream_text(tiny_server, {**CHAT, "max_tokens": 16, "temperature": 0}) == want["tiny"]
    assert len(set(want.values())) == 3, "the adapters should change the answer"

    def one(i):
        model = models[i % 3]
        if i % 2 == 0:
            body = {**CHAT, "model": model, "max_tokens": 16, "temperature": 0}
            return model, stream_text(tiny_server, body)
        status, body = chat(tiny_server, model=model, max_tokens=16)
        assert status == 200, body
        return model, body["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert [text for _, text in results] == [want[model] for model, _ in results]
    wait_idle(tiny_server)


def test_metrics(tiny_server):
    chat(tiny_server)
    status, text = tiny_server.get("/metrics")
    assert status == 200
    text = text.decode()
    for name in (
        'kaito_inference_requests_total{api="chat",status="200"}',
        "kaito_inference_prompt_tokens_total",
        "kaito_inference_generation_tokens_total",
        "kaito_inference_queue_depth",
        "kaito_inference_running_requests",
        "kaito_inference_request_latency_seconds_bucket",
        "kaito_inference_time_to_first_token_seconds_bucket",
        "vllm:num_requests_waiting",
    ):
        assert name in text, name
