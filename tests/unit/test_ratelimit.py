"""In-memory per-key rate limits."""

from __future__ import annotations

import pytest

from imagegate.errors import RateLimited
from imagegate.ratelimit import Limits, MemoryRateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_requests_per_minute_refuse_with_retry_after_until_the_window_moves() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(clock)
    limits = Limits(requests_per_minute=2)
    for _ in range(2):
        await (await limiter.acquire("k", limits)).release()
    clock.now += 20
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire("k", limits)
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "40"
    clock.now += 40
    await limiter.acquire("k", limits)


async def test_limits_are_per_key() -> None:
    limiter = MemoryRateLimiter(Clock())
    await limiter.acquire("a", Limits(requests_per_minute=1))
    with pytest.raises(RateLimited):  # "a" has used its minute
        await limiter.acquire("a", Limits(requests_per_minute=1))
    await limiter.acquire("b", Limits(requests_per_minute=1))  # "b" has not
    with pytest.raises(RateLimited):
        await limiter.acquire("b", Limits(requests_per_minute=1))


async def test_concurrency_counts_generations_in_flight() -> None:
    limiter = MemoryRateLimiter(Clock())
    limits = Limits(concurrent=1)
    lease = await limiter.acquire("k", limits)
    with pytest.raises(RateLimited):
        await limiter.acquire("k", limits)
    await lease.release()
    await lease.release()  # idempotent: never frees a slot twice
    second = await limiter.acquire("k", limits)
    with pytest.raises(RateLimited):
        await limiter.acquire("k", limits)
    await second.release()


async def test_no_limits_admit_everything() -> None:
    limiter = MemoryRateLimiter(Clock())
    for _ in range(1000):
        await limiter.acquire("k", Limits())
