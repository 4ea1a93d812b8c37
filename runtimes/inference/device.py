"""Where the model runs and in which dtype: pure decisions from what the hardware reports."""

from __future__ import annotations

from dataclasses import dataclass

from kaito_jupyter import catalog
from kaito_jupyter.errors import RuntimeFailure

from .. import cpu


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32", "bfloat16" or "float16": weights as loaded, activations, KV cache
    device_map: str | None  # for from_pretrained: None (CPU), "cuda:0", or "auto" (multi-GPU)
    products: str  # the matrix products' operands, and the weights kept: dtype, or bf16 on CPU


def choose_dtype(device: str, preset_dtype: str | None, capabilities: list[float]) -> str:
    """kaito_jupyter.catalog.compute_dtype's choice (the one `kaito explain` shows): float32 on
    CPU (its products may still take bf16: choose_products), bf16 on GPUs that have it
    (compute >= 8.0), fp16 on older ones (V100 is 7.0)."""
    bf16 = bool(capabilities) and min(capabilities) >= 8.0
    return catalog.compute_dtype(
        "inference", gpu=device != "cpu", bf16=bf16, checkpoint=preset_dtype
    )


def choose_products(device: str, dtype: str, requested: str, native_bf16: bool) -> str:
    """The operands of a float32 model's matrix products on CPU: bf16 (float32 accumulation,
    the weights held in bf16) where the CPU multiplies bf16 natively or when asked; else float32.
    A half-precision model, or a GPU, multiplies in the model's dtype."""
    if device != "cpu" or dtype != "float32":
        if device == "cpu" and requested == "float32":
            raise RuntimeFailure(
                f"--cpu-products float32 needs a float32 model, not --dtype {dtype}",
                reason="InvalidOptions",
                hint="drop --cpu-products, or pass --dtype float32",
            )
        return dtype
    if requested == "auto":
        return "bfloat16" if native_bf16 else "float32"
    return requested


def choose(
    requested_device: str = "auto",
    requested_dtype: str = "auto",
    preset_dtype=None,
    requested_products: str = "auto",
):
    """The placement for this machine, honouring explicit --device/--dtype/--cpu-products."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = requested_device
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    if device.startswith("cuda") and not gpus:
        raise ValueError("--device cuda was requested but no GPU is visible")
    capabilities = []
    if device.startswith("cuda"):
        for i in range(gpus):
            major, minor = torch.cuda.get_device_capability(i)
            capabilities.append(major + minor / 10)
    dtype = requested_dtype
    if dtype == "auto":
        dtype = choose_dtype("cpu" if device == "cpu" else "cuda", preset_dtype, capabilities)
    device_map = None
    if device.startswith("cuda"):
        device_map = (
            "auto" if device == "cuda" and gpus > 1 else (device if ":" in device else "cuda:0")
        )
    kind = "cpu" if device == "cpu" else "cuda"
    products = choose_products(kind, dtype, requested_products, cpu.native_bf16())
    return Placement(kind, dtype, device_map, products)
