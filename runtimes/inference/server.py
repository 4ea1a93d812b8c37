"""The tornado application and its lifecycle: listen, serve, drain on SIGTERM, stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import tornado.httpserver
import tornado.web

from .handlers import NotFound, State, routes
from .metrics import Metrics

log = logging.getLogger("kaito.inference")


def application(state: State) -> tornado.web.Application:
    return tornado.web.Application(
        routes(state),
        default_handler_class=NotFound,
        default_handler_args={"state": state},
    )


class Server:
    def __init__(self, served, engine, *, max_body: int = 4 << 20, drain_timeout: float = 30.0):
        self.engine = engine
        self.state = State(served, engine, Metrics(engine), max_body=max_body)
        self.drain_timeout = drain_timeout
        self.http: tornado.httpserver.HTTPServer | None = None
        self._stopped = asyncio.Event()

    def listen(self, port: int, host: str) -> None:
        # tornado's own cap sits well above ours: bodies between the two are read and
        # answered with a 413; beyond it tornado drops the connection.
        self.http = tornado.httpserver.HTTPServer(
            application(self.state),
            max_body_size=max(64 << 20, 16 * self.state.max_body),
            idle_connection_timeout=3600,
        )
        self.http.listen(port, host)

    async def run(self, port: int, host: str) -> None:
        self.listen(port, host)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: asyncio.ensure_future(self.shutdown(s)))
        log.info("listening on http://%s:%d", host, port)
        await self._stopped.wait()

    async def shutdown(self, sig=None) -> None:
        """Graceful drain: refuse new requests (503), finish running ones, then stop."""
        if self.state.draining:
            return
        self.state.draining = True
        log.info(
            "%s: draining (%d running, %d queued, up to %.0f s)",
            signal.Signals(sig).name if sig else "shutdown",
            self.engine.running,
            self.engine.queue_depth,
            self.drain_timeout,
        )
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.drain_timeout
        finished = await loop.run_in_executor(None, self.engine.drain, self.drain_timeout)
        # Let handlers write their last bytes before the listener goes away.
        while self.state.active and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.05)
        if self.http is not None:
            self.http.stop()
            await self.http.close_all_connections()
        await loop.run_in_executor(None, self.engine.stop)
        self.state.prepare.shutdown(wait=False, cancel_futures=True)
        log.info("stopped (%s)", "drained" if finished else "drain timed out")
        self._stopped.set()
