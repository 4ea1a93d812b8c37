"""The command layer: every verb of the magics, the `kaito` command and the REST API, once.

Each function takes its inputs as values, works through a `Backend`, returns values (stored
workspaces, applied results, nodes, text pieces) and raises the product's errors. The surfaces
(magics, CLI, server handlers, widgets) only parse their input and render what comes back.

    from kaito_jupyter import commands
    commands.apply(yaml_text)                      # -> [Applied]
    commands.wait("workspace-phi-3-mini")          # -> StoredWorkspace, when ready or failed
    "".join(commands.chat("workspace-phi-3-mini", [{"role": "user", "content": "Hi"}]))
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from kaito_jupyter import api, catalog, client, config
from kaito_jupyter.api import conditions as c
from kaito_jupyter.api.wire import StoredWorkspace, read_workspace
from kaito_jupyter.backends import Applied, Backend, Endpoint, Event, Node, NotFound, open_backend
from kaito_jupyter.controller import idle
from kaito_jupyter.errors import Issue, KaitoError, ValidationError

API_VERSION = "kaito.sh/v1beta1"

Phase = Literal["pending", "ready", "succeeded", "failed", "deleting"]


def phase(stored: StoredWorkspace) -> Phase:
    """Where a workspace is, in one word: what `--wait` waits for and widgets colour by."""
    if stored.deleting:
        return "deleting"
    ws = stored.workspace
    succeeded = ws.condition(c.WORKSPACE_SUCCEEDED)
    # A status written for an older generation says nothing about the current spec yet.
    seen = succeeded.observed_generation if succeeded else None
    if seen is not None and seen < stored.generation:
        return "pending"
    state = stored.status.state
    if ws.tuning is not None:
        if state == c.STATE_FAILED or (succeeded and succeeded.reason == "workspaceFailed"):
            return "failed"
        return "succeeded" if succeeded and succeeded.status == "True" else "pending"
    if succeeded and succeeded.status == "True":
        return "ready"
    if succeeded and succeeded.reason == "workspaceFailed":
        return "failed"
    return "pending"


# --------------------------------------------------------------------------------- admission


def _target(backend: Backend) -> api.Target:
    return "local" if backend.name == "local" else "cluster"


def admit(
    text: str, *, source: str = "<input>", backend: Backend, namespace: str | None = None
) -> list[dict[str, Any]]:
    """Parse and check every Workspace in `text` as the backend would admit it.

    Kaito's rules, immutable fields against the stored version (an update), and the backend's
    own checks, all problems at once. Returns the documents to store, namespaces filled in.
    """
    allowed = config.load().allowed_private_registries
    checked = api.check_text(text, source, target=_target(backend), allowed_registries=allowed)
    errors: list[Issue] = []
    warnings: list[Issue] = [w for ch in checked for w in ch.warnings]
    out = []
    for ch in checked:
        data = dict(ch.document.data)
        meta = dict(data.get("metadata") or {})
        if namespace and not meta.get("namespace") and backend.name != "local":
            meta["namespace"] = namespace
        data["metadata"] = meta
        try:
            old = backend.get(ch.workspace.name, meta.get("namespace"))
        except NotFound:
            old = None
        if old is not None:
            findings = api.validate(
                ch.workspace,
                ch.document,
                old=read_workspace(old.spec()),
                target=_target(backend),
                allowed_registries=allowed,
            )
            errors += [i for i in findings.errors if i not in errors]
        errors += [
            ch.document.issue(i.path, i.message, i.severity)
            for i in backend.admission_issues(data)
            if i.severity == "error"
        ]
        out.append(data)
    if errors:
        raise ValidationError(errors, warnings=warnings)
    return out


def apply(
    text: str,
    *,
    source: str = "<input>",
    backend: Backend | None = None,
    dry_run: bool = False,
    notes: list[str] | None = None,
    namespace: str | None = None,
) -> list[Applied]:
    """`kaito apply -f` / `%%kaito apply`: admit, then create or update, all or none.

    `notes`, when given, receives what the backend says about its controller (started one, or
    none reconciles this cluster yet) for the surface to show. Documents without a namespace
    get `namespace` (default: the configured one)."""
    backend = backend or open_backend()
    documents = admit(text, source=source, backend=backend, namespace=namespace or _namespace())
    applied = backend.apply(documents, dry_run=dry_run)
    if not dry_run:
        note = backend.ensure_controller()
        if note and notes is not None:
            notes.append(note)
    return applied


def _namespace() -> str:
    return config.load().namespace


# ----------------------------------------------------------------------- deploy and tune


def _name_for(preset: str) -> str:
    return f"workspace-{catalog.preset(preset).name}"[:63].rstrip("-.")


def deploy_workspace(
    preset: str,
    *,
    name: str | None = None,
    instance_type: str | None = None,
    count: int | None = None,
    adapters: list[tuple[str, float]] | None = None,
    labels: dict[str, str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Workspace `kaito deploy PRESET ...` applies (pure): Kaito's shape, v1beta1.

    `adapters` are (image or directory, strength) pairs; each is named after its source.
    """
    p = catalog.preset(preset)
    name = name or _name_for(p.name)
    ws: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Workspace",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
    }
    if instance_type or count or labels:
        resource: dict[str, Any] = {}
        if instance_type:
            resource["instanceType"] = instance_type
        if count:
            resource["count"] = count
        resource["labelSelector"] = {"matchLabels": labels or {"apps": name}}
        ws["resource"] = resource
    inference: dict[str, Any] = {"preset": {"name": p.name}}
    if adapters:
        inference["adapters"] = [
            {"source": {"name": adapter_name(src), **data_source(src)}, "strength": f"{strength:g}"}
            for src, strength in adapters
        ]
    ws["inference"] = inference
    return ws


