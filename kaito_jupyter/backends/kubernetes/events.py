"""Kubernetes Events for what the user should see (`kubectl describe workspace`, `kaito
describe`): one Event per (object, reason, message), its count raised when it repeats, as the
kubelet's recorder does, so a crash loop is one line with a count and not a flood."""

from __future__ import annotations

import hashlib
from typing import Any

from kaito_jupyter.api.conditions import now
from kaito_jupyter.backends.kubernetes.kube import EVENT, ApiError, Kube

COMPONENT = "kaito-jupyter"


def _name(involved: dict[str, Any], reason: str, message: str) -> str:
    digest = hashlib.sha256(f"{involved.get('uid')}/{reason}/{message}".encode()).hexdigest()[:12]
    return f"{involved['name']}.{digest}"


class Recorder:
    def __init__(self, kube: Kube, host: str = ""):
        self.kube = kube
        self.host = host

    def record(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """Best effort: an Event that cannot be written never fails a reconcile."""
        meta = obj.get("metadata") or {}
        involved = {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        namespace = meta.get("namespace") or "default"
        name = _name(involved, reason, message)
        stamp = now()
        try:
            existing = self.kube.find(EVENT, name, namespace)
            if existing is not None:
                self.kube.patch(
                    EVENT,
                    name,
                    namespace,
                    {"count": int(existing.get("count") or 1) + 1, "lastTimestamp": stamp},
                )
                return
            self.kube.create(
                EVENT,
                {
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
                },
                namespace,
            )
        except ApiError:
            pass
