"""Leader election on a `coordination.k8s.io/v1` Lease, so one reconciler is active however
many Jupyter servers and `kaito controller` processes point at a cluster.

The rules are client-go's: a candidate takes the Lease when it is absent, already its own, or
expired (renewTime + leaseDurationSeconds in the past); every write carries the
resourceVersion it read, so of two candidates racing for an expired Lease exactly one write
succeeds (the other gets 409 Conflict and stays a follower). The leader renews every
`retry_period`; if it cannot renew for `renew_deadline` it stops leading *before* its lease
could be taken, so two leaders never overlap. A dead leader's Lease expires and another
candidate takes over within `lease_duration` (plus one retry period).

The store is any object with `read`, `create`, `replace` (dicts of the Lease), so this module
needs no Kubernetes client; `Conflict` is what `create`/`replace` raise on a lost race.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Conflict(Exception):
    """Someone else wrote the Lease first (HTTP 409)."""


class LeaseStore(Protocol):
    def read(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def create(self, lease: dict[str, Any]) -> dict[str, Any]: ...
    def replace(self, lease: dict[str, Any]) -> dict[str, Any]: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _format(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Holder:
    identity: str | None
    renewed: datetime | None
    duration: float

    def expired(self, now: datetime) -> bool:
        return self.renewed is None or (now - self.renewed).total_seconds() > self.duration


def holder_of(lease: dict[str, Any] | None) -> Holder:
    spec = (lease or {}).get("spec") or {}
    return Holder(
        spec.get("holderIdentity"),
        _parse(spec.get("renewTime")),
        float(spec.get("leaseDurationSeconds") or 0),
    )


class LeaderElector:
    def __init__(
        self,
        store: LeaseStore,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        now: Callable[[], datetime] = _now,
    ):
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("need retry_period < renew_deadline < lease_duration")
        self.store = store
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self._now = now
        self.leading = threading.Event()
        self.stopped = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.transitions = 0

    # -- one attempt --------------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One round: True if we hold the Lease after it."""
        now = self._now()
        lease = self.store.read(self.namespace, self.name)
        spec_now = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "renewTime": _format(now),
        }
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {**spec_now, "acquireTime": _format(now), "leaseTransitions": 0},
            }
            try:
                self.store.create(body)
            except Conflict:
                return False
            return True
        holder = holder_of(lease)
        spec = dict(lease.get("spec") or {})
        if holder.identity != self.identity:
            if holder.identity and not holder.expired(now):
                return False
            spec["acquireTime"] = _format(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(spec_now)
        body = {**lease, "spec": spec}  # metadata keeps resourceVersion: optimistic lock
        try:
            self.store.replace(body)
        except Conflict:
            return False
        return True

    def release(self) -> None:
        """Give the Lease up at once (a clean shutdown), so another need not wait it out."""
        try:
            lease = self.store.read(self.namespace, self.name)
            if lease and holder_of(lease).identity == self.identity:
                spec = dict(lease.get("spec") or {})
                spec.update(
                    holderIdentity=None, leaseDurationSeconds=1, renewTime=_format(self._now())
                )
                self.store.replace({**lease, "spec": spec})
        except Exception as exc:  # best effort: the lease expires anyway
            log.debug("lease release failed: %s", exc)

    def holder(self) -> Holder:
        return holder_of(self.store.read(self.namespace, self.name))

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Campaign, lead until the lease is lost, campaign again; until `stop`."""
        try:
            while not self._stop.is_set():
                if self._campaign():
                    self._lead()
        finally:
            self.stopped.set()

    def _campaign(self) -> bool:
        while not self._stop.is_set():
            try:
                if self.try_acquire_or_renew():
                    return True
            except Exception as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc)
            self._stop.wait(self.retry_period)
        return False

    def _lead(self) -> None:
        self.transitions += 1
        self.leading.set()
        log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)
        try:
            if self.on_started_leading:
                self.on_started_leading()
            last_renew = time.monotonic()
            while not self._stop.wait(self.retry_period):
                try:
                    ok = self.try_acquire_or_renew()
                except Exception as exc:
                    log.warning("lease renewal failed: %s", exc)
                    ok = False
                if ok:
                    last_renew = time.monotonic()
                    continue
                # Stop leading before the lease could be someone else's: never two leaders.
                if time.monotonic() - last_renew >= self.renew_deadline:
                    log.warning("%s lost the lease %s/%s", self.identity, self.namespace, self.name)
                    return
                try:
                    if self.holder().identity not in (None, self.identity):
                        return  # another candidate holds it
                except Exception:
                    pass
        finally:
            self.leading.clear()
            if self.on_stopped_leading:
                self.on_stopped_leading()

    def start(self) -> LeaderElector:
        self._thread = threading.Thread(target=self.run, name=f"lease-{self.identity}", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, release: bool = True) -> None:
        """Stop campaigning or leading; `release=False` leaves the Lease to expire (a crash)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.retry_period + 10)
        if release:
            self.release()
