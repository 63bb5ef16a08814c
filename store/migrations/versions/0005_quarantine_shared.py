"""Add quarantine_shared: a run's quarantined rows of a source kept once, under the runs that wrote them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "quarantine_shared",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("refresh_run.id"), primary_key=True),
        sa.Column("source_id", sa.String(), primary_key=True),
        sa.Column("held_by_run_id", sa.Integer(), sa.ForeignKey("refresh_run.id"), primary_key=True),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("quarantine_shared", if_exists=True)
