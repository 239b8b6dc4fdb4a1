"""Alembic environment for imagegate.

The database URL comes from ``config.attributes["database_url"]`` (set by
``imagegate.store.migrate``), else the ``sqlalchemy.url`` option, else
``$IMAGEGATE_DATABASE_URL``. Async URLs are fine: online migrations run through an async
engine with ``connection.run_sync``. A caller may instead hand over an open sync
``Connection`` in ``config.attributes["connection"]``.

SQLite's foreign-key enforcement is off while migrating: batch mode rebuilds a table by
copy, drop and rename, and dropping a referenced table with enforcement on would run its
referrers' ``ON DELETE SET NULL`` (Alembic's batch documentation asks for this).

Several processes may start at once on one database: each migrates in one transaction
that first takes a lock (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL),
so the first one migrates and the others then find the schema up to date.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from imagegate.store.db import DEFAULT_DATABASE_URL, async_url, create_engine, immediate
from imagegate.store.models import Base

config = context.config
target_metadata = Base.metadata

#: pg_advisory_xact_lock key held while migrating ("imagegat" in ASCII).
_MIGRATION_LOCK = 0x696D616765676174


def _database_url() -> str:
    return (
        config.attributes.get("database_url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("IMAGEGATE_DATABASE_URL")
        or DEFAULT_DATABASE_URL
    )


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        **kwargs,  # type: ignore[arg-type]
    )


def run_migrations_offline() -> None:
    url = async_url(_database_url())
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def _lock(connection: Connection) -> None:
    """Begin the migration transaction holding the database's migration lock."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
    else:
        connection.exec_driver_sql("SELECT 1")  # begins, and on SQLite that is IMMEDIATE


async def _run_async() -> None:
    engine = create_engine(_database_url(), foreign_keys=False, poolclass=NullPool)
    try:
        async with immediate(engine).connect() as connection:
            # Already in a transaction, Alembic runs every migration inside this one.
            await connection.run_sync(_lock)
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
