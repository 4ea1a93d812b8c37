"""Where the idle timeout learns about requests: the runtime's Prometheus request counter.

`PrometheusActivity` reads `/metrics` of the workspace's Service through the API server's
service proxy (the controller's own credentials; no route to the pod needed). Anything with
`requests(namespace, name) -> float | None` will do (`Reconciler(activity=...)`): the test
bed's KWOK pods serve nothing, so its tests drive a counter of their own.
"""

from __future__ import annotations

import logging
from typing import Protocol

from kaito_jupyter.backends.kubernetes.kube import SERVICE, ApiError, Kube

log = logging.getLogger(__name__)

# Our runtime's counter, and vLLM's (Kaito's runtime) successful-request counter.
REQUEST_COUNTERS = ("kaito_inference_requests_total", "vllm:request_success_total")


class ActivitySource(Protocol):
    def requests(self, namespace: str, name: str) -> float | None:
        """Requests served so far (a counter), or None when it cannot be read now."""


def request_count(metrics_text: str) -> float | None:
    """The sum of the request counters' samples in a Prometheus text exposition."""
    total, seen = 0.0, False
    for line in metrics_text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name not in REQUEST_COUNTERS:
            continue
        rest = line.rsplit("}", 1)[1] if "{" in line else line[len(name) :]
        try:
            total += float(rest.split()[0])  # "value [timestamp]"
        except (ValueError, IndexError):
            continue
        seen = True
    return total if seen else None


class PrometheusActivity:
    def __init__(self, kube: Kube, port: str = "http"):
        self.kube = kube
        self.port = port

    def requests(self, namespace: str, name: str) -> float | None:
        path = f"{SERVICE.path(namespace, name)}:{self.port}/proxy/metrics"
        try:
            resp = self.kube._call("GET", path, accept="text/plain", timeout=5)
            body = resp.read()
            if not 200 <= resp.status <= 299:
                return None
        except ApiError as exc:
            log.debug("metrics of %s/%s unreadable: %s", namespace, name, exc)
            return None
        return request_count(body.decode("utf-8", "replace"))
