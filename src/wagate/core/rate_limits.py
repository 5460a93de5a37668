"""Per-instance, per-method token buckets (in process memory)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from wagate.core.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


def burst(per_second: float) -> float:
    """A bucket's capacity: `per_second` calls, but never less than one, or a rate below one
    a second would refuse every call."""
    return max(1.0, per_second)


class RateLimiter:
    """A bucket per (instance, method), refilled at `per_second` with a burst of the same size
    (at least one call).

    `check` raises `RateLimited` carrying how long until the next token. Buckets live in this
    process: several nodes each enforce the full limit (see docs/deployment for the tolerance;
    `wagate.stores.redis_rate_limits.RedisRateLimiter` shares one bucket between nodes).
    `check` is async only to fit the `RateLimits` port: it never awaits.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._buckets: dict[tuple[int, str], _Bucket] = {}
        self._now = time.monotonic

    async def check(self, instance_id: int, method: str, per_second: float) -> None:
        if not self.enabled:
            return
        now = self._now()
        key = (instance_id, method)
        bucket = self._buckets.get(key)
        capacity = burst(per_second)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=capacity, updated=now)
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * per_second)
            bucket.updated = now
        if bucket.tokens < 1:
            raise RateLimited(retry_after_s=(1 - bucket.tokens) / per_second)
        bucket.tokens -= 1

    async def aclose(self) -> None:
        self._buckets.clear()
