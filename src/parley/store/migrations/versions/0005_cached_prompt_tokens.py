"""Cached prompt tokens: the part of a reply's prompt the provider served from its cache,
billed at a lower price, kept with the reply's usage so that stored usage prices as the
provider bills.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as messages:
        messages.add_column(sa.Column("cached_prompt_tokens", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("messages") as messages:
        messages.drop_column("cached_prompt_tokens")
