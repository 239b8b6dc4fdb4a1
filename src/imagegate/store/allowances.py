"""Allowances: money a process holds ahead for a key, so that most requests are admitted
without a database write.

A request that could be refused (a key with a limit, a metered account) must hold its worst
case before the upstream call. Holding it in a reservation row of its own costs a write
transaction on every request's path. Instead, each process keeps, per key, one reservation
row (an *allowance*) that it grows a batch of worst cases at a time (``holds.grow_allowance``),
and admits requests from it in memory: a request takes a *share* of the allowance's spare
money, and gives it back when it ends.

What stays true:

- Nothing is admitted that one reservation per request would refuse: a request that does not
  fit in the spare money grows the allowance by what it lacks, against the same limits, or
  is refused with what is really available (the allowance's spare money included).
- The allowance is real reserved money: other processes see it held. Beyond what its
  requests need it takes at most a small share of what is left (``holds.SHARE_OF_LEFT``),
  and an allowance unused for a heartbeat is given back. Before this process refuses a
  request for want of credit, its other allowances of the account give back their spare
  money, so one process refuses exactly what reservations of their own would; several
  processes may hold back from each other at most their shares, until their next heartbeat.
- A charged request shrinks the allowance by its share as it is booked (``settlement.py``),
  exactly as its own reservation would have been released; a request charged nothing gives
  its share back to the allowance for the next one, with no write.
- A process that dies leaves its allowances to be released: by the replay of its journal
  (which names them), or when they expire unrenewed, like any reservation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal

from imagegate.store import tx
from imagegate.store.coltypes import utcnow
from imagegate.store.errors import ACCOUNT_CREDITS, LimitExceeded
from imagegate.store.holds import AllowanceLost, Grow, give_back_spare, grow_allowance
from imagegate.store.models import ALLOWANCE_PREFIX
from imagegate.store.money import usd_to_nano

log = logging.getLogger(__name__)

#: An allowance grows by this many times the worst case of the request that makes it grow.
GROW_FOR = 32


@dataclass(frozen=True, slots=True)
class Share:
    """The money a generation holds: ``nano`` nano-USD of allowance ``allowance_id``."""

    allowance_id: str
    nano: int


@dataclass(slots=True)
class _Allowance:
    id: str
    key_id: int
    account_id: int
    #: Nano-USD its reservation row holds, as far as this process has booked it (the row may
    #: briefly hold more, until a settlement that shrank it here is committed).
    granted: int = 0
    #: Taken by requests in flight.
    taken: int = 0
    used: bool = True  # since the last heartbeat
    written: bool = False  # its row exists
    growing: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def spare(self) -> int:
        return self.granted - self.taken


def owner_token() -> str:
    """A name for this process's allowances, unique among processes sharing the database."""
    return f"{os.getpid()}-{secrets.token_hex(4)}"


