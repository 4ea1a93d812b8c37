"""The packaged SmolLM2-135M-Instruct behind the server: it knows Paris, streams, batches
exactly (with the CPU's own choice of products, and with float32 ones forced), answers like
float32 with bf16 products forced, takes 64 clients at once, and works with curl-style JSON and
the openai client."""

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


@pytest.fixture(scope="module")
def smollm2_bfloat16_server(smollm2_checkpoint, tmp_path_factory):
    """bf16 products forced: what `auto` picks on CPUs with AVX512-BF16 or AMX, run here too."""
    server = InferenceServer(
        ["--preset", "smollm2-135m-instruct", "--cpu-products", "bfloat16"],
        tmp_path_factory.mktemp("smollm2-bfloat16-server") / "server.log",
        timeout=600,  # the third server of this module: loading waits for the other two
    )
    yield server
    server.stop()


def degenerate(text: str) -> bool:
    """Whether some three-word run repeats more than twice ("la femme, la femme, la femme")."""
    words = text.lower().split()
    runs = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    return any(runs.count(run) > 2 for run in set(runs))


def test_bfloat16_products_answer_like_float32(smollm2_bfloat16_server, smollm2_float32_server):
    """bf16 products round differently, so a greedy answer may leave the float32 one after a
    few tokens; it must not go wrong from the start. Measured on an AMD EPYC (the first 8
    tokens equal for 6 of the 8 prompts, the others after 5), the bar: Paris, no answer
    degenerate, and the first 8 tokens equal float32's for most prompts."""
    assert "Paris" in ask(smollm2_bfloat16_server, PROMPTS[0])["choices"][0]["message"]["content"]
    bf16, f32 = (
        [ask(server, p, 8)["choices"][0]["message"]["content"] for p in PROMPTS]
        for server in (smollm2_bfloat16_server, smollm2_float32_server)
    )
    same = [p for p, a, b in zip(PROMPTS, bf16, f32, strict=True) if a == b]
    assert len(same) > len(PROMPTS) // 2, list(zip(bf16, f32, strict=True))
    for prompt in PROMPTS:
        text = ask(smollm2_bfloat16_server, prompt, 32)["choices"][0]["message"]["content"]
        assert not degenerate(text), (prompt, text)


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
