"""Reservations made many at a time: each admitted or refused on its own, booked together.

A ``Hold`` asks to reserve an amount for one generation. ``reserve_all`` decides a whole
batch in the transaction it is given: it locks the keys, reads what each limited key has
spent, locks the accounts, then admits the holds one after another against what is left
(so the batch can never overdraw what one-at-a-time reservations could not), and books the
admitted ones with one statement per table. Locks are taken key → account, in id order,
like every other writer of these rows.

``grow_allowance`` adds to a process's allowance for a key (``allowances.py``): money held
ahead in one reservation row, from which that process admits requests without a write. It
decides against the same limits, in the same lock order (the allowance's row first).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.engine import Connection

from imagegate.store.accounts import key_spent
from imagegate.store.errors import (
    ACCOUNT_CREDITS,
    KEY_LIMIT,
    KeyDisabled,
    LimitExceeded,
)
from imagegate.store.models import Account, ApiKey, Reservation
from imagegate.store.money import nano_to_usd, usd_to_nano
from imagegate.store.periods import period_start

_accounts = Account.__table__
_keys = ApiKey.__table__
_reservations = Reservation.__table__

#: What a key / an account holds moves by ``delta`` (executed many at a time, one per row).
shift_key_reserved = (
    update(_keys)
    .where(_keys.c.id == bindparam("key"))
    .values(reserved_nano=_keys.c.reserved_nano + bindparam("delta"))
)
shift_account_reserved = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("account"))
    .values(reserved_nano=_accounts.c.reserved_nano + bindparam("delta"))
)


@dataclass(frozen=True, slots=True)
class Hold:
    """Reserve ``amount_usd`` (rounded up to the nano) for ``generation_id`` for ``ttl_s``."""

    key_id: int
    generation_id: str
    amount_usd: Decimal
    ttl_s: float

    def __post_init__(self) -> None:
        if self.amount_usd < 0:
            raise ValueError(f"a reservation cannot be negative, got {self.amount_usd!r}")
        if self.ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {self.ttl_s!r}")

    @property
    def amount_nano(self) -> int:
        return usd_to_nano(self.amount_usd, round_up=True)


def reserve_all(conn: Connection, batch: list[Hold], at: datetime) -> list[Exception | None]:
    """Admit or refuse each hold of ``batch``; ``None`` for each admitted, else why not:
    ``LimitExceeded`` (the key's limit or the account's balance), ``KeyDisabled``,
    ``LookupError`` (no such key). A refused hold books nothing.

    Synchronous: it runs on a request's path, and run as one piece (in a thread on SQLite,
    ``AsyncConnection.run_sync`` elsewhere) it crosses to the database's thread once instead
    of once per statement (``tx.py``)."""
    keys = {
        row.id: row
        for row in conn.execute(
            select(_keys)
            .where(_keys.c.id.in_(sorted({h.key_id for h in batch})))
            .order_by(_keys.c.id)
            .with_for_update()
        )
    }
    key_left = {key.id: left for key in keys.values() if (left := _key_left(conn, key, at)) is not None}
    account_left = _accounts_left(conn, {k.account_id for k in keys.values()})
    results: list[Exception | None] = []
    added_to_key: dict[int, int] = defaultdict(int)
    added_to_account: dict[int, int] = defaultdict(int)
    rows = []
    for hold in batch:
        refusal = _refusal(hold, keys.get(hold.key_id), key_left, account_left)
        results.append(refusal)
        if refusal is not None:
            continue
        key, amount = keys[hold.key_id], hold.amount_nano
        if key.id in key_left:
            key_left[key.id] -= amount
        if account_left[key.account_id] is not None:
            account_left[key.account_id] -= amount  # type: ignore[operator]
        added_to_key[key.id] += amount
        added_to_account[key.account_id] += amount
        rows.append({
            "generation_id": hold.generation_id, "account_id": key.account_id, "key_id": key.id,
            "amount_nano": amount, "created_at": at, "expires_at": at + timedelta(seconds=hold.ttl_s),
        })
    if rows:
        conn.execute(shift_key_reserved, [{"key": k, "delta": a} for k, a in sorted(added_to_key.items())])
        conn.execute(
            shift_account_reserved, [{"account": k, "delta": a} for k, a in sorted(added_to_account.items())]
        )
        conn.execute(insert(_reservations), rows)
    return results


@dataclass(frozen=True, slots=True)
class Grow:
    """Add to allowance ``allowance_id`` of ``key_id``: at least ``need`` nano-USD (else the
    request asking ``asked_usd`` is refused), ``deficit`` to cover every request waiting on
    it, up to ``want`` where limits leave room."""

    allowance_id: str
    key_id: int
    need: int
    deficit: int
    want: int
    asked_usd: Decimal
    #: What the allowance holds that no request has taken: part of what is available.
    spare: int
    ttl_s: float


class AllowanceLost(Exception):
    """The allowance's reservation was reaped (its process missed its renewals): not grown."""


#: An allowance never takes more than this share of what a key or account has left, so
#: that other processes (and other keys of the account) keep room to be admitted.
SHARE_OF_LEFT = 16


