"""The fast training step computes the same thing as the plain one: a packed row with
per-document attention, LoRA merged into the (dequantized) base weight and the selected-token
loss give the loss and the LoRA gradients that transformers' own forward gives on each
conversation separately."""

from __future__ import annotations

import itertools

import pytest
import torch
from kaito_jupyter.runtimes import cpu
from kaito_jupyter.runtimes.tuning import chat, config, grouped, kernels, model, packing, trainer

from .tuning_helpers import conversations


def _examples(tokenizer, count=5):
    return [chat.encode(tokenizer, c, 256) for c in conversations(count, seed=3)]


def _reference_loss(peft_model, examples):
    """transformers' forward and loss, one conversation at a time, summed over target tokens."""
    total = 0.0
    for example in examples:
        ids = torch.tensor([example.input_ids])
        labels = torch.tensor(
            [[t if m else -100 for t, m in zip(example.input_ids, example.targets, strict=True)]]
        )
        labels[0, 0] = -100
        count = int((labels[0, 1:] != -100).sum())
        out = peft_model(input_ids=ids, labels=labels)
        total = total + out.loss * count
    return total


def _reference_model(tiny_model, method, lora_state):
    """transformers + peft as they come: sdpa attention, bitsandbytes' 4-bit matmul, HF norms."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        kwargs["device_map"] = {"": "cpu"}
    reference = AutoModelForCausalLM.from_pretrained(tiny_model, **kwargs)
    reference = get_peft_model(reference, LoraConfig(r=8, lora_alpha=8, target_modules=ALL))
    set_peft_model_state_dict(reference, lora_state)
    # Training mode: in eval mode bitsandbytes repacks 4-bit weights for a bf16 CPU kernel.
    return reference.train()


ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# float32 products compute what transformers computes, to float rounding; bf16 products (on
# CPUs that multiply bf16 natively, the default there) to bf16 rounding.
TOLERANCES = {"float32": {"loss": 1e-5, "grad": 1e-4}, "bfloat16": {"loss": 1e-2, "grad": 3e-2}}


@pytest.mark.parametrize("products", ["float32", "bfloat16"])
@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_packed_step_matches_the_plain_forward(tiny_model, tmp_path, method, products):
    from peft import get_peft_model_state_dict
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    cfg = config.load(None, method)
    cfg.lora.target_modules = ALL
    cfg.lora.init_lora_weights = False  # random B, so that the adapters change the output
    tokenizer = chat.prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model))
    loaded = model.load(
        tiny_model, cfg, target_modules=None, tokenizer=tokenizer, cpu_products=products,
        log=lambda m: None,
    )  # fmt: skip
    loaded.model.train()
    assert loaded.bf16_products == (products == "bfloat16")
    fused = [m for n, m in loaded.model.named_modules() if n.endswith(tuple(ALL))]
    routed = grouped._grouped_forward if loaded.bf16_products else kernels._fused_lora_forward
    assert fused and all(m.forward.__func__ is routed for m in fused)
    if loaded.bf16_products:  # q/k/v and gate/up share one product per layer
        sets = sorted({len(m.kaito_group[0].layers) for m in fused})
        assert sets == [1, 2, 3], sets
        mlps = list(kernels.swiglu_mlps(loaded.model))
        assert mlps and all(m.forward.__func__ is grouped._grouped_mlp_forward for m in mlps)
    examples = _examples(tokenizer)
    step = packing.collate(examples, list(range(len(examples))))
    assert step.bounds[-1] == sum(len(e) for e in examples)

    job = trainer.Trainer(loaded, examples, [], cfg.training, work_dir=tmp_path, progress=None,
                          fingerprint="", shuffle=False)  # fmt: skip
    packed = job.loss_sum(step)
    packed.backward()
    ours = {n: p.grad for n, p in loaded.model.named_parameters() if p.requires_grad}

    reference = _reference_model(tiny_model, method, get_peft_model_state_dict(loaded.model))
    want = _reference_loss(reference, examples)
    want.backward()
    theirs = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    tol = TOLERANCES[products]
    assert float(packed.detach()) == pytest.approx(float(want.detach()), rel=tol["loss"])
    assert ours.keys() == theirs.keys() and len(ours) == 2 * len(ALL) * 2
    errors = {name: _relative_error(grad, theirs[name]) for name, grad in ours.items()}
    assert max(errors.values()) < tol["grad"], errors


def test_bf16_products_are_chosen_by_the_cpu(monkeypatch):
    assert cpu.native_bf16("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni")
    assert cpu.native_bf16("flags\t\t: fpu avx2 amx_bf16 amx_tile")
    assert not cpu.native_bf16("flags\t\t: fpu avx2 avx512f avx512bw")
    monkeypatch.setattr(cpu, "native_bf16", lambda: False)
    assert not model.bf16_products("cpu", "auto")
    assert model.bf16_products("cpu", "bfloat16")
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    assert model.bf16_products("cpu", "auto")
    assert not model.bf16_products("cpu", "float32")
    assert not model.bf16_products("cuda", "auto")  # GPUs compute in their own dtype


def _relative_error(got, want):
    return float((got - want).norm() / want.norm())


class _Attention(torch.nn.Module):
    """q/k/v of different widths reading one input, and a single (o) beside them."""

    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(48, 40, bias=True)
        self.k_proj = torch.nn.Linear(48, 16, bias=False)
        self.v_proj = torch.nn.Linear(48, 24, bias=True)
        self.o_proj = torch.nn.Linear(40, 48, bias=False)

    def forward(self, x):
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return torch.cat([q * 0.5, k, v], -1), self.o_proj(q)


def _adapted(seed):
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)
    module = _Attention().requires_grad_(False)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    module = inject_adapter_in_model(config, module)
    for name, p in module.named_parameters():
        if "lora_B" in name:  # peft starts B at zero; a non-zero B exercises every gradient
            torch.nn.init.normal_(p)
    return module


@pytest.mark.parametrize("rows", [1, 31, 32, 77])
def test_grouped_projections_match_float32(rows):
    reference, module = _adapted(rows), _adapted(rows)
    groups = grouped.fuse(module)
    assert sorted(len(g.layers) for g in groups) == [1, 3]
    x = torch.randn(1, rows, 48)

    def run(m):
        m.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        first, second = m(xi)
        (first.square().sum() + (second * torch.linspace(-1, 1, 48)).sum()).backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        return {"first": first.detach(), "second": second.detach(), "dx": xi.grad, **grads}

    want, got = run(reference), run(module)
    assert got.keys() == want.keys() and len(got) == 3 + 2 * 4
    for name, w in want.items():
        assert got[name].dtype == torch.float32 and got[name].shape == w.shape, name
        limit = 1e-2 if name in ("first", "second", "dx") else TOLERANCES["bfloat16"]["grad"]
        assert _relative_error(got[name], w) < limit, name
    assert all(g.pending is None for g in groups)  # every member took its output
    # a second step sees the updated adapters (they are rewritten into the operand per call)
    with torch.no_grad():
        for m in (reference, module):
            m.k_proj.lora_A["default"].weight.mul_(-2)
    want, got = run(reference), run(module)
    assert _relative_error(got["first"], want["first"]) < 1e-2


class _MLP(torch.nn.Module):
    """A SiLU-gated MLP, as Llama's."""

    def __init__(self):
        super().__init__()
        self.gate_proj = torch.nn.Linear(48, 64, bias=False)
        self.up_proj = torch.nn.Linear(48, 64, bias=False)
        self.down_proj = torch.nn.Linear(64, 48, bias=False)
        self.act_fn = torch.nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


