"""The HTTP handlers: thin, they parse, submit to the engine and present the answer.

Every error a client can cause is a 4xx with an OpenAI-style error body; a 500 means a bug
or a failed forward pass, never a bad request. Bodies are read in chunks so that an oversized
one is answered with a 413 (after draining it) instead of a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tornado import iostream
from tornado.web import HTTPError, RequestHandler, stream_request_body

from . import kaito_api, openai_api
from .engine import Draining, QueueFull
from .generation import CANCELLED, ERROR, SHUTDOWN
from .responses import Responder, sse
from .streaming import Stream
from .validation import ClientError, parse_json

log = logging.getLogger("kaito.inference")


@dataclass
class State:
    served: object  # served.Served
    engine: object  # engine.Engine
    metrics: object  # metrics.Metrics
    max_body: int = 4 << 20
    max_beams: int = kaito_api.MAX_BEAMS
    draining: bool = False
    active: set = field(default_factory=set)  # handlers with a request in flight
    # Parsing, chat templates and tokenization run here, off the event loop: a 4 MiB prompt
    # takes about 4 s of CPU to tokenize (SmolLM2's tokenizer), while the loop streams every
    # other request's tokens.
    prepare: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="inference-prepare")
    )


class JSONHandler(RequestHandler):
    def initialize(self, state: State) -> None:
        self.state = state

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")

    def send_json(self, body: dict, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, ensure_ascii=False))

    def send_client_error(self, error: ClientError) -> None:
        for name, value in error.headers.items():
            self.set_header(name, value)
        self.send_json(error.body(), error.status)

    def write_error(self, status_code: int, **kwargs) -> None:
        # tornado's own errors (404, 405, 500 from a bug) in the same shape as ours.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = (
            self._reason if not isinstance(exc, HTTPError) else (exc.log_message or self._reason)
        )
        kind = "invalid_request_error" if status_code < 500 else "server_error"
        self.set_header("Content-Type", "application/json")
        self.finish(
            json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})
        )


class NotFound(JSONHandler):
    def prepare(self) -> None:
        raise HTTPError(404, f"no route for {self.request.method} {self.request.path}")


class Health(JSONHandler):
    # The local backend's supervisor sets this token in the server's environment and checks it
    # here, so a new controller adopts this very server, never another one on a reused port.
    INSTANCE = os.environ.get("KAITO_RUNTIME_INSTANCE")

    def get(self) -> None:
        instance = {"instance": self.INSTANCE} if self.INSTANCE else {}
        if self.state.draining:
            self.send_json({"status": "Draining", **instance}, 503)
        else:
            self.send_json({"status": "Healthy", **instance})


class Models(JSONHandler):
    def get(self) -> None:
        self.send_json({"object": "list", "data": self.state.served.model_cards()})


class MetricsHandler(RequestHandler):
    def initialize(self, state: State) -> None:
        self.state = state

    def get(self) -> None:
        self.set_header("Content-Type", self.state.metrics.content_type)
        self.finish(self.state.metrics.render())


@stream_request_body
class Generate(JSONHandler):
    """POST handlers that generate: the body arrives in chunks, then `job()` parses it."""

    api = ""

    def prepare(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_big = False
        self.stream: Stream | None = None
        self.gone = False  # the client left before its request reached the engine
        self.status = 200
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self.state.max_body:
            self.too_big = True

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.state.max_body:
            self.too_big = True
        if self.too_big:
            self.chunks = []  # keep reading to answer with a 413, but keep nothing
        else:
            self.chunks.append(chunk)

    def job(self, body: dict):
        raise NotImplementedError

    def _parse(self, raw: bytes):
        """The request body to a Job: JSON, validation, chat template, tokens (in `prepare`)."""
        return self.job(parse_json(raw))

    async def post(self) -> None:
        self.state.active.add(self)
        try:
            await self._post()
        except ClientError as error:
            self.status = error.status
            if not self._finished:
                self.send_client_error(error)
        except Exception:  # a bug, not the client's doing: a 500, and keep serving
            log.exception("request failed")
            self.status = 500
            if not self._finished and not self._headers_written:
                body = {"message": "internal error", "type": "server_error", "param": None}
                self.send_json({"error": {**body, "code": None}}, 500)
        finally:
            self.state.active.discard(self)
            stream = self.stream if self.stream is not None and self.stream.unit else None
            model = stream.job.model if stream is not None else "-"
            self.state.metrics.observe(self.api, self.status, model, stream)

    async def _post(self) -> None:
        if self.too_big:
            raise ClientError(
                f"the request body is larger than {self.state.max_body} bytes",
                status=413,
                code="request_too_large",
            )
        if self.state.draining:
            raise _draining()
        raw, self.chunks = b"".join(self.chunks), []
        loop = asyncio.get_running_loop()
        job = await loop.run_in_executor(self.state.prepare, self._parse, raw)
        if self.gone:
            self.status = 499
            return
        if self.state.draining:
            raise _draining()
        stream = self.stream = Stream(job, self.state.served, self.state.engine, loop)
        try:
            stream.unit = self.state.engine.submit(job.request, stream.sink)
        except QueueFull as exc:
            raise ClientError(
                str(exc),
                status=429,
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": "1"},
            ) from None
        except Draining:
            raise _draining() from None
        if job.stream:
            await self._stream_events(stream)
        else:
            await self._complete(stream)

    async def _complete(self, stream: Stream) -> None:
        parts = []
        async for text, _ in stream.events():
            parts.append(text)
        reason = stream.finish_reason
        if reason == CANCELLED:
            self.status = 499  # the client closed the connection; nobody reads an answer
            return
        if reason in (ERROR, SHUTDOWN):
            self.status = 503 if reason == SHUTDOWN else 500
            self.send_json(_server_error(stream, reason), self.status)
            return
        responder = Responder(stream.job)
        self.send_json(responder.complete("".join(parts), reason, stream.completion_tokens))

    async def _stream_events(self, stream: Stream) -> None:
        responder = Responder(stream.job)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        try:
            self.write(sse(responder.chunk(stream.job.prefix_text or None, None, first=True)))
            await self.flush()
            async for text, reason in stream.events():
                if reason == CANCELLED:
                    self.status = 499
                    return
                if reason in (ERROR, SHUTDOWN):
                    self.write(sse(_server_error(stream, reason)))
                elif text or reason is not None:
                    self.write(sse(responder.chunk(text or None, reason)))
                if reason is not None and stream.job.include_usage:
                    self.write(sse(responder.usage_chunk(stream.completion_tokens)))
                if reason is not None:
                    self.write(sse("[DONE]"))
                await self.flush()
            self.finish()
        except iostream.StreamClosedError:
            self.status = 499
            stream.close()

    def on_connection_close(self) -> None:
        self.gone = True
        if self.stream is not None:
            self.stream.close()


class ChatCompletions(Generate):
    api = "chat"

    def job(self, body: dict):
        return openai_api.chat_job(body, self.state.served)


class Completions(Generate):
    api = "completion"

    def job(self, body: dict):
        return openai_api.completion_job(body, self.state.served)


class KaitoChat(Generate):
    api = "kaito"

    def job(self, body: dict):
        return kaito_api.chat_job(body, self.state.served, self.state.max_beams)


def _draining() -> ClientError:
    return ClientError(
        "the server is shutting down", status=503, type="server_error", code="shutting_down"
    )


def _server_error(stream: Stream, reason: str) -> dict:
    message = stream.error or ("the server shut down" if reason == SHUTDOWN else "failed")
    return {"error": {"message": message, "type": "server_error", "param": None, "code": reason}}


def routes(state: State) -> list:
    args = {"state": state}
    return [
        (r"/health", Health, args),
        (r"/healthz", Health, args),
        (r"/v1/models", Models, args),
        (r"/metrics", MetricsHandler, args),
        (r"/v1/chat/completions", ChatCompletions, args),
        (r"/v1/completions", Completions, args),
        (r"/chat", KaitoChat, args),
    ]
