"""Declarative models: the ``api_keys`` and ``generations`` tables.

The schema itself is owned by the Alembic migrations in ``migrations/versions``; these
models must describe the same tables (a test compares them).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from imagegate.store.coltypes import DecimalText, JSONDoc, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: sha256 hex digest of the secret; the secret itself is never stored.
    hash: Mapped[str] = mapped_column(String(64), nullable=False)
    #: Display form, ``sk-ig-v1-abc...xyz``. Not unique.
    label: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    is_management: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )

    __table_args__ = (Index("ix_api_keys_hash", "hash", unique=True),)


class Generation(Base):
    __tablename__ = "generations"

    #: ``gen-img-<unix seconds>-<20 alphanumerics>``, chosen by the caller.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True
    )
    model: Mapped[str] = mapped_column(String(255), nullable=False)
    provider_name: Mapped[str] = mapped_column(String(255), nullable=False)
    provider_slug: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: "succeeded" | "failed" | "cancelled"
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    http_status: Mapped[int] = mapped_column(Integer, nullable=False)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    streamed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    cancelled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    #: Time to the first byte (or SSE event) sent to the client.
    latency_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    generation_time_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cost_usd: Mapped[Decimal] = mapped_column(DecimalText, nullable=False, default=Decimal(0))
    num_images: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    num_references: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    usage: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    applied: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False, default=dict)
    #: [{width, height, media_type, bytes, sha256}] — metadata only, never image payloads.
    images: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False, default=list)
    #: [{provider_name, provider_slug, status, latency_ms, error}]
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False, default=list)
    session_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    user: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The client's HTTP-Referer (OpenRouter reports it as ``origin``).
    origin: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: The client's X-Title.
    app_title: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_generations_key_id_created_at", "key_id", "created_at"),
        Index("ix_generations_created_at", "created_at"),
    )
