"""Reading Workspaces from YAML or dicts, with the line, column and field path of every error.

YAML is composed into nodes first, so each value keeps its position; the data is then built
from the nodes and checked against the typed model. Whatever the input, the only exception
that leaves this module is kaito_jupyter.errors.ValidationError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
import yaml

from kaito_jupyter.api.model import API_VERSIONS, KIND, Workspace
from kaito_jupyter.errors import Issue, ValidationError

PathKey = tuple[str | int, ...]


@dataclass
class Document:
    """One YAML document: its data and where each field path starts in the source."""

    data: Any
    positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    source: str | None = None
    index: int = 0  # position in a multi-document stream

    def issue(self, path: PathKey | str, message: str, severity: str = "error") -> Issue:
        """An Issue at `path`, located at the closest enclosing position we know."""
        key = parse_path(path) if isinstance(path, str) else tuple(path)
        line = column = None
        for depth in range(len(key), -1, -1):
            if key[:depth] in self.positions:
                line, column = self.positions[key[:depth]]
                break
        return Issue(
            path=format_path(key),
            message=message,
            line=line,
            column=column,
            severity=severity,
            source=self.source,
        )


def format_path(key: PathKey) -> str:
    """("tuning", "input", "urls", 0) -> "tuning.input.urls[0]"."""
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_path(text: str) -> PathKey:
    """The inverse of format_path, for paths written by hand in rules."""
    key: list[str | int] = []
    for chunk in text.split(".") if text else []:
        name, *indexes = chunk.split("[")
        if name:
            key.append(name)
        key.extend(int(i.rstrip("]")) for i in indexes)
    return tuple(key)


# ---------------------------------------------------------------------------- YAML -> documents


class _Loader(yaml.SafeLoader):
    """SafeLoader: no arbitrary Python objects, ever."""


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


# The only collection tags a Workspace may carry: YAML's own mapping and sequence. Any other
# tag (!!python/object..., !!set, !!omap) would otherwise be built here as a plain collection.
_COLLECTION_TAGS = {
    yaml.MappingNode: "tag:yaml.org,2002:map",
    yaml.SequenceNode: "tag:yaml.org,2002:seq",
}


def _build(loader: _Loader, node: yaml.Node, path: PathKey, doc: Document, depth: int = 0) -> Any:
    if depth > 100:
        raise ValidationError([doc.issue(path, "nesting is too deep (more than 100 levels)")])
    doc.positions.setdefault(path, _mark(node))
    expected = _COLLECTION_TAGS.get(type(node))
    if expected is not None and node.tag != expected:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"could not determine a constructor for the tag {node.tag!r}",
            node.start_mark,
        )
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolve `<<` merge keys as SafeLoader would
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ValidationError(
                    [
                        doc.issue(
                            path, f"mapping keys must be plain scalars, not {type(key).__name__}"
                        )
                    ]
                )
            if key in out:
                line, column = _mark(key_node)
                raise ValidationError(
                    [
                        Issue(
                            path=format_path((*path, str(key))),
                            message=f"duplicate key {key!r}: YAML keeps only the last one, which hides a mistake",
                            line=line,
                            column=column,
                            source=doc.source,
                        )
                    ]
                )
            child = (*path, key if isinstance(key, str) else str(key))
            doc.positions[child] = _mark(value_node)
            out[key] = _build(loader, value_node, child, doc, depth + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), doc, depth + 1) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def load_documents(text: str, source: str | None = None) -> list[Document]:
    """Every non-empty document in a YAML stream, with positions."""
    docs: list[Document] = []
    loader = None
    try:
        loader = _Loader(text)
        index = 0
        while loader.check_node():
            node = loader.get_node()
            doc = Document(data=None, source=source, index=index)
            doc.data = _build(loader, node, (), doc)
            if doc.data is not None:
                docs.append(doc)
            index += 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise ValidationError(
            [
                Issue(
                    path="",
                    message=f"invalid YAML: {problem}",
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                    source=source,
                )
            ]
        ) from None
    except yaml.reader.ReaderError as exc:
        message = f"invalid YAML: character {exc.character!r} at offset {exc.position} is not allowed ({exc.reason})"
        raise ValidationError([Issue(path="", message=message, source=source)]) from None
    except yaml.YAMLError as exc:
        raise ValidationError(
            [Issue(path="", message=f"invalid YAML: {exc}", source=source)]
        ) from None
    except RecursionError:
        raise ValidationError(
            [Issue(path="", message="invalid YAML: nesting is too deep", source=source)]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()
    return docs


# ------------------------------------------------------------------ documents -> Workspace model

_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def _message(err: dict) -> str:
    kind = err["type"]
    value = err.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of a Kaito Workspace here"
    if kind in _TYPE_NAMES:
        hint = ""
        if kind == "string_type" and isinstance(value, int | float) and not isinstance(value, bool):
            hint = f' (quote it: "{value}")'
        if kind == "int_type" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
            hint = f" (write {value.strip()} without quotes)"
        return f"must be {_TYPE_NAMES[kind]}, not {_describe(value)}{hint}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"must be one of {expected}, not {_describe(value)}"
    return err.get("msg", "is invalid")


def _known_fields(model: type[pydantic.BaseModel], loc: tuple) -> list[str]:
    """The wire names accepted next to an unknown field at `loc`, for "did you mean"."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = {f.alias or n: f for n, f in current.model_fields.items()}
        info = fields.get(part)
        if info is None:
            return []
        annotation = info.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if a is not type(None)]
        nested = next(
            (
                a
                for a in _flatten_args(inner)
                if isinstance(a, type) and issubclass(a, pydantic.BaseModel)
            ),
            None,
        )
        if nested is None:
            return []
        current = nested
    return [f.alias or n for n, f in current.model_fields.items()]


