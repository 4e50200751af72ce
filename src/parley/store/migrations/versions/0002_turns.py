"""Turns: replies tied to the message they answer, interrupted replies, idempotency keys,
consecutive LLM failures.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as messages:
        messages.add_column(sa.Column("reply_to", sa.Uuid(), nullable=True))
        messages.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="complete")
        )
        messages.add_column(sa.Column("idempotency_key", sa.String(255), nullable=True))
        messages.create_foreign_key(
            "fk_messages_reply_to", "messages", ["reply_to"], ["id"], ondelete="CASCADE"
        )
    # One reply per user message, and one user message per idempotency key: the database
    # itself refuses the duplicate a concurrent retry would write.
    op.create_index("ux_messages_reply_to", "messages", ["reply_to"], unique=True)
    op.create_index(
        "ux_messages_idempotency_key",
        "messages",
        ["conversation_id", "idempotency_key"],
        unique=True,
    )
    with op.batch_alter_table("conversations") as conversations:
        conversations.add_column(
            sa.Column("llm_failures", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("goals") as goals:
        goals.add_column(
            sa.Column("max_llm_failures", sa.Integer(), nullable=False, server_default="3")
        )


def downgrade() -> None:
    with op.batch_alter_table("goals") as goals:
        goals.drop_column("max_llm_failures")
    with op.batch_alter_table("conversations") as conversations:
        conversations.drop_column("llm_failures")
    op.drop_index("ux_messages_idempotency_key", "messages")
    op.drop_index("ux_messages_reply_to", "messages")
    with op.batch_alter_table("messages") as messages:
        messages.drop_constraint("fk_messages_reply_to", type_="foreignkey")
        messages.drop_column("idempotency_key")
        messages.drop_column("status")
        messages.drop_column("reply_to")
