"""Add quarantine_shared: a run's quarantined rows of a source kept once, under the runs that wrote them.

Quarantined rows are then read by run *and* source, so they are indexed on (run_id, source_id),
which makes the single-column run_id index redundant (as 0002 did for metric_value).

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
    # IF (NOT) EXISTS: a pre-migrations store made by create_all from newer models already has these.
    op.create_index("ix_quarantined_row_run_source", "quarantined_row", ["run_id", "source_id"], if_not_exists=True)
    op.drop_index("ix_quarantined_row_run_id", table_name="quarantined_row", if_exists=True)


def downgrade() -> None:
    op.create_index("ix_quarantined_row_run_id", "quarantined_row", ["run_id"], if_not_exists=True)
    op.drop_index("ix_quarantined_row_run_source", table_name="quarantined_row", if_exists=True)
    op.drop_table("quarantine_shared", if_exists=True)
