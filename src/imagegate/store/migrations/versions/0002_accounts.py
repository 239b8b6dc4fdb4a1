"""Accounts, key limits, the money ledger and reservations.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

Portable DDL only (SQLite and PostgreSQL). Money is BIGINT nano-USD. Account 1, "default",
is created unmetered (``balance_nano`` NULL) and every existing key joins it. Generations
gain ``cost_nano`` for exact sums in SQL; existing rows are filled from ``cost_usd`` (exact
on PostgreSQL; through a double on SQLite, exact to the nano for costs below $1M).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Check constraint names are final (``op.f``): the naming convention would prefix them again.
_KEY_CHECKS = {
    "ck_api_keys_limit_not_negative": "limit_nano >= 0",
    "ck_api_keys_reserved_not_negative": "reserved_nano >= 0",
    "ck_api_keys_limit_reset_known": "limit_reset IN ('daily', 'weekly', 'monthly')",
}
_KEY_COLUMNS = ("account_id", "limit_nano", "limit_reset", "reserved_nano", "disabled")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False, server_default=""),
        sa.Column("balance_nano", sa.BigInteger(), nullable=True),
        sa.Column("reserved_nano", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
        sa.CheckConstraint("balance_nano >= 0", name=op.f("ck_accounts_balance_not_negative")),
        sa.CheckConstraint("reserved_nano >= 0", name=op.f("ck_accounts_reserved_not_negative")),
    )
    # No explicit id: on an empty table both backends hand out 1, and PostgreSQL's
    # sequence stays in step.
    op.execute("INSERT INTO accounts (name, created_at) VALUES ('default', CURRENT_TIMESTAMP)")

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("account_id", sa.Integer(), nullable=False, server_default="1")
        )
        batch.add_column(sa.Column("limit_nano", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("limit_reset", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("reserved_nano", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_foreign_key(
            "fk_api_keys_account_id_accounts", "accounts", ["account_id"], ["id"]
        )
        for name, condition in _KEY_CHECKS.items():
            batch.create_check_constraint(op.f(name), condition)
    op.execute("UPDATE api_keys SET updated_at = created_at")
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("updated_at", existing_type=sa.DateTime(timezone=True), nullable=False)

    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("generation_id", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount_nano", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_ledger"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_ledger_account_id_accounts"
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_ledger_key_id_api_keys", ondelete="SET NULL"
        ),
        sa.CheckConstraint(
            "(kind = 'credit' AND amount_nano > 0) OR (kind = 'charge' AND amount_nano <= 0)",
            name=op.f("ck_ledger_amount_sign_matches_kind"),
        ),
    )
    op.create_index("ix_ledger_generation_id", "ledger", ["generation_id"], unique=True)
    op.create_index("ix_ledger_key_id_created_at", "ledger", ["key_id", "created_at"])
    op.create_index("ix_ledger_account_id_created_at", "ledger", ["account_id", "created_at"])

    op.create_table(
        "reservations",
        sa.Column("generation_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("amount_nano", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reaped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("generation_id", name="pk_reservations"),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_reservations_account_id_accounts"
        ),
        sa.ForeignKeyConstraint(
            ["key_id"], ["api_keys.id"], name="fk_reservations_key_id_api_keys"
        ),
        sa.CheckConstraint("amount_nano >= 0", name=op.f("ck_reservations_amount_not_negative")),
    )
    op.create_index("ix_reservations_expires_at", "reservations", ["expires_at"])

    with op.batch_alter_table("generations") as batch:
        batch.add_column(
            sa.Column("cost_nano", sa.BigInteger(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE generations SET cost_nano = "
        "CAST(ROUND(CAST(cost_usd AS NUMERIC) * 1000000000) AS BIGINT)"
    )
    op.create_index(
        "ix_generations_model_created_at", "generations", ["model", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_generations_model_created_at", table_name="generations")
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("cost_nano")

    op.drop_index("ix_reservations_expires_at", table_name="reservations")
    op.drop_table("reservations")
    op.drop_index("ix_ledger_account_id_created_at", table_name="ledger")
    op.drop_index("ix_ledger_key_id_created_at", table_name="ledger")
    op.drop_index("ix_ledger_generation_id", table_name="ledger")
    op.drop_table("ledger")

    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("fk_api_keys_account_id_accounts", type_="foreignkey")
        for name in _KEY_CHECKS:
            batch.drop_constraint(op.f(name), type_="check")
        for column in (*_KEY_COLUMNS, "updated_at"):
            batch.drop_column(column)
    op.drop_table("accounts")
