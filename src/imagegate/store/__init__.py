"""Persistence: accounts and money, API keys, generation records (SQLAlchemy 2 async + Alembic).

The schema is created and upgraded by ``imagegate.store.migrate.upgrade(url)`` (sync, run
it before the event loop starts); ``Store`` assumes an up-to-date schema. SQLite and
PostgreSQL (``postgresql+asyncpg://``) run the same schema and migrations; several
processes on one PostgreSQL behave as one store.

    upgrade("sqlite+aiosqlite:///imagegate.db")
    store = Store("sqlite+aiosqlite:///imagegate.db")
    secret, key = await store.create_key("ci", limit_usd=Decimal(5), limit_reset="daily")
    await store.add_credits(Decimal(20))
    await store.reserve(key_id=key.id, generation_id=gid, amount_usd=worst_case, ttl_s=900)
    charged = await store.settle(gid, actual_cost)   # or: await store.release(gid)
    ...
    await store.close()

Money is ``Decimal`` USD at this boundary and integer nano-USD in the database
(``money.py``). Call ``reap_expired()`` at startup and periodically: it releases what
crashed processes had reserved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import URL, Engine

from imagegate.store.accounts import AccountRecord, AccountRepository, KeyUsage
from imagegate.store.activity import ActivityRepository
from imagegate.store import tx
from imagegate.store.db import (
    DEFAULT_DATABASE_URL,
    create_engine,
    create_sessionmaker,
    immediate,
    sqlite_sync_engine,
)
from imagegate.store.errors import (
    ACCOUNT_CREDITS,
    KEY_LIMIT,
    KeyDisabled,
    LimitExceeded,
)
from imagegate.store.generations import STATUSES, GenerationRecord, GenerationRepository
from imagegate.store.ids import KEY_PREFIX, hash_secret, new_generation_id
from imagegate.store.keys import UNSET, KeyRecord, KeyRepository, Unset
from imagegate.store.migrate import upgrade
from imagegate.store.models import DEFAULT_ACCOUNT_ID
from imagegate.store.money import nano_to_usd
from imagegate.store.periods import LIMIT_RESETS
from imagegate.store.reservations import NOTHING_HELD, Admission, ReservationRepository
from imagegate.store.settlement import Settlement

__all__ = [
    "ACCOUNT_CREDITS",
    "NOTHING_HELD",
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_DATABASE_URL",
    "KEY_LIMIT",
    "KEY_PREFIX",
    "LIMIT_RESETS",
    "STATUSES",
    "UNSET",
    "AccountRecord",
    "Admission",
    "GenerationRecord",
    "KeyDisabled",
    "KeyRecord",
    "KeyUsage",
    "LimitExceeded",
    "Settlement",
    "Store",
    "hash_secret",
    "new_generation_id",
    "upgrade",
]

Money = Decimal | int | str


class Store:
    """The gateway's database: keys, money and generations behind one async facade."""

    def __init__(
        self, database_url: str | URL = DEFAULT_DATABASE_URL, *, cache_ttl_s: float = 0.0, **engine_options: Any
    ) -> None:
        """``engine_options`` go to SQLAlchemy (``pool_size``, ``max_overflow``, ``pool_timeout`` …).

        ``cache_ttl_s`` > 0 keeps authenticated keys, and whether an account is metered, in
        memory that long: what another process changes (a revoked key, a first top-up) is
        seen within it; what this store changes, at once.
        """
        self.engine = create_engine(database_url, **engine_options)
        self.sessionmaker = create_sessionmaker(self.engine)
        writer = immediate(self.engine)
        sqlite = sqlite_sync_engine(self.engine, sqlite_synchronous=engine_options.get("sqlite_synchronous", "full"))
        self._whole = tx.WholeWriter(writer, sqlite)
        self._keys = KeyRepository(self.sessionmaker, cache_ttl_s=cache_ttl_s)
        self._accounts = AccountRepository(self.engine, writer)
        self._reservations = ReservationRepository(self.engine, writer, self._whole, cache_ttl_s=cache_ttl_s)
        self._generations = GenerationRepository(self.sessionmaker)
        self._activity = ActivityRepository(self.sessionmaker)

    @property
    def write_engines(self) -> list[Engine]:
        """The engines money is written through: the store's own, and on SQLite the one its
        transactions written as one piece use (``tx.WholeWriter``)."""
        return [self.engine.sync_engine, *([self._whole.sqlite] if self._whole.sqlite else [])]

    @property
    def allowance_owner(self) -> str:
        """The name this process's allowances carry (``allowances.py``), for its journal."""
        return self._reservations.allowances.owner

    async def wait_idle(self) -> None:
        """Until every settlement and allowance change this store has in hand is written."""
        await self._reservations.wait_idle()

    async def close(self) -> None:
        await self._reservations.close()
        await asyncio.to_thread(self._whole.close)
        await self.engine.dispose()

    # keys

    async def create_key(
        self,
        name: str = "",
        *,
        is_management: bool = False,
        limit_usd: Money | None = None,
        limit_reset: str | None = None,
        account_id: int = DEFAULT_ACCOUNT_ID,
    ) -> tuple[str, KeyRecord]:
        """A new key: ``(plaintext secret, record)``. The secret is shown once, never stored.

        ``limit_usd`` caps its spending per ``limit_reset`` period ("daily", "weekly",
        "monthly": UTC calendar day, ISO week from Monday, month), or in all when ``None``.
        """
        return await self._keys.create_key(
            name,
            is_management=is_management,
            limit_usd=limit_usd,
            limit_reset=limit_reset,
            account_id=account_id,
        )

    async def authenticate(self, secret: str) -> KeyRecord | None:
        """The key for ``secret``; ``None`` when unknown or revoked (disabled keys are
        returned: they authenticate but cannot reserve)."""
        return await self._keys.authenticate(secret)

    async def get_key(self, ident: str | int) -> KeyRecord | None:
        """By id, full hash, hash prefix (≥ 8 chars), label or secret; ``ValueError`` when
        ambiguous."""
        return await self._keys.get_key(ident)

    async def update_key(
        self,
        ident: str | int,
        *,
        name: str | Unset = UNSET,
        disabled: bool | Unset = UNSET,
        limit_usd: Money | None | Unset = UNSET,
        limit_reset: str | None | Unset = UNSET,
    ) -> KeyRecord | None:
        """Change only the arguments given (``None`` removes a limit or its reset)."""
        record = await self._keys.update_key(
            ident, name=name, disabled=disabled, limit_usd=limit_usd, limit_reset=limit_reset
        )
        if record is not None:  # its allowance was granted under the old limits
            self._reservations.allowances.close_key(record.id)
        return record

    async def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        return await self._keys.list_keys(include_revoked=include_revoked)

    async def revoke_key(self, ident: str | int) -> KeyRecord | None:
        """Revoke by id, full hash, hash prefix (≥ 8 chars), label or secret.

        ``None`` when nothing matches; ``ValueError`` when ``ident`` is ambiguous or a too
        short prefix. See ``KeyRepository.revoke_key``.
        """
        record = await self._keys.revoke_key(ident)
        if record is not None:
            self._reservations.allowances.close_key(record.id)
        return record

    async def delete_key(self, ident: str | int) -> KeyRecord | None:
        """Delete as the API means it: revoke, keeping the key's history and usage."""
        return await self.revoke_key(ident)

    async def count_active_keys(self) -> int:
        return await self._keys.count_active_keys()

    # accounts and money

    async def add_credits(
        self, amount_usd: Money, *, account_id: int = DEFAULT_ACCOUNT_ID, note: str = ""
    ) -> AccountRecord:
        """Top up (``amount_usd`` > 0, else ``ValueError``); the first top-up meters it."""
        try:
            return await self._accounts.add_credits(amount_usd, account_id=account_id, note=note)
        finally:
            self._reservations.forget_account(account_id)

    async def get_account(self, account_id: int = DEFAULT_ACCOUNT_ID) -> AccountRecord:
        return await self._accounts.get_account(account_id)

    async def ledger_total(self, account_id: int = DEFAULT_ACCOUNT_ID) -> Decimal:
        return await self._accounts.ledger_total(account_id)

    async def key_usage(self, key_id: int, *, now: datetime | None = None) -> KeyUsage:
        return await self._accounts.key_usage(key_id, now=now)

    async def reserve(
        self,
        *,
        key_id: int,
        generation_id: str,
        amount_usd: Money,
        ttl_s: float,
        now: datetime | None = None,
    ) -> None:
        """Hold the worst-case cost; ``LimitExceeded`` (a 402) or ``KeyDisabled`` if not."""
        await self._reservations.reserve(
            key_id=key_id, generation_id=generation_id, amount_usd=amount_usd, ttl_s=ttl_s,
            now=now,
        )

    async def settle(
        self, generation_id: str, actual_usd: Money, *, now: datetime | None = None
    ) -> Decimal:
        """Charge the actual cost (capped at the reservation and the balance), release the
        rest; idempotent. Returns the USD charged."""
        return await self._reservations.settle(generation_id, actual_usd, now=now)

    async def release(self, generation_id: str) -> None:
        """Failed or cancelled: release the reservation, charge nothing; idempotent."""
        await self._reservations.release(generation_id)

    async def admit(self, key: KeyRecord, *, amount_usd: Money | Callable[[], Money], ttl_s: float) -> Admission:
        """Hold ``amount_usd`` where it could be refused (the key has a limit or the account is
        metered), as a share of this process's allowance for the key; what is held (false when
        nothing is). ``LimitExceeded`` / ``KeyDisabled`` as ``reserve``. A callable amount is
        only called when money is held (pricing a worst case has a cost)."""
        return await self._reservations.admit(
            key_id=key.id, key_limited=key.limit_usd is not None, account_id=key.account_id,
            amount_usd=amount_usd, ttl_s=ttl_s,
        )

    async def finish(self, settlement: Settlement) -> Decimal:
        """Settle (or release) a generation and write its record, batched with others that
        finish at the same time (one transaction per batch); the USD charged."""
        return nano_to_usd(await self._reservations.finish(settlement))

    async def renew(self, generation_ids: list[str], ttl_s: float, now: datetime | None = None) -> int:
        """Keep these reservations alive for another ``ttl_s``; how many."""
        return await self._reservations.renew(generation_ids, ttl_s, now)

    async def heartbeat(self, ttl_s: float) -> None:
        """Keep this process's allowances alive for another ``ttl_s``, and give back those no
        request used since the last beat."""
        await self._reservations.heartbeat(ttl_s)

    async def release_allowances(self, owner: str) -> int:
        """Give back the allowances of a process that died (``owner``: its journal says); how many."""
        return await self._reservations.release_allowances(owner)

    async def reap_expired(self, now: datetime | None = None) -> int:
        """Release reservations past their expiry (a crashed process's); how many."""
        return await self._reservations.reap_expired(now)

    # generations

    async def record_generation(self, record: GenerationRecord) -> None:
        await self._generations.record_generation(record)

    async def get_generation(
        self, generation_id: str, *, key_id: int | None = None
    ) -> GenerationRecord | None:
        return await self._generations.get_generation(generation_id, key_id=key_id)

    async def list_generations(
        self,
        *,
        key_id: int | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[GenerationRecord]:
        """Newest first; ``since`` inclusive, ``until`` exclusive."""
        return await self._activity.list_generations(
            key_id=key_id, model=model, since=since, until=until, limit=limit, offset=offset
        )

    async def usage_by_model(
        self,
        *,
        key_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """``[{model, requests, images, cost_usd}]`` summed in SQL, costliest first."""
        return await self._activity.usage_by_model(key_id=key_id, since=since, until=until)