def is_local_path(text: str) -> bool:
    """A directory or file on this machine (`./adapter`, `/data/x`, `~/y`), not an image."""
    return text.startswith(("/", "./", "../", "~")) or text in (".", "..")


def data_source(text: str) -> dict[str, Any]:
    """Kaito's data source for an image reference, or a hostPath volume for a local path."""
    if is_local_path(text):
        from pathlib import Path

        return {"volumeSource": {"hostPath": {"path": str(Path(text).expanduser().resolve())}}}
    return {"image": text}


_STRENGTH = re.compile(r"0(\.\d+)?|1(\.0+)?|\.\d+")


def adapter_spec(text: str) -> tuple[str, float]:
    """IMAGE_OR_DIR[:STRENGTH] -> (source, strength), as every surface reads `--adapter`. A
    trailing `:number` in [0, 1] is the strength (so an image whose tag looks like one needs an
    explicit strength: `repo:1.0:1`)."""
    head, sep, tail = text.rpartition(":")
    if sep and head and _STRENGTH.fullmatch(tail):
        return head, float(tail)
    return text, 1.0


def adapter_name(source: str) -> str:
    """A DNS-1123 name for an adapter from its image reference or directory."""
    import re

    tail = source.rstrip("/").rsplit("/", 1)[-1]
    tail = tail.split("@", 1)[0].split(":", 1)[0]
    slug = re.sub(r"[^a-z0-9-]+", "-", tail.lower()).strip("-")
    return (slug or "adapter")[:63]


def tune_workspace(
    preset: str,
    *,
    method: str,
    inputs: list[str],
    output: str,
    name: str | None = None,
    instance_type: str | None = None,
    config_map: str | None = None,
    push_secret: str | None = None,
    labels: dict[str, str] | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """The Workspace `kaito tune PRESET ...` applies (pure).

    `inputs` are http(s) URLs, or one image, or one local directory; `output` an image
    reference or a local directory (a hostPath volume, as Kaito's volumeSource spells it).
    """
    p = catalog.preset(preset)
    name = name or f"tuning-{p.name}"[:63].rstrip("-.")
    ws: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": "Workspace",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
    }
    if instance_type or labels:
        resource: dict[str, Any] = {"labelSelector": {"matchLabels": labels or {"apps": name}}}
        if instance_type:
            resource["instanceType"] = instance_type
        ws["resource"] = resource
    urls = [i for i in inputs if "://" in i]
    others = [i for i in inputs if "://" not in i]
    if others and (urls or len(others) > 1):
        raise KaitoError(
            "tuning input is URLs, or one image, or one directory: not a mix",
            hint="give several --input URLs, or a single image or directory",
        )
    source: dict[str, Any] = {"name": "dataset"}
    if urls:
        source["urls"] = urls
    else:
        source.update(data_source(others[0]))
    destination: dict[str, Any] = {}
    if is_local_path(output):
        destination.update(data_source(output))
    else:
        destination["image"] = output
    if push_secret:
        destination["imagePushSecret"] = push_secret
    tuning: dict[str, Any] = {
        "preset": {"name": p.name},
        "method": method,
        "input": source,
        "output": destination,
    }
    if config_map:
        tuning["config"] = config_map
    ws["tuning"] = tuning
    return ws


