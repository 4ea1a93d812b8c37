"""The Workspace resource: typed model, YAML parsing with positions, validation, conditions.

from kaito_jupyter import api
checked = api.check_file("workspace.yaml")   # raises errors.ValidationError with every issue
checked[0].workspace.preset_name, checked[0].warnings
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaito_jupyter.api.model import API_VERSIONS, GROUP, KIND, VERSIONS, Workspace
from kaito_jupyter.api.parse import (
    Document,
    format_path,
    load_documents,
    parse_workspace,
    read_file,
    read_text,
)
from kaito_jupyter.api.validation import Target, validate
from kaito_jupyter.api.validation import sorted_issues as _sorted
from kaito_jupyter.errors import Issue, ValidationError

__all__ = [
    "API_VERSIONS",
    "GROUP",
    "KIND",
    "VERSIONS",
    "Checked",
    "Document",
    "Target",
    "Workspace",
    "check_dict",
    "check_file",
    "check_text",
    "format_path",
    "load_documents",
    "validate",
]


@dataclass
class Checked:
    """A Workspace that passed validation, with its source document and any warnings."""

    workspace: Workspace
    document: Document
    warnings: list[Issue] = field(default_factory=list)


def _check(
    parsed: list[tuple[Document, Workspace | None, list[Issue]]],
    old: Workspace | None = None,
    target: Target = "cluster",
    allowed_registries: Collection[str] = (),
) -> list[Checked]:
    out, errors, warnings = [], [], []
    for doc, ws, shape_issues in parsed:
        errors += shape_issues
        if ws is None:
            continue
        findings = validate(ws, doc, old=old, target=target, allowed_registries=allowed_registries)
        errors += findings.errors
        warnings += findings.warnings
        out.append(Checked(ws, doc, findings.warnings))
    if errors:
        raise ValidationError(_sorted(errors), warnings=warnings)
    return out


def check_text(
    text: str,
    source: str | None = None,
    *,
    old: Workspace | None = None,
    target: Target = "cluster",
    allowed_registries: Collection[str] = (),
) -> list[Checked]:
    """Parse and validate every Workspace in a YAML stream; all problems, or the workspaces.

    `allowed_registries`: the private registries images may name (see validate)."""
    return _check(read_text(text, source), old, target, allowed_registries)


def check_file(path: str | Path, *, allowed_registries: Collection[str] = ()) -> list[Checked]:
    return _check(read_file(path), None, "cluster", allowed_registries)


def check_dict(
    data: Any,
    *,
    old: Workspace | None = None,
    target: Target = "cluster",
    allowed_registries: Collection[str] = (),
) -> Checked:
    doc = Document(data=data)
    return _check([(doc, *parse_workspace(doc))], old, target, allowed_registries)[0]
