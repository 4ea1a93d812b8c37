"""The packaged SmolLM2-135M-Instruct behind the server: it knows Paris, streams, batches
exactly (with the CPU's own choice of products, and with float32 ones forced), takes 64
clients at once, and works with curl-style JSON and the openai client."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.runtime.conftest import InferenceServer

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "What is 2 + 2?",
    "Write one sentence about the sea.",
    "Who wrote Romeo and Juliet?",
    "Give me a synonym for happy.",
    "What is the boiling point of water in Celsius?",
    "Translate 'thank you' into French.",
]


def ask(server, content: str, max_tokens: int = 24) -> dict:
    status, body = server.post(
        "/v1/chat/completions",
        {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
            "max_tokens": max_tokens,
        },
    )
    assert status == 200, body
    return body


def test_answers_paris(smollm2_server):
    body = ask(smollm2_server, "What is the capital of France?")
    assert "Paris" in body["choices"][0]["message"]["content"]
    status, kaito = smollm2_server.post(
        "/chat",
        {"messages": QUESTION, "generate_kwargs": {"max_new_tokens": 20, "do_sample": False}},
    )
    assert status == 200 and "Paris" in kaito["Result"]


def test_openai_client_and_streaming(smollm2_server):
    client = openai.OpenAI(base_url=smollm2_server.url + "/v1", api_key="unused", max_retries=0)
    assert client.models.list().data[0].id == "smollm2-135m-instruct"
    stream = client.chat.completions.create(
        model="smollm2-135m-instruct", messages=QUESTION, temperature=0, max_tokens=20, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len([p for p in pieces if p]) > 3  # token by token, not one blob
    assert "Paris" in "".join(pieces)


@pytest.fixture(scope="module")
def smollm2_float32_server(smollm2_checkpoint, tmp_path_factory):
    server = InferenceServer(
        ["--preset", "smollm2-135m-instruct", "--cpu-products", "float32"],
        tmp_path_factory.mktemp("smollm2-float32-server") / "server.log",
    )
    yield server
    server.stop()


@pytest.mark.parametrize("name", ["smollm2_server", "smollm2_float32_server"])
def test_batched_equals_sequential(request, name):
    server = request.getfixturevalue(name)
    sequential = [ask(server, p, 32)["choices"][0]["message"]["content"] for p in PROMPTS]
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        batched = list(pool.map(lambda p: ask(server, p, 32), PROMPTS))
    assert [b["choices"][0]["message"]["content"] for b in batched] == sequential


def test_64_concurrent_clients(smollm2_server):
    def one(i):
        body = {
            "model": "smollm2-135m-instruct",
            "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            "temperature": 0,
            "max_tokens": 12,
            "stream": i % 2 == 0,
        }
        with requests.post(
            smollm2_server.url + "/v1/chat/completions", json=body, stream=True, timeout=300
        ) as response:
            if response.status_code != 200:
                return response.status_code, response.text
            if body["stream"]:
                lines = [ln for ln in response.iter_lines() if ln]
                return 200, lines[-1] == b"data: [DONE]"
            return 200, bool(json.loads(response.content)["choices"][0]["message"]["content"])

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert results == [(200, True)] * 64
