"""The Jupyter server extension: configuration, the backend, the reconciler and the event feed.

Configured with traitlets (`c.KaitoExtension.backend = "kubernetes"`, ...); anything left unset
comes from the shared kaito.yaml, so the server, the kernels and the CLI agree. On start it makes
sure a reconciler runs (in this process when the backend offers `run_controller`, else through
`ensure_controller`, whose lease keeps one active across servers) and follows the backend's
watch, pushing each change through the server's EventLogger (schema WORKSPACE_EVENT) to every
subscribed browser: nothing polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import threading
from pathlib import Path
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Unicode

from kaito_jupyter import commands, config
from kaito_jupyter.backends import Backend, WatchEvent, open_backend
from kaito_jupyter.errors import KaitoError
from kaito_jupyter.server import views, wire
from kaito_jupyter.server.handlers import routes

WORKSPACE_EVENT = "https://kaito.sh/kaito-jupyter/events/workspace"
EVENT_SCHEMA = Path(__file__).parent / "events" / "workspace.yaml"


class KaitoExtension(ExtensionApp):
    name = "kaito_jupyter"
    description = "Kaito workspaces: REST API, live events and the reconciler"

    backend = Unicode(
        None, allow_none=True, config=True, help="local or kubernetes (default: kaito.yaml)"
    )
    kubeconfig = Unicode(None, allow_none=True, config=True, help="kubeconfig file")
    context = Unicode(None, allow_none=True, config=True, help="kubeconfig context")
    namespace = Unicode(None, allow_none=True, config=True, help="Kubernetes namespace")
    subscription_id = Unicode(None, allow_none=True, config=True, help="AKS: Azure subscription")
    resource_group = Unicode(None, allow_none=True, config=True, help="AKS: resource group")
    cluster_name = Unicode(None, allow_none=True, config=True, help="AKS: cluster name")
    reconcile = Bool(
        True,
        config=True,
        help="Run (or ensure) the reconciler while the server runs. Off: this server is only a "
        "client of whichever controller holds the lease.",
    )
    backend_factory = Unicode(
        None,
        allow_none=True,
        config=True,
        help="'module:callable' taking the Settings and returning a Backend (embedding, tests)",
    )

    # ------------------------------------------------------------------------ lifecycle

    def initialize_settings(self) -> None:
        self.kaito_backend: Backend = self._open()
        self.controller_note: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watch_stop = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._controller_stop = threading.Event()
        self._controller_thread: threading.Thread | None = None
        self._prices: dict[str, float] = {}
        self.serverapp.event_logger.register_event_schema(EVENT_SCHEMA)

    def initialize_handlers(self) -> None:
        self.handlers.extend(routes(""))

    async def _start_jupyter_server_extension(self, serverapp) -> None:
        self._loop = asyncio.get_running_loop()
        self._start_watch()
        self._start_controller()

    async def stop_extension(self) -> None:
        self._controller_stop.set()
        self._watch_stop.set()
        for thread in (self._controller_thread, self._watch_thread):
            if thread is not None:
                await asyncio.to_thread(thread.join, 10)

    # ------------------------------------------------------------------------ backend

    def settings_now(self) -> config.Settings:
        """kaito.yaml and the environment, then this server's traitlets over them."""
        settings = config.load()
        for trait in ("backend", "kubeconfig", "context", "namespace"):
            value = getattr(self, trait)
            if value is not None:
                setattr(settings, trait, value)
        for trait in ("subscription_id", "resource_group", "cluster_name"):
            value = getattr(self, trait)
            if value is not None:
                setattr(settings.azure, trait, value)
        if settings.backend not in config.BACKENDS:
            raise KaitoError(
                f"KaitoExtension.backend is {settings.backend!r}",
                hint=f"use one of {', '.join(config.BACKENDS)}",
            )
        return settings

    def _open(self) -> Backend:
        settings = self.settings_now()
        if self.backend_factory:
            module, _, attr = self.backend_factory.partition(":")
            return getattr(importlib.import_module(module), attr)(settings)
        return open_backend(settings)

    def backend_info(self) -> wire.BackendInfo:
        settings = self.settings_now()
        return wire.BackendInfo(
            backend=self.kaito_backend.name,
            target=self.kaito_backend.target(),
            namespace=settings.namespace,
            context=settings.context,
            reconcile=self.reconcile,
            controller=self.controller_note,
        )

    def switch(
        self, backend: str, *, context: str | None = None, namespace: str | None = None
    ) -> wire.BackendInfo:
        """Point this server and kaito.yaml at another backend; restart the watch on it.

        The new backend is opened first: if it cannot be (no kubeconfig, say), nothing changes,
        neither this server nor kaito.yaml."""
        before = (self.backend, self.context, self.namespace)
        self.backend = backend
        if context is not None:
            self.context = context
        if namespace is not None:
            self.namespace = namespace
        try:
            new = self._open()
            commands.use(backend, context=context, namespace=namespace)
        except BaseException:
            self.backend, self.context, self.namespace = before
            raise
        self._stop_watch()
        self._controller_stop.set()
        self.kaito_backend = new
        self._controller_stop = threading.Event()
        self._start_watch()
        self._start_controller()
        return self.backend_info()

    # ------------------------------------------------------------------------ reconciler

    def _start_controller(self) -> None:
        """The reconciler in this process, as `kaito controller` runs it: it stands by until it
        holds the backend's lease, so one is active however many servers share the backend.
        Without an in-process controller for the backend, ensure_controller starts or finds one."""
        if not self.reconcile:
            self.controller_note = "reconcile is off: another process must run the controller"
            return
        run = self._controller_entry()
        target = self.kick_controller if run is None else self._guard
        args = () if run is None else (run, self._controller_stop)
        self._controller_thread = threading.Thread(
            target=target, args=args, name="kaito-controller", daemon=True
        )
        self._controller_thread.start()

    def _controller_entry(self):
        """A callable `run(stop=...)` that reconciles until `stop`, or None."""
        backend = self.kaito_backend
        settings = self.settings_now()
        own = getattr(backend, "run_controller", None)
        if callable(own) and backend.name == "kubernetes":
            # It says why when it does not reconcile (Kaito's own operator runs, say).
            return lambda stop: own(stop=stop, namespace=settings.namespace)
        if callable(own):
            return own
        if self.backend_factory:  # an embedded backend brings its own controller, or none
            return None
        from kaito_jupyter import backends

        entry = getattr(backends, "run_controller", None)
        if entry is None:
            return None
        return lambda stop: entry(settings, backend.name, stop=stop)

    def _guard(self, run, stop: threading.Event) -> None:
        self.controller_note = "this server runs the reconciler (or stands by for the lease)"
        try:
            said = run(stop=stop)
            if isinstance(said, str) and said:
                self.controller_note = said
        except KaitoError as exc:
            self.controller_note = f"no reconciler in this server: {exc.message}"
            self.log.warning("kaito: %s", self.controller_note)
            self.kick_controller()
        except Exception:
            self.log.exception("kaito: the reconciler stopped")

    def kick_controller(self) -> None:
        """After a change: make sure something reconciles it (the lease keeps one)."""
        if not self.reconcile:
            return
        try:
            note = self.kaito_backend.ensure_controller()
        except KaitoError as exc:
            note = f"no reconciler: {exc.message}"
            self.log.warning("kaito: %s", note)
        if note:
            self.controller_note = note

    # ------------------------------------------------------------------------ reading

    def _endpoint(self, summary: wire.WorkspaceSummary, backend: Backend) -> str | None:
        if summary.phase != "ready" or summary.mode != "inference":
            return None
        try:
            return backend.endpoint(summary.name, summary.namespace).url
        except KaitoError:
            return None

    def _summary(self, stored, backend: Backend) -> wire.WorkspaceSummary:
        row = views.summary(stored, prices=self._prices)
        endpoint = self._endpoint(row, backend)
        return row.model_copy(update={"endpoint": endpoint}) if endpoint else row

    def summaries(self, namespace: str | None) -> list[wire.WorkspaceSummary]:
        backend = self.kaito_backend
        self._prices = views.prices(backend.nodes())
        return [self._summary(s, backend) for s in backend.list(namespace)]

    def detail(self, name: str, namespace: str | None) -> wire.WorkspaceDetail:
        backend = self.kaito_backend
        stored = backend.get(name, namespace)
        row = self._summary(stored, backend)
        return views.detail(stored, backend.events(name, namespace)).model_copy(
            update={"summary": row}
        )

    # ------------------------------------------------------------------------ the feed

    def _start_watch(self) -> None:
        if self._loop is None:
            return
        self._watch_stop = threading.Event()
        self._watch_thread = threading.Thread(
            target=self._follow,
            args=(self.kaito_backend, self._watch_stop, self._loop),
            name="kaito-watch",
            daemon=True,
        )
        self._watch_thread.start()

    def _stop_watch(self) -> None:
        self._watch_stop.set()

    def _follow(self, backend: Backend, stop: threading.Event, loop) -> None:
        """The backend's watch, re-opened with backoff if it breaks, until `stop`."""
        delay = 1.0
        while not stop.is_set():
            try:
                for event in backend.watch(stop=stop):
                    if stop.is_set():
                        return
                    data = self._change(event, backend)
                    loop.call_soon_threadsafe(self._emit, data)
                    delay = 1.0
            except Exception as exc:
                self.log.warning("kaito: the watch broke (%s); again in %.0f s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
            else:
                stop.wait(delay)  # the watch ended (its server closed it): re-open it

    def _change(self, event: WatchEvent, backend: Backend) -> dict[str, Any]:
        stored = event.workspace
        row = None
        if event.type != "DELETED":
            nodes = (stored.status.worker_nodes or []) if stored.data.get("status") else []
            if any(n not in self._prices for n in nodes):
                with contextlib.suppress(KaitoError):
                    self._prices = views.prices(backend.nodes())
            row = self._summary(stored, backend)
        return wire.WorkspaceChanged(
            type=event.type, name=stored.name, namespace=stored.namespace, workspace=row
        ).model_dump(mode="json")

    def _emit(self, data: dict[str, Any]) -> None:
        self.serverapp.event_logger.emit(schema_id=WORKSPACE_EVENT, data=data)
