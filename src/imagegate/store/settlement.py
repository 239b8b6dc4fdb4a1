"""How generations end in money and on record: many in one transaction.

A ``Settlement`` says what one generation costs (or that it is charged nothing) and carries
its ``GenerationRecord``. ``settle_all`` books a whole batch in the transaction it is given:
the reservations are taken, the keys' and accounts' held money released, the charges booked
and the records inserted with one statement per table (per key and per account where the
amounts differ), rather than a transaction per generation. Rows are locked in the order
reservation → key → account, as everywhere in the store, so batches of several processes
cannot deadlock on PostgreSQL.

A generation of a key without a limit on an unmetered account has no reservation (nothing
could be refused); it is charged directly (``reserved=False``), still under its key's row
lock so that a reservation checking that key's spending sees the charge.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imagegate.store.generations import GenerationRecord
from imagegate.store.holds import shift_key_reserved
from imagegate.store.models import Account, Generation, LedgerEntry, Reservation
from imagegate.store.money import nano_to_usd, usd_to_nano

log = logging.getLogger(__name__)

_accounts = Account.__table__
_ledger = LedgerEntry.__table__
_reservations = Reservation.__table__
_generations = Generation.__table__


@dataclass(frozen=True, slots=True)
class Settlement:
    """How one generation ends: ``cost_usd`` charged, or ``None`` for nothing (released)."""

    generation_id: str
    cost_usd: Decimal | None
    #: Money is held for it (``Store.reserve``); else it is charged to ``key_id``/``account_id``.
    reserved: bool = True
    key_id: int | None = None
    account_id: int | None = None
    #: Written in the same transaction, with what was actually charged as its cost.
    record: GenerationRecord | None = None

    def __post_init__(self) -> None:
        if not self.reserved and (self.key_id is None or self.account_id is None):
            raise ValueError("a settlement without a reservation names its key and account")
        if self.cost_usd is not None and self.cost_usd < 0:
            raise ValueError(f"a cost cannot be negative, got {self.cost_usd!r}")


@dataclass(slots=True)
class _Plan:
    settlement: Settlement
    key_id: int | None
    account_id: int | None
    released: int  # nano-USD of held money given back
    charge: int | None  # nano-USD to book; None: no ledger entry


async def settle_all(conn: AsyncConnection, batch: list[Settlement], at: datetime) -> list[int | Exception]:
    """Book ``batch`` in ``conn``'s transaction; per settlement the nano-USD charged, or the
    error that settlement alone ran into (``LookupError``: nothing reserved, nothing charged
    before). Settling a generation again charges nothing and returns the first charge."""
    held = await _take_reservations(conn, [s.generation_id for s in batch if s.reserved])
    plans: list[_Plan] = []
    results: list[int | Exception] = []
    for settlement in batch:
        plan = _plan(settlement, held.get(settlement.generation_id))
        if plan is None:
            results.append(await _charged_before(conn, settlement))
            continue
        plans.append(plan)
        results.append(0)  # filled in once the account's balance is known
    keyed = [p for p in plans if p.key_id is not None]
    if keyed:
        await conn.execute(shift_key_reserved, _per_key(keyed))
    await _book_accounts(conn, plans, at)
    charged = {p.settlement.generation_id: p.charge or 0 for p in plans}
    for i, settlement in enumerate(batch):
        if settlement.generation_id in charged:
            results[i] = charged[settlement.generation_id]
    records = [
        s.record.to_values(cost_nano=r) for s, r in zip(batch, results, strict=True)
        if s.record is not None and not isinstance(r, Exception)
    ]
    if records:
        await conn.execute(insert(_generations), records)
    return results


async def _take_reservations(conn: AsyncConnection, generation_ids: list[str]) -> dict[str, object]:
    """Lock and delete these reservations; their rows by generation id."""
    if not generation_ids:
        return {}
    rows = (
        await conn.execute(
            select(_reservations)
            .where(_reservations.c.generation_id.in_(generation_ids))
            .order_by(_reservations.c.generation_id)
            .with_for_update()
        )
    ).all()
    if rows:
        await conn.execute(
            delete(_reservations).where(_reservations.c.generation_id.in_([r.generation_id for r in rows]))
        )
    return {row.generation_id: row for row in rows}


def _plan(settlement: Settlement, held: object | None) -> _Plan | None:
    """What to release and charge; ``None`` when a reserved generation has no reservation left."""
    actual = None if settlement.cost_usd is None else usd_to_nano(settlement.cost_usd)
    if not settlement.reserved:
        return _Plan(settlement, settlement.key_id, settlement.account_id, 0, actual)
    if held is None:
        return None
    amount: int = held.amount_nano  # type: ignore[attr-defined]
    if actual is not None and actual > amount:
        log.warning(
            "generation %s cost %s USD, more than its reservation of %s USD; charged in full",
            settlement.generation_id, nano_to_usd(actual), nano_to_usd(amount),
        )
    released = 0 if held.reaped_at is not None else amount  # type: ignore[attr-defined]
    return _Plan(settlement, held.key_id, held.account_id, released, actual)  # type: ignore[attr-defined]


async def _charged_before(conn: AsyncConnection, settlement: Settlement) -> int | Exception:
    """A reserved generation whose reservation is gone: settled before (its charge), released
    before (0), or never reserved (``LookupError`` when a charge was asked for)."""
    previous = await conn.scalar(
        select(_ledger.c.amount_nano).where(_ledger.c.generation_id == settlement.generation_id)
    )
    if previous is not None:
        return -previous
    if settlement.cost_usd is None or settlement.record is not None:
        return 0
    return LookupError(f"no reservation for generation {settlement.generation_id}")


def _per_key(plans: list[_Plan]) -> list[dict[str, int]]:
    """One release per key, in key order; 0 too, since it takes the key's row lock before a
    charge is booked (a reservation checks the key's spending under that lock)."""
    released: dict[int, int] = defaultdict(int)
    for plan in plans:
        assert plan.key_id is not None
        released[plan.key_id] += plan.released
    return [{"key": key, "delta": -amount} for key, amount in sorted(released.items())]


async def _book_accounts(conn: AsyncConnection, plans: list[_Plan], at: datetime) -> None:
    """Release and charge per account, and write one ledger entry per charge. A charge is
    booked whole even past the balance (the client was shown it): the account then owes."""
    by_account: dict[int, list[_Plan]] = defaultdict(list)
    for plan in plans:
        if plan.account_id is not None:
            by_account[plan.account_id].append(plan)
    entries = []
    for account_id, account_plans in sorted(by_account.items()):
        balance = await conn.scalar(
            select(_accounts.c.balance_nano).where(_accounts.c.id == account_id).with_for_update()
        )
        released = charged = 0
        for plan in account_plans:
            released += plan.released
            if plan.charge is None:
                continue
            if balance is not None:
                if plan.charge > balance:
                    log.warning(
                        "generation %s: charge of %s USD is more than the balance of %s USD; the account owes",
                        plan.settlement.generation_id, nano_to_usd(plan.charge), nano_to_usd(balance),
                    )
                balance -= plan.charge
            charged += plan.charge
            entries.append({
                "account_id": account_id, "key_id": plan.key_id,
                "generation_id": plan.settlement.generation_id, "kind": "charge",
                "amount_nano": -plan.charge, "created_at": at, "note": "",
            })
        if released or charged:
            await conn.execute(
                update(_accounts)
                .where(_accounts.c.id == account_id)
                .values(
                    reserved_nano=_accounts.c.reserved_nano - released,
                    balance_nano=_accounts.c.balance_nano - charged,  # NULL stays NULL
                )
            )
    if entries:
        await conn.execute(insert(_ledger), entries)
