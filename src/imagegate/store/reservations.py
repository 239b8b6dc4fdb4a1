"""Reserve, settle, release: money held for a generation while it runs.

Before calling a provider the gateway reserves the request's worst-case cost; the
reservation is admitted only if the key's limit and the account's balance can both cover
it after what is already reserved by other requests in flight. Afterwards it settles the
actual cost (charged, at most the reservation; the rest is released) or releases it all
(failed or cancelled: nothing is charged). Reservations left by a crashed process expire
and ``reap_expired`` releases them.

Requests admitted on a request's path hold a share of this process's allowance for their key
instead of a reservation of their own (``allowances.py``): most then need no write at all.

Each of these is one transaction, shared by the others of its kind that arrive together
(``batching.py``); ``tx.py`` says how SQLite and PostgreSQL keep transactions apart. A
key's limit is checked against ledger charges read *after* the key row is locked: every
charge is booked by a transaction that holds that lock, so the read sees all of them (on
PostgreSQL each statement of a READ COMMITTED transaction reads afresh).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from sqlalchemy import delete, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.store import tx
from imagegate.store.allowances import Allowances, Share
from imagegate.store.batching import GroupCommit
from imagegate.store.cache import SharedLoads, TTLCache
from imagegate.store.coltypes import to_decimal, utcnow
from imagegate.store.holds import (
    Hold,
    reserve_all,
    shift_account_reserved,
    shift_key_reserved,
)
from imagegate.store.models import ALLOWANCE_PREFIX, Account, Reservation
from imagegate.store.money import nano_to_usd
from imagegate.store.settlement import Settlement, settle_all

log = logging.getLogger(__name__)

#: How long a reaped reservation is kept so that a late settle still finds whom to charge.
REAPED_KEPT = timedelta(days=7)

_accounts = Account.__table__
_reservations = Reservation.__table__
#: A batch of settlements that is not full waits this long for others to share its transaction.
#: Each statement of a batch crosses to the database's thread and back (~11 round trips a
#: batch), taking the event loop and the GIL from whatever request is being served meanwhile.
#: Gathered for 5 ms, a steady trickle at concurrency 1 paid a batch per 2 requests (the event
#: loop preempted 20–28 times a request); for 50 ms, one per ~13 requests, and the added latency
#: is that of a build writing nothing (measured side by side, docs/benchmarks.md). A client
#: asking for its generation's record waits for the batch (``Gateway.until_recorded``), and
#: shutting down writes what is pending.
SETTLEMENT_GATHER_S = 0.05
#: Tries at a settlement batch while the connection pool is exhausted (~30 s in all).
_POOL_ATTEMPTS = 6


@dataclass(frozen=True, slots=True)
class Admission:
    """What a generation holds once admitted: a reservation of its own, a share of an
    allowance, or nothing (nothing could be refused: it is charged when it settles)."""

    reserved: bool = False
    share: Share | None = None

    def __bool__(self) -> bool:
        """Whether money is held."""
        return self.reserved or self.share is not None


NOTHING_HELD = Admission()


class ReservationRepository:
    def __init__(
        self, engine: AsyncEngine, writer: AsyncEngine, whole: tx.WholeWriter, *, cache_ttl_s: float = 0.0
    ) -> None:
        """``cache_ttl_s`` > 0: whether an account is metered is remembered that long (a first
        top-up by another process is seen within it; by this process's store at once).
        Reservations, on every request's path, are written as one piece by ``whole``."""
        self._engine = engine
        self._writer = writer
        self._whole = whole
        self._metered = TTLCache[int, bool](cache_ttl_s)
        self._metered_loads = SharedLoads[int, bool]()
        self._forgotten = 0  # accounts changed through this store
        # Only a failure of the SQL itself (one bad row) is worth retrying a batch item by item.
        self._settlements = GroupCommit[Settlement, int](
            self._settle_batch, split_on=(DBAPIError,), gather_s=SETTLEMENT_GATHER_S
        )
        self.allowances = Allowances(whole, self._release_all)

    async def admit(
        self,
        *,
        key_id: int,
        key_limited: bool,
        account_id: int,
        amount_usd: Decimal | int | str | Callable[[], Decimal | int | str],
        ttl_s: float,
    ) -> Admission:
        """Hold the worst case where something could be refused (a key limit, a metered
        account), as a share of the key's allowance. Without either there is nothing to hold:
        the generation is charged directly when it settles (``Settlement(reserved=False)``)."""
        if key_limited or await self.is_metered(account_id):
            amount = amount_usd() if callable(amount_usd) else amount_usd
            return Admission(share=await self.allowances.admit(key_id, account_id, to_decimal(amount), ttl_s))
        return NOTHING_HELD

    async def is_metered(self, account_id: int) -> bool:
        metered = self._metered.get(account_id)
        if metered is None:
            metered = await self._metered_loads.load(account_id, lambda: self._read_metered(account_id))
        return metered

    async def _read_metered(self, account_id: int) -> bool:
        forgotten = self._forgotten
        async with self._engine.connect() as conn:
            balance = await conn.execute(select(_accounts.c.balance_nano).where(_accounts.c.id == account_id))
            row = balance.one_or_none()
        if row is None:
            raise LookupError(f"no account with id {account_id}")
        metered = row.balance_nano is not None
        if forgotten == self._forgotten:  # else a top-up meanwhile: this read may predate it
            self._metered.put(account_id, metered)
        return metered

    def forget_account(self, account_id: int) -> None:
        self._forgotten += 1
        self._metered.pop(account_id)

    async def reserve(
        self,
        *,
        key_id: int,
        generation_id: str,
        amount_usd: Decimal | int | str,
        ttl_s: float,
        now: datetime | None = None,
    ) -> None:
        """Hold ``amount_usd`` (rounded up to the nano) for ``generation_id`` for ``ttl_s``.

        Raises ``LimitExceeded`` (nothing held) when the key's limit or the account's
        balance cannot cover it, ``KeyDisabled`` for a disabled or revoked key,
        ``LookupError`` for an unknown key.
        """
        hold = Hold(key_id, generation_id, to_decimal(amount_usd), ttl_s)
        [refusal] = await self._whole.write(lambda conn: reserve_all(conn, [hold], now or utcnow()))
        if refusal is not None:
            raise refusal

    async def finish(self, settlement: Settlement) -> int:
        """``settle_all`` of one, batched with others that finish at the same time; nano-USD charged."""
        if settlement.share is not None:
            self.allowances.ended(settlement.share, charged=settlement.cost_usd is not None)
        return await self._settlements.submit(settlement)

    async def wait_idle(self) -> None:
        await self._settlements.wait_idle()
        await self.allowances.wait_idle()

    async def close(self) -> None:
        """Give back every allowance, once what is in flight has settled."""
        await self.wait_idle()
        self.allowances.close_all()
        await self.allowances.wait_idle()

    async def _release_all(self, generation_ids: list[str]) -> None:
        await self.settle_all([Settlement(gid, None) for gid in generation_ids])

    async def release_allowances(self, owner: str) -> int:
        """Give back the allowances of process ``owner`` (one that died); how many."""
        async with self._engine.connect() as conn:
            ids = list(await conn.scalars(
                select(_reservations.c.generation_id)
                .where(_reservations.c.generation_id.startswith(f"{ALLOWANCE_PREFIX}{owner}-"))
            ))
        if ids:
            await self._release_all(ids)
        return len(ids)

    async def heartbeat(self, ttl_s: float, now: datetime | None = None) -> None:
        """Renew this process's allowances, giving back those unused since the last beat."""

        async def renew_allowances(ids: list[str]) -> set[str]:
            return await self._renewed(ids, ttl_s, now)

        await self.allowances.heartbeat(renew_allowances)

    async def _settle_batch(self, batch: list[Settlement]) -> list[int | Exception]:
        for attempt in range(_POOL_ATTEMPTS):  # a burst may hold every pooled connection
            try:
                return await self.settle_all(batch)
            except SQLAlchemyTimeoutError:
                if attempt == _POOL_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    async def settle(
        self,
        generation_id: str,
        actual_usd: Decimal | int | str,
        *,
        now: datetime | None = None,
    ) -> Decimal:
        """Charge ``actual_usd`` for the generation and release the rest of its reservation.

        Returns the USD charged: ``actual_usd`` rounded half-up to the nano, in full even past
        the reservation or the balance (both logged; the account then owes the difference).
        Settling again charges nothing and returns what was charged the first time.
        ``LookupError`` when the generation was never reserved (or was released).
        """
        cost = to_decimal(actual_usd)
        if cost < 0:
            raise ValueError(f"a cost cannot be negative, got {actual_usd!r}")
        [charged] = await self.settle_all([Settlement(generation_id, cost)], now=now)
        if isinstance(charged, Exception):
            raise charged
        return nano_to_usd(charged)

    async def release(self, generation_id: str) -> None:
        """Release the generation's reservation, charging nothing; a no-op when none."""
        await self.settle_all([Settlement(generation_id, None)])

    async def settle_all(self, batch: list[Settlement], now: datetime | None = None) -> list[int | Exception]:
        """Book a batch of settlements (and their records) in one transaction; see ``settlement.py``."""
        return await tx.write(self._writer, lambda conn: settle_all(conn, batch, now or utcnow()))

    async def renew(self, generation_ids: list[str], ttl_s: float, now: datetime | None = None) -> int:
        """Push back the expiry of live reservations: the heartbeat of the process that holds them.

        A process renews what it holds every fraction of ``ttl_s``; when it dies the renewals
        stop and, ``ttl_s`` later, ``reap_expired`` (run by any process) releases the money.
        Returns how many were renewed (reaped ones are not brought back).
        """
        return len(await self._renewed(generation_ids, ttl_s, now))

    async def _renewed(self, generation_ids: list[str], ttl_s: float, now: datetime | None) -> set[str]:
        if not generation_ids:
            return set()
        expires_at = (now or utcnow()) + timedelta(seconds=ttl_s)

        async def work(conn: AsyncConnection) -> set[str]:
            result = await conn.execute(
                update(_reservations)
                .where(
                    _reservations.c.generation_id.in_(generation_ids),
                    _reservations.c.reaped_at.is_(None),
                )
                .values(expires_at=expires_at)
                .returning(_reservations.c.generation_id)
            )
            return set(result.scalars())

        return await tx.write(self._writer, work)

    async def reap_expired(self, now: datetime | None = None) -> int:
        """Release reservations past their expiry; returns how many this call released.

        Safe to run from several processes at once: each reservation is released by
        whichever gets to it first. Reaped reservations older than ``REAPED_KEPT`` are
        dropped.
        """
        at = now or utcnow()
        async with self._engine.connect() as conn:
            expired = list(
                await conn.scalars(
                    select(_reservations.c.generation_id).where(
                        _reservations.c.reaped_at.is_(None), _reservations.c.expires_at <= at
                    )
                )
            )

        async def reap(conn: AsyncConnection, generation_id: str) -> int:
            held = (
                await conn.execute(
                    update(_reservations)
                    .where(
                        _reservations.c.generation_id == generation_id,
                        _reservations.c.reaped_at.is_(None),
                        _reservations.c.expires_at <= at,
                    )
                    .values(reaped_at=at)
                    .returning(
                        _reservations.c.key_id,
                        _reservations.c.account_id,
                        _reservations.c.amount_nano,
                    )
                )
            ).one_or_none()
            if held is None:
                return 0
            log.warning(
                "reservation for generation %s expired unsettled; released %s USD",
                generation_id, nano_to_usd(held.amount_nano),
            )
            await _release(conn, held.key_id, held.account_id, held.amount_nano)
            return 1

        reaped = 0
        for generation_id in expired:
            reaped += await tx.write(self._writer, partial(reap, generation_id=generation_id))

        async def purge(conn: AsyncConnection) -> None:
            await conn.execute(
                delete(_reservations).where(
                    _reservations.c.reaped_at.is_not(None),
                    _reservations.c.expires_at < at - REAPED_KEPT,
                )
            )

        await tx.write(self._writer, purge)
        return reaped


async def _release(conn: AsyncConnection, key_id: int, account_id: int, amount: int) -> None:
    await conn.execute(shift_key_reserved, [{"key": key_id, "delta": -amount}])
    await conn.execute(shift_account_reserved, [{"account": account_id, "delta": -amount}])
