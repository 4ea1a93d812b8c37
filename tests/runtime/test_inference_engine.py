"""The inference engine in-process, on the tiny random Llama: the batched decoder against
transformers, batched against sequential, beams, sampling, adapters, preemption, cancellation.

Both product paths run on every machine: float32, and bf16 products (forced, so a CPU without
native bf16 runs them too, slowly); `auto` picks one per CPU (test_inference_placement.py)."""

from __future__ import annotations

import threading

import pytest
import torch
from kaito_jupyter.runtimes.inference.generation import CANCELLED, LENGTH, GenerationRequest
from kaito_jupyter.runtimes.inference.loader import AdapterSpec, Options, load
from kaito_jupyter.runtimes.inference.sampling import SamplingParams

from tests.runtime import tiny
from tests.runtime.conftest import wait_for

torch.set_num_threads(1)

PRODUCTS = ("float32", "bfloat16")
# How far the decoder's logits may stray from transformers' float32 ones on the tiny model
# (bf16 products: measured 0.013, the logits' spread is 0.6).
ATOL = {"float32": 1e-4, "bfloat16": 5e-2}

PROMPTS = [
    "What is the capital of France?",
    "Once upon a time",
    "The quick brown fox jumps over the lazy dog. " * 3,  # longer than a prefill chunk
    "0123456789",
    "Write a haiku about the sea.",
    "é ü ß 日本 🙂",
    "system user assistant",
    "Answer in one sentence, please. " * 5,
]


class Runner:
    """An engine loaded the way the server loads it, with a blocking generate()."""

    def __init__(self, model_dir, **options):
        self.served, self.engine = load(Options(model=str(model_dir), **options))

    def request(self, prompt: str, new: int = 16, **kwargs) -> GenerationRequest:
        chat = self.served.encode_chat([{"role": "user", "content": prompt}])
        return GenerationRequest(tuple(chat), new, eos=self.served.eos, **kwargs)

    def submit(self, request: GenerationRequest):
        done = threading.Event()
        result = {"tokens": [], "reason": None}

        def sink(seq, tokens, reason):
            result["tokens"].extend(tokens)
            if reason is not None:
                result["reason"] = reason
                done.set()

        unit = self.engine.submit(request, sink)
        return unit, done, result

    def generate(self, request: GenerationRequest) -> list[int]:
        _, done, result = self.submit(request)
        assert done.wait(120), "generation did not finish"
        return result["tokens"]

    def batch(self, requests: list[GenerationRequest]) -> list[list[int]]:
        handles = [self.submit(r) for r in requests]
        for _, done, _ in handles:
            assert done.wait(120), "generation did not finish"
        return [result["tokens"] for _, _, result in handles]

    def close(self):
        self.engine.stop()


def _runner(tiny_model, tiny_adapters, products: str) -> Runner:
    return Runner(
        tiny_model,
        adapters=[
            AdapterSpec("one", str(tiny_adapters["one"]), 1.0),
            AdapterSpec("two", str(tiny_adapters["two"]), 1.0),
            AdapterSpec("half", str(tiny_adapters["one"]), 0.5),
            AdapterSpec("off", str(tiny_adapters["one"]), 0.0),
        ],
        chunk=16,
        step_tokens=48,
        cpu_products=products,
    )


@pytest.fixture(scope="module", params=PRODUCTS)
def runner(request, tiny_model, tiny_adapters):
    """The engine on each product path (for what must hold on both)."""
    r = _runner(tiny_model, tiny_adapters, request.param)
    yield r
    r.close()


@pytest.fixture(scope="module")
def float32_runner(tiny_model, tiny_adapters):
    """The float32 path, which matches transformers' float32 generation token for token."""
    r = _runner(tiny_model, tiny_adapters, "float32")
    yield r
    r.close()


def reference_greedy(model, prompt_ids: tuple[int, ...], new: int, eos: frozenset[int]):
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt_ids]),
            max_new_tokens=new,
            do_sample=False,
            eos_token_id=sorted(eos),
            pad_token_id=0,
        )
    tokens = out[0, len(prompt_ids) :].tolist()
    return [t for t in tokens if t not in eos]


def _decoder(path, products: str):
    from kaito_jupyter.runtimes.inference.decoder import LlamaDecoder
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return LlamaDecoder(model, getattr(torch, products))


