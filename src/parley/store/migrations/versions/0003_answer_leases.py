"""Answer leases: a keyed user message records until when some replica is answering it, so
a retry on another replica waits for that reply instead of asking the LLM again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as messages:
        messages.add_column(sa.Column("answering_until", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("messages") as messages:
        messages.drop_column("answering_until")
