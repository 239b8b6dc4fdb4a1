"""Accounts and the ledger: credit balances, top-ups, and what was spent.

Every movement of money is a ledger entry: credits positive, charges zero or negative
(``amount_nano``). A metered account's ``balance_nano`` is kept by the same transactions
that write the ledger, so it always equals the sum of the account's entries. An account
whose balance is NULL is unmetered: nothing is refused, charges are still recorded (for
usage), and the first top-up meters it. So that balance and ledger agree from then on,
that top-up first books a credit equal to the usage recorded while unmetered (its note
says so); ``total_credits - total_usage`` is then the balance, as OpenRouter's
``GET /credits`` implies.

Reservations and charges are in ``reservations.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, case, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.store import tx
from imagegate.store.coltypes import to_decimal, utcnow
from imagegate.store.models import ALLOWANCE_PREFIX, DEFAULT_ACCOUNT_ID, Account, ApiKey, LedgerEntry, Reservation
from imagegate.store.money import nano_to_usd, usd_to_nano
from imagegate.store.periods import period_start

UNMETERED_USAGE_NOTE = "usage recorded while the account was unmetered"

_accounts = Account.__table__
_keys = ApiKey.__table__
_ledger = LedgerEntry.__table__
_reservations = Reservation.__table__


@dataclass(frozen=True, kw_only=True)
class AccountRecord:
    id: int
    name: str
    #: ``None``: unmetered (no credit limit).
    balance_usd: Decimal | None
    #: Held by requests in flight (their own reservations).
    reserved_usd: Decimal
    #: Held ahead by running gateways for the requests they admit (``allowances.py``); what
    #: their requests in flight hold is part of it.
    held_ahead_usd: Decimal = Decimal(0)
    #: Sum of credits (``GET /credits`` ``total_credits``).
    total_credits_usd: Decimal
    #: Sum of charges (``GET /credits`` ``total_usage``).
    total_usage_usd: Decimal
    created_at: datetime

    @property
    def metered(self) -> bool:
        return self.balance_usd is not None


@dataclass(frozen=True, kw_only=True)
class KeyUsage:
    """A key's spending, as ``GET /key`` reports it (USD; periods are UTC calendar ones)."""

    usage: Decimal
    usage_daily: Decimal
    usage_weekly: Decimal
    usage_monthly: Decimal
    limit: Decimal | None
    limit_reset: str | None
    #: ``limit`` less this period's usage and what is reserved, never below 0; ``None``
    #: without a limit. Money gateways hold ahead (``held_ahead``) is not taken off.
    limit_remaining: Decimal | None
    reserved: Decimal
    held_ahead: Decimal = Decimal(0)


