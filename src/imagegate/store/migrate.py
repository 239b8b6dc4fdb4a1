"""Schema migrations, run programmatically (``alembic upgrade head``).

``upgrade(url)`` is synchronous and meant to be called before the server's event loop
starts. If it is called while an event loop is running in this thread (a test, a notebook),
the migration runs in a worker thread and this call blocks until it is done.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str, **attributes: Any) -> Config:
    """An Alembic ``Config`` for ``database_url`` with no ini file.

    The URL travels in ``config.attributes["database_url"]`` (not the ini option, whose
    ``%`` interpolation would mangle percent-encoded passwords); ``env.py`` reads it there.
    """
    config = Config(**attributes)
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def _run(fn: Callable[[], None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        fn()
        return
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as exc:  # re-raised in the calling thread
            errors.append(exc)

    worker = threading.Thread(target=target, name="imagegate-migrate")
    worker.start()
    worker.join()
    if errors:
        raise errors[0]


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` up to ``revision`` (default: the latest)."""
    _run(lambda: command.upgrade(alembic_config(database_url), revision))


def downgrade(database_url: str, revision: str = "base") -> None:
    """Take the database at ``database_url`` down to ``revision`` (default: empty)."""
    _run(lambda: command.downgrade(alembic_config(database_url), revision))
