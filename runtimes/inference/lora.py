"""LoRA adapters: read from peft's layout, scaled by a strength, applied per row of a batch.

An adapter's delta on a projection is strength * scale * B (A x), scale = alpha / r (or
alpha / sqrt(r) with rsLoRA). Nothing is merged into the base weights: rows of one batch may
use different adapters, or none. For the batched decoder, the adapters of projections that
share an input are stacked (q, k, v -> qkv; gate, up -> gate_up), so each adapter costs two
small matrix products per fused projection on the rows that use it.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from kaito_jupyter.errors import RuntimeFailure

_KEY = re.compile(
    r"layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>\w+)\.lora_(?P<ab>[AB])(?:\.[\w-]+)?\.weight$"
)
# Fused projection of the batched decoder -> its parts, in output order.
FUSED = {
    "qkv": ("q_proj", "k_proj", "v_proj"),
    "o": ("o_proj",),
    "gate_up": ("gate_proj", "up_proj"),
    "down": ("down_proj",),
}
PREFUSED = {"qkv_proj": "qkv", "gate_up_proj": "gate_up"}  # Phi-3 ships them fused


def fetch(source: str, *, progress=print, secret: str | None = None) -> Path:
    """A local directory holding adapter_config.json, for a directory or an OCI image."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "adapter_config.json").is_file():
            raise RuntimeFailure(
                f"adapter directory {path} has no adapter_config.json",
                reason="InvalidAdapter",
                hint="point at a directory written by peft's save_pretrained",
            )
        return path
    from kaito_jupyter.runtimes import oci, weights

    try:
        oci.parse_reference(source)
    except oci.OCIError as exc:
        raise RuntimeFailure(
            f"adapter source {source!r} is neither a directory nor an image reference",
            reason="InvalidAdapter",
        ) from exc
    dest = weights.cache_root() / "adapters" / _slug(source)
    progress(f"pulling adapter image {source}")
    secret = secret or os.environ.get("KAITO_REGISTRY_SECRET") or None
    return oci.pull_adapter(source, dest, secret=secret)


def _slug(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", ref).strip("_")[:200]


class LoraWeights:
    """One adapter as loaded: per (layer, module) its A [r, in], B [out, r] and scale."""

    def __init__(self, path: Path):
        config = json.loads((path / "adapter_config.json").read_text())
        self.path = path
        self.config = config
        if config.get("peft_type", "LORA") != "LORA":
            raise RuntimeFailure(
                f"{path}: peft_type {config.get('peft_type')} is not LORA",
                reason="InvalidAdapter",
            )
        for key, what in (("use_dora", "DoRA"), ("modules_to_save", "modules_to_save")):
            if config.get(key):
                raise RuntimeFailure(
                    f"{path}: {what} adapters are not supported", reason="InvalidAdapter"
                )
        if config.get("bias", "none") != "none":
            raise RuntimeFailure(f"{path}: LoRA biases are not supported", reason="InvalidAdapter")
        self.fan_in_fan_out = bool(config.get("fan_in_fan_out"))
        tensors = _read_tensors(path)
        self.modules: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        unknown = []
        for key, tensor in tensors.items():
            match = _KEY.search(key)
            if not match:
                unknown.append(key)
                continue
            slot = (int(match["layer"]), match["module"])
            self.modules.setdefault(slot, {})[match["ab"]] = tensor
        if unknown:
            raise RuntimeFailure(
                f"{path}: unsupported adapter weights: {', '.join(sorted(unknown)[:5])}",
                reason="InvalidAdapter",
                hint="only LoRA on attention and MLP projections of decoder layers is served",
            )
        if not self.modules:
            raise RuntimeFailure(
                f"{path}: the adapter holds no LoRA weights", reason="InvalidAdapter"
            )
        for (layer, module), pair in self.modules.items():
            if set(pair) != {"A", "B"}:
                raise RuntimeFailure(
                    f"{path}: layer {layer} {module} lacks lora_A or lora_B",
                    reason="InvalidAdapter",
                )

    def scale(self, layer: int, module: str) -> float:
        name = f"model.layers.{layer}.{module}"
        r = self.config.get("r", 8)
        alpha = self.config.get("lora_alpha", r)
        r = _pattern(self.config.get("rank_pattern") or {}, name, r)
        alpha = _pattern(self.config.get("alpha_pattern") or {}, name, alpha)
        return alpha / (math.sqrt(r) if self.config.get("use_rslora") else r)

    def pair(self, layer: int, module: str):
        """(A [r, in], B [out, r]) of one projection, or None if the adapter leaves it alone."""
        pair = self.modules.get((layer, module))
        if pair is None:
            return None
        a, b = pair["A"], pair["B"]
        if self.fan_in_fan_out:
            a, b = a.t(), b.t()
        return a, b


def _pattern(patterns: dict, name: str, default):
    for key, value in patterns.items():
        if re.search(rf"(^|\.){key}$", name):
            return value
    return default


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    st = path / "adapter_model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        return load_file(st)
    binary = path / "adapter_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise RuntimeFailure(
        f"{path} has no adapter_model.safetensors or adapter_model.bin", reason="InvalidAdapter"
    )


