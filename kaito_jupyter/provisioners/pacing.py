"""How often the aks provisioner may call ARM: no hot loops, Retry-After honoured.

ARM throttles per subscription, so a 429's Retry-After holds back every call, not only the
workspace that got it. Per workspace, calls are bounded by a sliding one-minute budget, and a
failing workspace backs off exponentially with jitter (so many controllers that failed
together do not retry together). The clock and the random source are injected: the unit tests
drive them by hand.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 60.0


class Pacer:
    def __init__(
        self,
        *,
        calls_per_minute: int = 12,
        base_delay: float = 2.0,
        max_delay: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ):
        if calls_per_minute < 1:
            raise ValueError("calls_per_minute must be at least 1")
        self.calls_per_minute = calls_per_minute
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._jitter = jitter
        self._calls: dict[str, deque[float]] = {}
        self._not_before: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._global_not_before = 0.0
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until a call for `key` is allowed; 0 if it is allowed now."""
        with self._lock:
            now = self._clock()
            waits = [self._global_not_before - now, self._not_before.get(key, 0.0) - now]
            calls = self._recent(key, now)
            if len(calls) >= self.calls_per_minute:
                waits.append(calls[0] + WINDOW_SECONDS - now)
            return max(0.0, *waits)

    def spend(self, key: str) -> None:
        """Record one ARM call made for `key`."""
        with self._lock:
            now = self._clock()
            self._recent(key, now).append(now)

    def throttled(self, retry_after: float | None, key: str | None = None) -> float:
        """ARM said 429: nothing goes to ARM before Retry-After (or a backoff, without one)."""
        delay = retry_after if retry_after and retry_after > 0 else None
        if delay is None:
            delay = self.failed(key) if key else self.base_delay
        with self._lock:
            until = self._clock() + delay
            self._global_not_before = max(self._global_not_before, until)
        return delay

    def failed(self, key: str, at_least: float | None = None) -> float:
        """A transient failure for `key`: back off base * 2^(n-1), capped, with jitter in
        [50%, 100%] of that; never less than `at_least`. Returns the delay."""
        with self._lock:
            attempts = self._failures.get(key, 0) + 1
            self._failures[key] = attempts
            ceiling = min(self.max_delay, self.base_delay * 2 ** (attempts - 1))
            delay = ceiling * (0.5 + 0.5 * self._jitter())
            if at_least is not None:
                delay = max(delay, at_least)
            self._not_before[key] = self._clock() + delay
            return delay

    def hold(self, key: str, seconds: float) -> None:
        """No call for `key` for `seconds` (a permanent failure's slow retry)."""
        with self._lock:
            self._not_before[key] = self._clock() + seconds

    def unhold(self, key: str) -> None:
        """Lift `key`'s own hold or backoff (Retry-After and the budget still apply)."""
        with self._lock:
            self._not_before.pop(key, None)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def forget(self, key: str) -> None:
        with self._lock:
            for table in (self._calls, self._not_before, self._failures):
                table.pop(key, None)

    def attempts(self, key: str) -> int:
        with self._lock:
            return self._failures.get(key, 0)

    def _recent(self, key: str, now: float) -> deque[float]:
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - WINDOW_SECONDS:
            calls.popleft()
        return calls
