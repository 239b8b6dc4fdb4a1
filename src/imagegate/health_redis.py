"""Endpoint health shared by every instance through a Redis stream.

Routing reads health synchronously, so each instance keeps its local ``HealthBook`` as the
read path. Every outcome it records is also appended to the stream ``<prefix>health``
(capped at ``STREAM_MAX`` entries), and every instance follows that stream and applies the
other instances' outcomes to its own book, so all books see (nearly) the same outcomes and
open and close the same circuits.

Staleness: an outcome is published as soon as the event loop is free and a follower blocked
on ``XREAD`` gets it at once, so another instance sees it within a few milliseconds, and in
any case within one ``FOLLOW_BLOCK_MS`` wait plus a round trip. An instance that starts reads
the last ``health.WINDOW_S`` of the stream first, so it inherits open circuits.

When Redis is unreachable every instance goes on with its own outcomes only; outcomes
recorded meanwhile (up to ``OUTBOX_MAX``) are published when Redis is back. Outcomes carry
wall-clock time, since each process's monotonic clock is its own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque

from redis.asyncio import Redis
from redis.exceptions import RedisError

from imagegate.health import WINDOW_S, HealthBook, Outcome

log = logging.getLogger(__name__)

STREAM_MAX = 10_000
OUTBOX_MAX = 1_000
#: How long one XREAD waits for news; below the client's socket timeout.
FOLLOW_BLOCK_MS = 500
RETRY_S = 1.0


class SharedHealthBook(HealthBook):
    """A ``HealthBook`` that also shares its outcomes; run :meth:`sync_forever` alongside it."""

    def __init__(self, redis: Redis, prefix: str = "imagegate:") -> None:
        super().__init__()
        self._redis = redis
        self._stream = f"{prefix}health"
        self._instance = secrets.token_hex(8)
        self._outbox: deque[dict[str, str]] = deque(maxlen=OUTBOX_MAX)
        self._pending = asyncio.Event()
        self._down = False

    def record(self, key: str, *, ok: bool, latency_s: float, megapixels: float = 0.0, status: int = 200) -> None:
        super().record(key, ok=ok, latency_s=latency_s, megapixels=megapixels, status=status)
        self._outbox.append({"src": self._instance, "key": key, "ok": "1" if ok else "0", "latency": repr(latency_s),
                             "mp": repr(megapixels), "status": str(status), "wall": repr(time.time())})
        self._pending.set()

    async def sync_forever(self) -> None:
        await asyncio.gather(self._publish_forever(), self._follow_forever())

    async def _publish_forever(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            batch = list(self._outbox)
            self._outbox.clear()
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for fields in batch:
                        pipe.xadd(self._stream, fields, maxlen=STREAM_MAX, approximate=True)
                    await pipe.execute()
                self._came_back()
            except RedisError as exc:
                self._went_down(exc)
                self._outbox.extendleft(reversed(batch))  # retried when Redis is back
                self._pending.set()
                await asyncio.sleep(RETRY_S)

    async def _follow_forever(self) -> None:
        last_id = f"{int((time.time() - WINDOW_S) * 1000)}-0"  # first the recent past, then news
        while True:
            try:
                replies = await self._redis.xread({self._stream: last_id}, count=1000, block=FOLLOW_BLOCK_MS)
                self._came_back()
            except RedisError as exc:
                self._went_down(exc)
                await asyncio.sleep(RETRY_S)
                continue
            for _stream, entries in replies:
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._apply(fields)

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        if fields[b"src"].decode() == self._instance:
            return
        age = max(0.0, time.time() - float(fields[b"wall"]))
        outcome = Outcome(at=self.clock() - age, ok=fields[b"ok"] == b"1", latency_s=float(fields[b"latency"]),
                          megapixels=float(fields[b"mp"]), status=int(fields[b"status"]))
        self.of(fields[b"key"].decode()).record(outcome)

    def _went_down(self, exc: RedisError) -> None:
        if not self._down:
            self._down = True
            log.error("Redis is unreachable (%s): endpoint health is not shared until it is back", exc)

    def _came_back(self) -> None:
        if self._down:
            self._down = False
            log.warning("Redis is reachable again: endpoint health is shared again")
