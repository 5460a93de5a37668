"""Token buckets in Redis are shared by every node; a Redis that cannot answer allows calls.

Needs the Redis at WAGATE_TEST_REDIS_URL (default redis://127.0.0.1:6379/0); skips when it is
unreachable, unless WAGATE_REQUIRE_REDIS=1 turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis import Redis

from wagate.core.errors import RateLimited
from wagate.core.ports import RateLimits
from wagate.stores.redis_rate_limits import RedisRateLimiter

pytestmark = pytest.mark.anyio

UNREACHABLE = "redis://:hunter2-secret@127.0.0.1:1/0"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix(redis_url: str) -> str:
    """A key prefix of this test's own, so runs and tests never share a bucket."""
    return f"wagate-test:{uuid.uuid4().hex}"


@pytest.fixture
async def nodes(redis_url: str, prefix: str) -> AsyncIterator[Callable[[], RedisRateLimiter]]:
    """Make limiters ("nodes") on the test Redis under the test's prefix; closed afterwards."""
    made: list[RedisRateLimiter] = []

    def make() -> RedisRateLimiter:
        made.append(RedisRateLimiter(redis_url, key_prefix=prefix))
        return made[-1]

    yield make
    for limiter in made:
        await limiter.aclose()
    client = Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def only_key_ttl_ms(redis_url: str, prefix: str) -> int:
    """The TTL of the one bucket key under `prefix`."""
    client = Redis.from_url(redis_url)
    try:
        (key,) = client.scan_iter(match=f"{prefix}:*")
        return int(client.pttl(key))  # type: ignore[arg-type]  # sync client
    finally:
        client.close()


async def test_two_nodes_share_one_budget_then_it_refills(
    nodes: Callable[[], RedisRateLimiter],
) -> None:
    node_a, node_b = nodes(), nodes()
    # Each node's connection opened and the script loaded first, on a bucket of its own: on a
    # slow machine that first call took longer than a token's refill and the budget grew back.
    await asyncio.gather(node_a.check(1, "warmUp", 1), node_b.check(2, "warmUp", 1))
    # A budget of 4 refilling one call every 250 ms: the five calls below need only round trips.
    await asyncio.gather(*(node.check(1, "getAvatar", 4) for node in [node_a, node_b] * 2))
    with pytest.raises(RateLimited) as caught:
        await node_b.check(1, "getAvatar", 4)
    assert 0 < caught.value.retry_after_s <= 0.25
    with pytest.raises(RateLimited):
        await node_a.check(1, "getAvatar", 4)
    await asyncio.sleep(caught.value.retry_after_s + 0.02)
    await node_a.check(1, "getAvatar", 4)


async def test_buckets_are_per_instance_and_method(
    nodes: Callable[[], RedisRateLimiter],
) -> None:
    node_a, node_b = nodes(), nodes()
    await node_a.check(1, "setSettings", 1)
    await node_b.check(2, "setSettings", 1)
    await node_b.check(1, "getSettings", 1)
    with pytest.raises(RateLimited) as caught:
        await node_b.check(1, "setSettings", 1)
    assert 0.9 < caught.value.retry_after_s <= 1.0


async def test_a_rate_below_one_a_second_allows_one_call(
    nodes: Callable[[], RedisRateLimiter], redis_url: str, prefix: str
) -> None:
    node_a, node_b = nodes(), nodes()
    await node_a.check(1, "slowMethod", 0.5)
    with pytest.raises(RateLimited) as caught:
        await node_b.check(1, "slowMethod", 0.5)
    assert 1.5 < caught.value.retry_after_s <= 2.0
    # Kept until the bucket would be full again (2 s) and the margin: not forgotten early.
    assert 5000 < only_key_ttl_ms(redis_url, prefix) <= 6000


async def test_idle_buckets_expire(
    nodes: Callable[[], RedisRateLimiter], redis_url: str, prefix: str
) -> None:
    await nodes().check(1, "getAvatar", 10)
    assert 0 < only_key_ttl_ms(redis_url, prefix) <= 5000


async def test_disabled_limiter_never_refuses(nodes: Callable[[], RedisRateLimiter]) -> None:
    limiter = nodes()
    limiter.enabled = False
    for _ in range(20):
        await limiter.check(1, "setSettings", 1)


async def test_an_unreachable_redis_allows_requests_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter: RateLimits = RedisRateLimiter(UNREACHABLE)
    try:
        for _ in range(20):
            await limiter.check(1, "setSettings", 1)
    finally:
        await limiter.aclose()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "action", None) for r in warnings] == ["rate_limits_failed_open"]
    assert "hunter2-secret" not in caplog.text
