"""Add run_frame: named result tables (SPC, comparisons, inequalities, scorecard) published with a run.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_frame",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("refresh_run.id"), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("columns_json", sa.Text(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("run_frame", if_exists=True)
