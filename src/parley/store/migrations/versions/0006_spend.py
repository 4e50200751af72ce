"""Spend and budgets: what each key spent per UTC day (updated in the reply's own
transaction), each key's budget and rate limits, and each conversation's running tokens
and cost against its goal's per-conversation budget. Money is whole nano-dollars.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_spend",
        sa.Column("key_name", sa.String(64), primary_key=True),
        sa.Column("day", sa.Date(), primary_key=True),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("api_keys") as keys:
        keys.add_column(sa.Column("budget_nanos", sa.BigInteger()))
        keys.add_column(
            sa.Column("budget_period", sa.String(8), nullable=False, server_default="month")
        )
        keys.add_column(sa.Column("rpm", sa.Integer()))
        keys.add_column(sa.Column("tpm", sa.Integer()))
    with op.batch_alter_table("goals") as goals:
        goals.add_column(sa.Column("budget_tokens", sa.Integer()))
        goals.add_column(sa.Column("budget_nanos", sa.BigInteger()))
    with op.batch_alter_table("conversations") as conversations:
        conversations.add_column(
            sa.Column("tokens_used", sa.Integer(), nullable=False, server_default="0")
        )
        conversations.add_column(
            sa.Column("cost_nanos", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as conversations:
        conversations.drop_column("cost_nanos")
        conversations.drop_column("tokens_used")
    with op.batch_alter_table("goals") as goals:
        goals.drop_column("budget_nanos")
        goals.drop_column("budget_tokens")
    with op.batch_alter_table("api_keys") as keys:
        keys.drop_column("tpm")
        keys.drop_column("rpm")
        keys.drop_column("budget_period")
        keys.drop_column("budget_nanos")
    op.drop_table("key_spend")
