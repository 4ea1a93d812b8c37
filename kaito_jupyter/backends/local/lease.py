"""The lease row: exactly one reconciler among the processes that share a store.

A candidate takes the lease when there is none, when its holder's renewal is older than the
lease duration, or when its holder process is gone (pid + start time no longer match: a killed
controller is replaced at once, not after the duration). The holder renews well inside the
duration; a holder that finds someone else in the row has lost it and must stop reconciling.
"""

from __future__ import annotations

import uuid

from . import processes
from .store import LeaseRow, Store, wall_time

DEFAULT_DURATION_S = 15.0


def holder_alive(row: LeaseRow | None, now: float | None = None) -> bool:
    """A live leader: a row, renewed within its duration, by a process that still runs."""
    if row is None:
        return False
    now = wall_time() if now is None else now
    return not row.expired(now) and processes.alive(row.pid, row.pid_start)


class Lease:
    def __init__(self, store: Store, *, duration: float = DEFAULT_DURATION_S):
        self.store = store
        self.duration = duration
        self.identity = uuid.uuid4().hex
        self.pid, self.pid_start = processes.me()

    def try_acquire(self) -> bool:
        """Take or renew the lease; True while this process holds it."""
        now = wall_time()
        with self.store.transaction() as db:
            row = self.store.lease(db)
            if row is not None and row.holder != self.identity and holder_alive(row, now):
                return False
            mine = row is not None and row.holder == self.identity
            self.store.put_lease(
                db,
                LeaseRow(
                    holder=self.identity,
                    pid=self.pid,
                    pid_start=self.pid_start,
                    acquired=row.acquired if mine else now,
                    renewed=now,
                    duration=self.duration,
                    transitions=(row.transitions if mine else (row.transitions + 1 if row else 0)),
                ),
            )
            return True

    def holds(self) -> bool:
        row = self.store.lease()
        return row is not None and row.holder == self.identity and not row.expired(wall_time())

    def release(self) -> None:
        self.store.drop_lease(self.identity)