@pytest.mark.parametrize("products", PRODUCTS)
def test_decoder_logits_match_transformers(tiny_model, products):
    from kaito_jupyter.runtimes.inference.batch import Row, Step
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    decoder = _decoder(tiny_model, products)
    tol = {"atol": ATOL[products], "rtol": 1e-4}
    cache = decoder.new_cache(4)
    ids = list(range(3, 40))
    cache.ensure(2, 64)
    # Two sequences in one step: a 20-token prefill in slot 0 and a 30-token one in slot 1.
    logits = decoder.forward(Step([Row(0, ids[:20], 0, True), Row(1, ids[:30], 0, True)], 2), cache)
    with torch.inference_mode():
        want = reference(torch.tensor([ids[:30]])).logits[0]
    torch.testing.assert_close(logits[0], want[19], **tol)
    torch.testing.assert_close(logits[1], want[29], **tol)
    # Then slot 0 decodes its next tokens one at a time while slot 1 prefills a chunk more.
    step = Step([Row(0, [ids[20]], 20, True), Row(1, ids[30:37], 30, True)], 2)
    logits = decoder.forward(step, cache)
    with torch.inference_mode():
        want = reference(torch.tensor([ids[:37]])).logits[0]
    torch.testing.assert_close(logits[0], want[20], **tol)
    torch.testing.assert_close(logits[1], want[36], **tol)


@pytest.mark.parametrize("products", PRODUCTS)
@pytest.mark.parametrize("variant", ["mha-bias", "sliding-window"])
def test_decoder_variants_match_transformers(tmp_path, variant, products):
    """Multi-head attention with biases (Qwen-style), and a Mistral-style sliding window."""
    from kaito_jupyter.runtimes.inference.batch import Row, Step
    from transformers import AutoModelForCausalLM

    if variant == "mha-bias":
        path = tiny.build_model(tmp_path / "m", kv_heads=4, attention_bias=True)
    else:
        from transformers import MistralConfig, MistralForCausalLM

        tiny.build_tokenizer(tmp_path / "m")
        config = MistralConfig(
            vocab_size=320,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=8,
            max_position_embeddings=256,
        )
        torch.manual_seed(0)
        MistralForCausalLM(config).save_pretrained(tmp_path / "m")
        path = tmp_path / "m"
    reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    decoder = _decoder(path, products)
    cache = decoder.new_cache(2)
    cache.ensure(1, 64)
    ids = list(range(5, 35))
    logits = decoder.forward(Step([Row(0, ids[:24], 0, True)], 1), cache)
    logits2 = decoder.forward(Step([Row(0, ids[24:25], 24, True)], 1), cache)
    with torch.inference_mode():
        want = reference(torch.tensor([ids[:25]])).logits[0]
    torch.testing.assert_close(logits[0], want[23], atol=ATOL[products], rtol=1e-4)
    torch.testing.assert_close(logits2[0], want[24], atol=ATOL[products], rtol=1e-4)


def test_greedy_matches_transformers_generate(float32_runner, tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    for prompt in PROMPTS[:4]:
        request = float32_runner.request(prompt, 24)
        want = reference_greedy(model, request.prompt, 24, request.eos)
        assert float32_runner.generate(request) == want, prompt


def test_batched_equals_sequential(runner):
    requests = [runner.request(p, 12 + 3 * i) for i, p in enumerate(PROMPTS * 2)]
    sequential = [runner.generate(r) for r in requests]
    batched = runner.batch(requests)
    assert batched == sequential
    assert all(len(tokens) > 0 for tokens in batched)


def test_beam_search_matches_transformers(float32_runner, tiny_model):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    for prompt in PROMPTS[:3]:
        request = float32_runner.request(prompt, 10, num_beams=3)
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([request.prompt]),
                max_new_tokens=10,
                num_beams=3,
                do_sample=False,
                eos_token_id=sorted(request.eos),
                pad_token_id=0,
            )
        want = [t for t in out[0, len(request.prompt) :].tolist() if t not in request.eos]
        assert float32_runner.generate(request) == want, prompt


def test_beam_search_runs_among_other_requests(runner):
    beam = runner.request(PROMPTS[0], 10, num_beams=2)
    alone = runner.generate(beam)
    mixed = runner.batch([runner.request(p, 10) for p in PROMPTS[1:4]] + [beam])
    assert mixed[-1] == alone


def test_sampling_is_seeded(runner):
    def sampled(seed, **kw):
        params = SamplingParams(do_sample=True, temperature=1.5, seed=seed, **kw)
        return runner.generate(runner.request(PROMPTS[1], 20, params=params))

    assert sampled(1) == sampled(1)
    assert sampled(1) != sampled(2) or sampled(1) != sampled(3)
    greedy = runner.generate(runner.request(PROMPTS[1], 20))
    assert sampled(5, top_k=1) == greedy
    for kw in ({"top_p": 0.5}, {"typical_p": 0.5}, {"repetition_penalty": 1.3}):
        assert len(sampled(7, **kw)) > 0


