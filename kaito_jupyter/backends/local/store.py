"""The local backend's store: one SQLite database shared by every process on this machine.

Kernels, the Jupyter server and the CLI open the same file. WAL lets readers run beside the one
writer; every change is one transaction (`BEGIN IMMEDIATE`), so a process killed mid-write
leaves the previous state, never half a workspace. A global counter `rv` grows by one per
change: it is each workspace's resourceVersion, and the change log (`changes`) is what watches
replay. `PRAGMA data_version` tells a reader cheaply that another connection committed.

Tables: workspaces (the objects, as JSON), changes (the log watches follow), events (what the
user should see, deduplicated like Kubernetes Events), lease (the one reconciler), runtimes
(the processes the reconciler started, for adoption by a new leader).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kaito_jupyter.errors import BackendError

SCHEMA_VERSION = 1
# The change log keeps this many entries; a watcher further behind re-lists.
CHANGES_KEPT = 5000
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS workspaces (
    namespace TEXT NOT NULL, name TEXT NOT NULL, rv INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (namespace, name));
CREATE TABLE IF NOT EXISTS changes (
    rv INTEGER PRIMARY KEY, namespace TEXT NOT NULL, name TEXT NOT NULL,
    type TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, name TEXT NOT NULL,
    first_time TEXT NOT NULL, last_time TEXT NOT NULL, type TEXT NOT NULL, reason TEXT NOT NULL,
    message TEXT NOT NULL, object TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS events_by_workspace ON events (namespace, name);
CREATE TABLE IF NOT EXISTS lease (
    id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, pid INTEGER NOT NULL,
    pid_start TEXT NOT NULL, acquired REAL NOT NULL, renewed REAL NOT NULL,
    duration REAL NOT NULL, transitions INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS runtimes (
    namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (namespace, name));
"""


@dataclass(frozen=True)
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    namespace: str
    name: str
    data: dict[str, Any]


@dataclass(frozen=True)
class LeaseRow:
    holder: str
    pid: int
    pid_start: str
    acquired: float
    renewed: float
    duration: float
    transitions: int

    def expired(self, now: float) -> bool:
        return now > self.renewed + self.duration


