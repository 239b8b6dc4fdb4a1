"""Per-key rate limits shared by every instance through Redis.

Keys, per API key hash ``K`` (the braces keep both in one Redis Cluster slot):

* ``<prefix>rl:{K}:window`` — sorted set, one member per admitted request scored by its
  admission time (ms): the sliding one-minute window.
* ``<prefix>rl:{K}:leases`` — sorted set of generations in flight, each scored by the time
  its lease expires. Holders renew their leases every third of ``lease_ttl_s``; a process
  that dies (even SIGKILL) stops renewing, and its slots free themselves at most
  ``lease_ttl_s`` later (expired leases are dropped by the next admission check).

Admission is one round trip: a Lua script trims, counts, admits and sets expiries
atomically, on Redis's own clock so that instances' clocks never disagree.

When Redis cannot be reached the limiter fails open to the shared limit, but not to no
limit at all: each instance falls back to its own in-memory limiter (so a key may get up
to one limit per instance), logs an error, and tries Redis again after ``RETRY_REDIS_S``.
A client never sees a 500 because of Redis.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict

from redis.asyncio import Redis
from redis.exceptions import RedisError

from imagegate.ratelimit import (
    NO_LEASE,
    WINDOW_S,
    Lease,
    Limits,
    MemoryRateLimiter,
    too_many_requests,
)

log = logging.getLogger(__name__)

LEASE_TTL_S = 30.0
#: After Redis fails, requests use the in-memory limiter this long before Redis is tried again,
#: so an outage costs one slow request now and then, not one per request.
RETRY_REDIS_S = 5.0

# Returns {0, 0} when admitted, {1, ms until the oldest request leaves the window} when over the
# per-minute limit, {2, 0} when too many generations are in flight. A negative limit is no limit.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, rpm, concurrent = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local window, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
if rpm >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, tonumber(oldest[2]) + window - now}
  end
end
if concurrent >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= concurrent then
    return {2, 0}
  end
  redis.call('ZADD', KEYS[2], now + ttl, id)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if rpm >= 0 then
  redis.call('ZADD', KEYS[1], now, id)
  redis.call('PEXPIRE', KEYS[1], window)
end
return {0, 0}
"""

# Pushes the expiry of the leases still held (XX: a released one is never brought back).
_RENEW = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 0
"""


class RedisRateLimiter:
    """The ``RateLimiter`` protocol over Redis; run :meth:`renew_forever` alongside it."""

    def __init__(self, redis: Redis, prefix: str = "imagegate:", *, window_s: float = WINDOW_S,
                 lease_ttl_s: float = LEASE_TTL_S) -> None:
        self._redis = redis
        self._prefix = prefix
        self._window_ms = int(window_s * 1000)
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._fallback = MemoryRateLimiter()
        self._redis_down_until: float | None = None
        #: Lease ids this process holds, by API key: what :meth:`renew_forever` keeps alive.
        self._held: defaultdict[str, set[str]] = defaultdict(set)

    async def acquire(self, key: str, limits: Limits) -> Lease:
        if limits.unlimited:
            return NO_LEASE
        if self._redis_down_until is not None and time.monotonic() < self._redis_down_until:
            return await self._fallback.acquire(key, limits)
        lease_id = secrets.token_hex(8)
        try:
            verdict, wait_ms = await self._acquire(
                keys=[self._window_key(key), self._leases_key(key)],
                args=[lease_id, _or_unlimited(limits.requests_per_minute), _or_unlimited(limits.concurrent),
                      self._window_ms, self._lease_ttl_ms],
            )
        except RedisError as exc:
            self._went_down(exc)
            return await self._fallback.acquire(key, limits)
        self._came_back()
        if verdict == 1:
            raise too_many_requests(f"Rate limit exceeded: {limits.requests_per_minute} requests per minute",
                                    retry_after=wait_ms / 1000)
        if verdict == 2:
            raise too_many_requests(f"Rate limit exceeded: {limits.concurrent} generations in flight",
                                    retry_after=1)
        if limits.concurrent is None:
            return NO_LEASE
        self._held[key].add(lease_id)
        return _RedisLease(self, key, lease_id)

    async def renew_forever(self) -> None:
        """Keep this process's leases alive; when it dies they expire within ``lease_ttl_s``."""
        while True:
            await asyncio.sleep(self._lease_ttl_ms / 3000)
            for key, ids in list(self._held.items()):
                if not ids:
                    del self._held[key]
                    continue
                try:
                    await self._renew(keys=[self._leases_key(key)], args=[self._lease_ttl_ms, *ids])
                except RedisError as exc:
                    self._went_down(exc)

    async def _release(self, key: str, lease_id: str) -> None:
        self._held[key].discard(lease_id)
        try:
            await self._redis.zrem(self._leases_key(key), lease_id)
        except RedisError as exc:  # the lease expires by itself
            self._went_down(exc)

    def _window_key(self, key: str) -> str:
        return f"{self._prefix}rl:{{{key}}}:window"

    def _leases_key(self, key: str) -> str:
        return f"{self._prefix}rl:{{{key}}}:leases"

    def _went_down(self, exc: RedisError) -> None:
        if self._redis_down_until is None:
            log.error("Redis is unreachable (%s): rate limits are enforced per instance until it is back", exc)
        self._redis_down_until = time.monotonic() + RETRY_REDIS_S

    def _came_back(self) -> None:
        if self._redis_down_until is not None:
            log.warning("Redis is reachable again: rate limits are shared across instances again")
            self._redis_down_until = None


class _RedisLease:
    def __init__(self, limiter: RedisRateLimiter, key: str, lease_id: str) -> None:
        self._limiter = limiter
        self._key = key
        self._id = lease_id
        self._released = False

    async def release(self) -> None:
        if not self._released:
            self._released = True
            await self._limiter._release(self._key, self._id)


def _or_unlimited(limit: int | None) -> int:
    return -1 if limit is None else limit
