"""What the verbs return: values that also read well under a cell.

Every result carries its data (`ws = %kaito get NAME; ws.phase, ws.data`) and has
`_repr_mimebundle_` with text/plain and text/html, so it renders in JupyterLab, VS Code,
nbconvert and plain IPython alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito_jupyter import cost
from kaito_jupyter.api import table as ws_table
from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.backends.base import Applied, Node
from kaito_jupyter.commands import Description, phase
from kaito_jupyter.widgets.state import NODE_COLUMNS, esc, html_table, node_row, text_table

_PHASE_COLOUR = {
    "ready": "#1a7f37",
    "succeeded": "#1a7f37",
    "failed": "#cf222e",
    "pending": "#9a6700",
    "deleting": "#6e7781",
}


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


class Result:
    """Base: a text rendering, an HTML rendering, and the mime bundle made of both."""

    def _text(self) -> str:
        raise NotImplementedError

    def _html(self) -> str:
        return pre(self._text())

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        return {"text/plain": self._text(), "text/html": self._html()}

    def __repr__(self) -> str:
        return self._text()


class Text(Result):
    """A block of text (presets, skus, explain, a verdict): shown as is."""

    def __init__(self, text: str):
        self.text = text

    def _text(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


class Document(Result):
    """A workspace as YAML or JSON (`get NAME -o yaml|json`); `data` is the object."""

    def __init__(self, data: Any, format: str):
        self.data = data
        self.format = format

    def _text(self) -> str:
        if self.format == "json":
            return json.dumps(self.data, indent=2)
        import yaml

        return yaml.safe_dump(self.data, sort_keys=False)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, Any]:
        bundle: dict[str, Any] = super()._repr_mimebundle_()
        if self.format == "json":
            bundle["application/json"] = self.data
        return bundle

    def __str__(self) -> str:
        return self._text()


class WorkspaceResult(Result):
    """One workspace (`ws = %kaito get NAME`): its phase, conditions and the stored object."""

    def __init__(self, stored: StoredWorkspace):
        self.stored = stored

    @property
    def name(self) -> str:
        return self.stored.name

    @property
    def namespace(self) -> str:
        return self.stored.namespace

    @property
    def data(self) -> dict[str, Any]:
        return self.stored.data

    @property
    def workspace(self):
        return self.stored.workspace

    @property
    def phase(self) -> str:
        return phase(self.stored)

    @property
    def conditions(self) -> dict[str, str]:
        """Condition type -> status ("True"/"False"/"Unknown")."""
        return {cond.type: cond.status for cond in self.stored.status.conditions or []}

    def condition(self, type_: str):
        return self.workspace.condition(type_)

    def _text(self) -> str:
        return ws_table.render([self.workspace])

    def _html(self) -> str:
        ws = self.workspace
        colour = _PHASE_COLOUR.get(self.phase, "#6e7781")
        rows = [ws_table.row(ws)]
        conds = [
            (cond.type, cond.status, cond.reason or "", cond.message or "")
            for cond in self.stored.status.conditions or []
        ]
        out = [
            f"<div><b>{esc(ws.name)}</b> <span style='color:{colour}'>{esc(self.phase)}</span></div>",
            html_table(ws_table.COLUMNS, rows),
        ]
        if conds:
            out.append(html_table(["CONDITION", "STATUS", "REASON", "MESSAGE"], conds))
        return "".join(out)


class Workspaces(Result, Sequence[WorkspaceResult]):
    """The workspaces `%kaito get` lists: a sequence, also indexable by name."""

    def __init__(self, stored: list[StoredWorkspace], *, wide: bool = False, nodes=()):
        self.items = [WorkspaceResult(s) for s in stored]
        self.wide = wide
        self.nodes = list(nodes)  # the backend's nodes: the wide COST/H column prices them

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[WorkspaceResult]:
        return iter(self.items)

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            for item in self.items:
                if item.name == key:
                    return item
            raise KeyError(key)
        return self.items[key]

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.items]

    def _columns(self) -> tuple[str, ...]:
        return ws_table.WIDE_COLUMNS if self.wide else ws_table.COLUMNS

    def _text(self) -> str:
        if not self.items:
            return "No workspaces found."
        return ws_table.render([i.workspace for i in self.items], wide=self.wide, nodes=self.nodes)

    def _html(self) -> str:
        if not self.items:
            return "<i>No workspaces found.</i>"
        cols = self._columns()
        rows = [ws_table.row(i.workspace, columns=cols, nodes=self.nodes) for i in self.items]
        return html_table(cols, rows)


class AppliedResult(Result, Sequence[WorkspaceResult]):
    """What `apply`, `deploy` and `tune` did: kubectl's `workspace.kaito.sh/NAME created`.

    With `--wait`, `final` holds each workspace as the wait left it (ready, succeeded or
    failed); with `--dry-run`, `documents` the Workspaces deploy or tune built (shown as YAML).
    """

    def __init__(
        self,
        applied: list[Applied],
        *,
        dry_run: bool = False,
        documents: list[dict[str, Any]] | None = None,
        final: dict[str, StoredWorkspace] | None = None,
        printed: bool = False,
    ):
        self.applied = applied
        self.dry_run = dry_run
        self.documents = documents or []
        self.final = final or {}
        self._printed = printed  # the applied lines were printed before the progress
        self.items = [
            WorkspaceResult(self.final.get(a.workspace.name, a.workspace)) for a in applied
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[WorkspaceResult]:
        return iter(self.items)

    def __getitem__(self, index):  # type: ignore[override]
        return self.items[index]

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.items]

    def _text(self) -> str:
        suffix = " (dry run)" if self.dry_run else ""
        lines = (
            []
            if self._printed
            else [f"workspace.kaito.sh/{a.workspace.name} {a.action}{suffix}" for a in self.applied]
        )
        if self.dry_run and self.documents:
            import yaml

            lines.append(yaml.safe_dump_all(self.documents, sort_keys=False).rstrip())
        for item in self.items if self.final else []:
            lines.append(f"workspace.kaito.sh/{item.name} {item.phase}")
        return "\n".join(lines)

    def _html(self) -> str:
        if not self.final:
            return pre(self._text())
        return "".join(i._html() for i in self.items)


class DescribeResult(Result):
    """`%kaito describe NAME`: spec, conditions with reasons, events, nodes, endpoint."""

    def __init__(self, description: Description):
        self.description = description

    @property
    def workspace(self) -> WorkspaceResult:
        return WorkspaceResult(self.description.workspace)

    def _sections(self) -> list[tuple[str, Any]]:
        d = self.description
        stored = d.workspace
        spec = {k: v for k, v in stored.spec().items() if k not in ("apiVersion", "kind")}
        spec.pop("metadata", None)
        conds = [
            (cond.type, cond.status, cond.reason or "", cond.message or "")
            for cond in stored.status.conditions or []
        ]
        events = [(e.time, e.type, e.reason, e.object, e.message) for e in d.events]
        nodes = [node_row(n) for n in d.nodes]
        head = [
            ("Name", stored.name),
            ("Namespace", stored.namespace),
            ("API version", stored.data.get("apiVersion", "")),
            ("Phase", phase(stored)),
            ("State", stored.status.state or ""),
            ("Created", stored.metadata.get("creationTimestamp", "")),
            ("Runtime", d.runtime or ""),
            ("Endpoint", d.endpoint.url if d.endpoint else "<none>"),
        ]
        ws = stored.workspace
        if ws.resource is not None and ws.resource.instance_type:
            head.append(("Cost", cost.workspace_line(ws, d.nodes)))
        if d.plan_problem:
            head.append(("Plan", d.plan_problem))
        return [
            ("", head),
            ("Spec", spec),
            ("Conditions", (["TYPE", "STATUS", "REASON", "MESSAGE"], conds)),
            ("Events", (["TIME", "TYPE", "REASON", "OBJECT", "MESSAGE"], events)),
            ("Nodes", (NODE_COLUMNS, nodes)),
        ]

    def _text(self) -> str:
        import yaml

        out: list[str] = []
        for title, body in self._sections():
            if not title:
                width = max(len(k) for k, _ in body)
                out += [f"{(k + ':').ljust(width + 1)}  {v}" for k, v in body]
            elif title == "Spec":
                out += ["Spec:", *("  " + line for line in yaml.safe_dump(body).splitlines())]
            else:
                headers, rows = body
                out.append(f"{title}:")
                if rows:
                    out += ["  " + line for line in text_table(headers, rows).splitlines()]
                else:
                    out.append("  <none>")
        return "\n".join(out)

    def _html(self) -> str:
        import yaml

        out: list[str] = []
        for title, body in self._sections():
            if not title:
                out.append(
                    html_table(["", ""], body).replace("<thead><tr><th", "<thead hidden><tr><th")
                )
            elif title == "Spec":
                out.append(f"<h4>Spec</h4>{pre(yaml.safe_dump(body))}")
            else:
                headers, rows = body
                out.append(f"<h4>{title}</h4>")
                out.append(html_table(headers, rows) if rows else "<i>none</i>")
        return "".join(out)


class Nodes(Result, Sequence[Node]):
    """`%kaito nodes`: instance type, GPUs allocatable and used, which workspaces."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, index):  # type: ignore[override]
        return self.nodes[index]

    def _text(self) -> str:
        if not self.nodes:
            return "No nodes found."
        return text_table(NODE_COLUMNS, [node_row(n) for n in self.nodes])

    def _html(self) -> str:
        if not self.nodes:
            return "<i>No nodes found.</i>"
        return html_table(NODE_COLUMNS, [node_row(n) for n in self.nodes])


