"""The server extension's wire format: every REST payload and pushed event, typed once.

These pydantic models are the single source: handlers build them, `schema()` turns them into
JSON Schema, and `python -m kaito_jupyter.server.wire` writes the TypeScript interfaces the
sidebar uses (labextension/src/wire.ts; a unit test checks that file is up to date).
Field names are camelCase, as the browser reads them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    """What the server sends: every field is always present (defaults included)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


class _In(BaseModel):
    """What the server accepts: strict, unknown fields refused (validated at the edge)."""

    model_config = ConfigDict(extra="forbid", strict=True)


Phase = Literal["pending", "ready", "succeeded", "failed", "deleting"]
ConditionState = Literal["True", "False", "Unknown"]


class ErrorBody(_Out):
    """Every error: a stable machine code and a sentence for people (with what to do)."""

    code: str = Field(description="e.g. not_found, invalid, backend, bad_request")
    message: str
    hint: str | None = None
    issues: list[str] = Field(default_factory=list, description="validation findings, one a line")


class Condition(_Out):
    type: str
    status: ConditionState
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: str | None = None


class WorkspaceSummary(_Out):
    """One row of the sidebar (and of `kaito get`)."""

    name: str
    namespace: str
    mode: Literal["inference", "tuning"]
    preset: str | None = None
    phase: Phase
    instanceType: str | None = None
    nodeCount: int = 1
    created: str | None = Field(None, description="creationTimestamp, RFC 3339")
    conditions: list[Condition] = Field(default_factory=list)
    workerNodes: list[str] = Field(default_factory=list)
    endpoint: str | None = Field(None, description="the inference server's base URL, when ready")
    costPerHour: float | None = Field(None, description="list price of its nodes, where known")
    costBasis: str | None = Field(None, description="where that price comes from (unverified)")
    resourceVersion: str = ""
    snippet: str = Field("", description="a %%kaito cell that chats with it")


class EventInfo(_Out):
    time: str
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    object: str = ""
    count: int = 1


class WorkspaceDetail(_Out):
    summary: WorkspaceSummary
    yaml: str = Field(description="the workspace as stored, without status")
    events: list[EventInfo] = Field(default_factory=list)


class WorkspaceList(_Out):
    items: list[WorkspaceSummary]


class NodeInfo(_Out):
    name: str
    instanceType: str | None = None
    gpuModel: str | None = None
    gpus: int
    gpusUsed: int
    gpuMemoryGib: float | None = None
    ready: bool = True
    workspaces: list[str] = Field(default_factory=list)
    pricePerHour: float | None = None


class NodeList(_Out):
    items: list[NodeInfo]


class EventList(_Out):
    items: list[EventInfo]


class PresetInfo(_Out):
    name: str
    family: str
    paramsB: float
    contextLength: int
    gpuMemoryGib: float = Field(description="needed for inference")
    tuning: bool
    cpu: bool = Field(description="runs on a CPU (the local backend without a GPU)")
    deprecated: bool = False
    fits: list[str] = Field(description="single-node instance types that hold it, smallest first")


class PresetList(_Out):
    items: list[PresetInfo]


class SkuInfo(_Out):
    name: str
    cloud: str
    gpus: int
    gpuModel: str
    gpuMemoryGib: float
    vcpus: int
    memoryGib: int
    pricePerHour: float | None = Field(None, description="list price of one node, USD")
    priceBasis: str | None = None


class SkuList(_Out):
    items: list[SkuInfo]


class BackendInfo(_Out):
    """Where the server points, for the indicator and switcher."""

    backend: Literal["local", "kubernetes"]
    target: str
    namespace: str
    context: str | None = None
    reconcile: bool
    controller: str | None = Field(None, description="what ensure_controller said, if anything")
    choices: list[str] = Field(default_factory=lambda: ["local", "kubernetes"])


class AppliedItem(_Out):
    name: str
    namespace: str
    action: Literal["created", "configured", "unchanged"]


class AppliedList(_Out):
    items: list[AppliedItem]
    warnings: list[str] = Field(default_factory=list)


class ApplyRequest(_In):
    yaml: str = Field(max_length=1 << 20, description="one or more Workspace documents")
    dryRun: bool = False


