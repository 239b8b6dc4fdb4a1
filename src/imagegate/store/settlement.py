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

A generation admitted from an allowance (``allowances.py``) is charged the same way, and
when charged its share leaves the allowance's row, released from the key and account as its
own reservation would have been (unless the allowance was reaped: then nothing is held).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from imagegate.store.allowances import Share
from imagegate.store.generations import GenerationRecord
from imagegate.store.holds import shift_key_reserved
from imagegate.store.models import ALLOWANCE_PREFIX, Account, Generation, LedgerEntry, Reservation
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
    #: Its money was held as a share of an allowance (``reserved`` is then false).
    share: Share | None = None

    def __post_init__(self) -> None:
        if not self.reserved and (self.key_id is None or self.account_id is None):
            raise ValueError("a settlement without a reservation names its key and account")
        if self.share is not None and self.reserved:
            raise ValueError("a generation holds a reservation of its own or a share of an allowance, not both")

    @property
    def shrinks(self) -> Share | None:
        """The share that leaves its allowance with this settlement: a charged one's."""
        return self.share if self.cost_usd is not None else None
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
    held = await _take_reservations(
        conn, [s.generation_id for s in batch if s.reserved], [s.shrinks.allowance_id for s in batch if s.shrinks]
    )
    plans: list[_Plan] = []
    results: list[int | Exception] = []
    for settlement in batch:
        plan = _plan(settlement, held.get(settlement.generation_id))
        if plan is None:
            results.append(await _charged_before(conn, settlement))
            continue
        plans.append(plan)
        results.append(0)  # filled in once the account's balance is known
    await _shrink_allowances(conn, plans, held)
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


async def _take_reservations(
    conn: AsyncConnection, generation_ids: list[str], allowance_ids: list[str]
) -> dict[str, object]:
    """Lock these reservations and allowances, and delete the reservations; rows by id."""
    locked = sorted({*generation_ids, *allowance_ids})
    if not locked:
        return {}
    rows = (
        await conn.execute(
            select(_reservations).where(_reservations.c.generation_id.in_(locked))
            .order_by(_reservations.c.generation_id).with_for_update()
        )
    ).all()
    taken = set(generation_ids)
    if gone := [r.generation_id for r in rows if r.generation_id in taken]:
        await conn.execute(delete(_reservations).where(_reservations.c.generation_id.in_(gone)))
    return {row.generation_id: row for row in rows}


async def _shrink_allowances(conn: AsyncConnection, plans: list[_Plan], held: dict[str, object]) -> None:
    """Charged shares leave their allowances' rows; the key and account release them with the
    plans (``released``). A reaped allowance holds nothing to release."""
    left = {
        allowance_id: row.amount_nano  # type: ignore[attr-defined]
        for allowance_id, row in held.items()
        if allowance_id.startswith(ALLOWANCE_PREFIX) and row.reaped_at is None  # type: ignore[attr-defined]
    }
    shrunk: dict[str, int] = defaultdict(int)
    for plan in plans:
        share = plan.settlement.shrinks
        if share is None or share.allowance_id not in left:
            continue
        plan.released = min(share.nano, left[share.allowance_id])
        left[share.allowance_id] -= plan.released
        shrunk[share.allowance_id] += plan.released
    if shrunk:
        await conn.execute(
            update(_reservations).where(_reservations.c.generation_id == bindparam("allowance"))
            .values(amount_nano=_reservations.c.amount_nano - bindparam("delta")),
            [{"allowance": a, "delta": d} for a, d in sorted(shrunk.items())],
        )


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
