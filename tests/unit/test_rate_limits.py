"""Token buckets per instance and method."""

from __future__ import annotations

import pytest

from wagate.core.errors import RateLimited
from wagate.core.rate_limits import RateLimiter

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def limiter(enabled: bool = True) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    limits = RateLimiter(enabled=enabled)
    limits._now = clock  # a deterministic clock for the test
    return limits, clock


async def test_burst_equals_rate_then_refills() -> None:
    limits, clock = limiter()
    for _ in range(10):
        await limits.check(1, "getAvatar", 10)
    with pytest.raises(RateLimited) as caught:
        await limits.check(1, "getAvatar", 10)
    assert 0 < caught.value.retry_after_s <= 0.1
    clock.now += 0.11
    await limits.check(1, "getAvatar", 10)


async def test_buckets_are_per_instance_and_method() -> None:
    limits, _ = limiter()
    await limits.check(1, "setSettings", 1)
    await limits.check(2, "setSettings", 1)
    await limits.check(1, "getSettings", 1)
    with pytest.raises(RateLimited):
        await limits.check(1, "setSettings", 1)


async def test_disabled_limiter_never_refuses() -> None:
    limits, _ = limiter(enabled=False)
    for _ in range(100):
        await limits.check(1, "setSettings", 1)


async def test_a_rate_below_one_a_second_allows_one_call_then_refills() -> None:
    limits, clock = limiter()
    await limits.check(1, "slowMethod", 0.5)
    with pytest.raises(RateLimited) as caught:
        await limits.check(1, "slowMethod", 0.5)
    assert 1.9 < caught.value.retry_after_s <= 2.0
    clock.now += 1.0
    with pytest.raises(RateLimited):
        await limits.check(1, "slowMethod", 0.5)
    clock.now += 1.01
    await limits.check(1, "slowMethod", 0.5)
