"""A small time-bounded cache for what every request reads and rarely changes (keys, accounts)."""

from __future__ import annotations

import time
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
