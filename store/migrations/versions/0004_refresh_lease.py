"""Add refresh_lease (exactly one refresh at a time) and apscheduler_jobs (the scheduler's job store).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    aware = sa.DateTime(timezone=True)  # UTC; timestamptz on PostgreSQL, ISO text on SQLite
    op.create_table(
        "refresh_lease",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("purpose", sa.String(), nullable=False),
        sa.Column("acquired_at", aware, nullable=False),
        sa.Column("expires_at", aware, nullable=False),
        sa.Column("heartbeat", aware, nullable=False),
        if_not_exists=True,
    )
    # APScheduler 3.11's SQLAlchemyJobStore table, exactly as it would create it.
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_apscheduler_jobs_next_run_time", table_name="apscheduler_jobs", if_exists=True)
    op.drop_table("apscheduler_jobs", if_exists=True)
    op.drop_table("refresh_lease", if_exists=True)
