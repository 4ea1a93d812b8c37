"""Planning: what a Workspace asks to run, decided without any I/O.

`plan(workspace)` turns an admitted Workspace into a `Plan`: the preset and instance type it
resolves to, how many nodes and GPUs, the dtype the GPUs allow, which runtime serves it, the
adapters with their strengths, the tuning job's input and output, and a hash of the spec that
changes exactly when the workload must roll. Both backends start from the same Plan: the
Kubernetes backend renders it into objects (StatefulSet, Services, Job), the local backend into
supervised processes. Neither decides any of this on its own.

Things the API server accepts but this version cannot run (a preset from a newer Kaito, an
instance type the catalog does not know) raise `PlanError` with a condition reason and the fix;
the reconciler reports it in status and moves on to the next workspace.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from kaito_jupyter import catalog
from kaito_jupyter.api.model import Workspace
from kaito_jupyter.errors import KaitoError

# Kaito's annotations and finalizer (kaito-project/kaito v0.12), kept so objects interoperate.
RUNTIME_ANNOTATION = "kaito.sh/runtime"
HASH_ANNOTATION = "workspace.kaito.io/hash"
FINALIZER = "workspace.finalizer.kaito.sh"
WORKSPACE_LABEL = "kaito.sh/workspace"
WORKSPACE_NAMESPACE_LABEL = "kaito.sh/workspacenamespace"
IDLE_TIMEOUT_ANNOTATION = "kaito.sh/idle-timeout"

# The runtime serving a workspace. "kaito-jupyter" is ours (runtimes/); "vllm" and
# "transformers" are Kaito's own images; "template" is the user's `inference.template`.
Runtime = Literal["kaito-jupyter", "vllm", "transformers", "template"]
OURS: Runtime = "kaito-jupyter"
KAITO_RUNTIMES = ("vllm", "transformers")

INFERENCE_PORT = 5000  # the runtime's HTTP port, as in Kaito (Service port 80 -> 5000)


class PlanError(KaitoError):
    """The workspace was admitted but cannot be run as written; `reason` is the condition's."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.reason = reason


@dataclass(frozen=True)
class AdapterPlan:
    name: str
    source: str  # an image reference, or (local backend) a directory
    strength: float
    image_pull_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class TuningPlan:
    method: str  # "qlora" | "lora"
    input_urls: tuple[str, ...] = ()
    input_image: str | None = None
    input_volume: dict[str, Any] | None = None
    input_pull_secrets: tuple[str, ...] = ()
    output_image: str | None = None
    output_volume: dict[str, Any] | None = None
    push_secret: str | None = None
    config: str | None = None  # Kaito: the name of a ConfigMap holding training_config.yaml


@dataclass(frozen=True)
class Plan:
    name: str
    namespace: str
    mode: Literal["inference", "tuning"]
    runtime: Runtime
    preset: catalog.Preset | None  # None for an inference.template workload
    sku: catalog.Sku | None  # None when the instance type is unset (local, preferred nodes)
    node_count: int
    gpus_per_node: int
    dtype: str
    node_labels: dict[str, str] = field(default_factory=dict)  # what the nodes must carry
    preferred_nodes: tuple[str, ...] = ()
    adapters: tuple[AdapterPlan, ...] = ()
    tuning: TuningPlan | None = None
    template: dict[str, Any] | None = None
    inference_config: str | None = None  # Kaito: ConfigMap name of inference_config.yaml
    model_access_secret: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    spec_hash: str = ""

    @property
    def instance_type(self) -> str | None:
        return self.sku.name if self.sku else None

    @property
    def served_name(self) -> str:
        return self.preset.name if self.preset else self.name

    def inference_args(self, adapter_sources: dict[str, str] | None = None) -> list[str]:
        """Our inference server's arguments (host and port are the caller's to add).

        `adapter_sources` maps an adapter's name to where the runtime finds it (on Kubernetes
        the directory its init container pulled it into); by default the adapter's own source.
        """
        if self.runtime != OURS or self.preset is None or self.mode != "inference":
            raise ValueError(f"workspace {self.name} is not served by our inference runtime")
        args = ["--preset", self.preset.name, "--dtype", self.dtype]
        for adapter in self.adapters:
            source = (adapter_sources or {}).get(adapter.name, adapter.source)
            args += ["--adapter", f"{adapter.name}={source}:{adapter.strength:g}"]
        return args

    def tuning_args(
        self, *, inputs: list[str] | None = None, output: str | None = None
    ) -> list[str]:
        """Our tuning job's arguments. `inputs`/`output` override the spec's (mounted paths)."""
        if self.tuning is None or self.preset is None:
            raise ValueError(f"workspace {self.name} is not a tuning workspace")
        t = self.tuning
        sources = inputs if inputs is not None else [*t.input_urls, *filter(None, [t.input_image])]
        destination = output if output is not None else t.output_image
        if not sources or not destination:
            raise ValueError("tuning input and output must be resolved by the backend")
        return [
            "--preset", self.preset.name, "--method", t.method,
            "--input", *sources, "--output", destination,
        ]  # fmt: skip


def spec_hash(ws: Workspace) -> str:
    """A hash of everything that shapes the workload; it changes exactly when the workload
    must roll (stored in the `workspace.kaito.io/hash` annotation, as Kaito does)."""
    spec = {k: v for k, v in ws.to_dict().items() if k in ("resource", "inference", "tuning")}
    runtime = (ws.metadata.annotations or {}).get(RUNTIME_ANNOTATION)
    if runtime:
        spec["runtime"] = runtime
    encoded = json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:16]


