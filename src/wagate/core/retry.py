"""When to try a failed webhook delivery again."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

FIRST_RETRY_S = 1.0
JITTER = 0.2


def backoff_s(failures: int, max_interval_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after the `failures`-th failure in a row: 1, 2, 4, ... capped at
    `max_interval_s`, each with ±20 % jitter so that many queues failing together spread out."""
    base = min(max_interval_s, FIRST_RETRY_S * 2.0 ** max(0, failures - 1))
    spread = (rng or random).uniform(1 - JITTER, 1 + JITTER)
    return min(max_interval_s, base * spread)


def retry_after_s(header: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` value (delay seconds or an HTTP date) in seconds, or None if unusable."""
    if header is None:
        return None
    value = header.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def next_delay_s(
    failures: int,
    max_interval_s: float,
    retry_after: str | None = None,
    rng: random.Random | None = None,
) -> float:
    """The receiver's Retry-After replaces the computed delay; either is capped by the maximum."""
    asked = retry_after_s(retry_after)
    if asked is not None:
        return min(max_interval_s, asked)
    return backoff_s(failures, max_interval_s, rng)
