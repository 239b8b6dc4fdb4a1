"""Persistence: API keys and generation records (SQLAlchemy 2 async + Alembic).

The schema is created and upgraded by ``imagegate.store.migrate.upgrade(url)`` (sync, run
it before the event loop starts); ``Store`` assumes an up-to-date schema.

    upgrade("sqlite+aiosqlite:///imagegate.db")
    store = Store("sqlite+aiosqlite:///imagegate.db")
    secret, key = await store.create_key("ci")
    ...
    await store.close()
"""

from __future__ import annotations

from sqlalchemy.engine import URL

from imagegate.store.db import DEFAULT_DATABASE_URL, create_engine, create_sessionmaker
from imagegate.store.generations import STATUSES, GenerationRecord, GenerationRepository
from imagegate.store.ids import KEY_PREFIX, hash_secret, new_generation_id
from imagegate.store.keys import KeyRecord, KeyRepository
from imagegate.store.migrate import upgrade

__all__ = [
    "DEFAULT_DATABASE_URL",
    "KEY_PREFIX",
    "STATUSES",
    "GenerationRecord",
    "KeyRecord",
    "Store",
    "hash_secret",
    "new_generation_id",
    "upgrade",
]


class Store:
    """The gateway's database: keys and generations behind one async facade."""

    def __init__(self, database_url: str | URL = DEFAULT_DATABASE_URL) -> None:
        self.engine = create_engine(database_url)
        self.sessionmaker = create_sessionmaker(self.engine)
        self._keys = KeyRepository(self.sessionmaker)
        self._generations = GenerationRepository(self.sessionmaker)

    async def close(self) -> None:
        await self.engine.dispose()

    # keys

    async def create_key(
        self, name: str = "", *, is_management: bool = False
    ) -> tuple[str, KeyRecord]:
        """A new key: ``(plaintext secret, record)``. The secret is shown once, never stored."""
        return await self._keys.create_key(name, is_management=is_management)

    async def authenticate(self, secret: str) -> KeyRecord | None:
        """The active key for ``secret``; ``None`` when unknown or revoked."""
        return await self._keys.authenticate(secret)

    async def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        return await self._keys.list_keys(include_revoked=include_revoked)

    async def revoke_key(self, ident: str) -> KeyRecord | None:
        """Revoke by full hash, hash prefix (≥ 8 chars), label or secret.

        ``None`` when nothing matches; ``ValueError`` when ``ident`` is ambiguous or a too
        short prefix. See ``KeyRepository.revoke_key``.
        """
        return await self._keys.revoke_key(ident)

    async def count_active_keys(self) -> int:
        return await self._keys.count_active_keys()

    # generations

    async def record_generation(self, record: GenerationRecord) -> None:
        await self._generations.record_generation(record)

    async def get_generation(
        self, generation_id: str, *, key_id: int | None = None
    ) -> GenerationRecord | None:
        return await self._generations.get_generation(generation_id, key_id=key_id)
