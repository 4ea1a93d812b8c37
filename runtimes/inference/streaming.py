"""One request's output on the server's thread: tokens from the engine become text deltas,
stop strings end the sequence early, and the handler reads events from an asyncio queue."""

from __future__ import annotations

import asyncio
import time

from .generation import CANCELLED, STOP, Sequence
from .text import Detokenizer, StopMatcher


class Stream:
    def __init__(self, job, served, engine, loop: asyncio.AbstractEventLoop):
        self.job = job
        self.engine = engine
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.detokenizer = Detokenizer(served.tokenizer)
        self.stops = StopMatcher(job.stops)
        self.unit: list[Sequence] | None = None
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        self.first_token_at: float | None = None

    def sink(self, seq: Sequence, tokens: list[int], reason: str | None) -> None:
        """Engine thread: hand over to the server's thread."""
        count = len(seq.generated)
        self.loop.call_soon_threadsafe(self._receive, tokens, reason, count, seq.error)

    def _receive(self, tokens: list[int], reason: str | None, count: int, error) -> None:
        if self.finish_reason is not None:
            return  # ended already (a stop string), the rest is in flight
        if tokens and self.first_token_at is None:
            self.first_token_at = time.monotonic()
        self.completion_tokens = max(self.completion_tokens, count)
        text = self.detokenizer.push(tokens) if tokens else ""
        if reason is not None:
            text += self.detokenizer.flush()
        text = self.stops.push(text)
        if self.stops.stopped:
            reason = STOP
            if self.unit is not None:
                self.engine.cancel(self.unit, STOP)
        elif reason is not None:
            text += self.stops.flush()
        if reason is not None:
            self.finish_reason = reason
            self.error = error
        if text or reason is not None:
            self.queue.put_nowait((text, reason))

    def close(self) -> None:
        """The client went away: free the slot, wake the reader."""
        if self.finish_reason is None:
            self.finish_reason = CANCELLED
            if self.unit is not None:
                self.engine.cancel(self.unit, CANCELLED)
            self.queue.put_nowait(("", CANCELLED))

    async def events(self):
        """(text delta, finish reason or None) until the finish reason."""
        while True:
            text, reason = await self.queue.get()
            yield text, reason
            if reason is not None:
                return
