"""A balance may go below zero.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

A generation is charged what its upstream reported it cost, even past what was reserved for
it and past the account's balance: the client was shown that cost, and the record and the
ledger must say the same. The account then owes the difference (visible in ``/credits``) and
new generations are refused until it is topped up.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint(op.f("ck_accounts_balance_not_negative"), type_="check")


def downgrade() -> None:
    # Fails while an account owes money: settle it with a top-up first.
    with op.batch_alter_table("accounts") as batch:
        batch.create_check_constraint(op.f("ck_accounts_balance_not_negative"), "balance_nano >= 0")
