"""`RedisRateLimiter`: the `RateLimits` port with one token bucket per (instance, method) in
Redis, shared by every node, so a cluster enforces each limit once rather than once per node.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from wagate.core.errors import RateLimited
from wagate.core.rate_limits import burst

logger = logging.getLogger(__name__)

# Versioned like every name two releases may share during a rolling upgrade: a release that
# changes the bucket's layout changes the suffix instead of misreading the old one's keys.
KEY_PREFIX: Final = "wagate:rate:v1"

# KEYS[1]: the bucket. ARGV[1]: per_second, the refill rate. ARGV[2]: the key's TTL in ms.
# ARGV[3]: the capacity (`burst(per_second)`). Returns the seconds until the next token, "0"
# when one was taken. The clock is the server's (TIME), so the nodes' clocks never matter.
# %.17g round-trips a double exactly, where Lua's tostring would keep 14 digits and drop the
# microseconds of `now`.
_BUCKET_SCRIPT: Final = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1])
local updated = tonumber(state[2])
if tokens == nil or updated == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
end
local retry_after = 0
if tokens < 1 then
  retry_after = (1 - tokens) / rate
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens),
  'updated', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return string.format('%.17g', retry_after)
"""

# An empty bucket is full again after capacity / rate seconds (1 s for rates of one a second or
# more), and a missing key reads as a full bucket, so a key idle for longer than that can go;
# the margin covers the trip to Redis.
_KEY_TTL_MARGIN_MS = 4000
# Redis sits next to the nodes and answers in well under a millisecond; an API call must not
# wait long for an answer that only ever limits it.
_TIMEOUT_S = 0.25
# After a failure, calls skip Redis (and are allowed) this long, so a Redis that hangs rather
# than refuses does not add a timeout to every API call.
_PAUSE_AFTER_ERROR_S = 1.0
_WARNING_INTERVAL_S = 10.0


class RedisRateLimiter:
    """Token buckets in Redis: per (instance, method), a burst of `per_second` calls (at least
    one) refilled at `per_second` a second, shared by every node using the same Redis and key
    prefix.

    Open it with `RedisRateLimiter("redis://host:6379/0")` (no I/O until the first check) and
    close it with `await limiter.aclose()`. `check` raises `RateLimited(retry_after_s)` when the
    bucket is empty. With `enabled` false, `check` allows everything without contacting Redis.

    Failing open: when Redis cannot answer (down, unreachable, too slow, a script error), `check`
    allows the call and logs a warning at most every 10 s. Rate limits protect WhatsApp accounts
    from bursts; refusing every API call because a helper service is down would turn a Redis
    outage into a gateway outage. For a second after a failure, checks allow without trying
    Redis. The URL (and its password) is never logged.
    """

    def __init__(
        self,
        url: str,
        enabled: bool = True,
        *,
        key_prefix: str = KEY_PREFIX,
        timeout_s: float = _TIMEOUT_S,
    ) -> None:
        self.enabled = enabled
        self._prefix = key_prefix
        self._client: Redis = Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # redis-py 6 retries thrice with backoff by default: seconds per call when Redis is
            # down. The caller fails open instead.
            retry=Retry(NoBackoff(), 0),
        )
        self._bucket = self._client.register_script(_BUCKET_SCRIPT)
        self._skip_until = 0.0
        self._last_warning = -_WARNING_INTERVAL_S

    async def check(self, instance_id: int, method: str, per_second: float) -> None:
        if not self.enabled or time.monotonic() < self._skip_until:
            return
        key = f"{self._prefix}:{instance_id}:{method}"
        try:
            capacity = burst(per_second)
            ttl_ms = math.ceil(1000 * capacity / per_second) + _KEY_TTL_MARGIN_MS
            args = [repr(float(per_second)), ttl_ms, repr(capacity)]
            answer = await self._bucket(keys=[key], args=args)
            retry_after_s = float(answer)
        except (RedisError, OSError, ValueError) as exc:
            self._skip_until = time.monotonic() + _PAUSE_AFTER_ERROR_S
            self._warn(exc)
            return
        if retry_after_s > 0:
            raise RateLimited(retry_after_s=retry_after_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _warn(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning < _WARNING_INTERVAL_S:
            return
        self._last_warning = now
        logger.warning(
            "rate limits unavailable, allowing requests (%s: %s)",
            type(exc).__name__,
            exc,
            extra={"action": "rate_limits_failed_open"},
        )
