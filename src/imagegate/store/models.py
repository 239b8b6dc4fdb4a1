"""Declarative models: accounts, API keys, the money ledger, reservations, generations.

The schema itself is owned by the Alembic migrations in ``migrations/versions``; these
models must describe the same tables (a test compares them). Money columns end in
``_nano``: integer nano-USD (see ``money.py``).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
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


#: The account that the migration creates and that keys belong to unless told otherwise.
DEFAULT_ACCOUNT_ID = 1


class Account(Base):
    """Who pays: a credit balance that the operator tops up and every key of it draws on."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    #: NULL: unmetered, nothing is refused (a fresh install); the first top-up meters it.
    #: Below zero when a generation cost more than was left (charged as its upstream reported).
    balance_nano: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: Sum of the account's live reservations, kept by the transactions that change them.
    reserved_nano: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        CheckConstraint("reserved_nano >= 0", name="reserved_not_negative"),
    )


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
    account_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("accounts.id"),
        nullable=False,
        default=DEFAULT_ACCOUNT_ID,
        server_default=str(DEFAULT_ACCOUNT_ID),
    )
    #: Spending cap per ``limit_reset`` period (all time when that is NULL); NULL: none.
    limit_nano: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: "daily" | "weekly" | "monthly" (UTC calendar periods) or NULL.
    limit_reset: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: Sum of the key's live reservations.
    reserved_nano: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    disabled: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        Index("ix_api_keys_hash", "hash", unique=True),
        CheckConstraint("limit_nano >= 0", name="limit_not_negative"),
        CheckConstraint("reserved_nano >= 0", name="reserved_not_negative"),
        CheckConstraint(
            "limit_reset IN ('daily', 'weekly', 'monthly')", name="limit_reset_known"
        ),
    )


class LedgerEntry(Base):
    """One movement of money. Credits are positive, charges zero or negative, so a metered
    account's ``balance_nano`` always equals the sum of its entries."""

    __tablename__ = "ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts.id"), nullable=False)
    key_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("api_keys.id", ondelete="SET NULL"), nullable=True
    )
    #: The generation a charge settles; unique, so a generation is charged at most once.
    generation_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: "credit" | "charge"
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    amount_nano: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    note: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")

    __table_args__ = (
        Index("ix_ledger_generation_id", "generation_id", unique=True),
        Index("ix_ledger_key_id_created_at", "key_id", "created_at"),
        Index("ix_ledger_account_id_created_at", "account_id", "created_at"),
        CheckConstraint(
            "(kind = 'credit' AND amount_nano > 0) OR (kind = 'charge' AND amount_nano <= 0)",
            name="amount_sign_matches_kind",
        ),
    )


#: A reservation whose id starts with this is a process's allowance for a key (money held
#: ahead for many generations, ``allowances.py``), not one generation's.
ALLOWANCE_PREFIX = "allowance-"


class Reservation(Base):
    """Money held for a generation in flight, released when it settles or fails.

    A reservation past ``expires_at`` (its process crashed or overran) is reaped: its
    amount is released and ``reaped_at`` set, but the row stays a while so that a late
    settle still knows whom to charge.
    """

    __tablename__ = "reservations"

    generation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(Integer, ForeignKey("accounts.id"), nullable=False)
    key_id: Mapped[int] = mapped_column(Integer, ForeignKey("api_keys.id"), nullable=False)
    amount_nano: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    reaped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        Index("ix_reservations_expires_at", "expires_at"),
        CheckConstraint("amount_nano >= 0", name="amount_not_negative"),
    )


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
    #: ``cost_usd`` rounded half-up to the nano, for exact sums in SQL.
    cost_nano: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
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
        Index("ix_generations_model_created_at", "model", "created_at"),
    )
