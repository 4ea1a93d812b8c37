"""`kaito controller --backend local`: the process that holds the lease and reconciles.

It stands by until it holds the lease (or, with --idle-exit, leaves at once when another live
controller leads: that one does the work). As leader it reconciles on every committed change
(seen through `PRAGMA data_version` within 0.1 s) and every second besides (a runtime's health
is not a row in the store), and renews the lease. With --idle-exit SECONDS it exits after that
long with no workspace and no runtime. SIGTERM releases the lease; the runtimes keep running
and the next leader adopts them.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from kaito_jupyter import config

from .backend import LocalBackend
from .lease import DEFAULT_DURATION_S, Lease, holder_alive

TICK_S = 1.0
WAKE_S = 0.1


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def run(
    settings: config.Settings | None = None,
    *,
    idle_exit: float | None = None,
    lease_seconds: float = DEFAULT_DURATION_S,
    threads: int | None = None,
    stop: threading.Event | None = None,
    backend: LocalBackend | None = None,
) -> int:
    from .reconciler import Reconciler

    backend = backend or LocalBackend(settings)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    lease = Lease(backend.store, duration=lease_seconds)
    log(f"local controller pid {lease.pid} on {backend.target()}")
    reconciler = Reconciler(backend, log=log, threads=threads)
    try:
        while not stop.is_set():
            if not _acquire(backend, lease, idle_exit, stop):
                return 0
            log("leading: holding the lease")
            outcome = _lead(backend, lease, reconciler, idle_exit, stop)
            if outcome == "idle":
                log(f"idle for {idle_exit:g} s with nothing to run: exiting")
                return 0
            if outcome == "lost":
                log("lost the lease to another controller; standing by")
        return 0
    finally:
        lease.release()


def _acquire(backend: LocalBackend, lease: Lease, idle_exit: float | None, stop) -> bool:
    while not stop.is_set():
        if lease.try_acquire():
            return True
        row = backend.store.lease()
        if idle_exit is not None and holder_alive(row):
            log(f"controller pid {row.pid} already leads; exiting")
            return False
        stop.wait(min(1.0, lease.duration / 4))
    return False


def _lead(backend, lease: Lease, reconciler, idle_exit: float | None, stop) -> str:
    """Reconcile while holding the lease. The lease is renewed on its own thread, so a pass that
    blocks (stopping a server that drains for seconds) never lets it lapse."""
    lost = threading.Event()
    done = threading.Event()

    def renew() -> None:
        while not done.wait(lease.duration / 3):
            try:
                if not lease.try_acquire():
                    lost.set()
                    return
            except Exception as exc:  # a busy store: try again at the next renewal
                log(f"renewing the lease failed: {exc}")

    renewer = threading.Thread(target=renew, name="kaito-lease", daemon=True)
    renewer.start()
    db = backend.store.connect()
    try:
        version = None
        last_pass = 0.0
        idle_since = time.monotonic()
        while not stop.is_set():
            if lost.is_set():
                return "lost"
            now = time.monotonic()
            current = backend.store.data_version(db)
            if current != version or now - last_pass >= TICK_S:
                version = current
                last_pass = now
                reconciler.reconcile_all()
                if backend.list() or backend.store.runtimes():
                    idle_since = time.monotonic()
                elif idle_exit is not None and time.monotonic() - idle_since >= idle_exit:
                    return "idle"
            stop.wait(WAKE_S)
        return "stopped"
    finally:
        done.set()
        renewer.join()
        db.close()