class DeployRequest(_In):
    preset: str = Field(min_length=1, max_length=253)
    name: str | None = Field(None, max_length=63)
    instanceType: str | None = Field(None, max_length=100)
    count: int | None = Field(None, ge=1, le=64)


class ChatMessage(_In):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=1 << 20)


class ChatRequest(_In):
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    maxTokens: int | None = Field(None, ge=1, le=32768)
    temperature: float | None = Field(None, ge=0, le=2)


class UseRequest(_In):
    backend: Literal["local", "kubernetes"]
    context: str | None = Field(None, max_length=253)
    namespace: str | None = Field(None, max_length=63)


class ChatChunk(_Out):
    """One line of the chat stream (NDJSON): a text piece, then a last line with `done`."""

    delta: str = ""
    done: bool = False
    finishReason: str | None = None
    error: ErrorBody | None = None


class LogLine(_Out):
    """One line of the log stream (NDJSON); an `error` line ends it early."""

    line: str = ""
    error: ErrorBody | None = None


class WorkspaceChanged(_Out):
    """The pushed event (jupyter_events, schema WORKSPACE_EVENT): one workspace changed."""

    type: Literal["ADDED", "MODIFIED", "DELETED"]
    name: str
    namespace: str
    workspace: WorkspaceSummary | None = Field(None, description="absent when DELETED")


# Everything the TypeScript side sees, in the order wire.ts lists it.
MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody,
    Condition,
    WorkspaceSummary,
    EventInfo,
    WorkspaceDetail,
    WorkspaceList,
    NodeInfo,
    NodeList,
    EventList,
    PresetInfo,
    PresetList,
    SkuInfo,
    SkuList,
    BackendInfo,
    AppliedItem,
    AppliedList,
    ApplyRequest,
    DeployRequest,
    ChatMessage,
    ChatRequest,
    UseRequest,
    ChatChunk,
    LogLine,
    WorkspaceChanged,
)


def schema() -> dict:
    """One JSON Schema document with every model under $defs."""
    from pydantic.json_schema import models_json_schema

    modes = [(m, "validation" if issubclass(m, _In) else "serialization") for m in MODELS]
    _, top = models_json_schema(modes, ref_template="#/$defs/{model}")
    return top


# ------------------------------------------------------------------ JSON Schema -> TypeScript


def _ts_type(node: dict, required: bool = True) -> str:
    if "$ref" in node:
        return "I" + node["$ref"].rsplit("/", 1)[-1]
    if "const" in node:
        return _literal(node["const"])
    if "enum" in node:
        return " | ".join(_literal(v) for v in node["enum"])
    if "anyOf" in node:
        parts = [_ts_type(n) for n in node["anyOf"]]
        return " | ".join(dict.fromkeys(parts))
    kind = node.get("type")
    if kind == "array":
        inner = _ts_type(node.get("items", {}))
        return f"Array<{inner}>"
    if kind == "object":
        extra = node.get("additionalProperties")
        return f"Record<string, {_ts_type(extra)}>" if isinstance(extra, dict) else "object"
    return {
        "string": "string",
        "integer": "number",
        "number": "number",
        "boolean": "boolean",
        "null": "null",
    }.get(kind, "unknown")


def _literal(value) -> str:
    import json

    return json.dumps(value)


def typescript() -> str:
    """The TypeScript interfaces of every model (what labextension/src/wire.ts holds), named
    with the I prefix of the extension's lint rules: WorkspaceSummary -> IWorkspaceSummary."""
    defs = schema()["$defs"]
    out = [
        "// Generated by `python -m kaito_jupyter.server.wire` from kaito_jupyter/server/wire.py.",
        "// Do not edit: change the Python models and regenerate (a unit test checks this file).",
        "",
    ]
    for model in MODELS:
        node = defs[model.__name__]
        doc = (model.__doc__ or "").strip().splitlines()
        if doc:
            out.append(f"/** {doc[0]} */")
        out.append(f"export interface I{model.__name__} {{")
        required = set(node.get("required", []))
        for prop, sub in node.get("properties", {}).items():
            if sub.get("description"):
                out.append(f"  /** {sub['description']} */")
            optional = "" if prop in required else "?"
            out.append(f"  {prop}{optional}: {_ts_type(sub)};")
        out.append("}")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    import sys

    sys.stdout.write(typescript())