class AccountRepository:
    def __init__(self, engine: AsyncEngine, writer: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer

    async def add_credits(
        self,
        amount_usd: Decimal | int | str,
        *,
        account_id: int = DEFAULT_ACCOUNT_ID,
        note: str = "",
    ) -> AccountRecord:
        """Top up the account by ``amount_usd`` (> 0); the first top-up meters it."""
        amount = usd_to_nano(amount_usd)
        if to_decimal(amount_usd) <= 0 or amount <= 0:
            raise ValueError(f"credits must be a positive amount, got {amount_usd!r}")

        async def work(conn: AsyncConnection) -> None:
            now = utcnow()
            found = await conn.execute(
                select(_accounts.c.balance_nano)
                .where(_accounts.c.id == account_id)
                .with_for_update()
            )
            row = found.one_or_none()
            if row is None:
                raise LookupError(f"no account with id {account_id}")
            balance = row.balance_nano
            if balance is None:
                balance = await _ledger_sum(conn, _ledger.c.account_id == account_id)
                if balance < 0:
                    await book(conn, account_id, "credit", -balance, now, UNMETERED_USAGE_NOTE)
                    balance = 0
            await conn.execute(
                update(_accounts)
                .where(_accounts.c.id == account_id)
                .values(balance_nano=balance + amount)
            )
            await book(conn, account_id, "credit", amount, now, note)

        await tx.write(self._writer, work)
        return await self.get_account(account_id)

    async def get_account(self, account_id: int = DEFAULT_ACCOUNT_ID) -> AccountRecord:
        def total(kind: str) -> Any:
            return (
                select(func.coalesce(func.sum(_ledger.c.amount_nano), 0))
                .where(_ledger.c.account_id == account_id, _ledger.c.kind == kind)
                .scalar_subquery()
            )

        query = select(
            _accounts, total("credit").label("credits"), total("charge").label("charges"),
            _held_ahead(_reservations.c.account_id == account_id).label("held_ahead"),
        ).where(_accounts.c.id == account_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise LookupError(f"no account with id {account_id}")
        return AccountRecord(
            id=row.id,
            name=row.name,
            balance_usd=None if row.balance_nano is None else nano_to_usd(row.balance_nano),
            reserved_usd=nano_to_usd(row.reserved_nano - row.held_ahead),
            held_ahead_usd=nano_to_usd(row.held_ahead),
            total_credits_usd=nano_to_usd(row.credits),
            total_usage_usd=nano_to_usd(-row.charges),
            created_at=row.created_at,
        )

    async def ledger_total(self, account_id: int = DEFAULT_ACCOUNT_ID) -> Decimal:
        """Sum of the account's ledger; equals a metered account's balance (for audits)."""
        async with self._engine.connect() as conn:
            return nano_to_usd(await _ledger_sum(conn, _ledger.c.account_id == account_id))

    async def key_usage(self, key_id: int, *, now: datetime | None = None) -> KeyUsage:
        now = now or utcnow()
        async with self._engine.connect() as conn:
            key = (
                await conn.execute(
                    select(
                        _keys.c.limit_nano, _keys.c.limit_reset, _keys.c.reserved_nano,
                        _held_ahead(_reservations.c.key_id == key_id).label("held_ahead"),
                    ).where(_keys.c.id == key_id)
                )
            ).one_or_none()
            if key is None:
                raise LookupError(f"no key with id {key_id}")
            starts = {
                "all": None,
                "daily": period_start("daily", now),
                "weekly": period_start("weekly", now),
                "monthly": period_start("monthly", now),
                "limit": period_start(key.limit_reset, now),
            }
            spent = await _spent_since(conn, key_id, starts)
        reserved = key.reserved_nano - key.held_ahead
        limit_remaining = None
        if key.limit_nano is not None:
            remaining = key.limit_nano - spent["limit"] - reserved
            limit_remaining = nano_to_usd(max(remaining, 0))
        return KeyUsage(
            usage=nano_to_usd(spent["all"]),
            usage_daily=nano_to_usd(spent["daily"]),
            usage_weekly=nano_to_usd(spent["weekly"]),
            usage_monthly=nano_to_usd(spent["monthly"]),
            limit=None if key.limit_nano is None else nano_to_usd(key.limit_nano),
            limit_reset=key.limit_reset,
            limit_remaining=limit_remaining,
            reserved=nano_to_usd(reserved),
            held_ahead=nano_to_usd(key.held_ahead),
        )


def _held_ahead(whose: Any) -> Any:
    """What live allowances matching ``whose`` hold (nano-USD), as a scalar subquery."""
    return (
        select(func.coalesce(func.sum(_reservations.c.amount_nano), 0))
        .where(whose, _reservations.c.generation_id.startswith(ALLOWANCE_PREFIX), _reservations.c.reaped_at.is_(None))
        .scalar_subquery()
    )


def key_spent(conn: Connection, key_id: int, since: datetime | None) -> int:
    """Nano-USD the key was charged since ``since`` (all time when ``None``); synchronous,
    for transactions run as one piece (``holds.reserve_all``)."""
    return -int(conn.execute(_spent_query(key_id, {"since": since})).one().since)


async def _spent_since(
    conn: AsyncConnection, key_id: int, starts: dict[str, datetime | None]
) -> dict[str, int]:
    """Charges to ``key_id`` since each of ``starts``, in one pass over the key's ledger."""
    row = (await conn.execute(_spent_query(key_id, starts))).one()
    return {name: -int(row._mapping[name]) for name in starts}


def _spent_query(key_id: int, starts: dict[str, datetime | None]) -> Select[Any]:
    columns = [
        func.coalesce(
            func.sum(
                _ledger.c.amount_nano
                if start is None
                else case((_ledger.c.created_at >= start, _ledger.c.amount_nano))
            ),
            0,
        ).label(name)
        for name, start in starts.items()
    ]
    return select(*columns).where(_ledger.c.key_id == key_id, _ledger.c.kind == "charge")


async def _ledger_sum(conn: AsyncConnection, condition: Any) -> int:
    total = await conn.scalar(
        select(func.coalesce(func.sum(_ledger.c.amount_nano), 0)).where(condition)
    )
    return int(total)


async def book(
    conn: AsyncConnection,
    account_id: int,
    kind: str,
    amount_nano: int,
    now: datetime,
    note: str,
    *,
    key_id: int | None = None,
    generation_id: str | None = None,
) -> None:
    """Write one ledger entry (the caller keeps the account's balance in step)."""
    await conn.execute(
        insert(_ledger).values(
            account_id=account_id,
            key_id=key_id,
            generation_id=generation_id,
            kind=kind,
            amount_nano=amount_nano,
            created_at=now,
            note=note,
        )
    )

