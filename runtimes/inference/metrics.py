"""Prometheus metrics for GET /metrics: requests, tokens, queue depth, latency and TTFT.

Also exported under vLLM's names for the gauges Kaito's autoscaling reads
(vllm:num_requests_waiting, vllm:num_requests_running).
"""

from __future__ import annotations

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine=None):
        disable_created_metrics()  # *_created series only add noise to every scrape
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "kaito_inference_requests", "Requests by API and status", ["api", "status"], registry=r
        )
        self.prompt_tokens = Counter(
            "kaito_inference_prompt_tokens", "Prompt tokens processed", ["model"], registry=r
        )
        self.generation_tokens = Counter(
            "kaito_inference_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.latency = Histogram(
            "kaito_inference_request_latency_seconds",
            "Time from request to last byte",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "kaito_inference_time_to_first_token_seconds",
            "Time from request to the first generated token",
            ["api"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "kaito_inference_queue_depth", "Requests waiting for a slot", registry=r
        )
        self.running = Gauge(
            "kaito_inference_running_requests", "Sequences holding a slot", registry=r
        )
        self.iterations = Gauge(
            "kaito_inference_engine_iterations", "Engine iterations run", registry=r
        )
        waiting = Gauge("vllm:num_requests_waiting", "Requests waiting (vLLM name)", registry=r)
        running = Gauge("vllm:num_requests_running", "Requests running (vLLM name)", registry=r)
        if engine is not None:
            for gauge in (self.queue_depth, waiting):
                gauge.set_function(lambda: engine.queue_depth)
            for gauge in (self.running, running):
                gauge.set_function(lambda: engine.running)
            self.iterations.set_function(lambda: engine.iterations)

    def observe(self, api: str, status: int, model: str, stream=None) -> None:
        """Record a finished request (stream: its Stream, when it reached the engine)."""
        self.requests.labels(api, str(status)).inc()
        if stream is None:
            return
        self.prompt_tokens.labels(model).inc(stream.job.prompt_tokens)
        self.generation_tokens.labels(model).inc(stream.completion_tokens)
        self.latency.labels(api).observe(time.monotonic() - stream.started)
        if stream.first_token_at is not None:
            self.ttft.labels(api).observe(stream.first_token_at - stream.started)

    def render(self) -> bytes:
        return generate_latest(self.registry)
