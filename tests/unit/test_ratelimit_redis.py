"""Per-key rate limits shared through a real Redis server."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from imagegate.api.app import _redis
from imagegate.errors import RateLimited
from imagegate.ratelimit import Limits
from imagegate.ratelimit_redis import RedisRateLimiter
from tests.redis_fixture import free_port, redis_url  # noqa: F401 - the session fixture


@pytest_asyncio.fixture(loop_scope="function")
async def redis(redis_url: str) -> AsyncIterator[Redis]:  # noqa: F811
    client = _redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def prefix() -> str:
    """Each test its own keys, so tests sharing the server never see each other's requests."""
    return f"test-{uuid.uuid4().hex[:8]}:"


async def refused(limiter: RedisRateLimiter, key: str, limits: Limits) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        await limiter.acquire(key, limits)
    return caught.value


async def test_requests_per_minute_refuse_with_retry_after_until_the_oldest_leaves_the_window(
    redis: Redis, prefix: str
) -> None:
    limiter = RedisRateLimiter(redis, prefix)
    for _ in range(2):
        await (await limiter.acquire("k", Limits(requests_per_minute=2))).release()
    error = await refused(limiter, "k", Limits(requests_per_minute=2))
    assert error.status == 429
    assert error.headers["Retry-After"] == "60"  # the first request leaves the window in just under 60 s
    assert error.metadata["retry_after"] == 60


async def test_the_window_slides(redis: Redis, prefix: str) -> None:
    limiter = RedisRateLimiter(redis, prefix, window_s=2.0)
    limits = Limits(requests_per_minute=2)
    await limiter.acquire("k", limits)
    await asyncio.sleep(1.2)
    await limiter.acquire("k", limits)
    assert (await refused(limiter, "k", limits)).headers["Retry-After"] == "1"
    await asyncio.sleep(0.9)  # the first has left the window, the second has not
    await limiter.acquire("k", limits)
    await refused(limiter, "k", limits)  # a refusal takes no place in the window


async def test_limits_are_per_key_and_shared_by_limiters(redis: Redis, prefix: str) -> None:
    one, other = RedisRateLimiter(redis, prefix), RedisRateLimiter(redis, prefix)  # two instances
    limits = Limits(requests_per_minute=1)
    await one.acquire("a", limits)
    await one.acquire("b", limits)
    await refused(other, "a", limits)


async def test_concurrency_counts_generations_in_flight_across_instances(redis: Redis, prefix: str) -> None:
    one, other = RedisRateLimiter(redis, prefix), RedisRateLimiter(redis, prefix)
    limits = Limits(concurrent=1)
    lease = await one.acquire("k", limits)
    error = await refused(other, "k", limits)
    assert error.headers["Retry-After"] == "1"
    await lease.release()
    await lease.release()  # idempotent: never frees a slot twice
    second = await other.acquire("k", limits)
    await refused(one, "k", limits)
    await second.release()


async def test_a_renewed_lease_outlives_its_ttl_and_a_dead_holders_lease_frees_itself(
    redis: Redis, prefix: str
) -> None:
    limits = Limits(concurrent=1)
    alive = RedisRateLimiter(redis, prefix, lease_ttl_s=1.0)
    renewing = asyncio.create_task(alive.renew_forever())
    try:
        lease = await alive.acquire("k", limits)
        await asyncio.sleep(1.5)  # past the TTL: only renewal keeps it
        await refused(RedisRateLimiter(redis, prefix), "k", limits)
        await lease.release()
    finally:
        renewing.cancel()

    dead = RedisRateLimiter(redis, prefix, lease_ttl_s=1.0)
    await dead.acquire("k", limits)  # never released, never renewed: its process was killed
    other = RedisRateLimiter(redis, prefix)
    await refused(other, "k", limits)
    await asyncio.sleep(1.1)
    await (await other.acquire("k", limits)).release()


async def test_an_unreachable_redis_falls_back_to_this_instances_limits(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = _redis(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    limiter = RedisRateLimiter(client, prefix)
    limits = Limits(requests_per_minute=2)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="imagegate.ratelimit_redis"):
        await limiter.acquire("k", limits)
        await limiter.acquire("k", limits)
        error = await refused(limiter, "k", limits)
    assert time.monotonic() - started < 1
    assert error.status == 429 and error.headers["Retry-After"] == "60"
    assert [r.message for r in caplog.records if "unreachable" in r.message] != []
    assert len(caplog.records) == 1  # loud once, not once per request
    await client.aclose()


async def test_no_limits_never_touch_redis(prefix: str) -> None:
    client = _redis(f"redis://127.0.0.1:{free_port()}/0")
    limiter = RedisRateLimiter(client, prefix)
    for _ in range(100):
        await limiter.acquire("k", Limits())
    await client.aclose()