def _flatten_args(types: list) -> list:
    out = []
    for t in types:
        args = getattr(t, "__args__", None)
        out.extend(_flatten_args(list(args)) if args else [t])
    return out


def _shape_issues(doc: Document, data: dict, exc: pydantic.ValidationError) -> list[Issue]:
    import difflib

    issues = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        message = _message(err)
        if err["type"] == "extra_forbidden":
            known = _known_fields(Workspace, loc)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
            elif known:
                message += f"; expected one of: {', '.join(known)}"
        issues.append(doc.issue(loc, message))
    return issues


def _without(data: Any, locs: list[tuple]) -> Any:
    """A deep copy of `data` with the values at `locs` removed (to check the rest)."""
    import copy

    out = copy.deepcopy(data)
    for loc in sorted(locs, key=len, reverse=True):
        target = out
        for part in loc[:-1]:
            try:
                target = target[part]
            except (KeyError, IndexError, TypeError):
                target = None
                break
        if isinstance(target, dict):
            target.pop(loc[-1], None)
        elif isinstance(target, list) and isinstance(loc[-1], int) and loc[-1] < len(target):
            target[loc[-1]] = None
    return out


def parse_workspace(doc: Document) -> tuple[Workspace | None, list[Issue]]:
    """The typed Workspace and the shape problems of a document.

    When some fields are malformed, the rest is still returned (malformed values removed) so
    that the admission rules can report their problems in the same pass: every problem at once.
    """
    data = doc.data
    if not isinstance(data, dict):
        return None, [doc.issue((), f"a Workspace must be a YAML mapping, not {_describe(data)}")]
    issues = []
    kind = data.get("kind")
    if kind != KIND:
        issues.append(doc.issue(("kind",), f"must be {KIND!r}, not {_describe(kind)}"))
    api_version = data.get("apiVersion")
    if api_version not in API_VERSIONS:
        issues.append(
            doc.issue(
                ("apiVersion",),
                f"must be one of {', '.join(API_VERSIONS)}, not {_describe(api_version)}",
            )
        )
    if issues:
        return None, issues
    current = data
    for _ in range(3):  # removing a bad value can expose a missing required one; a few rounds do
        try:
            return Workspace.model_validate(current), _dedupe(issues)
        except pydantic.ValidationError as exc:
            issues += _shape_issues(doc, current, exc)
            locs = [tuple(e["loc"]) for e in exc.errors() if e["type"] != "missing" and e["loc"]]
            if not locs:
                break
            current = _without(current, locs)
    return None, _dedupe(issues)


def workspace_from_document(doc: Document) -> Workspace:
    """Check one document's shape and build the typed Workspace. Raises ValidationError."""
    ws, issues = parse_workspace(doc)
    if issues or ws is None:
        raise ValidationError(issues)
    return ws


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen, out = set(), []
    for issue in issues:
        if (issue.path, issue.message) not in seen:
            seen.add((issue.path, issue.message))
            out.append(issue)
    return out


def workspace_from_dict(data: Any) -> Workspace:
    return workspace_from_document(Document(data=data))


def read_text(
    text: str, source: str | None = None
) -> list[tuple[Document, Workspace | None, list[Issue]]]:
    """Every document in a YAML stream: its typed Workspace (if it has a usable shape) and its
    shape problems. Raises ValidationError only when the YAML itself cannot be read."""
    docs = load_documents(text, source)
    if not docs:
        raise ValidationError(
            [Issue(path="", message="no Workspace found: the input is empty", source=source)]
        )
    return [(doc, *parse_workspace(doc)) for doc in docs]


def read_file(path: str | Path) -> list[tuple[Document, Workspace | None, list[Issue]]]:
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(
            [Issue(path="", message=f"cannot read {path}: {exc}", source=str(path))]
        ) from None
    return read_text(text, source=str(path))
