"""The request that ended a judged conversation, as a W3C traceparent (with tracing on and
that request sampled): the judge's verdict span links to it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evaluations") as evaluations:
        evaluations.add_column(sa.Column("origin_trace", sa.String(55)))


def downgrade() -> None:
    with op.batch_alter_table("evaluations") as evaluations:
        evaluations.drop_column("origin_trace")