def grow_allowance(conn: Connection, grow: Grow, at: datetime) -> int:
    """Nano-USD added to the allowance: at least ``grow.need``, the deficit where there is
    room, and beyond it up to ``grow.want`` but at most ``1/SHARE_OF_LEFT`` of what is left.
    Raises as ``reserve_all`` refuses
    (``LimitExceeded``, ``KeyDisabled``, ``LookupError``), or ``AllowanceLost``."""
    held = conn.execute(
        select(_reservations.c.reaped_at).where(_reservations.c.generation_id == grow.allowance_id).with_for_update()
    ).one_or_none()
    if held is not None and held.reaped_at is not None:
        raise AllowanceLost(grow.allowance_id)
    key = conn.execute(select(_keys).where(_keys.c.id == grow.key_id).with_for_update()).one_or_none()
    if key is None:
        raise LookupError(f"no key with id {grow.key_id}")
    if key.disabled or key.revoked_at is not None:
        raise KeyDisabled(f"API key {key.label} is disabled")
    lefts = [(KEY_LIMIT, _key_left(conn, key, at)), (ACCOUNT_CREDITS, _accounts_left(conn, {key.account_id})[key.account_id])]
    room: int | None = None
    for source, left in lefts:
        if left is None:
            continue
        if grow.need > left:
            raise LimitExceeded(source, grow.asked_usd, nano_to_usd(max(left, 0) + grow.spare))
        room = left if room is None else min(room, left)
    amount = grow.want if room is None else min(grow.want, max(min(grow.deficit, room), room // SHARE_OF_LEFT))
    expires_at = at + timedelta(seconds=grow.ttl_s)
    if held is None:
        conn.execute(insert(_reservations), {
            "generation_id": grow.allowance_id, "account_id": key.account_id, "key_id": key.id,
            "amount_nano": amount, "created_at": at, "expires_at": expires_at,
        })
    else:
        conn.execute(
            update(_reservations)
            .where(_reservations.c.generation_id == grow.allowance_id)
            .values(amount_nano=_reservations.c.amount_nano + amount, expires_at=expires_at)
        )
    conn.execute(shift_key_reserved, [{"key": key.id, "delta": amount}])
    conn.execute(shift_account_reserved, [{"account": key.account_id, "delta": amount}])
    return amount


def give_back_spare(conn: Connection, spare: dict[str, int]) -> None:
    """Shrink allowances by money none of their requests holds (nano-USD by allowance id),
    released from their keys and accounts; a reaped one holds nothing to give back."""
    rows = conn.execute(
        select(_reservations.c.generation_id, _reservations.c.key_id, _reservations.c.account_id)
        .where(_reservations.c.generation_id.in_(sorted(spare)), _reservations.c.reaped_at.is_(None))
        .order_by(_reservations.c.generation_id)
        .with_for_update()
    ).all()
    if not rows:
        return
    conn.execute(
        update(_reservations).where(_reservations.c.generation_id == bindparam("allowance"))
        .values(amount_nano=_reservations.c.amount_nano - bindparam("delta")),
        [{"allowance": r.generation_id, "delta": spare[r.generation_id]} for r in rows],
    )
    conn.execute(shift_key_reserved, sorted(
        ({"key": r.key_id, "delta": -spare[r.generation_id]} for r in rows), key=lambda p: p["key"]))
    by_account: dict[int, int] = defaultdict(int)
    for r in rows:
        by_account[r.account_id] += spare[r.generation_id]
    conn.execute(shift_account_reserved, [{"account": a, "delta": -d} for a, d in sorted(by_account.items())])


def _key_left(conn: Connection, key: Row[Any], at: datetime) -> int | None:
    """What a key's limit leaves this period (spent and reserved taken off); ``None``: no limit."""
    if key.limit_nano is None:
        return None
    return key.limit_nano - key_spent(conn, key.id, period_start(key.limit_reset, at)) - key.reserved_nano


def _accounts_left(conn: Connection, account_ids: set[int]) -> dict[int, int | None]:
    """Per account, its balance less what is reserved (locked); ``None``: unmetered."""
    return {
        row.id: None if row.balance_nano is None else row.balance_nano - row.reserved_nano
        for row in conn.execute(
            select(_accounts.c.id, _accounts.c.balance_nano, _accounts.c.reserved_nano)
            .where(_accounts.c.id.in_(sorted(account_ids)))
            .order_by(_accounts.c.id)
            .with_for_update()
        )
    }


def _refusal(
    hold: Hold, key: object | None, key_left: dict[int, int], account_left: dict[int, int | None]
) -> Exception | None:
    if key is None:
        return LookupError(f"no key with id {hold.key_id}")
    if key.disabled or key.revoked_at is not None:  # type: ignore[attr-defined]
        return KeyDisabled(f"API key {key.label} is disabled")  # type: ignore[attr-defined]
    amount = hold.amount_nano
    left = key_left.get(key.id)  # type: ignore[attr-defined]
    if left is not None and amount > left:
        return LimitExceeded(KEY_LIMIT, hold.amount_usd, nano_to_usd(max(left, 0)))
    left = account_left[key.account_id]  # type: ignore[attr-defined]
    if left is not None and amount > left:
        return LimitExceeded(ACCOUNT_CREDITS, hold.amount_usd, nano_to_usd(max(left, 0)))
    return None
