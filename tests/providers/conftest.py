"""Fixtures shared by the provider adapter tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from imagegate.providers.http import HttpPool


@pytest_asyncio.fixture(loop_scope="function")
async def http() -> AsyncIterator[HttpPool]:
    """The shared upstream HTTP pool, closed after the test."""
    pool = HttpPool()
    yield pool
    await pool.close()
