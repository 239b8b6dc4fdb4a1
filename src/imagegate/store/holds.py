"""Reservations made many at a time: each admitted or refused on its own, booked together.

A ``Hold`` asks to reserve an amount for one generation. ``reserve_all`` decides a whole
batch in the transaction it is given: it locks the keys, reads what each limited key has
spent, locks the accounts, then admits the holds one after another against what is left
(so the batch can never overdraw what one-at-a-time reservations could not), and books the
admitted ones with one statement per table. Locks are taken key → account, in id order,
like every other writer of these rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import bindparam, insert, select, update
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
    key_left: dict[int, int] = {}  # limited keys only
    for key in keys.values():
        if key.limit_nano is not None:
            spent = key_spent(conn, key.id, period_start(key.limit_reset, at))
            key_left[key.id] = key.limit_nano - spent - key.reserved_nano
    account_left: dict[int, int | None] = {
        row.id: None if row.balance_nano is None else row.balance_nano - row.reserved_nano
        for row in conn.execute(
            select(_accounts.c.id, _accounts.c.balance_nano, _accounts.c.reserved_nano)
            .where(_accounts.c.id.in_(sorted({k.account_id for k in keys.values()})))
            .order_by(_accounts.c.id)
            .with_for_update()
        )
    }
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
