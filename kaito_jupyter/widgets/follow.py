"""The background thread every widget updates from: it follows a backend stream (the watch,
or a tuning job's log) and hands each item to the widget, until stopped.

A failure in the stream (the cluster went away, the workspace was deleted) is shown in the
widget as a message, never raised into some later cell.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from kaito_jupyter.errors import KaitoError


class Follower:
    """Owns one daemon thread that runs `run(stop)`; `stop()` ends it."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._finished = threading.Event()

    def _start(self, run: Callable[[threading.Event], None], name: str) -> None:
        thread = threading.Thread(target=self._guard, args=(run,), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guard(self, run: Callable[[threading.Event], None]) -> None:
        try:
            run(self._stop)
        except KaitoError as exc:
            self._failed(exc.message)
        except Exception as exc:  # shown in the widget; the kernel carries on
            self._failed(f"{type(exc).__name__}: {exc}")
        finally:
            self._finished.set()

    def _failed(self, message: str) -> None:  # overridden: show it
        pass

    def stop(self) -> None:
        """Stop following (the widget keeps what it shows)."""
        self._stop.set()

    @property
    def following(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float | None = None) -> None:
        for thread in self._threads:
            thread.join(timeout)
