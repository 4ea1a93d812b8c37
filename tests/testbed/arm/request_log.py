"""arm-requests.jsonl: one JSON line per request the simulated ARM answered.

Each entry: time, method, path, query, api_version, operation (e.g.
"agentPools.createOrUpdate"), status, error code, fault kind, the request body (secrets
removed), client request id and user agent. Tests assert on it through ArmSimulator.requests().
"""

from __future__ import annotations

import json
import threading
from pathlib import Path


class RequestLog:
    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self._entries: list[dict] = []
        self._lock = threading.Lock()

    def append(self, entry: dict) -> None:
        line = json.dumps(entry, sort_keys=True)
        with self._lock:
            self._entries.append(entry)
            with self.path.open("a") as out:
                out.write(line + "\n")

    def entries(self, operation: str | None = None, **match) -> list[dict]:
        with self._lock:
            entries = list(self._entries)
        if operation is not None:
            entries = [e for e in entries if e.get("operation") == operation]
        return [e for e in entries if all(e.get(k) == v for k, v in match.items())]
