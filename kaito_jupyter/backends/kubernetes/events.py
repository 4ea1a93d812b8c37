"""Kubernetes Events for what the user should see (`kubectl describe workspace`, `kaito
describe`): one Event per (object, reason, message), its count raised when it repeats, as the
kubelet's recorder does, so a crash loop is one line with a count and not a flood.

Writing an Event costs the reconcile a round trip to the API server that changes nothing it
decides on; with `background=True` (the controller's choice, as client-go's broadcaster does)
they go from a thread of their own, in order, so a reconcile never waits for one. Best effort
either way: an Event that cannot be written never fails a reconcile.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from typing import Any

from kaito_jupyter.api.conditions import now
from kaito_jupyter.backends.kubernetes.kube import EVENT, ApiError, Kube

log = logging.getLogger(__name__)

COMPONENT = "kaito-jupyter"
BACKLOG = 1000  # Events waiting to be sent; beyond it new ones are dropped (client-go: 1000)


def _name(involved: dict[str, Any], reason: str, message: str) -> str:
    digest = hashlib.sha256(f"{involved.get('uid')}/{reason}/{message}".encode()).hexdigest()[:12]
    return f"{involved['name']}.{digest}"


class Recorder:
    def __init__(self, kube: Kube, host: str = "", *, background: bool = False):
        self.kube = kube
        self.host = host
        self.dropped = 0
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(BACKLOG)
            self._thread = threading.Thread(target=self._send_loop, name="events", daemon=True)
            self._thread.start()

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        item = (involved, meta.get("namespace") or "default", type_, reason, message, now())
        if self._queue is None:
            self._send(*item)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def flush(self, timeout: float = 10.0) -> None:
        """Send what is queued (a stopping controller's last Events), then stop the sender."""
        if self._queue is None or self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)

    def _send_loop(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._send(*item)
            except Exception:  # the sender thread must outlive any one Event
                log.exception("could not record an Event")

    def _send(self, involved, namespace, type_, reason, message, stamp) -> None:
        name = _name(involved, reason, message)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT, "host": self.host},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.host or COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            # Create first: most Events are new, so the common case is one round trip; a
            # repeat (409) reads the count and raises it.
            try:
                self.kube.create(EVENT, body, namespace)
                return
            except ApiError as exc:
                if exc.status != 409:
                    raise
            existing = self.kube.find(EVENT, name, namespace)
            if existing is not None:
                self.kube.patch(
                    EVENT,
                    name,
                    namespace,
                    {"count": int(existing.get("count") or 1) + 1, "lastTimestamp": stamp},
                )
        except ApiError:
            pass