@pytest.mark.parametrize("rows", [1, 31, 32, 77])
def test_grouped_swiglu_matches_float32(rows):
    from peft import LoraConfig, inject_adapter_in_model

    def adapted():
        torch.manual_seed(rows)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"])
        module = inject_adapter_in_model(config, _MLP().requires_grad_(False))
        for name, p in module.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.3)
        return module

    reference, module = adapted(), adapted()
    groups = grouped.fuse(module)
    assert sorted(len(g.layers) for g in groups) == [1, 2]
    assert module.forward.__func__ is grouped._grouped_mlp_forward
    x = torch.randn(1, rows, 48)
    weights = torch.randn(1, rows, 48)

    def run(m):
        m.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        (out * weights).sum().backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        return {"out": out.detach(), "dx": xi.grad, **grads}

    want, got = run(reference), run(module)
    assert got.keys() == want.keys() and len(got) == 2 + 2 * 3
    for name, w in want.items():
        assert got[name].dtype == torch.float32 and got[name].shape == w.shape, name
        limit = 1e-2 if name in ("out", "dx") else TOLERANCES["bfloat16"]["grad"]
        assert _relative_error(got[name], w) < limit, name


def test_grouping_is_refused_past_its_memory_budget():
    module = _adapted(0)
    layers = [m for m in module.modules() if hasattr(m, "lora_A")]
    need = grouped.operand_bytes(layers)
    assert need == 2 * 48 * (40 + 16 + 24) + 2 * 40 * 48
    assert grouped.fuse(module, budget=need - 1) is None
    assert not any(hasattr(m, "kaito_group") for m in layers)  # nothing routed: peft's forward
    assert len(grouped.fuse(module, budget=need)) == 2


