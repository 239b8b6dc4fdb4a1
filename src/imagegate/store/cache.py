"""A small time-bounded cache for what every request reads and rarely changes (keys, accounts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """``get`` returns what was ``put`` less than ``ttl_s`` ago; a ttl of 0 caches nothing.

    Bounded by ``max_entries``: when full, expired entries are dropped, then the oldest.
    """

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl_s <= 0:
            return
        now = time.monotonic()
        if len(self._entries) >= self.max_entries:
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            while len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (now + self.ttl_s, value)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


class SharedLoads(Generic[K, V]):
    """One load per key at a time: a caller asking for a key that is being loaded waits for
    that load. A burst of requests finding their cache entry expired then reads the database
    once, instead of taking a pooled connection each."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    async def load(self, key: K, load: Callable[[], Awaitable[V]]) -> V:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = asyncio.ensure_future(load())
            running.add_done_callback(lambda _: self._running.pop(key, None))
        # Shielded: one waiter cancelled does not cancel the others' load.
        return await asyncio.shield(running)