class Allowances:
    """This process's allowances, one per key that has spent through it lately."""

    def __init__(
        self,
        whole: tx.WholeWriter,
        release: Callable[[list[str]], Awaitable[None]],
        *,
        owner: str | None = None,
    ) -> None:
        """``release`` gives allowances' money back (their reservation rows settled as nothing)."""
        self.owner = owner or owner_token()
        self._whole = whole
        self._release = release
        self._by_key: dict[int, _Allowance] = {}
        #: Every allowance whose row this process holds, by id (those being given back too).
        self._by_id: dict[str, _Allowance] = {}
        self._serial = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def ids(self) -> list[str]:
        return list(self._by_id)

    async def admit(self, key_id: int, account_id: int, amount_usd: Decimal, ttl_s: float) -> Share:
        """A share of ``amount_usd`` (rounded up to the nano) from the key's allowance, grown
        first if its spare money falls short. ``LimitExceeded`` / ``KeyDisabled`` /
        ``LookupError`` as a reservation of its own would be refused."""
        nano = usd_to_nano(amount_usd, round_up=True)
        while True:
            allowance = self._by_key.get(key_id) or self._open(key_id, account_id)
            allowance.used = True
            if allowance.spare >= nano:
                allowance.taken += nano
                return Share(allowance.id, nano)
            # Taken before the write, so that requests meanwhile do not count on the same
            # spare money; they wait for the growth instead.
            allowance.taken += nano
            try:
                async with allowance.growing:
                    if allowance.spare < 0:
                        await self._grow(allowance, amount_usd, nano, ttl_s)
                    return Share(allowance.id, nano)
            except AllowanceLost:
                allowance.taken -= nano
                self._forget(allowance)
                log.warning("allowance %s was reaped (missed renewals); opening another", allowance.id)
            except BaseException:
                allowance.taken -= nano
                raise

    async def _grow(self, allowance: _Allowance, amount_usd: Decimal, nano: int, ttl_s: float) -> None:
        try:
            await self._grow_once(allowance, amount_usd, nano, ttl_s)
        except LimitExceeded as refused:
            # The account's credit may be spare in this process's other allowances: given
            # back, the request is refused only where a reservation of its own would be.
            if refused.source != ACCOUNT_CREDITS or not await self._give_back_spare(allowance):
                raise
            await self._grow_once(allowance, amount_usd, nano, ttl_s)

    async def _give_back_spare(self, growing: _Allowance) -> bool:
        """Shrink this process's other allowances of ``growing``'s account by their spare money;
        whether there was any."""
        others = [a for a in self._by_id.values()
                  if a is not growing and a.account_id == growing.account_id and a.written and a.spare > 0]
        spare = {a.id: a.spare for a in others}
        if not spare:
            return False
        for allowance in others:  # out of memory first: nothing admits from it meanwhile
            allowance.granted -= spare[allowance.id]
        try:
            await self._whole.write(lambda conn: give_back_spare(conn, spare))
        except BaseException:
            for allowance in others:
                allowance.granted += spare[allowance.id]
            raise
        return True

    async def _grow_once(self, allowance: _Allowance, amount_usd: Decimal, nano: int, ttl_s: float) -> None:
        # Requests waiting behind this one have taken their shares too: the deficit is all of
        # theirs, but this one is refused only if its own part does not fit.
        deficit = -allowance.spare
        need = min(nano, deficit)
        grow = Grow(allowance.id, allowance.key_id, need=need, deficit=deficit, want=max(deficit, nano * GROW_FOR),
                    asked_usd=amount_usd, spare=nano - need, ttl_s=ttl_s)
        allowance.granted += await self._whole.write(lambda conn: grow_allowance(conn, grow, utcnow()))
        allowance.written = True

    def ended(self, share: Share, *, charged: bool) -> None:
        """A generation holding ``share`` ended. Charged, its share leaves the allowance as its
        settlement shrinks the row (booked here first: this process never counts on more than
        the row holds); charged nothing, the share is spare again."""
        allowance = self._by_id.get(share.allowance_id)
        if allowance is None:  # reaped meanwhile: the row holds nothing any more
            return
        allowance.taken -= share.nano
        if charged:
            allowance.granted -= share.nano
        if allowance.key_id not in self._by_key or self._by_key[allowance.key_id] is not allowance:
            self._give_back_when_idle(allowance)

    def close_key(self, key_id: int) -> None:
        """Stop admitting from the key's allowance (its limit or state changed): the next
        request opens a new one against the new limits; this one is given back once idle."""
        if (allowance := self._by_key.pop(key_id, None)) is not None:
            self._give_back_when_idle(allowance)

    def close_all(self) -> None:
        for key_id in list(self._by_key):
            self.close_key(key_id)

    async def heartbeat(self, renew: Callable[[list[str]], Awaitable[set[str]]]) -> None:
        """Give back allowances no request used since the last beat, and renew the others
        (``renew`` returns the ids still held); one found reaped is forgotten."""
        for allowance in list(self._by_key.values()):
            if not allowance.used and allowance.taken == 0:
                self.close_key(allowance.key_id)
            allowance.used = False
        if not self._by_id:
            return
        ids = list(self._by_id)
        held = await renew(ids)
        for allowance_id in ids:
            if allowance_id not in held and (allowance := self._by_id.get(allowance_id)) is not None:
                log.warning("allowance %s was reaped (missed renewals); forgotten", allowance_id)
                self._forget(allowance)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # --- bookkeeping ---

    def _open(self, key_id: int, account_id: int) -> _Allowance:
        self._serial += 1
        allowance = _Allowance(f"{ALLOWANCE_PREFIX}{self.owner}-{key_id}-{self._serial}", key_id, account_id)
        self._by_key[key_id] = self._by_id[allowance.id] = allowance
        return allowance

    def _forget(self, allowance: _Allowance) -> None:
        if self._by_key.get(allowance.key_id) is allowance:
            del self._by_key[allowance.key_id]
        self._by_id.pop(allowance.id, None)

    def _give_back_when_idle(self, allowance: _Allowance) -> None:
        if allowance.taken or allowance.id not in self._by_id:
            return  # its last request to end gives it back
        del self._by_id[allowance.id]
        if not allowance.written and not allowance.growing.locked():
            return
        task = asyncio.get_running_loop().create_task(self._give_back(allowance), name="give back an allowance")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _give_back(self, allowance: _Allowance) -> None:
        try:
            async with allowance.growing:  # after a growth in flight, not before it
                await self._release([allowance.id])
        except Exception:  # it expires unrenewed instead, and the reaper releases it
            log.exception("could not give back allowance %s", allowance.id)
