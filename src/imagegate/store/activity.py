"""Activity: generations listed and usage summed per model, filtered by key and time.

Time ranges are half-open: ``since`` inclusive, ``until`` exclusive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.store.generations import GenerationRecord
from imagegate.store.models import Generation
from imagegate.store.money import nano_to_usd


class ActivityRepository:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

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
        """Matching generations, newest first."""
        if limit < 1 or offset < 0:
            raise ValueError("limit must be at least 1 and offset at least 0")
        query = _filtered(select(Generation), key_id, since, until)
        if model is not None:
            query = query.where(Generation.model == model)
        query = query.order_by(Generation.created_at.desc(), Generation.id.desc())
        async with self._sessionmaker() as session:
            rows = await session.scalars(query.limit(limit).offset(offset))
            return [GenerationRecord.from_row(row) for row in rows]

    async def usage_by_model(
        self,
        *,
        key_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """``[{model, requests, images, cost_usd}]``, costliest model first.

        Every recorded generation is a request; failed ones add no images and cost 0.
        """
        cost = func.sum(Generation.cost_nano)
        query = _filtered(
            select(
                Generation.model,
                func.count().label("requests"),
                func.sum(Generation.num_images).label("images"),
                cost.label("cost_nano"),
            ),
            key_id,
            since,
            until,
        )
        query = query.group_by(Generation.model).order_by(cost.desc(), Generation.model)
        async with self._sessionmaker() as session:
            rows = (await session.execute(query)).all()
        return [
            {
                "model": row.model,
                "requests": int(row.requests),
                "images": int(row.images or 0),
                "cost_usd": nano_to_usd(row.cost_nano or 0),
            }
            for row in rows
        ]


def _filtered(
    query: Select[Any], key_id: int | None, since: datetime | None, until: datetime | None
) -> Select[Any]:
    if key_id is not None:
        query = query.where(Generation.key_id == key_id)
    if since is not None:
        query = query.where(Generation.created_at >= since)
    if until is not None:
        query = query.where(Generation.created_at < until)
    return query
