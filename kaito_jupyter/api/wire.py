"""Reading a Workspace that a store or a cluster holds: lenient, unlike admission.

A cluster may hold workspaces written by a newer Kaito (fields this version does not know, enum
values it has not seen). Reading them must never fail or drop those fields on write. So a backend
keeps the object exactly as stored (`StoredWorkspace.data`), and `read_workspace` gives a typed
*view* of it with unknown fields ignored; writes patch the stored object (status, metadata),
never re-serialise the view.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import dataclass
from typing import Any

import pydantic

from kaito_jupyter.api.model import ObjectMeta, Workspace, WorkspaceStatus


def _model_of(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The BaseModel inside `X | None` or `list[X]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return False


def known_fields(model: type[pydantic.BaseModel], data: Any) -> Any:
    """`data` with only the keys `model` declares (recursively); free-form dicts kept whole."""
    if not isinstance(data, dict):
        return data
    keep_all = model.model_config.get("extra") == "allow"
    out: dict[str, Any] = {}
    by_alias = {(f.alias or name): f for name, f in model.model_fields.items()}
    for key, value in data.items():
        field = by_alias.get(key)
        if field is None:
            if keep_all:
                out[key] = value
            continue
        nested = _model_of(field.annotation)
        if nested is None:
            out[key] = value
        elif _is_list(field.annotation) and isinstance(value, list):
            out[key] = [known_fields(nested, v) for v in value]
        else:
            out[key] = known_fields(nested, value)
    return out


def read_workspace(data: dict[str, Any]) -> Workspace:
    """A typed view of a stored Workspace: unknown fields ignored, never an exception.

    Fields whose values this version cannot read (a newer enum, a wrong type) are left out of
    the view; metadata and status are always kept so the object can be listed and reconciled.
    """
    filtered = known_fields(Workspace, data)
    try:
        return Workspace.model_validate(filtered, strict=False)
    except pydantic.ValidationError as exc:
        bad = {err["loc"][0] for err in exc.errors() if err["loc"]}
        for top in bad:
            filtered.pop(top, None)
    filtered.setdefault("apiVersion", str(data.get("apiVersion") or "kaito.sh/v1beta1"))
    filtered.setdefault("kind", "Workspace")
    try:
        return Workspace.model_validate(filtered, strict=False)
    except pydantic.ValidationError:
        meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
        return Workspace(
            apiVersion=filtered["apiVersion"],
            kind="Workspace",
            metadata=ObjectMeta.model_validate(meta, strict=False),
        )


@dataclass
class StoredWorkspace:
    """A workspace as a backend holds it: the object as stored, and a typed view of it."""

    data: dict[str, Any]

    @property
    def workspace(self) -> Workspace:
        return read_workspace(self.data)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.data.setdefault("metadata", {})

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or "")

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion") or "")

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation") or 0)

    @property
    def deleting(self) -> bool:
        return bool(self.metadata.get("deletionTimestamp"))

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.metadata.get("annotations") or {})

    @property
    def status(self) -> WorkspaceStatus:
        raw = self.data.get("status")
        if not isinstance(raw, dict):
            return WorkspaceStatus()
        try:
            return WorkspaceStatus.model_validate(raw, strict=False)
        except pydantic.ValidationError:
            return WorkspaceStatus()

    def spec(self) -> dict[str, Any]:
        """The user's part of the object (what admission checks): no status, no server fields."""
        out = {k: copy.deepcopy(v) for k, v in self.data.items() if k != "status"}
        meta = out.get("metadata") or {}
        out["metadata"] = {
            k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")
        }
        return out

    def with_status(self, status: dict[str, Any]) -> StoredWorkspace:
        data = copy.deepcopy(self.data)
        data["status"] = status
        return StoredWorkspace(data)
