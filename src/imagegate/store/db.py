"""Engine and session factory.

``create_engine(url)`` returns an ``AsyncEngine``. For SQLite every new connection gets
``journal_mode=WAL``, ``busy_timeout=5000``, ``foreign_keys=ON`` and ``synchronous=FULL``
unless asked for ``NORMAL`` (in WAL mode NORMAL loses nothing when the process is killed, only
the last transactions if the machine itself loses power, and saves a disk flush per commit),
and a missing parent directory of the database file is created. A URL without an async driver is given one
(``sqlite://`` → ``sqlite+aiosqlite://``, ``postgresql://`` → ``postgresql+asyncpg://``).

On SQLite, SQLAlchemy emits BEGIN itself instead of the sqlite3 driver (which only begins
before DML, so a SELECT would run outside the transaction that then writes): plain
``BEGIN`` normally, ``BEGIN IMMEDIATE`` on an engine from ``immediate(engine)``, which
takes the write lock up front so that a read-check-write transaction cannot interleave
with another writer. This is SQLAlchemy's documented recipe for pysqlite/aiosqlite.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy import create_engine as _create_sync_engine
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from imagegate.store.coltypes import dump_json

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///imagegate.db"
SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_SYNCHRONOUS = ("normal", "full")
_BEGIN_OPTION = "imagegate_sqlite_begin"

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def async_url(database_url: str | URL) -> URL:
    """``database_url`` with an async driver named (left alone when it names one)."""
    url = make_url(database_url)
    backend = "postgresql" if url.get_backend_name() in ("postgres", "postgresql") else None
    backend = backend or url.get_backend_name()
    if "+" not in url.drivername and backend in _ASYNC_DRIVERS:
        url = url.set(drivername=_ASYNC_DRIVERS[backend])
    return url


def sqlite_file(url: URL) -> Path | None:
    """The database file of a file-backed SQLite URL; ``None`` for others and in-memory."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_on_connect(foreign_keys: bool, synchronous: str) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _on_sqlite_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.fetchall()
            cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        finally:
            cursor.close()

    return on_connect


def _on_sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get(_BEGIN_OPTION, "BEGIN"))


def create_engine(
    database_url: str | URL = DEFAULT_DATABASE_URL,
    *,
    foreign_keys: bool = True,
    sqlite_synchronous: str = "full",
    **kwargs: Any,
) -> AsyncEngine:
    """An ``AsyncEngine`` for ``database_url``; ``kwargs`` go to ``create_async_engine``.

    ``foreign_keys=False`` turns SQLite's enforcement off (migrations need it: rebuilding a
    referenced table with it on would run the ``ON DELETE`` actions of its referrers).
    """
    url = async_url(database_url)
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    # Every generation in flight touches the database a few times; SQLAlchemy's default pool
    # (5 + 10) queues a burst long enough to time out (the server's settings size it).
    if "poolclass" not in kwargs:
        kwargs.setdefault("pool_size", 20)
        kwargs.setdefault("max_overflow", 40)
    kwargs.setdefault("json_serializer", dump_json)
    kwargs.setdefault("json_deserializer", orjson.loads)
    engine = _create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        if sqlite_synchronous not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {SQLITE_SYNCHRONOUS}")
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect(foreign_keys, sqlite_synchronous))
        event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
    return engine


def sqlite_sync_engine(engine: AsyncEngine, *, sqlite_synchronous: str = "full") -> Engine | None:
    """For a file-backed SQLite ``engine``: a synchronous engine on the same file whose
    transactions begin ``IMMEDIATE``, for work run as one piece in a thread (``tx.py``);
    ``None`` for other databases."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or sqlite_file(url) is None:
        return None
    sync = _create_sync_engine(
        url.set(drivername="sqlite"), connect_args={"check_same_thread": False}, pool_size=1, max_overflow=0,
        json_serializer=dump_json, json_deserializer=orjson.loads,
    )
    event.listen(sync, "connect", _sqlite_on_connect(True, sqlite_synchronous))
    event.listen(sync, "begin", _on_sqlite_begin)
    return sync.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})


def immediate(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` (same pool) whose SQLite transactions start with ``BEGIN IMMEDIATE``.

    Elsewhere the option is ignored: PostgreSQL transactions lock rows as they go.
    """
    return engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