@pytest.mark.parametrize("seed", range(4))
def test_logits_processors_match_transformers(seed):
    """top_p, typical_p and repetition_penalty on the same logits as transformers' processors:
    the same tokens kept, the same values, bitwise."""
    from kaito_jupyter.runtimes.inference import sampling
    from transformers import (
        RepetitionPenaltyLogitsProcessor,
        TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(320, generator=generator) * 4
    history = torch.randint(0, 320, (1, 24), generator=generator)
    for mass in (0.05, 0.3, 0.5, 0.9, 0.99):
        want = TopPLogitsWarper(mass)(history, logits[None].clone())[0]
        got = sampling._top_p(logits.clone(), mass)
        assert torch.equal(got, want), ("top_p", mass)
        assert 0 < int(torch.isfinite(got).sum()) < 320 or mass >= 0.99
        want = TypicalLogitsWarper(mass)(history, logits[None].clone())[0]
        assert torch.equal(sampling._typical(logits.clone(), mass), want), ("typical_p", mass)
    for penalty in (0.5, 1.3, 2.0):
        sampler = sampling.Sampler(SamplingParams(repetition_penalty=penalty), frozenset())
        got = sampler.adjust(logits.clone(), history[0].tolist(), generated=0)
        want = RepetitionPenaltyLogitsProcessor(penalty)(history, logits[None].clone())[0]
        assert torch.equal(got, want), ("repetition_penalty", penalty)
        assert not torch.equal(got, logits)


def test_min_new_tokens_and_max_new_tokens(runner):
    request = runner.request(PROMPTS[0], 30, params=SamplingParams(min_new_tokens=30))
    _, done, result = runner.submit(request)
    assert done.wait(60)
    assert len(result["tokens"]) == 30 and result["reason"] == LENGTH


def test_adapters_match_merged_weights(float32_runner, tiny_model, tiny_adapters):
    index = {a.name: a.index for a in float32_runner.served.adapters}
    base = float32_runner.generate(float32_runner.request(PROMPTS[0], 16))
    for name, path, strength in (
        ("one", tiny_adapters["one"], 1.0),
        ("half", tiny_adapters["one"], 0.5),
        ("two", tiny_adapters["two"], 1.0),
    ):
        merged = tiny.merged_model(tiny_model, path, strength)
        request = float32_runner.request(PROMPTS[0], 16, adapter=index[name])
        want = reference_greedy(merged, request.prompt, 16, request.eos)
        got = float32_runner.generate(request)
        assert got == want, name
        assert got != base, f"adapter {name} did not change the output"
    # Strength 0 is the base model, exactly.
    assert index["off"] == 0
    assert (
        float32_runner.generate(float32_runner.request(PROMPTS[0], 16, adapter=index["off"]))
        == base
    )


def test_adapters_mixed_in_one_batch(runner):
    index = {a.name: a.index for a in runner.served.adapters}
    requests = [
        runner.request(prompt, 12, adapter=index[name])
        for prompt in PROMPTS[:4]
        for name in ("off", "one", "two", "half")
    ]
    alone = [runner.generate(r) for r in requests]
    together = runner.batch(requests)
    assert together == alone


def test_cancel_frees_the_slot(runner):
    unit, done, result = runner.submit(runner.request(PROMPTS[2], 400 - 80))
    wait_for(lambda: result["tokens"] or done.is_set(), "the first token")
    assert not done.is_set(), "it finished before it could be cancelled"
    runner.engine.cancel(unit)
    assert done.wait(30)
    assert result["reason"] == CANCELLED
    wait_for(lambda: runner.engine.running == 0, "the slot freed")


@pytest.mark.parametrize("products", PRODUCTS)
def test_preemption_keeps_outputs(tiny_model, products):
    """A KV cache too small for every sequence: the newest wait and recompute, all finish."""
    roomy = Runner(tiny_model, chunk=16, step_tokens=48, cpu_products=products)
    cramped = Runner(
        tiny_model,
        chunk=16,
        step_tokens=48,
        kv_cache_gib=200 * 64 * 2 * 2 * 4 / 2**30,
        cpu_products=products,
    )
    try:
        requests = [roomy.request(p, 40) for p in PROMPTS]
        want = roomy.batch(requests)
        got = cramped.batch(requests)
        assert cramped.engine.preemptions > 0
        assert got == want  # bitwise: a recomputed cache gives the same tokens
    finally:
        roomy.close()
        cramped.close()


def test_generic_runner_matches_transformers(tiny_model, tiny_adapters):
    """--no-fast: the transformers model, one sequence per forward, adapters included."""
    from transformers import AutoModelForCausalLM

    slow = Runner(
        tiny_model,
        fast=False,
        adapters=[AdapterSpec("one", str(tiny_adapters["one"]), 0.5)],
        chunk=16,
        step_tokens=48,
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        requests = [slow.request(p, 16) for p in PROMPTS[:3]]
        got = slow.batch(requests)
        for request, tokens in zip(requests, got, strict=True):
            assert tokens == reference_greedy(model, request.prompt, 16, request.eos)
        merged = tiny.merged_model(tiny_model, tiny_adapters["one"], 0.5)
        request = slow.request(PROMPTS[0], 16, adapter=1)
        assert slow.generate(request) == reference_greedy(merged, request.prompt, 16, request.eos)
    finally:
        slow.close()


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Torch threads for one test (oneDNN splits the work by them), then 1 again."""
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(1)


@pytest.mark.parametrize("shape", [(960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)])
def test_bf16_product_rows_do_not_depend_on_the_batch(shape, threads):
    """At SmolLM2-135M's shapes (its projections and output layer), oneDNN's bf16 kernels round
    some rows differently by the product's row count (and where, with the thread count); the
    decoder's blocked products must not, and must still be the product."""
    from kaito_jupyter.runtimes.inference.decoder import BlockLinear, Scratch

    torch.manual_seed(0)
    weight = torch.randn(shape) * 0.05
    product = BlockLinear(weight, None, Scratch(torch.bfloat16))
    x = torch.randn(80, shape[1])
    everything = product(x)
    for rows in (1, 2, 3, 8, 16, 17, 31, 32, 33, 47, 64, 65):
        assert torch.equal(product(x[:rows]), everything[:rows]), rows
    order = torch.randperm(80)
    assert torch.equal(product(x[order]), everything[order])
    # bf16 operands, float32 accumulation, a bf16 result: within a few bf16 roundings.
    exact = x.bfloat16().double() @ weight.bfloat16().double().T
    torch.testing.assert_close(everything.double(), exact, atol=1e-4, rtol=2**-7)


def test_output_layer_keeps_float32_logits(threads, tiny_model):
    """On the bf16 path the LM head holds float16 weights and returns float32 logits, not ones
    rounded to bf16 (whose ties made SmolLM2's greedy answer degenerate on an AMD EPYC): rows
    independent of the batch, and within float16 weight rounding of the product."""
    from kaito_jupyter.runtimes.inference.decoder import OutputLinear

    assert isinstance(_decoder(tiny_model, "bfloat16").lm_head, OutputLinear)
    assert not isinstance(_decoder(tiny_model, "float32").lm_head, OutputLinear)
    torch.manual_seed(0)
    weight = torch.randn(49152, 576) * 0.05  # SmolLM2-135M's output layer
    product = OutputLinear(weight)
    x = torch.randn(80, 576)
    everything = product(x)
    assert everything.dtype == torch.float32
    for rows in (1, 2, 3, 8, 16, 17, 31, 32, 33, 47, 64, 65):
        assert torch.equal(product(x[:rows]), everything[:rows]), rows
    order = torch.randperm(80)
    assert torch.equal(product(x[order]), everything[order])
    exact = x.double() @ weight.half().double().T
    torch.testing.assert_close(everything.double(), exact, atol=1e-5, rtol=1e-5)
    # A bf16-rounded logit would be off by up to 2**-9 of itself: these are 30x closer.
    assert (everything.double() - exact).abs().max() < 2**-9 * exact.abs().max() / 30


@pytest.mark.parametrize("products", PRODUCTS)
def test_decoder_rows_are_batch_invariant(tiny_model, products):
    """A sequence's logits and keys and values are bitwise the same alone and among others,
    prefilling or decoding."""
    from kaito_jupyter.runtimes.inference.batch import Row, Step

    decoder = _decoder(tiny_model, products)
    ids = list(range(3, 60))

    def run(steps, slots):
        cache = decoder.new_cache(8)
        cache.ensure(slots, 128)
        logits = [decoder.forward(Step(rows, slots), cache) for rows in steps]
        # Slot 0's keys and values: every token of every layer, where a rounding shows first.
        return logits, [
            torch.stack([k[0, :, :18], v[0, :, :18]])
            for k, v in zip(cache.keys, cache.values, strict=True)
        ]

    alone, alone_kv = run(
        [[Row(0, ids[:16], 0, True)], [Row(0, [ids[16]], 16, True)], [Row(0, [ids[17]], 17, True)]],
        1,
    )
    crowd, crowd_kv = run(
        [
            [Row(0, ids[:16], 0, True), Row(1, ids[5:40], 0, True), Row(2, [7], 0, True)],
            [Row(1, [9], 35, True), Row(0, [ids[16]], 16, True), Row(2, [8], 1, True)],
            [Row(0, [ids[17]], 17, True), Row(1, [4], 36, True), Row(2, [3], 2, True)],
        ],
        3,
    )
    assert torch.equal(alone[0][0], crowd[0][0])
    assert torch.equal(alone[1][0], crowd[1][1])
    assert torch.equal(alone[2][0], crowd[2][0])
    for layer, (a, c) in enumerate(zip(alone_kv, crowd_kv, strict=True)):
        assert torch.equal(a, c), f"layer {layer}: slot 0's keys/values depend on the batch"