def apply_workspace(
    data: dict[str, Any],
    *,
    backend: Backend | None = None,
    dry_run: bool = False,
    notes: list[str] | None = None,
) -> Applied:
    """Admit and apply one workspace given as data (what deploy and tune build)."""
    import yaml

    return apply(
        yaml.safe_dump(data, sort_keys=False),
        source=f"<{data['metadata']['name']}>",
        backend=backend,
        dry_run=dry_run,
        notes=notes,
    )[0]


# ---------------------------------------------------------------------------------- reading


def get(name: str, *, backend: Backend | None = None) -> StoredWorkspace:
    return (backend or open_backend()).get(name)


def list_workspaces(*, backend: Backend | None = None) -> list[StoredWorkspace]:
    return (backend or open_backend()).list()


@dataclass
class Description:
    """Everything `kaito describe` shows: the workspace, its events, nodes and endpoint."""

    workspace: StoredWorkspace
    events: list[Event] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    endpoint: Endpoint | None = None
    runtime: str | None = None  # which runtime serves it (ours, Kaito's vLLM, ...)
    plan_problem: str | None = None


def describe(name: str, *, backend: Backend | None = None) -> Description:
    from kaito_jupyter.controller.plan import PlanError, plan

    backend = backend or open_backend()
    stored = backend.get(name)
    ws = stored.workspace
    runtime = problem = None
    try:
        runtime = plan(ws, local=backend.name == "local").runtime
    except PlanError as exc:
        problem = str(exc)
    placed = set(stored.status.worker_nodes or [])
    nodes = [n for n in backend.nodes() if n.name in placed]
    endpoint = None
    if ws.inference is not None and phase(stored) == "ready":
        try:
            endpoint = backend.endpoint(name)
        except KaitoError:
            endpoint = None
    return Description(stored, backend.events(name), nodes, endpoint, runtime, problem)


def delete(
    name: str, *, backend: Backend | None = None, wait: bool = False, timeout: float = 300
) -> StoredWorkspace:
    """Delete a workspace; with `wait`, return once it (and what it created) is gone."""
    backend = backend or open_backend()
    stored = backend.delete(name)
    backend.ensure_controller()
    if wait:
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        timer = threading.Timer(timeout, stop.set)
        timer.start()
        try:
            # Watch first, then look: a deletion finished before the watch began sends no
            # DELETED (the kubernetes backend's watch has listed by the time it is returned).
            events = backend.watch(stop=stop)
            try:
                backend.get(name)
            except NotFound:
                return stored
            for event in events:
                if event.workspace.name == name and event.type == "DELETED":
                    return stored
            if time.monotonic() >= deadline:
                raise KaitoError(
                    f"workspace {name} was still being deleted after {timeout:.0f} s",
                    hint=f"`kaito describe {name}` shows what it waits for",
                )
        finally:
            timer.cancel()
    return stored


def wait(
    name: str,
    *,
    backend: Backend | None = None,
    timeout: float | None = None,
    on_change: Callable[[StoredWorkspace], None] | None = None,
) -> StoredWorkspace:
    """Block until the workspace is ready, succeeded or failed, calling `on_change` on each
    status change (the progress a widget or a terminal shows). Driven by the backend's watch."""
    backend = backend or open_backend()
    stop = threading.Event()
    timer = threading.Timer(timeout, stop.set) if timeout else None
    if timer:
        timer.start()
    last = None
    try:
        for event in backend.watch(stop=stop):
            stored = event.workspace
            if stored.name != name:
                continue
            if event.type == "DELETED":
                raise KaitoError(f"workspace {name} was deleted while waiting for it")
            if on_change and stored.resource_version != last:
                on_change(stored)
            last = stored.resource_version
            if phase(stored) in ("ready", "succeeded", "failed"):
                return stored
    finally:
        if timer:
            timer.cancel()
    raise KaitoError(
        f"workspace {name} was not ready after {timeout:.0f} s",
        hint=f"`kaito describe {name}` shows its conditions and events",
    )


