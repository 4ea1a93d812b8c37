"""Tiny models built at test time, no downloads: a byte-level BPE tokenizer with a ChatML
template, a random Llama small enough to run hundreds of generations in seconds, and random
LoRA adapters for it in peft's layout. Any runtime test may use these."""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? The capital of France is Paris.",
    "Once upon a time there was a small model that answered questions.",
    "system user assistant: Answer in one sentence, please.",
    "0123456789 + - * / = ( ) [ ] { } , . ; : ! ? ' \" é ü ß 日本 🙂",
    "Write a haiku about the sea. Waves fold into foam; the tide keeps time.",
]


def build_tokenizer(directory: Path, vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on CORPUS, saved to `directory`; returns it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(directory)
    return fast


def build_model(
    directory: Path,
    *,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    context: int = 512,
    **overrides,
) -> Path:
    """A random Llama checkpoint (float32) with the tiny tokenizer, saved to `directory`.

    Grouped-query attention (kv_heads < heads) and untied embeddings exercise the general
    paths; `overrides` go to LlamaConfig (e.g. attention_bias=True).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if (directory / "config.json").exists():
        return directory
    tokenizer = build_tokenizer(directory)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=context,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    model = LlamaForCausalLM(config)
    # Larger weights than the default init: peaked, varied logits make greedy paths differ
    # between prompts (and between adapters) instead of collapsing onto one token.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def build_adapter(
    model_dir: Path,
    directory: Path,
    *,
    seed: int = 1,
    rank: int = 4,
    alpha: int = 8,
    targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
) -> Path:
    """A random LoRA adapter for the model in `model_dir`, in peft's save_pretrained layout.

    B is random too (peft starts it at zero), so the adapter changes the output.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (directory / "adapter_config.json").exists():
        return directory
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=0.0,
        init_lora_weights=False,
    )
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.2)
    peft_model.save_pretrained(directory)
    return directory


def merged_model(model_dir: Path, adapter_dir: Path, strength: float):
    """The reference for an adapter at `strength`: base weights + strength * scale * B @ A."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"] * strength
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    modules = dict(model.named_modules())
    with torch.no_grad():
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            name = key.split("base_model.model.", 1)[1].split(".lora_A.")[0]
            modules[name].weight += scale * (b @ a)
    model.eval()
    return model
