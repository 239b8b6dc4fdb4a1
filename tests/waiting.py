"""Waiting for what happens after a response (a settlement, a record) without fixed sleeps:
poll a condition until it holds, failing with what was last seen once the time is up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from tests.conftest import LiveServer

T = TypeVar("T")

#: Generous: a loaded CI machine is slow, and a passing wait returns as soon as it holds.
WITHIN_S = 15.0


def eventually(probe: Callable[[], T], holds: Callable[[T], bool] = bool, within_s: float = WITHIN_S) -> T:
    """``probe()``'s first value for which ``holds`` is true, polled every 20 ms."""
    deadline = time.monotonic() + within_s
    while True:
        value = probe()
        if holds(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not so after {within_s:g} s; last seen: {value!r}")
        time.sleep(0.02)


async def eventually_async(probe: Callable[[], Awaitable[T]], holds: Callable[[T], bool] = bool,
                           within_s: float = WITHIN_S) -> T:
    """``eventually`` for a coroutine probe, polled without blocking the event loop."""
    deadline = time.monotonic() + within_s
    while True:
        value = await probe()
        if holds(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not so after {within_s:g} s; last seen: {value!r}")
        await asyncio.sleep(0.02)


def wait_for_record(live: LiveServer, generation_id: str, key: str | None = None,
                    holds: Callable[[dict[str, Any]], bool] = lambda record: True) -> dict[str, Any]:
    """The generation's record from ``GET /generation``, once it exists (and ``holds``)."""

    def fetch() -> dict[str, Any] | None:
        response = httpx.get(f"{live.api_url}/generation", params={"id": generation_id},
                             headers=live.auth(key), timeout=30)
        return response.json()["data"] if response.status_code == 200 else None

    return eventually(fetch, lambda record: record is not None and holds(record))