class Deleted(Result):
    def __init__(self, stored: StoredWorkspace, *, gone: bool):
        self.stored = stored
        self.gone = gone

    def _text(self) -> str:  # kubectl's words, as the `kaito` command prints them
        return f'workspace.kaito.sh "{self.stored.name}" {"deleted" if self.gone else "deleting"}'


class Woken(Result):
    """`%kaito wake NAME`: the wake request is written; the controller brings the nodes back."""

    def __init__(self, stored: StoredWorkspace):
        self.stored = stored

    def _text(self) -> str:
        return f"workspace.kaito.sh/{self.stored.name} waking (its nodes take a few minutes)"


@dataclass(repr=False)
class Validation(Result):
    """`%%kaito validate`: one entry per file or workspace, as `kaito validate -o json`."""

    report: list[dict[str, Any]]
    lines: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return all(r["valid"] for r in self.report)

    def _text(self) -> str:
        return "\n".join(self.lines)


class Settings(Result):
    """`%kaito use`: where every process (kernel, server, CLI) now points."""

    def __init__(self, settings):
        self.settings = settings

    @property
    def backend(self) -> str:
        return self.settings.backend

    def _text(self) -> str:
        s = self.settings
        if s.backend == "local":
            return "using the local backend (this machine)"
        where = [f"namespace {s.namespace}"]
        if s.context:
            where.insert(0, f"context {s.context}")
        if s.provisioner == "aks" and s.azure.cluster_name:
            where.append(
                f"AKS cluster {s.azure.cluster_name} in {s.azure.resource_group} "
                f"(subscription {s.azure.subscription_id})"
            )
        return f"using the kubernetes backend ({', '.join(where)})"


