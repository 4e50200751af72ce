"""A goal's idle timeout: its conversations idle this long end (one waiting for an agent
is abandoned). Every goal gets the default, 30 minutes.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("goals") as goals:
        goals.add_column(
            sa.Column("idle_timeout_seconds", sa.Integer(), nullable=False, server_default="1800")
        )


def downgrade() -> None:
    with op.batch_alter_table("goals") as goals:
        goals.drop_column("idle_timeout_seconds")
