"""Write transactions for money: the write lock up front, and retried while busy.

On SQLite the transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time, so a
read-check-write cannot interleave with another); a writer that still finds the database
locked after ``busy_timeout`` is retried here. On PostgreSQL rows are locked as the
transaction goes (``SELECT … FOR UPDATE``, conditional ``UPDATE``), always in the order
reservation → key → account so that transactions cannot deadlock; a deadlock or
serialization failure is retried all the same. A retry reruns ``work`` from the start, so
``work`` must do nothing but database statements.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 10
#: serialization_failure, deadlock_detected
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


async def write(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction on ``engine`` (an ``immediate`` engine) and commit."""
    for attempt in range(1, ATTEMPTS):
        try:
            return await _once(engine, work)
        except DBAPIError as exc:
            if not _retryable(exc):
                raise
            log.info("write transaction busy (attempt %d): %s", attempt, exc.orig)
            await asyncio.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
    return await _once(engine, work)


async def _once(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async with engine.begin() as connection:
        return await work(connection)


def _retryable(exc: DBAPIError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message
