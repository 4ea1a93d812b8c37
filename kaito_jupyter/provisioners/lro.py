"""How the aks provisioner follows ARM's long-running operations: fewer polls, and a word when
one ends.

azure-core's poller asks for the operation's status once at once and then every Retry-After
seconds (ARM says 1-30 s), for as long as the operation runs: a pool that takes four minutes
costs dozens of calls from each workspace's read quota. Ours waits before the first look and
doubles the interval after each (Retry-After stays the floor: ARM's own pace is never beaten),
up to a ceiling, so an operation is polled about log2(its duration) times and its end is seen
at most one interval late. `Operation.done` is set, and its callback runs, from the poller's
thread once the result is in (azure-core's `done()` turns True a moment later, when that
thread exits, so it is not what callers should wait on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def next_delay(interval: float, retry_after: float | None, ceiling: float) -> tuple[float, float]:
    """(this wait, the next interval): never under Retry-After, doubling up to `ceiling`."""
    wait = max(interval, retry_after or 0.0)
    return wait, min(max(interval * 2, interval), ceiling)


def backoff_polling(first: float, ceiling: float):
    """An azure-mgmt-core ARMPolling that backs off as `next_delay` says."""
    from azure.core.pipeline.policies._utils import get_retry_after
    from azure.mgmt.core.polling.arm_polling import ARMPolling

    class BackoffPolling(ARMPolling):
        def __init__(self):
            super().__init__(timeout=first)
            self._interval = first
            self._waited = False

        def _extract_delay(self) -> float:
            wait, self._interval = next_delay(
                self._interval, get_retry_after(self._pipeline_response), ceiling
            )
            return wait

        def update_status(self) -> None:
            # azure-core looks once straight after the request that started the operation,
            # which can only say "InProgress": wait first.
            if not self._waited:
                self._waited = True
                self._delay()
            super().update_status()

    return BackoffPolling()


@dataclass
class Operation:
    """One ARM operation on a pool, as the provisioner tracks it."""

    poller: Any  # azure-core LROPoller
    kind: str  # "create" (also an update) or "delete"
    created: datetime  # the pool's birth date, for progress messages
    done: threading.Event = field(default_factory=threading.Event)

    def watch(self, on_done: Callable[[], None] | None) -> Operation:
        def finished(_method) -> None:
            self.done.set()
            if on_done is not None:
                on_done()

        self.poller.add_done_callback(finished)
        return self