def _sdpa(q, k, v, scale):
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True, scale=scale, enable_gqa=True
    )


def _attention_grads(q, k, v, grad, function):
    for t in (q, k, v):
        t.grad = None
    out = function()
    out.backward(grad)
    return [out.detach()] + [t.grad.clone() for t in (q, k, v)]


# bf16 scores: the output to ~0.5%, the gradients to ~1% (float32 SDPA is the reference).
ATTENTION_LIMITS = {"out": 1e-2, "dq": 2e-2, "dk": 2e-2, "dv": 2e-2}


@pytest.mark.parametrize("length", [2, 17, 64, 100])
def test_bf16_attention_matches_sdpa(length):
    torch.manual_seed(length)
    q = torch.randn(1, 6, length, 16, requires_grad=True)
    k = torch.randn(1, 2, length, 16, requires_grad=True)  # grouped: 3 query heads per key head
    v = torch.randn(1, 2, length, 16, requires_grad=True)
    grad = torch.randn(1, 6, length, 16)
    want = _attention_grads(q, k, v, grad, lambda: _sdpa(q, k, v, 0.25))
    got = _attention_grads(q, k, v, grad, lambda: kernels._CausalAttentionBF16.apply(q, k, v, 0.25))
    for name, g, w in zip(ATTENTION_LIMITS, got, want, strict=True):
        assert g.shape == w.shape, name
        assert _relative_error(g, w) < ATTENTION_LIMITS[name], name


def test_bf16_document_attention_keeps_documents_apart():
    """A packed row of short (SDPA) and long (bf16 kernel) documents: each attends to itself."""
    torch.manual_seed(5)
    lengths = [3, kernels.SHORT_DOCUMENT - 1, kernels.SHORT_DOCUMENT, 90]
    bounds = [0, *itertools.accumulate(lengths)]
    total = bounds[-1]
    q = torch.randn(1, 6, total, 16, requires_grad=True)
    k = torch.randn(1, 2, total, 16, requires_grad=True)
    v = torch.randn(1, 2, total, 16, requires_grad=True)
    grad = torch.randn(1, total, 6, 16)

    def packed():
        out, _ = kernels.document_attention_bf16(
            None, q, k, v, scaling=0.25, **{kernels.BOUNDS_KWARG: bounds}
        )
        return out

    def separate():
        outs = [_sdpa(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], 0.25)
                for s, e in itertools.pairwise(bounds)]  # fmt: skip
        return torch.cat(outs, dim=2).transpose(1, 2)

    want = _attention_grads(q, k, v, grad, separate)
    got = _attention_grads(q, k, v, grad, packed)
    for name, g, w in zip(ATTENTION_LIMITS, got, want, strict=True):
        assert g.shape == w.shape, name
        assert _relative_error(g, w) < ATTENTION_LIMITS[name], name