def choose_runtime(
    ws: Workspace, preset: catalog.Preset | None, *, local: bool, default: str = "vllm"
) -> Runtime:
    """Which runtime serves the workspace.

    Locally always ours. On a cluster: the `kaito.sh/runtime` annotation when set; else Kaito's
    own runtime (vLLM by default, as Kaito) for presets Kaito publishes an image of, so the
    workspace really runs on a real GPU cluster; ours for the rest (presets Kaito has no image
    for, such as the packaged SmolLM2) and for tuning, which our job implements.
    """
    if ws.inference is not None and ws.inference.preset is None:
        return "template"
    if local or ws.tuning is not None:
        return OURS
    asked = (ws.metadata.annotations or {}).get(RUNTIME_ANNOTATION)
    if asked:
        if asked == OURS or asked in KAITO_RUNTIMES:
            if asked in KAITO_RUNTIMES and (preset is None or not preset.image):
                raise PlanError(
                    f"annotation {RUNTIME_ANNOTATION}={asked}: Kaito publishes no image for preset {preset.name if preset else '?'}",
                    reason="RuntimeUnavailable",
                    hint=f"remove the annotation or set it to {OURS}",
                )
            return asked  # type: ignore[return-value]
        raise PlanError(
            f"annotation {RUNTIME_ANNOTATION}={asked!r} names no runtime",
            reason="UnknownRuntime",
            hint=f"use one of {OURS}, {', '.join(KAITO_RUNTIMES)}",
        )
    if preset is not None and preset.image:
        return default  # type: ignore[return-value]
    return OURS


def _preset(name: str) -> catalog.Preset:
    found = catalog.find_preset(name)
    if found is None:
        raise PlanError(
            f"preset {name!r} is not in this version's catalog",
            reason="UnsupportedPreset",
            hint="upgrade kaito-jupyter, or run `kaito presets` for the ones it knows",
        )
    return found


def _sku(name: str | None) -> catalog.Sku | None:
    if not name:
        return None
    found = catalog.find_sku(name)
    if found is None and not catalog.is_azure_gpu_family(name):
        raise PlanError(
            f"instance type {name!r} is not in this version's SKU table",
            reason="UnsupportedInstanceType",
            hint="run `kaito skus` for the ones it knows",
        )
    return found


def plan(ws: Workspace, *, local: bool = False, kaito_runtime: str = "vllm") -> Plan:
    """The Plan for an admitted Workspace; PlanError for what cannot be run as written."""
    r = ws.resource
    sku = _sku(r.instance_type if r else None)
    node_count = r.node_count if r else 1
    labels = r.label_selector.as_map() if r and r.label_selector else {}
    preferred = tuple(r.preferred_nodes or ()) if r else ()
    spec = ws.tuning if ws.tuning is not None else ws.inference
    if spec is None:
        raise PlanError("the workspace has neither inference nor tuning", reason="InvalidWorkspace")
    preset = _preset(spec.preset.name) if spec.preset is not None else None
    if preset is not None and preset.deprecated:
        raise PlanError(
            f"preset {preset.name} is deprecated and no longer served",
            reason="UnsupportedPreset",
            hint="run `kaito presets` for the current ones",
        )
    runtime = choose_runtime(ws, preset, local=local, default=kaito_runtime)
    options = spec.preset.preset_options if spec.preset is not None else None
    mode = (ws.tuning.method or "qlora").lower() if ws.tuning is not None else "inference"
    dtype = (
        catalog.compute_dtype(
            mode, gpu=sku is not None, bf16=bool(sku and sku.bf16), checkpoint=preset.dtype
        )
        if preset
        else "auto"
    )
    common = dict(
        name=ws.name,
        namespace=ws.namespace,
        runtime=runtime,
        preset=preset,
        sku=sku,
        node_count=node_count,
        gpus_per_node=sku.gpus if sku else 0,
        dtype=dtype,
        node_labels=labels,
        preferred_nodes=preferred,
        model_access_secret=options.model_access_secret if options else None,
        image_pull_secrets=tuple(options.image_pull_secrets or ()) if options else (),
        spec_hash=spec_hash(ws),
    )
    if ws.tuning is not None:
        t = ws.tuning
        source, out = t.input, t.output
        tuning = TuningPlan(
            method=(t.method or "qlora").lower(),
            input_urls=tuple(source.urls or ()) if source else (),
            input_image=source.image if source else None,
            input_volume=source.volume if source else None,
            input_pull_secrets=tuple(source.image_pull_secrets or ()) if source else (),
            output_image=out.image if out else None,
            output_volume=out.volume if out else None,
            push_secret=out.image_push_secret if out else None,
            config=t.config,
        )
        return Plan(mode="tuning", tuning=tuning, **common)  # type: ignore[arg-type]
    inf = ws.inference
    assert inf is not None
    adapters = tuple(
        AdapterPlan(
            name=(a.source.name if a.source and a.source.name else f"adapter-{i}"),
            source=(a.source.image if a.source and a.source.image else ""),
            strength=a.strength_value,
            image_pull_secrets=tuple(a.source.image_pull_secrets or ()) if a.source else (),
        )
        for i, a in enumerate(inf.adapters or ())
    )
    return Plan(
        mode="inference",
        adapters=adapters,
        template=inf.template,
        inference_config=inf.config,
        **common,  # type: ignore[arg-type]
    )
