"""Prometheus metrics of one app (its own registry, so tests can build many apps): the HTTP
edge's requests, and the workers' `PipelineEvents`. Counters are per process; with several
nodes, sum them over the nodes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


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
        self._jobs_answered = self._counter(
            "wagate_avatar_jobs_answered",
            "getAvatarAsync requests whose avatarInfo notification was queued",
        )
        self._lookups_given_up = self._counter(
            "wagate_avatar_lookups_given_up",
            "Avatar lookups that failed inside wagate on every attempt, answered as timed out",
        )
        self._webhooks_delivered = self._counter(
            "wagate_webhooks_delivered", "Webhooks a receiver accepted (2xx)"
        )
        self._webhook_attempts_failed = self._counter(
            "wagate_webhook_attempts_failed", "Webhook attempts that failed (a retry follows)"
        )
        self._dead_lettered = self._counter(
            "wagate_notifications_dead_lettered",
            "Notifications moved to the dead letters after the retention",
        )
        self._dead_letters_deleted = self._counter(
            "wagate_dead_letters_deleted",
            "Dead letters deleted after WAGATE_DEAD_LETTER_RETENTION",
        )

        self._jobs_pending = Gauge(
            "wagate_avatar_jobs_pending",
            "Acknowledged getAvatarAsync requests not yet answered, in the whole database"
            " (read at each scrape)",
            registry=self.registry,
        )

        self._long_polls_waiting = Gauge(
            "wagate_long_polls_waiting",
            "receiveNotification calls of this process that found the queue empty and wait for"
            " a notification (read at each scrape)",
            registry=self.registry,
        )

    def set_avatar_jobs_pending(self, count: float) -> None:
        self._jobs_pending.set(count)

    def set_long_polls_waiting(self, count: int) -> None:
        self._long_polls_waiting.set(count)

    def _counter(self, name: str, documentation: str) -> Counter:
        return Counter(name, documentation, registry=self.registry)

    def observe_request(self, method: str, status: int, seconds: float) -> None:
        self.requests.labels(method, str(status)).inc()
        self.latency.labels(method).observe(seconds)

    # -- PipelineEvents ---------------------------------------------------------------------

    def avatar_jobs_answered(self, count: int) -> None:
        self._jobs_answered.inc(count)

    def avatar_lookups_given_up(self, count: int) -> None:
        self._lookups_given_up.inc(count)

    def webhook_delivered(self) -> None:
        self._webhooks_delivered.inc()

    def webhook_attempt_failed(self) -> None:
        self._webhook_attempts_failed.inc()

    def notifications_dead_lettered(self, count: int) -> None:
        self._dead_lettered.inc(count)

    def dead_letters_deleted(self, count: int) -> None:
        self._dead_letters_deleted.inc(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