def test_selected_token_loss_chunks_agree_with_cross_entropy():
    torch.manual_seed(1)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(101, 16)
    targets = torch.randint(0, 101, (37,))
    got = kernels.selected_token_loss(hidden, weight, targets, chunk_elements=101 * 5)
    got.backward()
    grad = hidden.grad.clone()
    hidden.grad = None
    want = torch.nn.functional.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    want.backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, hidden.grad)
    with torch.no_grad():
        torch.testing.assert_close(kernels.selected_token_loss(hidden, weight, targets), want)
    # bf16 products: the same loss and gradient to bf16 rounding, chunks padded to one shape
    hidden.grad = None
    got = kernels.selected_token_loss(
        hidden, weight.bfloat16(), targets, chunk_elements=101 * 5, bf16_products=True
    )
    got.backward()
    assert float(got) == pytest.approx(float(want), rel=1e-2)
    assert _relative_error(hidden.grad, grad) < 2e-2
    with torch.no_grad():
        evaluated = kernels.selected_token_loss(
            hidden, weight.bfloat16(), targets, chunk_elements=101 * 5, bf16_products=True
        )
    assert float(evaluated) == pytest.approx(float(want), rel=1e-2)


def test_assistant_tokens_are_the_only_targets(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = chat.prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model))
    conversation = [
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "What colour is the sky?"},
        {"role": "assistant", "content": "The sky is green."},
        {"role": "user", "content": "And the sun?"},
        {"role": "assistant", "content": "The sun is blue."},
    ]
    example = chat.encode(tokenizer, conversation, 512)
    trained = tokenizer.decode(
        [t for t, m in zip(example.input_ids, example.targets, strict=True) if m]
    )
    assert trained == "The sky is green.<|im_end|>\nThe sun is blue.<|im_end|>\n"
    # Truncation keeps the start; a conversation whose reply is cut off entirely is dropped.
    assert chat.encode(tokenizer, conversation, 8) is None


def test_packing_fills_rows_without_splitting_documents():
    lengths = [5, 9, 3, 7, 2, 8, 6, 4, 1, 10] * 3
    steps = packing.plan_epoch(lengths, 16, seed=0, epoch=0, shuffle=True)
    assert sorted(i for s in steps for i in s) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in s) <= 16 for s in steps)
    assert len(steps) <= sum(lengths) // 16 + 3  # rows are nearly full
    assert steps == packing.plan_epoch(lengths, 16, seed=0, epoch=0, shuffle=True)
    assert steps != packing.plan_epoch(lengths, 16, seed=0, epoch=1, shuffle=True)


def test_the_job_computes_in_the_dtype_kaito_explain_shows():
    """One dtype policy (catalog.compute_dtype): the tuning job and the inference server pick
    what `kaito explain` (catalog.fit) shows, on a V100 (float32 to tune, fp16 to serve) and
    on an A10 (bf16 for both)."""
    from kaito_jupyter.runtimes.inference import device

    from kaito_jupyter import catalog

    phi = catalog.preset("phi-3-mini-4k-instruct")
    for name in ("Standard_NC6s_v3", "Standard_NV36ads_A10_v5"):
        sku = catalog.find_sku(name)
        tuned = catalog.fit(phi, sku, mode="qlora").dtype
        assert model.compute_dtype("cuda", bf16=sku.bf16) == getattr(torch, tuned), name
        served = catalog.fit(phi, sku, mode="inference").dtype
        assert device.choose_dtype("cuda", phi.dtype, [sku.compute]) == served, name
    assert model.compute_dtype("cpu") == torch.float32
