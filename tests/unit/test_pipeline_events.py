"""`Metrics` counts the workers' `PipelineEvents` under the names docs/reference.md lists."""

from __future__ import annotations

import re

from wagate.core.ports import PipelineEvents
from wagate.http.metrics import Metrics


def emit(events: PipelineEvents) -> None:
    events.avatar_jobs_answered(3)
    events.avatar_lookups_given_up(1)
    events.webhook_delivered()
    events.webhook_delivered()
    events.webhook_attempt_failed()
    events.notifications_dead_lettered(4)
    events.dead_letters_deleted(5)


def test_metrics_render_every_pipeline_counter() -> None:
    metrics = Metrics()
    emit(metrics)
    text = metrics.render().decode()
    found = dict(re.findall(r"^(wagate_[a-z_]+_total) (\S+)$", text, re.MULTILINE))
    assert {name: float(value) for name, value in found.items()} == {
        "wagate_avatar_jobs_answered_total": 3.0,
        "wagate_avatar_lookups_given_up_total": 1.0,
        "wagate_webhooks_delivered_total": 2.0,
        "wagate_webhook_attempts_failed_total": 1.0,
        "wagate_notifications_dead_lettered_total": 4.0,
        "wagate_dead_letters_deleted_total": 5.0,
    }
