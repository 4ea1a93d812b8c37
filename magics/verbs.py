"""The verbs: parse, call the command layer (`kaito_jupyter.commands`), return a result.

One `Session` per kernel holds what lasts between cells: the backend (reopened when the shared
configuration changes) and one conversation per workspace for `chat`.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kaito_jupyter.magics import args as margs
from kaito_jupyter.magics import results as r
from kaito_jupyter.magics.interpolate import interpolate

from kaito_jupyter import commands, config
from kaito_jupyter.backends import Backend, open_backend
from kaito_jupyter.conversation import Conversation
from kaito_jupyter.errors import KaitoError, ValidationError

CELL = "<cell>"


class Session:
    def __init__(self, shell):
        self.shell = shell
        self.backend_override: Backend | None = None  # tests and embedders inject one
        self._backend: tuple[str, Backend] | None = None
        self.conversations: dict[str, Conversation] = {}

    # ------------------------------------------------------------------------ plumbing

    def backend(self) -> Backend:
        if self.backend_override is not None:
            return self.backend_override
        settings = config.load()
        key = json.dumps(asdict(settings), sort_keys=True)
        if self._backend is None or self._backend[0] != key:
            self._backend = (key, open_backend(settings))
        return self._backend[1]

    def _namespace(self) -> dict[str, Any]:
        return self.shell.user_ns if self.shell is not None else {}

    def _widgets(self) -> bool:
        from kaito_jupyter.widgets import widgets_render

        return widgets_render(self.shell)

    def run(self, args: argparse.Namespace, cell: str | None, sources: dict[str, str]):
        if cell is not None:
            cell = interpolate(cell, self._namespace())
            sources[CELL] = cell
        return getattr(self, "verb_" + args.verb)(args, cell, sources)

    def _yaml_input(self, verb: str, args, cell: str | None, sources) -> list[tuple[str, str]]:
        """(source name, text) pairs: the files of -f, else the cell."""
        if args.filename:
            out = []
            for name in args.filename:
                path = Path(name).expanduser()
                if not path.is_file():
                    raise KaitoError(f"{name}: no such file", hint="give a YAML file's path")
                text = path.read_text()
                sources[name] = text
                out.append((name, text))
            return out
        if cell is None or not cell.strip():
            raise margs.UsageError(
                f"{verb} needs Workspace YAML in the cell, or -f FILE",
                hint=f"%%kaito {verb}  (then the YAML on the following lines)",
            )
        return [(CELL, cell)]

    # ---------------------------------------------------------------------------- verbs

    def verb_apply(self, args, cell, sources):
        backend = self.backend()
        applied, notes = [], []
        for source, text in self._yaml_input("apply", args, cell, sources):
            applied += commands.apply(
                text, source=source, backend=backend, dry_run=args.dry_run, notes=notes
            )
        return self._finish(applied, args, backend, notes=notes)

    def verb_deploy(self, args, cell, sources):
        backend = self.backend()
        data = commands.deploy_workspace(
            args.preset,
            name=args.name,
            instance_type=args.instance_type,
            count=args.count,
            adapters=args.adapters or None,
            labels=dict(args.labels) or None,
        )
        notes: list[str] = []
        applied = commands.apply_workspace(data, backend=backend, dry_run=args.dry_run, notes=notes)
        return self._finish([applied], args, backend, documents=[data], notes=notes)

    def verb_tune(self, args, cell, sources):
        backend = self.backend()
        data = commands.tune_workspace(
            args.preset,
            method=args.method,
            inputs=args.inputs,
            output=args.output,
            name=args.name,
            instance_type=args.instance_type,
            config_map=args.config,
            push_secret=args.push_secret,
            labels=dict(args.labels) or None,
        )
        notes: list[str] = []
        applied = commands.apply_workspace(data, backend=backend, dry_run=args.dry_run, notes=notes)
        return self._finish([applied], args, backend, documents=[data], notes=notes)

    def _finish(self, applied, args, backend, documents=None, notes=()) -> r.AppliedResult:
        for note in dict.fromkeys(notes):  # the controller's word: started, or none runs
            print(f"note: {note}", flush=True)
        result = r.AppliedResult(applied, dry_run=args.dry_run, documents=documents)
        if not args.wait or args.dry_run:
            return result
        print(result._text(), flush=True)  # what was applied, before the progress
        from kaito_jupyter.magics.progress import wait_for

        final = wait_for(
            [a.workspace for a in applied],
            backend=backend,
            timeout=args.timeout,
            widgets=self._widgets(),
        )
        return r.AppliedResult(applied, final=final, printed=True)

    def verb_get(self, args, cell, sources):
        backend = self.backend()
        if args.name is None:
            if args.output in ("yaml", "json"):
                items = [s.data for s in commands.list_workspaces(backend=backend)]
                return r.Document({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
            wide = args.output == "wide"
            return r.Workspaces(
                commands.list_workspaces(backend=backend),
                wide=wide,
                nodes=commands.nodes(backend=backend) if wide else (),
            )
        stored = commands.get(args.name, backend=backend)
        if args.output in ("yaml", "json"):
            return r.Document(stored.data, args.output)
        if args.output == "wide":
            return r.Workspaces([stored], wide=True, nodes=commands.nodes(backend=backend))
        return r.WorkspaceResult(stored)

    def verb_describe(self, args, cell, sources):
        return r.DescribeResult(commands.describe(args.name, backend=self.backend()))

    def verb_status(self, args, cell, sources):
        backend = self.backend()
        stored = commands.get(args.name, backend=backend)
        from kaito_jupyter.widgets.state import StatusState

        if not self._widgets():
            return r.Status(StatusState.from_stored(stored))
        if stored.workspace.tuning is not None:
            from kaito_jupyter.widgets import TuningWidget

            return TuningWidget(args.name, backend).follow()
        from kaito_jupyter.widgets import StatusWidget

        return StatusWidget(args.name, backend, stored).follow()

    def verb_delete(self, args, cell, sources):
        stored = commands.delete(
            args.name, backend=self.backend(), wait=args.wait, timeout=args.timeout
        )
        return r.Deleted(stored, gone=args.wait)

    def verb_wake(self, args, cell, sources):
        return r.Woken(commands.wake(args.name, backend=self.backend()))

    def verb_logs(self, args, cell, sources):
        stop = threading.Event()
        lines = commands.logs(
            args.name, backend=self.backend(), follow=args.follow, tail=args.tail, stop=stop
        )
        if not args.follow:
            return r.LogLines([line.rstrip("\n") for line in lines])
        try:
            for line in lines:
                print(line.rstrip("\n"), flush=True)
        finally:  # interrupted (the stop button): end the follow, quietly
            stop.set()
            close = getattr(lines, "close", None)
            if close:
                close()
        return None

    def verb_nodes(self, args, cell, sources):
        backend = self.backend()
        if args.watch and self._widgets():
            from kaito_jupyter.widgets import NodesWidget

            return NodesWidget(backend).follow()
        return r.Nodes(commands.nodes(backend=backend))

    def verb_presets(self, args, cell, sources):
        from kaito_jupyter.presentation import presets_table

        return r.Text(presets_table(tuning_only=args.tuning, include_deprecated=args.all))

    def verb_skus(self, args, cell, sources):
        from kaito_jupyter.presentation import skus_table

        return r.Text(skus_table(args.cloud))

    def verb_explain(self, args, cell, sources):
        from kaito_jupyter.presentation import explain

        return r.Text(explain(args.preset, args.instance_type, args.count))

    def verb_use(self, args, cell, sources):
        settings = commands.use(
            args.backend,
            context=args.context,
            namespace=args.namespace,
            kubeconfig=args.kubeconfig,
            subscription=args.subscription,
            resource_group=args.resource_group,
            cluster=args.cluster,
        )
        self._backend = None
        return r.Settings(settings)

    def verb_validate(self, args, cell, sources):
        return validate(args, self._yaml_input("validate", args, cell, sources), sources)

    def verb_chat(self, args, cell, sources):
        name = args.name
        conversation = self.conversations.setdefault(name, Conversation(name))
        if args.new or args.system is not None:
            conversation.reset(args.system if args.system is not None else None)
        backend = self.backend()
        if args.ui:
            from kaito_jupyter.widgets import ChatWidget
            from kaito_jupyter.widgets.chat import adapter_names

            stored = commands.get(name, backend=backend)
            return ChatWidget(
                name,
                backend,
                conversation,
                adapters=adapter_names(stored),
                max_tokens=args.max_tokens,
                temperature=args.temperature,
            )
        prompt = cell if cell is not None and cell.strip() else " ".join(args.prompt)
        if not prompt.strip():
            if args.new or args.system is not None:
                return None  # only starting a new conversation
            raise margs.UsageError(
                "chat needs a prompt: the cell, or words after the workspace's name",
                hint=f"%%kaito chat {name}  (then the prompt on the following lines)",
            )
        from kaito_jupyter.client import Reply

        reply = Reply(text="")
        pieces = commands.chat(
            name,
            conversation.messages(prompt.strip()),
            backend=backend,
            max_tokens=args.max_tokens,
            temperature=args.temperature,
            adapter=args.adapter,
            reply=reply,
        )
        for piece in pieces:  # tokens as they come; stdout streams in every frontend
            sys.stdout.write(piece)
            sys.stdout.flush()
        print()
        conversation.record(prompt.strip(), reply.text)
        return r.ChatReply(
            name, reply.text, finish_reason=reply.finish_reason, usage=reply.usage, streamed=True
        )


def validate(args: argparse.Namespace, inputs: list[tuple[str, str]], sources) -> r.Validation:
    """`%%kaito validate`: Kaito's admission checks, offline; with `--old FILE`, an update."""
    from kaito_jupyter import api

    allowed = config.load().allowed_private_registries
    old = None
    if args.old:
        path = Path(args.old).expanduser()
        if not path.is_file():
            raise KaitoError(f"{args.old}: no such file", hint="--old names the current version")
        sources[args.old] = path.read_text()
        old = api.check_file(path, allowed_registries=allowed)[0].workspace
    report: list[dict[str, Any]] = []
    lines: list[str] = []
    failure: ValidationError | None = None
    for source, text in inputs:
        try:
            checked = api.check_text(text, source, old=old, allowed_registries=allowed)
        except ValidationError as exc:
            failure = failure or exc
            report.append(
                {
                    "file": source,
                    "valid": False,
                    "errors": [str(i) for i in exc.issues],
                    "warnings": [str(i) for i in exc.warnings],
                }
            )
            continue
        for ch in checked:
            ws = ch.workspace
            instance = (ws.resource.instance_type if ws.resource else None) or "existing nodes"
            report.append(
                {
                    "file": source,
                    "workspace": ws.name,
                    "valid": True,
                    "warnings": [str(i) for i in ch.warnings],
                }
            )
            lines.append(
                f"workspace.kaito.sh/{ws.name} valid "
                f"({ws.mode}: {ws.preset_name or 'custom template'} on {instance})"
            )
            lines += [f"  {issue}" for issue in ch.warnings]
    if args.output == "json":
        return r.Document(report, "json")
    if failure is not None and len(inputs) == 1:
        raise failure  # the short block that points at the line
    if failure is not None:
        lines += [f"{e['file']}: invalid" for e in report if not e["valid"]]
        for e in report:
            lines += [f"  {x}" for x in e.get("errors", [])]
    return r.Validation(report, lines)
