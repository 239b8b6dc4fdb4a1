"""Per-key rate limits: requests per minute and generations in flight → 429 with Retry-After.

In memory for one instance. The limiter is behind a small interface so several instances
can share one limit through Redis instead.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from imagegate.errors import RateLimited

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    requests_per_minute: int | None = None
    concurrent: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.requests_per_minute is None and self.concurrent is None


class Lease(Protocol):
    async def release(self) -> None: ...


class RateLimiter(Protocol):
    async def acquire(self, key: str, limits: Limits) -> Lease:
        """Admit one request for ``key`` or raise ``RateLimited`` (429, ``Retry-After``)."""
        ...


class _NoLease:
    async def release(self) -> None:
        return None


NO_LEASE = _NoLease()


class MemoryRateLimiter:
    """Sliding one-minute window and an in-flight counter per key, for a single process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._lock = asyncio.Lock()

    async def acquire(self, key: str, limits: Limits) -> Lease:
        if limits.unlimited:
            return NO_LEASE
        async with self._lock:
            now = self._clock()
            recent = self._recent[key]
            while recent and recent[0] <= now - WINDOW_S:
                recent.popleft()
            if limits.requests_per_minute is not None and len(recent) >= limits.requests_per_minute:
                raise too_many_requests(
                    f"Rate limit exceeded: {limits.requests_per_minute} requests per minute",
                    retry_after=recent[0] + WINDOW_S - now,
                )
            if limits.concurrent is not None and self._in_flight[key] >= limits.concurrent:
                raise too_many_requests(
                    f"Rate limit exceeded: {limits.concurrent} generations in flight", retry_after=1
                )
            recent.append(now)
            self._in_flight[key] += 1
        return _MemoryLease(self, key)

    async def _release(self, key: str) -> None:
        async with self._lock:
            self._in_flight[key] = max(0, self._in_flight[key] - 1)


class _MemoryLease:
    def __init__(self, limiter: MemoryRateLimiter, key: str) -> None:
        self._limiter = limiter
        self._key = key
        self._released = False

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._limiter._release(self._key)


def too_many_requests(message: str, *, retry_after: float) -> RateLimited:
    seconds = max(1, math.ceil(retry_after))
    return RateLimited(message, headers={"Retry-After": str(seconds)}, metadata={"retry_after": seconds})
