"""Runs a provisioner's `collect` now and then, while this process leads: what a provisioner
made for workspaces that are gone (a pool whose workspace was deleted while no controller ran,
say) is removed, and said so in the log.

The controller owns the thread's life: `start()` with a callable for the live workspaces
((namespace, name) pairs, from its informer) and one for whether it leads; `stop()`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from kaito_jupyter.provisioners.base import Provisioner

log = logging.getLogger(__name__)

INTERVAL_SECONDS = 120.0  # as Azure/gpu-provisioner's garbage collector


class LiveSet:
    """The live workspaces as `collect` asks about them, for a controller that sees only some
    namespaces: a workspace in a namespace it does not watch counts as live (it cannot know
    otherwise, so it must not delete what that workspace owns)."""

    def __init__(self, seen: set[tuple[str, str]], in_scope: Callable[[str], bool]):
        self.seen = seen
        self.in_scope = in_scope

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        return key in self.seen or not self.in_scope(key[0])


class Collector:
    def __init__(
        self,
        provisioner: Provisioner,
        live: Callable[[], set[tuple[str, str]] | LiveSet],
        leading: Callable[[], bool],
        *,
        interval: float = INTERVAL_SECONDS,
        synced: Callable[[], bool] = lambda: True,
    ):
        self.provisioner = provisioner
        self.live = live
        self.leading = leading
        self.synced = synced
        self.interval = interval
        self.removed: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def collect_once(self) -> list[str]:
        # Only a leader with a complete view of the workspaces may decide what is an orphan.
        if not self.leading() or not self.synced():
            return []
        try:
            removed = self.provisioner.collect(self.live())
        except Exception as exc:  # a failed sweep is retried at the next interval
            log.warning("collecting orphans of the %s provisioner failed: %s", self.name, exc)
            return []
        for item in removed:
            log.info("%s provisioner: removed %s, whose workspace is gone", self.name, item)
        self.removed.extend(removed)
        return removed

    @property
    def name(self) -> str:
        return getattr(self.provisioner, "name", "?")

    def start(self) -> Collector:
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.collect_once()
