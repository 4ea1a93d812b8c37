"""Where the model runs and in which dtype: pure decisions from what the hardware reports."""

from __future__ import annotations

from dataclasses import dataclass

from kaito_jupyter import catalog


@dataclass(frozen=True)
class Placement:
    device: str  # "cpu" or "cuda"
    dtype: str  # "float32", "bfloat16" or "float16"
    device_map: str | None  # for from_pretrained: None (CPU), "cuda:0", or "auto" (multi-GPU)


def choose_dtype(device: str, preset_dtype: str | None, capabilities: list[float]) -> str:
    """kaito_jupyter.catalog.compute_dtype's choice (the one `kaito explain` shows): float32 on
    CPU, bf16 on GPUs that have it (compute >= 8.0), fp16 on older ones (V100 is 7.0)."""
    bf16 = bool(capabilities) and min(capabilities) >= 8.0
    return catalog.compute_dtype(
        "inference", gpu=device != "cpu", bf16=bf16, checkpoint=preset_dtype
    )


def choose(requested_device: str = "auto", requested_dtype: str = "auto", preset_dtype=None):
    """The placement for this machine, honouring explicit --device/--dtype."""
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
    return Placement("cpu" if device == "cpu" else "cuda", dtype, device_map)