class Store:
    """One connection per thread to the database at `path` (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.transaction() as db:
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?), ('rv', '0')",
                (str(SCHEMA_VERSION),),
            )
            found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0]
            if int(found) > SCHEMA_VERSION:
                raise BackendError(
                    f"{self.path} was written by a newer kaito-jupyter (schema {found})",
                    hint="upgrade kaito-jupyter, or point KAITO_LOCAL_DIR at another directory",
                )

    # ---------------------------------------------------------------- connections

    def connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self.connect()
            self._local.db = db
        return db

    def connect(self) -> sqlite3.Connection:
        """A new connection (a watcher keeps its own, so data_version sees others' commits)."""
        try:
            db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL under WAL: a committed transaction survives a killed process (only an OS
            # crash may lose the last commits, never corrupt the file).
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise BackendError(
                f"cannot open the local store {self.path}: {exc}",
                hint="check the directory's permissions, or set KAITO_LOCAL_DIR",
            ) from exc
        return db

    @contextlib.contextmanager
    def transaction(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception: all or nothing."""
        db = db or self.connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise BackendError(
                f"the local store {self.path} is busy: {exc}",
                hint="another process holds it; try again",
            ) from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # ---------------------------------------------------------------- workspaces

    @staticmethod
    def next_rv(db: sqlite3.Connection) -> int:
        rv = int(db.execute("SELECT value FROM meta WHERE key = 'rv'").fetchone()[0]) + 1
        db.execute("UPDATE meta SET value = ? WHERE key = 'rv'", (str(rv),))
        return rv

    @staticmethod
    def current_rv(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = 'rv'").fetchone()[0])

    @staticmethod
    def read(db: sqlite3.Connection, namespace: str, name: str) -> dict[str, Any] | None:
        row = db.execute(
            "SELECT data FROM workspaces WHERE namespace = ? AND name = ?", (namespace, name)
        ).fetchone()
        return json.loads(row[0]) if row else None

    @staticmethod
    def read_all(db: sqlite3.Connection, namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            rows = db.execute("SELECT data FROM workspaces ORDER BY namespace, name")
        else:
            rows = db.execute(
                "SELECT data FROM workspaces WHERE namespace = ? ORDER BY name", (namespace,)
            )
        return [json.loads(r[0]) for r in rows]

    def write(self, db: sqlite3.Connection, data: dict[str, Any], change: str) -> dict[str, Any]:
        """Store `data` (inside a transaction) with a new resourceVersion; log the change."""
        meta = data["metadata"]
        rv = self.next_rv(db)
        meta["resourceVersion"] = str(rv)
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        ns, name = meta.get("namespace") or "default", meta["name"]
        if change == "DELETED":
            db.execute("DELETE FROM workspaces WHERE namespace = ? AND name = ?", (ns, name))
            db.execute("DELETE FROM events WHERE namespace = ? AND name = ?", (ns, name))
        else:
            db.execute(
                "INSERT INTO workspaces (namespace, name, rv, data) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, name) DO UPDATE SET rv = excluded.rv, data = excluded.data",
                (ns, name, rv, text),
            )
        db.execute(
            "INSERT INTO changes (rv, namespace, name, type, data) VALUES (?, ?, ?, ?, ?)",
            (rv, ns, name, change, text),
        )
        if rv % 100 == 0:
            db.execute("DELETE FROM changes WHERE rv <= ?", (rv - CHANGES_KEPT,))
        return data

    @staticmethod
    def changes_since(db: sqlite3.Connection, rv: int) -> tuple[list[Change], bool]:
        """Changes after `rv`, oldest first; and whether the log still reaches back to `rv`
        (False: entries were pruned, the caller must re-list)."""
        oldest = db.execute("SELECT MIN(rv) FROM changes").fetchone()[0]
        complete = oldest is None or oldest <= rv + 1 or rv >= Store.current_rv(db)
        rows = db.execute(
            "SELECT rv, type, namespace, name, data FROM changes WHERE rv > ? ORDER BY rv", (rv,)
        ).fetchall()
        return [Change(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows], complete

    # ---------------------------------------------------------------- events

    def record_event(
        self,
        namespace: str,
        name: str,
        type_: str,
        reason: str,
        message: str,
        obj: str,
        at: str,
    ) -> None:
        """Add an event, or count a repeat of the last one with the same reason and message."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT id, reason, message FROM events WHERE namespace = ? AND name = ? "
                "ORDER BY id DESC LIMIT 1",
                (namespace, name),
            ).fetchone()
            if row and row[1] == reason and row[2] == message:
                db.execute(
                    "UPDATE events SET count = count + 1, last_time = ? WHERE id = ?", (at, row[0])
                )
                return
            db.execute(
                "INSERT INTO events (namespace, name, first_time, last_time, type, reason, "
                "message, object) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (namespace, name, at, at, type_, reason, message, obj),
            )
            # Bounded per workspace, as Kubernetes ages events out.
            db.execute(
                "DELETE FROM events WHERE namespace = ? AND name = ? AND id NOT IN "
                "(SELECT id FROM events WHERE namespace = ? AND name = ? ORDER BY id DESC LIMIT 200)",
                (namespace, name, namespace, name),
            )

    def events(self, namespace: str, name: str) -> list[tuple]:
        return (
            self.connection()
            .execute(
                "SELECT last_time, type, reason, message, object, count FROM events "
                "WHERE namespace = ? AND name = ? ORDER BY id",
                (namespace, name),
            )
            .fetchall()
        )

    # ---------------------------------------------------------------- lease

    def lease(self, db: sqlite3.Connection | None = None) -> LeaseRow | None:
        row = (
            (db or self.connection())
            .execute(
                "SELECT holder, pid, pid_start, acquired, renewed, duration, transitions "
                "FROM lease WHERE id = 1"
            )
            .fetchone()
        )
        return LeaseRow(*row) if row else None

    def put_lease(self, db: sqlite3.Connection, row: LeaseRow) -> None:
        db.execute(
            "INSERT INTO lease (id, holder, pid, pid_start, acquired, renewed, duration, "
            "transitions) VALUES (1, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
            "holder = excluded.holder, pid = excluded.pid, pid_start = excluded.pid_start, "
            "acquired = excluded.acquired, renewed = excluded.renewed, "
            "duration = excluded.duration, transitions = excluded.transitions",
            (row.holder, row.pid, row.pid_start, row.acquired, row.renewed, row.duration,
             row.transitions),
        )  # fmt: skip

    def drop_lease(self, holder: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM lease WHERE id = 1 AND holder = ?", (holder,))

    # ---------------------------------------------------------------- runtimes

    def runtime(self, namespace: str, name: str) -> dict[str, Any] | None:
        row = (
            self.connection()
            .execute(
                "SELECT data FROM runtimes WHERE namespace = ? AND name = ?", (namespace, name)
            )
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def runtimes(self) -> dict[tuple[str, str], dict[str, Any]]:
        rows = self.connection().execute("SELECT namespace, name, data FROM runtimes")
        return {(r[0], r[1]): json.loads(r[2]) for r in rows}

    def put_runtime(self, namespace: str, name: str, data: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runtimes (namespace, name, data) VALUES (?, ?, ?) "
                "ON CONFLICT (namespace, name) DO UPDATE SET data = excluded.data",
                (namespace, name, json.dumps(data, sort_keys=True)),
            )

    def drop_runtime(self, namespace: str, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM runtimes WHERE namespace = ? AND name = ?", (namespace, name))

    # ---------------------------------------------------------------- change detection

    @staticmethod
    def data_version(db: sqlite3.Connection) -> int:
        """Changes whenever another connection commits (SQLite's own counter, per connection)."""
        return int(db.execute("PRAGMA data_version").fetchone()[0])


def wall_time() -> float:
    return time.time()