def nodes(*, backend: Backend | None = None) -> list[Node]:
    return (backend or open_backend()).nodes()


def logs(
    name: str,
    *,
    backend: Backend | None = None,
    follow: bool = False,
    tail: int | None = None,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    return (backend or open_backend()).logs(name, follow=follow, tail=tail, stop=stop)


# ------------------------------------------------------------------------------------ chat


def chat(
    name: str,
    messages: list[dict[str, str]],
    *,
    backend: Backend | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    adapter: str | None = None,
    reply: client.Reply | None = None,
) -> Iterator[str]:
    """Stream a chat answer from a workspace: its text pieces, as they come.

    `adapter` asks for one of the workspace's adapters by name (served as its own model).
    """
    backend = backend or open_backend()
    stored = backend.get(name)
    if stored.workspace.tuning is not None:
        raise KaitoError(
            f"workspace {name} is a tuning workspace; it serves no model",
            hint="deploy its adapter in an inference workspace, then chat with that",
        )
    if idle.SCALED_TO_ZERO in (stored.metadata.get("annotations") or {}):
        # Asleep after its idle timeout: a chat wakes it; the answer waits for its nodes.
        wake(name, backend=backend)
        raise KaitoError(
            f"workspace {name} was scaled to zero after being idle; waking it up now",
            hint=f"its nodes take a few minutes: `kaito wait {name}`, then chat again",
        )
    if phase(stored) != "ready":
        cond = stored.workspace.condition(c.INFERENCE_READY)
        why = f": {cond.reason}: {cond.message}" if cond and cond.status != "True" else ""
        raise KaitoError(
            f"workspace {name} is not ready to chat{why}",
            hint=f"`kaito describe {name}` shows why; `%kaito apply --wait` waits for it",
        )
    endpoint = backend.endpoint(name)
    body = client.chat_request(
        messages,
        model=adapter or endpoint.model,
        max_tokens=max_tokens,
        temperature=temperature,
    )
    return client.stream_chat(endpoint, body, reply=reply)


def wake(name: str, *, backend: Backend | None = None) -> StoredWorkspace:
    """Ask the controller to bring back a workspace its idle timeout scaled to zero: stamps
    `kaito.sh/wake-requested` with the time (newer than the scale-down wakes it)."""
    backend = backend or open_backend()
    stored = backend.get(name)
    if stored.workspace.tuning is not None:
        raise KaitoError(f"workspace {name} is a tuning workspace; there is nothing to wake")
    doc = stored.spec()
    annotations = dict(doc["metadata"].get("annotations") or {})
    annotations.pop(idle.SCALED_TO_ZERO, None)  # the controller's to remove, not ours to own
    annotations[idle.WAKE_REQUESTED] = idle.stamp()
    doc["metadata"]["annotations"] = annotations
    [applied] = backend.apply([doc])
    return applied.workspace


# ------------------------------------------------------------------------------ configuration


def use(
    backend: str,
    *,
    context: str | None = None,
    namespace: str | None = None,
    kubeconfig: str | None = None,
    subscription: str | None = None,
    resource_group: str | None = None,
    cluster: str | None = None,
) -> config.Settings:
    """Point every process (kernel, server, CLI) at a backend: writes the shared kaito.yaml.

    `aks` is the kubernetes backend reached by AKS coordinates (its kubeconfig comes from ARM).
    """
    path = config.config_path()
    settings = config.load(path, environ={})
    if backend == "aks":
        if not (subscription and resource_group and cluster):
            raise KaitoError(
                "`use aks` needs --subscription, --resource-group and --cluster",
                hint="e.g. %kaito use aks --subscription SUB --resource-group rg --cluster aks1",
            )
        settings.backend = "kubernetes"
        settings.provisioner = "aks"
        settings.azure.subscription_id = subscription
        settings.azure.resource_group = resource_group
        settings.azure.cluster_name = cluster
    elif backend in config.BACKENDS:
        settings.backend = backend
    else:
        raise KaitoError(f"unknown backend {backend!r}", hint="use local, kubernetes or aks")
    if context is not None:
        settings.context = context
    if namespace is not None:
        settings.namespace = namespace
    if kubeconfig is not None:
        settings.kubeconfig = kubeconfig
    config.save(settings, path)
    return config.load()
