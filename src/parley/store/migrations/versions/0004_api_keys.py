"""Named API keys with roles (stored as digests), and the owner of each conversation: the
name of the key that created it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True)),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ux_api_keys_digest", "api_keys", ["digest"], unique=True)
    with op.batch_alter_table("conversations") as conversations:
        conversations.add_column(sa.Column("owner", sa.String(64)))
    op.create_index("ix_conversations_owner", "conversations", ["owner", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_conversations_owner", "conversations")
    with op.batch_alter_table("conversations") as conversations:
        conversations.drop_column("owner")
    op.drop_index("ux_api_keys_digest", "api_keys")
    op.drop_table("api_keys")
