"""A loopback HTTP server whose answers a test scripts, for what a registry or a data host could
do on purpose that a real one will not: manifests with hostile digests, blobs that lie about
their size, connections dropped mid-body, redirects and upload locations on other hosts, token
services named on other hosts or over plain HTTP. Every request is recorded.

    server = Adversary()                      # 127.0.0.1, a free port; Adversary("127.0.0.2")
    server.on("GET", r"/v2/.*/manifests/.*", json_reply(manifest))
    server.on("GET", r"/v2/.*/blobs/.*", dropping(blob, after=100))
    ... server.address ("host:port"), server.url, server.seen("GET", "/blobs/") ...
    server.close()
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kaito_jupyter.runtimes.local_server import LOOPBACK


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Answer = Callable[[BaseHTTPRequestHandler], None]


class Adversary:
    def __init__(self, host: str = LOOPBACK, port: int = 0):
        self.routes: list[tuple[str, re.Pattern, Answer]] = []
        self.requests: list[Seen] = []
        self.calls: dict[str, int] = {}  # route pattern -> times answered
        adversary = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                adversary.requests.append(
                    Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                )
                for method, pattern, answer in adversary.routes:
                    if method == self.command and pattern.search(self.path):
                        adversary.calls[pattern.pattern] = (
                            adversary.calls.get(pattern.pattern, 0) + 1
                        )
                        return answer(self)
                reply(404, b'{"errors": [{"code": "NOT_FOUND", "message": "not scripted"}]}')(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self.address = f"{host}:{self.port}"
        self.url = f"http://{self.address}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, method: str, pattern: str, answer: Answer) -> None:
        """Answer requests whose path matches `pattern` (a regex); the first match wins."""
        self.routes.append((method, re.compile(pattern), answer))

    def seen(self, method: str, fragment: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and fragment in r.path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    return answer


def json_reply(value, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return reply(
        status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})}
    )


def sequence(*answers: Answer) -> Answer:
    """Each call answers with the next of `answers`; the last repeats."""
    calls = iter(range(10**9))

    def answer(handler: BaseHTTPRequestHandler) -> None:
        answers[min(next(calls), len(answers) - 1)](handler)

    return answer


def dropping(body: bytes, *, after: int, headers: dict[str, str] | None = None) -> Answer:
    """Promise all of `body`, send its first `after` bytes, and close the connection."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:after])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(2)

    return answer


def ranged(body: bytes, headers: dict[str, str] | None = None) -> Answer:
    """Serve `body`, honouring `Range: bytes=N-` with a 206."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
        if not match:
            return reply(200, body, headers)(handler)
        start = int(match.group(1))
        content_range = f"bytes {start}-{len(body) - 1}/{len(body)}"
        return reply(206, body[start:], {"Content-Range": content_range, **(headers or {})})(
            handler
        )

    return answer


def endless(declared: int, *, limit: int) -> Answer:
    """Declare `declared` bytes and stream zeros until `limit` bytes, or the client leaves."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(declared))
        handler.end_headers()
        chunk, sent = b"\0" * 65536, 0
        try:
            while sent < limit:
                handler.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the client stopped reading: what it should do
        handler.close_connection = True

    return answer
