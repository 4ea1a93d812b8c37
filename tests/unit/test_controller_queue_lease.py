"""The work queue and the Lease elector (controller/queue.py, controller/lease.py).

The elector runs here against an in-memory Lease store with the API server's optimistic
concurrency (a write with a stale resourceVersion is a Conflict); the cluster tier runs it
against real Leases.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from kaito_jupyter.controller.lease import Conflict, LeaderElector, holder_of
from kaito_jupyter.controller.queue import WorkQueue


def test_adding_a_key_twice_before_it_is_processed_processes_it_once():
    q = WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b")
    assert [q.get(0), q.get(0), q.get(0)] == ["a", "b", None]


def test_a_key_being_processed_is_not_handed_out_again_until_done_then_comes_back_once():
    q = WorkQueue()
    q.add("a")
    assert q.get(0) == "a"
    q.add("a")
    q.add("a")
    assert q.get(0) is None  # still processing
    q.done("a")
    assert q.get(0) == "a"
    q.done("a")
    assert q.get(0) is None


def test_rate_limited_requeue_backs_off_exponentially_and_forget_resets_it():
    now = [0.0]
    q = WorkQueue(base_delay=1.0, max_delay=8.0, clock=lambda: now[0])
    assert [q.add_rate_limited("k") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert q.get(0) is None
    now[0] = 1.0
    assert q.get(0) == "k"
    q.done("k")
    q.forget("k")
    assert q.backoff("k") == 1.0


def test_add_after_wakes_a_waiting_worker_when_due():
    q = WorkQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=5)))
    t.start()
    q.add_after("late", 0.05)
    t.join()
    assert got == ["late"]


def test_shutdown_releases_waiting_workers():
    q = WorkQueue()
    got = []
    t = threading.Thread(target=lambda: got.append(q.get()))
    t.start()
    q.shutdown()
    t.join(timeout=5)
    assert got == [None]


class Store:
    """Leases with resourceVersions, as the API server keeps them."""

    def __init__(self):
        self.lease = None
        self.version = 0
        self.lock = threading.Lock()

    def read(self, namespace, name):
        with self.lock:
            return None if self.lease is None else {**self.lease, "spec": dict(self.lease["spec"])}

    def _write(self, lease):
        self.version += 1
        self.lease = {
            **lease,
            "metadata": {**lease["metadata"], "resourceVersion": str(self.version)},
        }
        return self.lease

    def create(self, lease):
        with self.lock:
            if self.lease is not None:
                raise Conflict("exists")
            return self._write(lease)

    def replace(self, lease):
        with self.lock:
            if (
                lease["metadata"].get("resourceVersion")
                != self.lease["metadata"]["resourceVersion"]
            ):
                raise Conflict("stale")
            return self._write(lease)


class Clock:
    def __init__(self):
        self.t = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self):
        return self.t


def _elector(store, name, clock, duration=15.0):
    return LeaderElector(
        store,
        "kube-system",
        "lease",
        name,
        lease_duration=duration,
        renew_deadline=10,
        retry_period=2,
        now=clock,
    )


def test_of_two_candidates_one_leads_and_the_other_waits_while_the_lease_is_fresh():
    store, clock = Store(), Clock()
    a, b = _elector(store, "a", clock), _elector(store, "b", clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False
    clock.t += timedelta(seconds=10)
    assert a.try_acquire_or_renew() is True  # renewed
    clock.t += timedelta(seconds=10)
    assert b.try_acquire_or_renew() is False  # 10 s since the renewal: still fresh
    assert holder_of(store.read("", "")).identity == "a"


def test_an_expired_lease_is_taken_over_and_counts_a_transition():
    store, clock = Store(), Clock()
    a, b = _elector(store, "a", clock), _elector(store, "b", clock)
    a.try_acquire_or_renew()
    clock.t += timedelta(seconds=16)
    assert b.try_acquire_or_renew() is True
    lease = store.read("", "")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert a.try_acquire_or_renew() is False


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win():
    store, clock = Store(), Clock()
    _elector(store, "old", clock).try_acquire_or_renew()
    clock.t += timedelta(seconds=60)
    a, b = _elector(store, "a", clock), _elector(store, "b", clock)
    stale = store.read("", "")
    # Both read the same expired Lease; the second write carries a stale resourceVersion.
    store.read = lambda ns, n, _s=stale: {**_s, "spec": dict(_s["spec"])}
    assert [a.try_acquire_or_renew(), b.try_acquire_or_renew()] == [True, False]


def test_release_hands_the_lease_over_at_once():
    store, clock = Store(), Clock()
    a, b = _elector(store, "a", clock), _elector(store, "b", clock)
    a.try_acquire_or_renew()
    a.release()
    clock.t += timedelta(seconds=2)
    assert b.try_acquire_or_renew() is True


def test_timings_must_nest():
    with pytest.raises(ValueError):
        LeaderElector(Store(), "ns", "l", "a", lease_duration=5, renew_deadline=10, retry_period=2)
