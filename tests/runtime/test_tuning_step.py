"""The fast training step computes the same thing as the plain one: a packed row with per-document
attention, dequantize-once 4-bit layers and the selected-token loss give the loss and the LoRA
gradients that transformers' own forward gives on each conversation separately."""

from __future__ import annotations

import pytest
import torch
from kaito_jupyter.runtimes.tuning import chat, config, kernels, model, packing, trainer

from .tuning_helpers import build_tiny_model, conversations


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


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


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_packed_step_matches_the_plain_forward(tiny, method):
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    cfg = config.load(None, method)
    cfg.lora.target_modules = [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    cfg.lora.init_lora_weights = False  # random B, so that the adapters change the output
    tokenizer = chat.prepare_tokenizer(AutoTokenizer.from_pretrained(tiny))
    loaded = model.load(tiny, cfg, target_modules=None, tokenizer=tokenizer, log=lambda m: None)
    # Training mode: in eval mode bitsandbytes repacks 4-bit weights for a bf16 CPU kernel.
    loaded.model.train()
    examples = _examples(tokenizer)
    step = packing.collate(examples, list(range(len(examples))))
    assert step.bounds[-1] == sum(len(e) for e in examples)

    job = trainer.Trainer(loaded, examples, [], cfg.training, work_dir=tiny, progress=None,
                          fingerprint="", shuffle=False)  # fmt: skip
    params = [p for p in loaded.model.parameters() if p.requires_grad]
    packed = job.loss_sum(step)
    packed.backward()
    packed_grads = [p.grad.clone() for p in params]
    loaded.model.zero_grad()

    # The reference: sdpa attention and bitsandbytes' own 4-bit matmul.
    loaded.model.set_attn_implementation("sdpa")
    import bitsandbytes as bnb

    for module in loaded.model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and "forward" in module.__dict__:
            del module.forward
    reference = _reference_loss(loaded.model, examples)
    reference.backward()
    assert float(packed.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
    for got, want in zip(packed_grads, (p.grad for p in params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


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


def test_assistant_tokens_are_the_only_targets(tiny):
    from transformers import AutoTokenizer

    tokenizer = chat.prepare_tokenizer(AutoTokenizer.from_pretrained(tiny))
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