class AdapterSet:
    """The adapters a runner serves; adapter id i (1-based) is the i-th one added."""

    def __init__(self, kind: str, target):
        self.kind = kind  # "decoder" (fused projections) or "module" (wrapped nn.Linear)
        self.target = target
        self.names: list[str] = []
        # decoder: per adapter, {(layer, fused): (A_stacked, B_blockdiag)}
        self.fused: list[dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]] = []
        self.active = 0  # module kind: the adapter the next forward uses

    @classmethod
    def for_decoder(cls, decoder) -> AdapterSet:
        return cls("decoder", decoder)

    @classmethod
    def for_module(cls, model) -> AdapterSet:
        return cls("module", model)

    def __len__(self) -> int:
        return len(self.names)

    def add(self, name: str, path: Path, strength: float) -> int:
        lora = LoraWeights(Path(path))
        if self.kind == "decoder":
            self.fused.append(self._fuse(lora, strength))
        else:
            _wrap(self, self.target, lora, strength, len(self.names) + 1)
        self.names.append(name)
        return len(self.names)

    def _fuse(self, lora: LoraWeights, strength: float):
        decoder = self.target
        sizes = {
            "q_proj": decoder.q_size,
            "k_proj": decoder.kv_size,
            "v_proj": decoder.kv_size,
            "o_proj": decoder.config.hidden_size,
            "gate_proj": decoder.intermediate,
            "up_proj": decoder.intermediate,
            "down_proj": decoder.config.hidden_size,
        }
        out: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
        layers = {layer for layer, _ in lora.modules}
        seen = {module for _, module in lora.modules}
        known = set(sizes) | set(PREFUSED)
        if seen - known:
            raise RuntimeFailure(
                f"{lora.path}: LoRA on {', '.join(sorted(seen - known))} is not supported",
                reason="InvalidAdapter",
            )
        for layer in sorted(layers):
            if layer >= len(decoder.layers):
                raise RuntimeFailure(
                    f"{lora.path}: the adapter has layer {layer}; the model has {len(decoder.layers)}",
                    reason="InvalidAdapter",
                )
            device, dtype = decoder.layers[layer].device, decoder.dtype
            for fused, parts in FUSED.items():
                pieces = []  # (A, B, scale, output offset)
                offset = 0
                for module in parts:
                    pair = lora.pair(layer, module)
                    if pair is not None:
                        pieces.append((*pair, lora.scale(layer, module), offset))
                    offset += sizes[module]
                prefused = {v: k for k, v in PREFUSED.items()}.get(fused)
                pair = lora.pair(layer, prefused) if prefused else None
                if pair is not None:
                    pieces.append((*pair, lora.scale(layer, prefused), 0))
                if not pieces:
                    continue
                total_out = offset if pair is None else pair[1].shape[0]
                a = torch.cat([p[0] for p in pieces]).to(device, dtype)
                b = torch.zeros(total_out, a.shape[0], dtype=dtype, device=device)
                rank = 0
                for a_part, b_part, scale, at in pieces:
                    r = a_part.shape[0]
                    if b_part.shape[0] + at > total_out:
                        raise RuntimeFailure(
                            f"{lora.path}: layer {layer} {fused} has shape {tuple(b_part.shape)}, "
                            "which does not match the model",
                            reason="InvalidAdapter",
                        )
                    block = b_part.to(device, dtype) * (scale * strength)
                    b[at : at + b_part.shape[0], rank : rank + r] = block
                    rank += r
                out[(layer, fused)] = (a.contiguous(), b)
        return out

    def apply(self, layer: int, fused: str, x, out, ranges) -> None:
        """out[rows] += delta for the rows of each adapter (ranges: (id, start, end))."""
        for adapter, start, end in ranges:
            pair = self.fused[adapter - 1].get((layer, fused))
            if pair is None:
                continue
            a, b = pair
            # A one-row product rounds differently from a taller one (see decoder.py): take a
            # neighbouring row along (the batch has at least two) and drop its result.
            lo, hi = start, end
            if hi - lo < 2:
                lo, hi = (lo, hi + 1) if hi < x.shape[0] else (lo - 1, hi)
            delta = F.linear(F.linear(x[lo:hi], a), b)
            out[start:end] += delta[start - lo : end - lo]


class _LoraLinear(torch.nn.Module):
    """An nn.Linear plus the delta of whichever adapter is active (one per forward)."""

    def __init__(self, base: torch.nn.Linear, adapters: AdapterSet):
        super().__init__()
        self.base = base
        self.adapters = adapters
        self.pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x):
        y = self.base(x)
        pair = self.pairs.get(self.adapters.active)
        if pair is not None:
            a, b = pair
            y = y + F.linear(F.linear(x, a), b)
        return y


def _wrap(adapters: AdapterSet, model, lora: LoraWeights, strength: float, index: int) -> None:
    layers = model.model.layers
    for (layer, module), _ in lora.modules.items():
        if layer >= len(layers):
            raise RuntimeFailure(
                f"{lora.path}: no layer {layer} in the model", reason="InvalidAdapter"
            )
        parent = None
        for block in ("self_attn", "mlp"):
            candidate = getattr(layers[layer], block, None)
            if candidate is not None and hasattr(candidate, module):
                parent = candidate
        if parent is None:
            raise RuntimeFailure(
                f"{lora.path}: the model has no {module} in layer {layer}", reason="InvalidAdapter"
            )
        target = getattr(parent, module)
        if not isinstance(target, _LoraLinear):
            target = _LoraLinear(target, adapters)
            setattr(parent, module, target)
        a, b = lora.pair(layer, module)
        weight = target.base.weight
        scale = lora.scale(layer, module) * strength
        target.pairs[index] = (
            a.to(weight.device, weight.dtype),
            (b * scale).to(weight.device, weight.dtype),
        )
