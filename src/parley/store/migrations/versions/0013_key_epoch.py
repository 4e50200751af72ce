"""A counter of key changes (revocations, limits changed), moved in the transaction that
makes each: a replica on SQLite reads it, one row, to know whether the keys it keeps
still hold.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    key_epoch = op.create_table(
        "key_epoch",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.CheckConstraint("id = 1", name="ck_key_epoch_one_row"),
    )
    op.bulk_insert(key_epoch, [{"id": 1, "epoch": 0}])


def downgrade() -> None:
    op.drop_table("key_epoch")
