"""Group commit: writes that arrive while one batch is being committed go together in the next.

Under load many generations finish at once; booking each in a transaction of its own costs a
round of statements and a commit per generation. A ``GroupCommit`` runs at most one batch at
a time and starts the next as soon as it is done, so a lone write goes out at once (no timer,
no added latency) and a burst shares transactions.

With a gathering window (``gather_s``), every batch that is not already full waits that long
for company first, not only the first one: a steady trickle of writes (one every few
milliseconds) otherwise goes out one or two per batch, each batch right after the previous.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")


class GroupCommit(Generic[I, R]):
    """``await submit(item)`` gives that item's result from ``write(batch)``.

    ``write`` returns one result per item, an ``Exception`` instance for an item that failed on
    its own (raised to that item's caller). When a whole batch fails with one of ``split_on``,
    its items are written one by one, so one bad item cannot take the others with it; any
    other failure is every item's.
    """

    def __init__(
        self,
        write: Callable[[list[I]], Awaitable[list[R | Exception]]],
        *,
        max_batch: int = 256,
        split_on: tuple[type[Exception], ...] = (Exception,),
        gather_s: float = 0.0,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._gather_s = gather_s
        self._split_on = split_on
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group commit")
        # Shielded: a caller that is cancelled does not take its write back.
        return await asyncio.shield(future)

    async def wait_idle(self) -> None:
        """Until everything submitted so far is written."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        while self._pending:
            if self._gather_s and len(self._pending) < self._max_batch:
                await asyncio.sleep(self._gather_s)
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            items = [item for item, _ in batch]
            try:
                results = await self._write(items)
            except Exception as exc:
                if len(batch) == 1 or not isinstance(exc, self._split_on):
                    results = [exc] * len(batch)
                else:
                    log.warning("a batch of %d writes failed (%s); writing them one by one", len(batch), exc)
                    results = [await self._alone(item) for item in items]
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _alone(self, item: I) -> R | Exception:
        try:
            [result] = await self._write([item])
        except Exception as exc:
            return exc
        return result
