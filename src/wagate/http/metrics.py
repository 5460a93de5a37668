"""Prometheus metrics of one app (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "wagate_http_requests",
            "HTTP requests answered, by GREEN-API method and status code",
            ["method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wagate_http_request_duration_seconds",
            "Time to answer HTTP requests, by GREEN-API method",
            ["method"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60),
        )

    def observe_request(self, method: str, status: int, seconds: float) -> None:
        self.requests.labels(method, str(status)).inc()
        self.latency.labels(method).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
