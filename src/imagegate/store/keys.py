"""API keys: issue, authenticate, look up, update, list and revoke.

Only the sha256 of a secret is stored. Authentication hashes the presented secret and looks
it up through the unique index on ``hash``, so no comparison of secrets happens in Python.
A key is never deleted: revoking keeps it, and its history, in the database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.store.cache import SharedLoads, TTLCache
from imagegate.store.coltypes import utcnow
from imagegate.store.ids import (
    KEY_PREFIX,
    hash_secret,
    is_secret_shaped,
    label_for,
    new_secret,
)
from imagegate.store.models import DEFAULT_ACCOUNT_ID, ApiKey
from imagegate.store.money import nano_to_usd, usd_to_nano
from imagegate.store.periods import check_limit_reset

log = logging.getLogger(__name__)

#: ``last_used_at`` is written at most once per this interval per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)
#: Shortest hash prefix ``revoke_key`` accepts.
MIN_HASH_PREFIX = 8
_MAX_SECRET_LENGTH = 256
_HEX = frozenset("0123456789abcdef")


class Unset(Enum):
    """Marks an ``update_key`` argument that was not given (``None`` clears a limit)."""

    UNSET = "unset"


UNSET = Unset.UNSET


@dataclass(frozen=True, kw_only=True)
class KeyRecord:
    id: int
    hash: str
    label: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    is_management: bool
    account_id: int
    #: Spending cap per ``limit_reset`` period (all time without one); ``None``: no cap.
    limit_usd: Decimal | None
    limit_reset: str | None
    disabled: bool
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @classmethod
    def from_row(cls, row: ApiKey) -> KeyRecord:
        return cls(
            id=row.id,
            hash=row.hash,
            label=row.label,
            name=row.name,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            is_management=row.is_management,
            account_id=row.account_id,
            limit_usd=None if row.limit_nano is None else nano_to_usd(row.limit_nano),
            limit_reset=row.limit_reset,
            disabled=row.disabled,
            updated_at=row.updated_at,
        )


class KeyRepository:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, cache_ttl_s: float = 0.0) -> None:
        """``cache_ttl_s`` > 0 keeps authenticated keys in memory that long: a change made by
        another process (revoked, disabled) is seen within it; this process's own changes at once."""
        self._sessionmaker = sessionmaker
        # key id -> monotonic time of our last last_used_at write (skips the UPDATE entirely)
        self._touched: dict[int, float] = {}
        self._cache = TTLCache[str, KeyRecord](cache_ttl_s)
        self._lookups = SharedLoads[str, KeyRecord | None]()
        self._changes = 0  # keys changed through this repository

    async def create_key(
        self,
        name: str = "",
        *,
        is_management: bool = False,
        limit_usd: Decimal | int | str | None = None,
        limit_reset: str | None = None,
        account_id: int = DEFAULT_ACCOUNT_ID,
    ) -> tuple[str, KeyRecord]:
        secret = new_secret()
        now = utcnow()
        row = ApiKey(
            hash=hash_secret(secret),
            label=label_for(secret),
            name=name,
            created_at=now,
            updated_at=now,
            is_management=is_management,
            account_id=account_id,
            limit_nano=_limit_nano(limit_usd),
            limit_reset=check_limit_reset(limit_reset),
        )
        async with self._sessionmaker.begin() as session:
            session.add(row)
            await session.flush()
            record = KeyRecord.from_row(row)
        return secret, record

    async def authenticate(self, secret: str) -> KeyRecord | None:
        if not secret or len(secret) > _MAX_SECRET_LENGTH:
            return None
        digest = hash_secret(secret)
        if (cached := self._cache.get(digest)) is not None:
            return await self._touch(cached)
        return await self._lookups.load(digest, lambda: self._look_up(digest))

    async def _look_up(self, digest: str) -> KeyRecord | None:
        changes = self._changes
        async with self._sessionmaker() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.hash == digest))
            record = None if row is None else KeyRecord.from_row(row)
        if record is None or not record.active:
            return None
        record = await self._touch(record)
        if changes == self._changes:  # a key changed meanwhile: this read may predate it
            self._cache.put(digest, record)
        return record

    async def _touch(self, record: KeyRecord) -> KeyRecord:
        """Best-effort ``last_used_at`` update, at most once per minute per key."""
        now = utcnow()
        if record.last_used_at is not None and now - record.last_used_at < LAST_USED_RESOLUTION:
            return record
        seen = self._touched.get(record.id)
        if seen is not None and time.monotonic() - seen < LAST_USED_RESOLUTION.total_seconds():
            return record
        self._touched[record.id] = time.monotonic()
        self._cache.pop(record.hash)
        try:
            async with self._sessionmaker.begin() as session:
                await session.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == record.id,
                        or_(
                            ApiKey.last_used_at.is_(None),
                            ApiKey.last_used_at < now - LAST_USED_RESOLUTION,
                        ),
                    )
                    .values(last_used_at=now)
                )
        except OperationalError as exc:  # a busy database must not fail authentication
            log.warning("could not record last use of key %s: %s", record.label, exc)
            return record
        return replace(record, last_used_at=now)

    async def list_keys(self, *, include_revoked: bool = True) -> list[KeyRecord]:
        query = select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)
        if not include_revoked:
            query = query.where(ApiKey.revoked_at.is_(None))
        async with self._sessionmaker() as session:
            return [KeyRecord.from_row(row) for row in await session.scalars(query)]

    async def count_active_keys(self) -> int:
        async with self._sessionmaker() as session:
            query = select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None))
            return int(await session.scalar(query) or 0)

    async def get_key(self, ident: str | int) -> KeyRecord | None:
        """The key named by ``ident``: its id, or any form ``revoke_key`` accepts."""
        return await self._resolve_one(ident)

    async def update_key(
        self,
        ident: str | int,
        *,
        name: str | Unset = UNSET,
        disabled: bool | Unset = UNSET,
        limit_usd: Decimal | int | str | None | Unset = UNSET,
        limit_reset: str | None | Unset = UNSET,
    ) -> KeyRecord | None:
        """Change the given fields of the key named by ``ident``; ``None`` when none matches.

        ``limit_usd=None`` / ``limit_reset=None`` remove the limit / its reset period.
        """
        values: dict[str, Any] = {}
        if name is not UNSET:
            values["name"] = name
        if disabled is not UNSET:
            values["disabled"] = disabled
        if limit_usd is not UNSET:
            values["limit_nano"] = _limit_nano(limit_usd)
        if limit_reset is not UNSET:
            values["limit_reset"] = check_limit_reset(limit_reset)
        record = await self._resolve_one(ident)
        if record is None or not values:
            return record
        return await self._update(record.id, values)

    async def revoke_key(self, ident: str | int) -> KeyRecord | None:
        """Revoke the key named by ``ident`` and return it (``None`` when nothing matches).

        ``ident`` is the key's id, the full hash, a hash prefix of at least 8 hex
        characters, the label (``sk-ig-v1-abc...xyz``) or the secret itself. When several
        keys match, the active ones are preferred; if that still leaves more than one,
        ``ValueError`` is raised and nothing is revoked. Revoking a key already revoked
        returns it unchanged.
        """
        record = await self._resolve_one(ident)
        if record is None or not record.active:
            return record
        return await self._update(record.id, {"revoked_at": utcnow()}, ApiKey.revoked_at.is_(None))

    async def _update(self, key_id: int, values: dict[str, Any], *conditions: Any) -> KeyRecord:
        async with self._sessionmaker.begin() as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, *conditions)
                .values(**values, updated_at=utcnow())
            )
            row = await session.get(ApiKey, key_id, populate_existing=True)
            assert row is not None
            record = KeyRecord.from_row(row)
        self._changes += 1
        self._cache.pop(record.hash)
        return record

    async def _resolve_one(self, ident: str | int) -> KeyRecord | None:
        if isinstance(ident, int):
            async with self._sessionmaker() as session:
                row = await session.get(ApiKey, ident)
                return None if row is None else KeyRecord.from_row(row)
        matches = await self._resolve(ident.strip())
        if len(matches) > 1:
            active = [m for m in matches if m.active]
            matches = active or matches
        if len(matches) > 1:
            listing = ", ".join(f"{m.label} (hash {m.hash[:12]})" for m in matches[:5])
            raise ValueError(
                f"{ident!r} matches {len(matches)} keys: {listing}; "
                "give a longer hash prefix or the full hash"
            )
        return matches[0] if matches else None

    async def _resolve(self, ident: str) -> list[KeyRecord]:
        if is_secret_shaped(ident):
            condition = ApiKey.hash == hash_secret(ident)
        elif ident.startswith(KEY_PREFIX):
            condition = ApiKey.label == ident
        else:
            prefix = ident.lower()
            if not prefix or not set(prefix) <= _HEX:
                return []
            if len(prefix) < MIN_HASH_PREFIX:
                raise ValueError(
                    f"hash prefix {ident!r} is too short: "
                    f"give at least {MIN_HASH_PREFIX} characters"
                )
            condition = ApiKey.hash.startswith(prefix, autoescape=True)
        query = select(ApiKey).where(condition).order_by(ApiKey.created_at, ApiKey.id)
        async with self._sessionmaker() as session:
            return [KeyRecord.from_row(row) for row in await session.scalars(query)]


def _limit_nano(limit_usd: Decimal | int | str | None) -> int | None:
    if limit_usd is None:
        return None
    nano = usd_to_nano(limit_usd)
    if nano < 0:
        raise ValueError(f"a key limit cannot be negative, got {limit_usd!r}")
    return nano
