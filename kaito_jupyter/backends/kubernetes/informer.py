"""A small informer: list, then watch from the list's resourceVersion, keeping a cache.

Why ours (not a framework's): it is the one piece every other part leans on, and it must
resume correctly. After a dropped connection it resumes from the last resourceVersion it saw
(bookmarks keep that fresh), so nothing is replayed or missed. When the API server says that
version is gone (410 Gone: etcd compacted it, or the watch cache moved past it), it lists again
and tells its handlers the difference: objects that vanished meanwhile come out as DELETED,
changed ones as MODIFIED. Handlers get (type, object) with plain dicts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kaito_jupyter.backends.kubernetes.kube import ApiError, Kind, Kube

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]
WATCH_SECONDS = 240  # the server ends each watch after this; we resume from where it was


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


class Informer:
    def __init__(
        self,
        kube: Kube,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        name: str | None = None,
    ):
        self.kube = kube
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.name = name or kind.plural
        self.cache: dict[tuple[str, str], dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.handlers: list[Handler] = []
        self.synced = threading.Event()
        self.watching = threading.Event()  # a watch request is open
        self.relists = 0  # how many times a 410 sent us back to listing (tests read it)
        self.watches = 0  # watch requests made
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch = None
        self._thread: threading.Thread | None = None

    # -- reading the cache --------------------------------------------------------------------

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self.cache.get((namespace or "", name))

    def items(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.cache.values())

    # -- life cycle ---------------------------------------------------------------------------

    def add_handler(self, handler: Handler) -> None:
        self.handlers.append(handler)

    def start(self, *, resource_version: str | None = None) -> Informer:
        """Run in a daemon thread. `resource_version`: resume a watch from there instead of
        listing first (what a restarted process that remembers it does)."""
        self.resource_version = resource_version
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        watch = self._watch
        if watch is not None:
            watch.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def drop_connection(self) -> None:
        """Break the current watch's connection (as a network failure would); it resumes."""
        watch = self._watch
        if watch is not None:
            watch.stop()

    # -- the loop -----------------------------------------------------------------------------

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        for handler in self.handlers:
            try:
                handler(type_, obj)
            except Exception:  # one handler's bug must not stop the informer
                log.exception("informer %s: handler failed on %s", self.name, type_)

    def _list(self) -> None:
        listed = self.kube.list(self.kind, self.namespace, label_selector=self.label_selector)
        fresh = {}
        for item in listed.get("items") or []:
            item.setdefault("apiVersion", self.kind.api_version)
            item.setdefault("kind", self.kind.kind)
            fresh[key_of(item)] = item
        with self._lock:
            old, self.cache = self.cache, fresh
            self.resource_version = (listed.get("metadata") or {}).get("resourceVersion")
        for key, item in fresh.items():
            before = old.get(key)
            if before is None:
                self._emit("ADDED", item)
            elif (before.get("metadata") or {}).get("resourceVersion") != (
                item.get("metadata") or {}
            ).get("resourceVersion"):
                self._emit("MODIFIED", item)
        for key, item in old.items():
            if key not in fresh:
                self._emit("DELETED", item)
        self.synced.set()

    def _call(self, **kwargs):
        query = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", kwargs.get("resource_version")),
            ("timeoutSeconds", kwargs.get("timeout_seconds")),
            ("labelSelector", self.label_selector),
        ]
        resp = self.kube._call(
            "GET", self.kind.path(self.namespace), query=query, timeout=(10, None)
        )
        if not 200 <= resp.status <= 299:
            data = resp.read()
            exc = type("E", (), {"status": resp.status, "body": data, "reason": resp.reason})()
            from kaito_jupyter.backends.kubernetes.kube import _error

            raise _error(exc)
        self.watching.set()
        return resp.response

    def _watch_once(self) -> None:
        from kubernetes import watch

        w = watch.Watch(return_type="object")
        self._watch = w
        self.watches += 1
        try:
            for event in w.stream(
                self._call, resource_version=self.resource_version, timeout_seconds=WATCH_SECONDS
            ):
                if self._stop.is_set():
                    break
                type_, obj = event["type"], event["raw_object"]
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if type_ == "BOOKMARK":
                    self.resource_version = rv or self.resource_version
                    continue
                obj.setdefault("apiVersion", self.kind.api_version)
                obj.setdefault("kind", self.kind.kind)
                with self._lock:
                    if type_ == "DELETED":
                        self.cache.pop(key_of(obj), None)
                    else:
                        self.cache[key_of(obj)] = obj
                    self.resource_version = rv or self.resource_version
                self._emit(type_, obj)
        finally:
            self.watching.clear()
            self._watch = None

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._list()
                else:
                    self.synced.set()  # resuming: the caller already holds the state
                self._watch_once()
                backoff = 0.2
            except Exception as exc:
                status = getattr(exc, "status", None)
                if status == 410:
                    # Our resourceVersion is gone: list again and tell handlers the difference.
                    log.info("informer %s: %s; listing again", self.name, exc)
                    self.relists += 1
                    self.resource_version = None
                    continue
                if self._stop.is_set():
                    break
                if isinstance(exc, ApiError) and exc.status in (401, 403, 404):
                    log.warning("informer %s: %s", self.name, exc)
                else:
                    log.debug("informer %s: watch ended: %s", self.name, exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
