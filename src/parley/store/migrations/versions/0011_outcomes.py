"""Goal outcomes: a goal's success criteria and judging; an ended conversation's end, its
outcome and who gave it; the judge's evaluations (its queue, too).

Conversations completed before this revision end at their last change, outcome unknown,
from no known source.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("goals") as goals:
        goals.add_column(sa.Column("success_criteria", sa.Text()))
        goals.add_column(
            sa.Column("judge_enabled", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        goals.add_column(
            sa.Column("judge_sample_rate", sa.Float(), nullable=False, server_default="1.0")
        )
    with op.batch_alter_table("conversations") as conversations:
        conversations.add_column(sa.Column("ended_at", sa.DateTime(timezone=True)))
        conversations.add_column(sa.Column("outcome", sa.String(16)))
        conversations.add_column(sa.Column("outcome_source", sa.String(16)))
        conversations.add_column(sa.Column("ended_turns", sa.Integer()))
    op.execute(
        "UPDATE conversations SET ended_at = updated_at, outcome = 'unknown',"
        " ended_turns = (SELECT count(*) FROM messages"
        " WHERE messages.conversation_id = conversations.id AND messages.role = 'user')"
        " WHERE status = 'completed'"
    )
    op.create_index("ix_conversations_ended", "conversations", ["goal_id", "ended_at"])
    # The idle sweep's lookup: a goal's open conversations, the longest unchanged first,
    # without reading the goal's ended ones (most of them, in time).
    op.create_index("ix_conversations_idle", "conversations", ["goal_id", "status", "updated_at"])
    op.create_table(
        "evaluations",
        sa.Column(
            "conversation_id",
            sa.Uuid(),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("goal_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(timezone=True)),
        sa.Column("label", sa.String(16)),
        sa.Column("score", sa.Float()),
        sa.Column("explanation", sa.Text()),
        sa.Column("model", sa.String(200)),
        sa.Column("last_error", sa.String(200)),
    )
    op.create_index("ix_evaluations_due", "evaluations", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_evaluations_due", "evaluations")
    op.drop_table("evaluations")
    op.drop_index("ix_conversations_idle", "conversations")
    op.drop_index("ix_conversations_ended", "conversations")
    with op.batch_alter_table("conversations") as conversations:
        for column in ("ended_turns", "outcome_source", "outcome", "ended_at"):
            conversations.drop_column(column)
    with op.batch_alter_table("goals") as goals:
        for column in ("judge_sample_rate", "judge_enabled", "success_criteria"):
            goals.drop_column(column)
