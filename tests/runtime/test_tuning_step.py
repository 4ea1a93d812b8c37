"""The fast training step computes the same thing as the plain one: a packed row with
per-document attention, LoRA merged into the (dequantized) base weight and the selected-token
loss give the loss and the LoRA gradients that transformers' own forward gives on each
conversation separately."""

from __future__ import annotations

import pytest
import torch
from kaito_jupyter.runtimes.tuning import chat, config, kernels, model, packing, trainer

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


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_packed_step_matches_the_plain_forward(tiny_model, tmp_path, method):
    from peft import get_peft_model_state_dict
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    cfg = config.load(None, method)
    cfg.lora.target_modules = ALL
    cfg.lora.init_lora_weights = False  # random B, so that the adapters change the output
    tokenizer = chat.prepare_tokenizer(AutoTokenizer.from_pretrained(tiny_model))
    loaded = model.load(
        tiny_model, cfg, target_modules=None, tokenizer=tokenizer, log=lambda m: None
    )
    loaded.model.train()
    fused = [m for n, m in loaded.model.named_modules() if n.endswith(tuple(ALL))]
    assert fused and all(m.forward.__func__ is kernels._fused_lora_forward for m in fused)
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
    assert float(packed.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    assert ours.keys() == theirs.keys() and len(ours) == 2 * len(ALL) * 2
    for name, grad in ours.items():
        torch.testing.assert_close(grad, theirs[name], rtol=1e-3, atol=1e-5, msg=name)


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
