"""The human handoff: an escalated conversation's current handoff (its state, the agent
holding it and when each step happened) kept on the conversation itself, where the queue
reads it through one index, and the author of an agent's message.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as conversations:
        conversations.add_column(sa.Column("handoff_state", sa.String(16)))
        conversations.add_column(sa.Column("handoff_agent", sa.String(64)))
        conversations.add_column(sa.Column("handoff_assigned_at", sa.DateTime(timezone=True)))
        conversations.add_column(
            sa.Column("handoff_first_agent_reply_at", sa.DateTime(timezone=True))
        )
        conversations.add_column(sa.Column("handoff_resolved_at", sa.DateTime(timezone=True)))
        conversations.add_column(sa.Column("handoff_note", sa.Text()))
    # Every conversation already escalated is waiting for an agent.
    op.execute("UPDATE conversations SET handoff_state = 'waiting' WHERE status = 'escalated'")
    op.create_index(
        "ix_conversations_handoff", "conversations", ["handoff_state", "escalated_at", "id"]
    )
    with op.batch_alter_table("messages") as messages:
        messages.add_column(sa.Column("author", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("messages") as messages:
        messages.drop_column("author")
    op.drop_index("ix_conversations_handoff", "conversations")
    with op.batch_alter_table("conversations") as conversations:
        for column in (
            "handoff_note",
            "handoff_resolved_at",
            "handoff_first_agent_reply_at",
            "handoff_assigned_at",
            "handoff_agent",
            "handoff_state",
        ):
            conversations.drop_column(column)
