"""Faults a test injects into the simulated ARM, at run time.

A fault has a kind, an optional match (operation, HTTP method, pool, VM size) and a budget
(`times`; None means every matching request). Tests add them in-process
(`arm.faults.add(...)`) or over HTTP (`POST /_testbed/faults`), e.g. from a COMMAND that
`run --arm` started.

kinds:
  quota_exceeded   400 QuotaExceeded on an agent pool PUT; with phase="operation" the PUT is
                   accepted and its long-running operation fails with the same error instead
  invalid_vm_size  400 BadRequest "The VM size of AgentPoolProfile:... is not allowed"
  throttle         429 TooManyRequests with Retry-After: retry_after seconds
  server_error     500 InternalServerError
  slow_operation   the pool's long-running operation takes `seconds` instead of the default
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import asdict, dataclass, field

KINDS = ("quota_exceeded", "invalid_vm_size", "throttle", "server_error", "slow_operation")
# Kinds that answer a request instead of serving it, checked before any work is done.
REQUEST_KINDS = ("throttle", "server_error")

_ids = itertools.count(1)


@dataclass
class Fault:
    kind: str
    operation: str | None = None
    method: str | None = None
    pool: str | None = None
    vm_size: str | None = None
    times: int | None = None
    retry_after: float = 1.0
    seconds: float = 10.0
    phase: str = "request"
    limit: int = 24
    usage: int = 24
    id: int = field(default_factory=lambda: next(_ids))
    hits: int = 0

    def matches(self, operation: str, method: str, pool: str | None, vm_size: str | None) -> bool:
        checks = (
            (self.operation, operation),
            (self.method, method),
            (self.pool, pool),
            (self.vm_size, vm_size),
        )
        return all(
            wanted is None or (got or "").lower() == wanted.lower() for wanted, got in checks
        )

    def to_dict(self) -> dict:
        return asdict(self)


class FaultBook:
    def __init__(self):
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, kind: str, **params) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        if kind in REQUEST_KINDS:
            params.setdefault("times", 1)
        if params.get("phase", "request") not in ("request", "operation"):
            raise ValueError("phase must be 'request' or 'operation'")
        fault = Fault(kind=kind, **params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def list(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(
        self,
        kinds: tuple[str, ...],
        operation: str,
        method: str,
        pool: str | None = None,
        vm_size: str | None = None,
    ) -> Fault | None:
        """The first live fault of one of `kinds` that matches, spending one of its `times`."""
        with self._lock:
            for fault in self._faults:
                if fault.kind in kinds and fault.matches(operation, method, pool, vm_size):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None
