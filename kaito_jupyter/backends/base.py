"""What every backend offers, and the values it returns.

A backend is where workspaces live and run: `local` (a SQLite store and supervised processes
on this machine) or `kubernetes` (Workspace custom resources, reconciled into workloads on GPU
nodes). The command layer (`kaito_jupyter.commands`) is written against this interface only;
admission (parsing and Kaito's rules) happens there, before a backend sees a workspace.

Calls block (they do network or disk I/O); async callers such as the Jupyter server run them
in a thread. `watch` blocks until an event or `stop` is set.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from kaito_jupyter.api.wire import StoredWorkspace
from kaito_jupyter.errors import BackendError, Issue


class NotFound(BackendError):
    """The named workspace does not exist in this backend."""

    def __init__(self, name: str, namespace: str | None = None, *, where: str = ""):
        ns = f" in namespace {namespace}" if namespace else ""
        super().__init__(
            f'workspace "{name}" not found{ns}{f" ({where})" if where else ""}',
            hint="`kaito get` lists the workspaces",
        )
        self.name = name


@dataclass(frozen=True)
class Applied:
    workspace: StoredWorkspace
    action: Literal["created", "configured", "unchanged"]


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    workspace: StoredWorkspace


@dataclass(frozen=True)
class Event:
    """What the user should see happened to a workspace (a Kubernetes Event, or its twin)."""

    time: str  # RFC 3339
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    object: str = ""  # e.g. "Workspace/phi-3", "Pod/phi-3-0"
    count: int = 1


@dataclass(frozen=True)
class Node:
    """A node that can run workspaces: a GPU node of the cluster, or this machine."""

    name: str
    instance_type: str | None
    gpu_model: str | None
    gpus: int  # allocatable
    gpus_used: int
    gpu_memory_gib: float | None = None  # per GPU
    ready: bool = True
    workspaces: tuple[str, ...] = ()  # "namespace/name" of the workspaces placed on it
    price_per_hour: float | None = None  # list price of the instance type, where known
    labels: dict[str, str] = field(default_factory=dict)
    created: str | None = None  # creationTimestamp (RFC 3339): cost so far counts from here


@dataclass(frozen=True)
class Endpoint:
    """How to reach a workspace's inference server over HTTP.

    `url` is the server's base (requests go to url + "/v1/chat/completions", url + "/chat");
    through the Kubernetes API server's service proxy it carries the proxy path, `headers` the
    credentials and `ssl_context` the cluster's CA.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl_context: ssl.SSLContext | None = None
    model: str | None = None  # the served model name clients ask for

    def __repr__(self) -> str:  # never print credentials
        return f"Endpoint(url={self.url!r}, model={self.model!r})"


@runtime_checkable
class Backend(Protocol):
    name: str  # "local" or "kubernetes"

    def target(self) -> str:
        """Where this backend points, for people: "local (~/.local/share/jupyter/kaito)",
        "kubernetes (context aks-1, namespace ml)"."""

    def admission_issues(self, data: dict) -> list[Issue]:
        """Checks this backend adds to Kaito's rules (the local machine's GPU fit, say)."""

    def apply(self, documents: list[dict], *, dry_run: bool = False) -> list[Applied]:
        """Create or update admitted workspaces, all or none."""

    def get(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        """One workspace; NotFound if there is none."""

    def list(self, namespace: str | None = None) -> list[StoredWorkspace]: ...

    def delete(self, name: str, namespace: str | None = None) -> StoredWorkspace:
        """Begin deleting; the controller removes what it created, then the workspace."""

    def watch(
        self, namespace: str | None = None, *, stop: threading.Event | None = None
    ) -> Iterator[WatchEvent]:
        """Every workspace as ADDED first, then each change as it happens, until `stop`."""

    def events(self, name: str, namespace: str | None = None) -> list[Event]: ...

    def logs(
        self,
        name: str,
        namespace: str | None = None,
        *,
        follow: bool = False,
        tail: int | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[str]:
        """The workload's log lines (the runtime's stderr/stdout)."""

    def nodes(self) -> list[Node]: ...

    def endpoint(self, name: str, namespace: str | None = None) -> Endpoint:
        """Where the workspace's inference server answers; BackendError if it does not yet."""

    def ensure_controller(self) -> str | None:
        """Make sure something reconciles this backend's workspaces (local: start a detached
        controller when no live leader holds the lease; kubernetes: find Kaito's operator or
        a leader). Returns a sentence for the user when that is worth saying."""
