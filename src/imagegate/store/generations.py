"""Generation records: one row per image request, written once when it ends."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from imagegate.store.coltypes import as_utc, to_decimal, utcnow
from imagegate.store.models import Generation
from imagegate.store.money import nano_to_usd, usd_to_nano

STATUSES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, kw_only=True)
class GenerationRecord:
    """Everything recorded about one generation request (metadata only, never image bytes).

    ``cost_usd`` accepts a ``Decimal``, int or decimal string (a float is read through its
    repr) and is always a ``Decimal`` afterwards; a naive ``created_at`` is taken as UTC.
    JSON fields take dicts/lists (tuples, sets, dataclasses and Decimals are converted when
    stored; a Decimal inside JSON comes back as a float — exact money belongs in
    ``cost_usd``).
    """

    id: str
    model: str
    provider_name: str = ""
    provider_slug: str | None = None
    key_id: int | None = None
    status: str = "succeeded"
    http_status: int = 200
    error_message: str | None = None
    streamed: bool = False
    cancelled: bool = False
    created_at: datetime = field(default_factory=utcnow)
    #: Time to the first byte (or SSE event) sent to the client.
    latency_ms: int | None = None
    generation_time_ms: int | None = None
    cost_usd: Decimal = Decimal(0)
    num_images: int = 0
    num_references: int = 0
    usage: dict[str, Any] = field(default_factory=dict)
    #: Applied parameters: width, height, aspect_ratio, resolution, format, quality, dropped…
    applied: dict[str, Any] = field(default_factory=dict)
    #: [{width, height, media_type, bytes, sha256}]
    images: list[dict[str, Any]] = field(default_factory=list)
    #: [{provider_name, provider_slug, status, latency_ms, error}]
    attempts: list[dict[str, Any]] = field(default_factory=list)
    session_id: str | None = None
    user: str | None = None
    #: The client's HTTP-Referer (OpenRouter's ``origin``).
    origin: str | None = None
    #: The client's X-Title.
    app_title: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if self.session_id is not None and len(self.session_id) > 256:
            raise ValueError("session_id is longer than 256 characters")
        object.__setattr__(self, "cost_usd", to_decimal(self.cost_usd))
        object.__setattr__(self, "created_at", as_utc(self.created_at))

    @classmethod
    def from_row(cls, row: Generation) -> GenerationRecord:
        return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})

    def to_row(self) -> Generation:
        return Generation(**self.to_values())

    def to_values(self, *, cost_nano: int | None = None) -> dict[str, Any]:
        """The row's columns; ``cost_nano`` (what was actually charged) overrides ``cost_usd``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if cost_nano is None:
            values["cost_nano"] = usd_to_nano(self.cost_usd)
        else:
            values["cost_nano"], values["cost_usd"] = cost_nano, nano_to_usd(cost_nano)
        return values


class GenerationRepository:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def record_generation(self, record: GenerationRecord) -> None:
        """Insert ``record``; an id already recorded raises ``sqlalchemy.exc.IntegrityError``."""
        async with self._sessionmaker.begin() as session:
            session.add(record.to_row())

    async def get_generation(
        self, generation_id: str, *, key_id: int | None = None
    ) -> GenerationRecord | None:
        """The generation with this id; with ``key_id``, only if that key made it."""
        query = select(Generation).where(Generation.id == generation_id)
        if key_id is not None:
            query = query.where(Generation.key_id == key_id)
        async with self._sessionmaker() as session:
            row = await session.scalar(query)
            return None if row is None else GenerationRecord.from_row(row)
