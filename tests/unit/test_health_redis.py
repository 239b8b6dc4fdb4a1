"""Endpoint health shared through a real Redis server."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from imagegate.api.app import _redis
from imagegate.health_redis import SharedHealthBook
from tests.redis_fixture import free_port, redis_url  # noqa: F401 - the session fixture

ENDPOINT = "openai:openai/gpt-image-2"


@pytest_asyncio.fixture(loop_scope="function")
async def books(redis_url: str) -> AsyncIterator[Callable[[], SharedHealthBook]]:  # noqa: F811
    """Books of separate instances sharing one Redis (and a prefix of this test's own)."""
    client = _redis(redis_url)
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    tasks: list[asyncio.Task[None]] = []

    def start() -> SharedHealthBook:
        book = SharedHealthBook(client, prefix)
        tasks.append(asyncio.create_task(book.sync_forever()))
        return book

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.aclose()


async def eventually(condition: Callable[[], bool], within_s: float = 2.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the staleness bound"
        await asyncio.sleep(0.01)


async def test_failures_on_one_instance_open_the_circuit_on_another(books) -> None:
    one, other = books(), books()
    for _ in range(5):
        one.record(ENDPOINT, ok=False, latency_s=0.2, status=502)
    assert one.is_open(ENDPOINT)
    await eventually(lambda: other.is_open(ENDPOINT), within_s=1.0)
    assert other.snapshot(ENDPOINT)["error_rate"] == 1.0

    other.record(ENDPOINT, ok=True, latency_s=1.5, megapixels=1.0)  # a success anywhere closes it
    await eventually(lambda: not one.is_open(ENDPOINT), within_s=1.0)
    assert one.snapshot(ENDPOINT)["latency_p50_s"] == 1.5
    assert len(other.of(ENDPOINT).outcomes) == 6  # its own outcome was not applied twice


async def test_failures_on_several_instances_add_up(books) -> None:
    one, other = books(), books()
    for book in (one, other, one, other):
        book.record(ENDPOINT, ok=False, latency_s=0.1, status=503)
    await eventually(lambda: one.of(ENDPOINT).consecutive_failures == 4 == other.of(ENDPOINT).consecutive_failures)
    one.record(ENDPOINT, ok=False, latency_s=0.1, status=503)
    await eventually(lambda: other.is_open(ENDPOINT))


async def test_an_instance_that_starts_later_inherits_open_circuits(books) -> None:
    first = books()
    for _ in range(5):
        first.record(ENDPOINT, ok=False, latency_s=0.2, status=429)
    await asyncio.sleep(0.2)  # published
    late = books()
    await eventually(lambda: late.is_open(ENDPOINT))
    assert late.snapshot(ENDPOINT)["recent_429s"] == 5


async def test_an_unreachable_redis_leaves_health_local(caplog: pytest.LogCaptureFixture) -> None:
    client = _redis(f"redis://127.0.0.1:{free_port()}/0")
    book = SharedHealthBook(client)
    with caplog.at_level(logging.ERROR, logger="imagegate.health_redis"):
        syncing = asyncio.create_task(book.sync_forever())
        for _ in range(5):
            book.record(ENDPOINT, ok=False, latency_s=0.2, status=502)
        assert book.is_open(ENDPOINT)
        await asyncio.sleep(0.3)
    assert not syncing.done()  # it keeps trying
    assert len([r for r in caplog.records if "unreachable" in r.message]) == 1
    syncing.cancel()
    await client.aclose()