class Status(Result):
    """A workspace's status timeline, static (where live widgets do not render)."""

    def __init__(self, state):
        self.state = state

    def _text(self) -> str:
        return self.state.text()

    def _html(self) -> str:
        return self.state.html()


class LogLines(Result, Sequence[str]):
    def __init__(self, lines: list[str]):
        self.lines = lines

    def __len__(self) -> int:
        return len(self.lines)

    def __iter__(self) -> Iterator[str]:
        return iter(self.lines)

    def __getitem__(self, index):  # type: ignore[override]
        return self.lines[index]

    def _text(self) -> str:
        return "\n".join(self.lines)


class ChatReply(Result):
    """A chat answer. Its tokens were already streamed under the cell, so the first automatic
    display shows nothing more; `display(reply)` or `reply` in a later cell shows it."""

    def __init__(
        self, workspace: str, text: str, *, finish_reason=None, usage=None, streamed=False
    ):
        self.workspace = workspace
        self.text = text
        self.finish_reason = finish_reason
        self.usage = usage
        self._streamed = streamed

    def _text(self) -> str:
        return self.text

    def _html(self) -> str:
        return f"<div style='white-space:pre-wrap'>{esc(self.text)}</div>"

    def __str__(self) -> str:
        return self.text

    def _ipython_display_(self) -> None:
        if self._streamed:
            self._streamed = False  # the streamed text is the output; show it again on request
            return
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)
