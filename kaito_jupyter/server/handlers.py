"""Thin REST handlers under /kaito/api/: parse, call the command layer, render wire models.

Every handler is authenticated (tornado's `authenticated` + Jupyter's authorizer, resource
"kaito") and XSRF-checked on writes by the Jupyter server itself. Blocking backend calls run
off the event loop; streams (logs, chat) are NDJSON, one wire model a line, each in its own
thread so a long `logs --follow` never holds the shared executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

import pydantic
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from kaito_jupyter import commands
from kaito_jupyter.backends.base import NotFound
from kaito_jupyter.client import ChatError
from kaito_jupyter.errors import BackendError, KaitoError, ValidationError
from kaito_jupyter.server import views, wire

RESOURCE = "kaito"
_END = object()


def classify(exc: KaitoError) -> tuple[int, str]:
    """HTTP status and wire code of a product error."""
    if isinstance(exc, NotFound):
        return 404, "not_found"
    if isinstance(exc, ValidationError):
        return 422, "invalid"
    if isinstance(exc, ChatError):
        return 502, "upstream"
    if isinstance(exc, BackendError):
        return 502, "backend"
    return 409, "rejected"


class KaitoHandler(ExtensionHandlerMixin, APIHandler):
    auth_resource = RESOURCE

    @property
    def kaito(self):
        """The running KaitoExtension (backend, settings, watcher)."""
        return self.extensionapp

    @property
    def backend(self):
        return self.kaito.kaito_backend

    def fail(self, status: int, code: str, message: str, **extra: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(wire.ErrorBody(code=code, message=message, **extra).model_dump_json())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Tornado's own errors (403 unauthenticated, 405, ...) in the same {code, message} shape.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            message = HTTPStatus(status_code).phrase
        code = {403: "forbidden", 401: "unauthorized", 404: "not_found", 405: "bad_method"}
        self.set_header("Content-Type", "application/json")
        self.finish(
            wire.ErrorBody(
                code=code.get(status_code, "internal"), message=message
            ).model_dump_json()
        )

    def reply(self, model: pydantic.BaseModel, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(model.model_dump_json())

    def body(self, model: type[pydantic.BaseModel]):
        """The request body as `model`, or None after answering 400 with the field at fault."""
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            self.fail(400, "bad_request", f"the request body is not JSON: {exc}")
            return None
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}"
                for e in exc.errors()
            ]
            self.fail(
                400, "bad_request", "invalid request: " + "; ".join(problems), issues=problems
            )
            return None

    async def call(self, fn: Callable[[], Any]) -> tuple[bool, Any]:
        """Run a blocking core call off the loop; answer its product error as JSON."""
        try:
            return True, await asyncio.to_thread(fn)
        except KaitoError as exc:
            status, code = classify(exc)
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(views.error(exc, code).model_dump_json())
            return False, None
        except Exception:
            self.log.exception("kaito: unexpected error")
            self.fail(500, "internal", "internal error; the Jupyter server's log has the details")
            return False, None

    # ---------------------------------------------------------------------------- streams

    async def stream(
        self,
        start: Callable[[], Iterator[Any]],
        render: Callable[[Any], str],
        stop: threading.Event,
    ) -> None:
        """Answer with NDJSON: `start()` (in a thread) gives the iterator; a product error
        before its first item is an ordinary JSON error with its status, later ones a line."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        ready: asyncio.Future = loop.create_future()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def settle(value: Any) -> None:
            def _set() -> None:
                if not ready.done():
                    ready.set_result(value)

            loop.call_soon_threadsafe(_set)

        def pump() -> None:
            try:
                it = iter(start())
                first = next(it, _END)
            except BaseException as exc:
                settle(exc)
                return
            settle(None)
            try:
                if first is not _END:
                    put(render(first))
                for item in it:
                    if stop.is_set():
                        break
                    put(render(item))
            except KaitoError as exc:
                put(render_error(exc))
            except Exception:
                self.log.exception("kaito: stream failed")
                put(json.dumps({"error": {"code": "internal", "message": "the stream failed"}}))
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()
                put(_END)

        threading.Thread(target=pump, name="kaito-stream", daemon=True).start()
        early = await ready
        if isinstance(early, KaitoError):
            status, code = classify(early)
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(views.error(early, code).model_dump_json())
            return
        if isinstance(early, BaseException):
            self.log.error("kaito: stream failed to start: %r", early)
            self.fail(500, "internal", "internal error; the Jupyter server's log has the details")
            return
        self.set_header("Content-Type", "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # proxies must not buffer a stream
        while True:
            line = await queue.get()
            if line is _END:
                break
            try:
                self.write(line + "\n")
                await self.flush()
            except StreamClosedError:
                stop.set()
                break
        if not self._finished:
            with contextlib.suppress(StreamClosedError):  # the client may be gone
                self.finish()


def render_error(exc: KaitoError) -> str:
    _, code = classify(exc)
    return json.dumps({"error": views.error(exc, code).model_dump()})


class WorkspacesHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def get(self):
        namespace = self.get_query_argument("namespace", None)
        ok, items = await self.call(lambda: self.kaito.summaries(namespace))
        if ok:
            self.reply(wire.WorkspaceList(items=items))

    @web.authenticated
    @authorized
    async def post(self):
        """Apply Workspace YAML (`kaito apply -f`)."""
        req = self.body(wire.ApplyRequest)
        if req is None:
            return
        ok, result = await self.call(
            lambda: commands.apply(
                req.yaml,
                source="<request>",
                backend=self.backend,
                dry_run=req.dryRun,
                namespace=self.kaito.settings_now().namespace,
            )
        )
        if ok:
            self.reply(views.applied(result), 200 if req.dryRun else 201)


class DeployHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def post(self):
        """Deploy a preset (the sidebar's Deploy form, `kaito deploy`)."""
        req = self.body(wire.DeployRequest)
        if req is None:
            return

        def deploy():
            namespace = (
                None if self.backend.name == "local" else self.kaito.settings_now().namespace
            )
            data = commands.deploy_workspace(
                req.preset,
                name=req.name,
                instance_type=req.instanceType,
                count=req.count,
                namespace=namespace,
            )
            return commands.apply_workspace(data, backend=self.backend)

        ok, result = await self.call(deploy)
        if ok:
            self.reply(views.applied([result]), 201)


class WorkspaceHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str):
        namespace = self.get_query_argument("namespace", None)
        ok, result = await self.call(lambda: self.kaito.detail(name, namespace))
        if ok:
            self.reply(result)

    @web.authenticated
    @authorized
    async def delete(self, name: str):
        namespace = self.get_query_argument("namespace", None)

        def delete():
            stored = self.backend.delete(name, namespace)
            self.kaito.kick_controller()
            return views.summary(stored)

        ok, result = await self.call(delete)
        if ok:
            self.reply(result, 202)


class EventsHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str):
        namespace = self.get_query_argument("namespace", None)
        ok, events = await self.call(lambda: self.backend.events(name, namespace))
        if ok:
            self.reply(wire.EventList(items=[views.event(e) for e in events]))


class LogsHandler(KaitoHandler):
    stop: threading.Event | None = None

    @web.authenticated
    @authorized
    async def get(self, name: str):
        namespace = self.get_query_argument("namespace", None)
        follow = self.get_query_argument("follow", "false").lower() in ("1", "true", "yes")
        tail_arg = self.get_query_argument("tail", None)
        tail = None
        if tail_arg is not None:
            if not tail_arg.isdigit() or not 0 < int(tail_arg) <= 100_000:
                self.fail(400, "bad_request", "tail must be a whole number from 1 to 100000")
                return
            tail = int(tail_arg)
        self.stop = threading.Event()
        await self.stream(
            lambda: self.backend.logs(name, namespace, follow=follow, tail=tail, stop=self.stop),
            lambda line: wire.LogLine(line=str(line).rstrip("\n")).model_dump_json(),
            self.stop,
        )

    def on_connection_close(self) -> None:
        if self.stop is not None:
            self.stop.set()


class ChatHandler(KaitoHandler):
    """A streamed chat with a workspace: the browser never talks to the endpoint itself."""

    stop: threading.Event | None = None

    @web.authenticated
    @authorized
    async def post(self, name: str):
        req = self.body(wire.ChatRequest)
        if req is None:
            return
        self.stop = threading.Event()
        messages = [m.model_dump() for m in req.messages]
        reply = commands.client.Reply(text="")
        pieces = _then_done(
            lambda: commands.chat(
                name,
                messages,
                backend=self.backend,
                max_tokens=req.maxTokens,
                temperature=req.temperature,
                reply=reply,
            ),
            reply,
        )
        await self.stream(pieces, lambda chunk: chunk.model_dump_json(), self.stop)

    def on_connection_close(self) -> None:
        if self.stop is not None:
            self.stop.set()


def _then_done(start, reply) -> Callable[[], Iterator[wire.ChatChunk]]:
    def run() -> Iterator[wire.ChatChunk]:
        for piece in start():
            yield wire.ChatChunk(delta=piece)
        yield wire.ChatChunk(done=True, finishReason=reply.finish_reason)

    return run


class NodesHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def get(self):
        ok, nodes = await self.call(self.backend.nodes)
        if ok:
            self.reply(wire.NodeList(items=[views.node(n) for n in nodes]))


class PresetsHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def get(self):
        deprecated = self.get_query_argument("deprecated", "false").lower() in ("1", "true")
        ok, result = await self.call(lambda: views.presets(include_deprecated=deprecated))
        if ok:
            self.reply(result)


class SkusHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def get(self):
        cloud = self.get_query_argument("cloud", None)
        if cloud not in (None, "azure", "aws"):
            self.fail(400, "bad_request", f"cloud must be azure or aws, not {cloud!r}")
            return
        ok, result = await self.call(lambda: views.skus(cloud))
        if ok:
            self.reply(result)


class BackendHandler(KaitoHandler):
    @web.authenticated
    @authorized
    async def get(self):
        ok, info = await self.call(self.kaito.backend_info)
        if ok:
            self.reply(info)

    @web.authenticated
    @authorized
    async def put(self):
        """The switcher: point this server (and kaito.yaml, so kernels too) at a backend."""
        req = self.body(wire.UseRequest)
        if req is None:
            return
        ok, info = await self.call(
            lambda: self.kaito.switch(req.backend, context=req.context, namespace=req.namespace)
        )
        if ok:
            self.reply(info)


NAME = r"(?P<name>[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)"


def routes(base: str) -> list[tuple[str, type]]:
    api = base.rstrip("/") + "/kaito/api"  # the server adds its base_url
    return [
        (rf"{api}/workspaces", WorkspacesHandler),
        (rf"{api}/deploy", DeployHandler),
        (rf"{api}/workspaces/{NAME}", WorkspaceHandler),
        (rf"{api}/workspaces/{NAME}/events", EventsHandler),
        (rf"{api}/workspaces/{NAME}/logs", LogsHandler),
        (rf"{api}/workspaces/{NAME}/chat", ChatHandler),
        (rf"{api}/nodes", NodesHandler),
        (rf"{api}/presets", PresetsHandler),
        (rf"{api}/skus", SkusHandler),
        (rf"{api}/backend", BackendHandler),
    ]
