"""A work queue of keys, as controllers use: deduplicated, one worker per key at a time,
delayed and rate-limited requeue.

- `add(key)`: the key will be processed; adding it again before that is a no-op.
  `add(key, first=True)`: ahead of the others (a workspace never reconciled yet: in a burst of
  applies, making each one's objects comes before re-reading the ones already made).
- A key being processed is never handed to a second worker; adding it meanwhile marks it dirty
  and it comes back once `done(key)` is called (so no change is lost, and none runs twice at
  once).
- `add_after(key, seconds)`: later (a provisioner asked to look again). A key waits on one
  timer at most, the earliest asked for: every reconcile of a workspace that is waiting asks
  again, and without that each would start a chain of timed reconciles of its own.
- `add_rate_limited(key)`: after a failure, with per-key exponential backoff; `forget(key)`
  resets it after a success.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Hashable


class WorkQueue:
    def __init__(self, *, base_delay: float = 0.05, max_delay: float = 60.0, clock=time.monotonic):
        self._cond = threading.Condition()
        self._queue: list[Hashable] = []
        self._first: list[Hashable] = []  # served before _queue
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._waiting: dict[Hashable, float] = {}  # key -> its one live deadline in _delayed
        self._seq = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._shutdown = False
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._first)

    def add(self, key: Hashable, *, first: bool = False) -> None:
        with self._cond:
            if self._shutdown or key in self._dirty:
                return
            self._dirty.add(key)
            if key not in self._processing:
                (self._first if first else self._queue).append(key)
                self._cond.notify()

    def add_after(self, key: Hashable, seconds: float) -> None:
        if seconds <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutdown:
                return
            due = self._clock() + seconds
            if self._waiting.get(key, float("inf")) <= due:
                return  # an earlier look is already due
            self._waiting[key] = due
            heapq.heappush(self._delayed, (due, next(self._seq), key))
            self._cond.notify()

    def backoff(self, key: Hashable) -> float:
        with self._cond:
            failures = self._failures.get(key, 0)
        return min(self.base_delay * (2**failures), self.max_delay)

    def add_rate_limited(self, key: Hashable) -> float:
        delay = self.backoff(key)
        with self._cond:
            self._failures[key] = self._failures.get(key, 0) + 1
        self.add_after(key, delay)
        return delay

    def forget(self, key: Hashable) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def _promote_due(self) -> float | None:
        """Move due delayed keys into the queue; seconds until the next one, if any."""
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            due, _, key = heapq.heappop(self._delayed)
            if self._waiting.get(key) != due:
                continue  # superseded by an earlier deadline, already served
            del self._waiting[key]
            if key not in self._dirty:
                self._dirty.add(key)
                if key not in self._processing:
                    self._queue.append(key)
        return self._delayed[0][0] - now if self._delayed else None

    def get(self, timeout: float | None = None) -> Hashable | None:
        """The next key to process (mark it `done` after), or None on shutdown or timeout."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                wait = self._promote_due()
                if self._first or self._queue:
                    key = (self._first or self._queue).pop(0)
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                if self._shutdown:
                    return None
                if deadline is not None:
                    left = deadline - self._clock()
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)

    def done(self, key: Hashable) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._queue.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
