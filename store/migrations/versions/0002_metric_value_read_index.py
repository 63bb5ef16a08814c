"""Index metric_value on (run_id, metric_id, place): how the apps and ``read_values`` read.

Readers always fix the run and usually a metric (and often a place); the composite index serves
those reads directly and makes the single-column run_id index redundant, so it goes (one index
fewer to maintain on every publish).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # IF (NOT) EXISTS: a pre-migrations store made by create_all from newer models already has these.
    op.create_index("ix_metric_value_run_metric_place", "metric_value", ["run_id", "metric_id", "place"],
                    if_not_exists=True)
    op.drop_index("ix_metric_value_run_id", table_name="metric_value", if_exists=True)


def downgrade() -> None:
    op.create_index("ix_metric_value_run_id", "metric_value", ["run_id"], if_not_exists=True)
    op.drop_index("ix_metric_value_run_metric_place", table_name="metric_value", if_exists=True)
