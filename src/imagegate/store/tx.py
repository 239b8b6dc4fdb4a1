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
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine
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


class WholeWriter:
    """Runs synchronous transactions as one piece: through the async driver on PostgreSQL
    (``run_sync``: statements stay on the event loop), and on SQLite on a synchronous engine
    in a thread of its own, so that a transaction crosses threads once rather than once per
    statement (measured in docs/benchmarks.md, "Metered accounts")."""

    def __init__(self, engine: AsyncEngine, sqlite: Engine | None) -> None:
        self._engine = engine
        self.sqlite = sqlite
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer") if sqlite else None

    async def write(self, work: Callable[[Connection], T]) -> T:
        if self.sqlite is None or self._thread is None:
            return await write(self._engine, lambda conn: conn.run_sync(work))
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(_write_here, self.sqlite, work))

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
        if self.sqlite is not None:
            self.sqlite.dispose()


def _write_here(engine: Engine, work: Callable[[Connection], T]) -> T:
    """``write`` for a synchronous engine, in the calling thread."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                return work(connection)
        except DBAPIError as exc:
            if attempt == ATTEMPTS or not _retryable(exc):
                raise
            log.info("write transaction busy (attempt %d): %s", attempt, exc.orig)
            time.sleep(random.uniform(0, min(1.0, 0.01 * 2**attempt)))
    raise AssertionError("unreachable")


async def _once(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async with engine.begin() as connection:
        return await work(connection)


def _retryable(exc: DBAPIError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message
