"""Loading the base model for LoRA or QLoRA and wrapping it with trainable adapters.

QLoRA: bitsandbytes 4-bit (NF4 by default, double quantization), computing in float32 on CPU and
in bfloat16 on GPUs that have it. LoRA: the same model in full precision. The adapters go on the
preset's default target modules unless LoraConfig names others.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kaito_jupyter import catalog
from kaito_jupyter.errors import RuntimeFailure

from .. import cpu
from . import grouped, kernels
from .config import TuningConfig


@dataclass
class Loaded:
    model: object  # the peft model
    tokenizer: object
    device: str
    dtype: object
    decoder: object  # the transformer body: input ids -> final hidden states
    output_weight: object  # the (vocab, hidden) output layer weight, as the products take it
    bf16_products: bool = False  # see bf16_products()


def release_free_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc): loading a checkpoint and quantizing it
    leaves ~0.4 GB of freed buffers that would otherwise count in the job's memory all along."""
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):  # not glibc: nothing to do
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def compute_dtype(device: str, bf16: bool | None = None):
    """The torch dtype the job computes in, as kaito_jupyter.catalog.compute_dtype decides (and
    `kaito explain` shows): bf16 on GPUs that have it, float32 elsewhere (V100s included). On
    CPU the products alone may take bf16 operands: bf16_products(). `bf16` defaults to what
    the GPU reports."""
    import torch

    gpu = device == "cuda"
    if bf16 is None:
        bf16 = gpu and torch.cuda.is_bf16_supported()
    return getattr(torch, catalog.compute_dtype("qlora", gpu=gpu, bf16=bf16))


def bf16_products(device: str, choice: str = "auto") -> bool:
    """Whether the matrix products on CPU (LoRA layers, attention, output layer) take bf16
    operands with float32 accumulation: asked for, or (auto) where the CPU multiplies bf16
    natively. Everything else stays float32."""
    if device != "cpu" or choice == "float32":
        return False
    return choice == "bfloat16" or cpu.native_bf16()


def _free_bytes() -> int:
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def load(
    checkpoint: Path,
    config: TuningConfig,
    *,
    target_modules: list[str] | None,
    tokenizer,
    cpu_products: str = "auto",
    log=lambda m: print(m, file=sys.stderr, flush=True),
) -> Loaded:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = compute_dtype(device)
    kwargs = {"dtype": dtype, "trust_remote_code": config.trust_remote_code}
    q = config.quantization
    if q.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=q.quant_type,
            bnb_4bit_use_double_quant=q.double_quant,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=q.skip_modules,
        )
        kwargs["device_map"] = {"": device}
    log(
        f"loading {checkpoint} ({'4-bit ' + q.quant_type if q.load_in_4bit else str(dtype)} on {device})"
    )
    try:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)
    except (OSError, ValueError) as exc:
        raise RuntimeFailure(
            f"cannot load the model from {checkpoint}: {exc}", reason="ModelLoadFailed"
        ) from exc
    if not q.load_in_4bit:
        model.to(device)
    model.config.use_cache = False
    bf16 = bf16_products(device, cpu_products)
    model.set_attn_implementation(kernels.register_attention(bf16))

    lora = config.lora
    # The config's modules, else the preset's; else peft's defaults for the architecture.
    targets = lora.target_modules or target_modules or None
    torch.manual_seed(config.training.seed)  # the LoRA initialization: a rerun is the same run
    try:
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=targets,
                bias=lora.bias,
                use_rslora=lora.use_rslora,
                init_lora_weights=lora.init_lora_weights,
                layers_to_transform=lora.layers_to_transform,
                modules_to_save=lora.modules_to_save,
                task_type="CAUSAL_LM",
            ),
        )
    except ValueError as exc:
        raise RuntimeFailure(f"cannot apply LoRA: {exc}", reason="InvalidTuningConfig") from exc
    if q.load_in_4bit:
        kernels.route_4bit_layers(model)
    if not bf16 or grouped.fuse(model, budget=_free_bytes() // 2) is None:
        if bf16:
            log(
                "LoRA layers: float32 products (their bf16 operands would not fit in half of free memory)"
            )
        kernels.fuse_lora(model)
    if device == "cpu":
        log("matrix products: " + ("bf16 operands, float32 accumulation" if bf16 else "float32"))
    kernels.fuse_norms(model)
    kernels.fuse_swiglu(model)
    if config.training.gradient_checkpointing:
        model.enable_input_require_grads()
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    release_free_memory()
    trainable, total = model.get_nb_trainable_parameters()
    targets = model.peft_config["default"].target_modules
    log(f"LoRA r={lora.r} alpha={lora.alpha} on {', '.join(sorted(targets)) if not isinstance(targets, str) else targets}: "
        f"{trainable:,} trainable of {total:,} parameters")  # fmt: skip
    base = model.get_base_model()
    output_weight = base.get_output_embeddings().weight
    if bf16 and not output_weight.requires_grad:
        # One bf16 copy of the frozen output layer, not one per step (a 0.11 GB read each).
        output_weight = output_weight.detach().to(torch.bfloat16)
    return Loaded(
        model=model,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        decoder=base.get_decoder(),
        output_weight=output_weight,
        bf16_products=bf16,
    )
