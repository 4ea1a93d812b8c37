"""The engine: a thread that runs iterations of the scheduler's plan through a model runner.

HTTP handlers submit requests and cancel them from the server's thread; everything else
(scheduling, the forward pass, sampling) happens on the engine thread, which hands tokens back
through each request's sink. One iteration failing (a bad adapter, out of memory) fails the
sequences in it, not the server.
"""

from __future__ import annotations

import logging
import threading
import time

from . import beam as beam_search
from .generation import (
    CANCELLED,
    ERROR,
    LENGTH,
    SHUTDOWN,
    STOP,
    GenerationRequest,
    Sequence,
    Sink,
)
from .sampling import choose
from .scheduler import Move, Scheduler

log = logging.getLogger("kaito.inference")


class QueueFull(Exception):
    """The waiting queue is at its bound; the client should retry later (HTTP 429)."""


class Draining(Exception):
    """The server is shutting down and takes no new requests (HTTP 503)."""


class Engine:
    def __init__(
        self,
        runner,
        *,
        context_length: int,
        max_slots: int = 64,
        max_waiting: int = 256,
        kv_budget: int
        | None = None,  # cache positions (slots x capacity); None: max_slots x context
        chunk: int = 256,
        step_tokens: int = 256,
    ):
        self.runner = runner
        self.context_length = context_length
        budget = kv_budget or max_slots * context_length
        # One sequence of the full context window must always fit, or it could never run.
        self.kv_budget = max(budget, context_length + 16)
        self.max_waiting = max_waiting
        self.scheduler = Scheduler(
            max_slots=max_slots,
            budget=self.kv_budget,
            chunk=chunk,
            step_tokens=step_tokens,
        )
        self._cv = threading.Condition()
        self._inbox: list[list[Sequence]] = []
        self._cancels: list[list[Sequence]] = []
        self._draining = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.iterations = 0
        self.preemptions = 0
        self.busy_seconds = 0.0
        self.last_step_tokens = 0
        self.last_batch = 0

    # -- the server's side -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._inbox) + self.scheduler.queued

    @property
    def running(self) -> int:
        return self.scheduler.active

    @property
    def draining(self) -> bool:
        return self._draining

    def submit(self, request: GenerationRequest, sink: Sink) -> list[Sequence]:
        """Queue a request; returns its handle (the unit of sequences) for cancel()."""
        with self._cv:
            if self._draining or self._stopping:
                raise Draining("the server is shutting down")
            if self.queue_depth >= self.max_waiting:
                raise QueueFull(
                    f"{self.queue_depth} requests are already waiting; retry in a moment"
                )
            unit = beam_search.unit(request, sink)
            self._inbox.append(unit)
            self._cv.notify_all()
        return unit

    def cancel(self, unit: list[Sequence], reason: str = CANCELLED) -> None:
        with self._cv:
            for seq in unit:
                if seq.cancel_reason is None:
                    seq.cancel_reason = reason
            self._cancels.append(unit)
            self._cv.notify_all()

    def drain(self, timeout: float) -> bool:
        """Refuse new work, wait up to `timeout` s for what runs; True if all finished."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._draining = True
            self._cv.notify_all()
            while self._has_work() and time.monotonic() < deadline:
                self._cv.wait(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            return not self._has_work()

    def stop(self) -> None:
        with self._cv:
            self._draining = self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def _has_work(self) -> bool:
        return bool(self._inbox or self.scheduler.waiting or self.scheduler.running)

    # -- the engine thread ---------------------------------------------------------------

    def run_until_idle(self) -> None:
        """Run iterations on the calling thread until nothing is queued or running.

        For profiling and tests that drive the engine without its thread (never both).
        """
        while self._step(wait=False):
            pass

    def _run(self) -> None:
        while self._step(wait=True):
            pass

    def _step(self, wait: bool) -> bool:
        """One turn of the loop: take new requests and cancellations, run one iteration."""
        with self._cv:
            while not (self._inbox or self._cancels or self._stopping) and not (
                self.scheduler.waiting or self.scheduler.running
            ):
                self.runner.idle()
                self._cv.notify_all()  # drain() waits for this
                if not wait:
                    return False
                self._cv.wait()
            inbox, self._inbox = self._inbox, []
            cancels, self._cancels = self._cancels, []
            stopping = self._stopping
        for unit in inbox:
            self.scheduler.enqueue(unit)
        for unit in cancels:
            if not unit[0].done:
                self._apply(self.scheduler.remove(unit))
                self._finish(unit, unit[0].cancel_reason or CANCELLED)
        if stopping:
            for unit in [*self.scheduler.running, *self.scheduler.waiting]:
                self._finish(unit, SHUTDOWN, "the server shut down")
            self.scheduler.running.clear()
            self.scheduler.waiting.clear()
            self.scheduler.by_slot.clear()
            self.runner.idle()
            return False
        try:
            self._iterate()
        except Exception as exc:  # a bug must not take the server down with it
            log.exception("engine iteration failed")
            for unit in list(self.scheduler.running):
                self._apply(self.scheduler.remove(unit))
                self._finish(unit, ERROR, f"generation failed: {exc}")
        return True

    def _iterate(self) -> None:
        self.scheduler.admit()
        plan, moves, preempted = self.scheduler.plan()
        self._apply(moves)
        self.preemptions += len(preempted)
        if plan is None:
            return
        started = time.perf_counter()
        try:
            logits = self.runner.forward(plan.step, plan.capacity, self.kv_budget)
        except Exception as exc:
            log.exception("forward pass failed")
            for unit in {id(u): u for u in self._units(plan.fed)}.values():
                self._apply(self.scheduler.remove(unit))
                self._finish(unit, ERROR, f"generation failed: {exc}")
            return
        for row, seq in zip(plan.step.rows, plan.fed, strict=True):
            seq.cached = row.end

        plain = [i for i, seq in enumerate(plan.sampled) if seq.beam is None]
        tokens = choose(logits[plain], [plan.sampled[i] for i in plain]) if plain else []
        for i, token in zip(plain, tokens, strict=True):
            self._advance(plan.sampled[i], token)
        beams = [i for i, seq in enumerate(plan.sampled) if seq.beam is not None]
        if beams:
            self._advance_beams(plan, logits, beams)

        self.iterations += 1
        self.busy_seconds += time.perf_counter() - started
        self.last_step_tokens = plan.step.token_count
        self.last_batch = len(plan.step.rows)

    def _advance(self, seq: Sequence, token: int) -> None:
        request = seq.request
        seq.generated.append(token)
        reason = None
        if token in request.eos:
            reason = STOP
        elif len(seq.generated) >= request.max_new_tokens or seq.length >= self.context_length:
            reason = LENGTH
        out = [token] if reason != STOP else []
        if reason is None:
            self._deliver(seq, out, None)
            return
        self._apply(self.scheduler.remove([seq]))
        seq.finish_reason = reason
        self._deliver(seq, out, reason)

    def _advance_beams(self, plan, logits, rows: list[int]) -> None:
        groups: dict[int, list[int]] = {}
        for i in rows:
            groups.setdefault(id(plan.sampled[i].beam), []).append(i)
        for indexes in groups.values():
            members = [plan.sampled[i] for i in indexes]
            search = members[0].beam
            copies, finished = search.advance(members, logits[indexes], self.context_length)
            self.runner.copy_rows(*copies)
            if finished:
                unit = search.members
                self._apply(self.scheduler.remove(unit))
                for seq in unit:
                    seq.finish_reason = finished
                best = search.best()
                self._deliver(search.members[0], best, finished)

    def _units(self, seqs: list[Sequence]) -> list[list[Sequence]]:
        return [s.beam.members if s.beam is not None else [s] for s in seqs]

    def _apply(self, moves: list[Move]) -> None:
        for move in moves:
            self.runner.move(move.src, move.dst, move.length)

    def _finish(self, unit: list[Sequence], reason: str, error: str | None = None) -> None:
        for seq in unit:
            seq.finish_reason = reason
            seq.error = error
        self._deliver(unit[0], [], reason)

    def _deliver(self, seq: Sequence, tokens: list[int], reason: str | None) -> None:
        try:
            seq.sink(seq, tokens, reason)
        except Exception:
            log.exception("delivering tokens failed")
        if reason is not None:
            with self._cv:
                self._cv.notify_all()
