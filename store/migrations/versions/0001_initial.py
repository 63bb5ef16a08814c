"""The store's first schema: refresh runs, metric values, definitions as published, quarantined rows.

Exactly what ``SQLModel.metadata.create_all`` made before the store had migrations, so such a
database is adopted by stamping it at this revision (``store.schema.migrate`` checks its tables
and columns against ``schema()`` first).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def schema() -> sa.MetaData:
    """The tables at this revision (frozen here: never import the models in a revision)."""
    metadata = sa.MetaData()
    aware = sa.DateTime(timezone=True)  # UTC; timestamptz on PostgreSQL, ISO text on SQLite
    sa.Table(
        "refresh_run", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("started_at", aware, nullable=False),
        sa.Column("finished_at", aware, nullable=True),
        sa.Column("published_at", aware, nullable=True),
        sa.Column("trigger", sa.String(), nullable=False),
        sa.Column("data_dir", sa.String(), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=True),
        sa.Column("code_version", sa.String(), nullable=False),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("definitions_json", sa.Text(), nullable=False),
        sa.Column("sources_json", sa.Text(), nullable=False),
        sa.Column("timings_json", sa.Text(), nullable=False),
        sa.Column("values_count", sa.Integer(), nullable=False),
        sa.Column("quarantined_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Index("ix_refresh_run_status", "status"),
        sa.Index("ix_refresh_run_published_at", "published_at"),
    )
    sa.Table(
        "metric_definition", metadata,
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("refresh_run.id"), primary_key=True),
        sa.Column("metric_id", sa.String(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("value_type", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("polarity", sa.String(), nullable=False),
        sa.Column("body_json", sa.Text(), nullable=False),
    )
    sa.Table(
        "metric_value", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("refresh_run.id"), nullable=False),
        sa.Column("metric_id", sa.String(), nullable=False),
        sa.Column("metric_version", sa.Integer(), nullable=False),
        sa.Column("place", sa.String(), nullable=False),
        sa.Column("period_type", sa.String(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("breakdown", sa.String(), nullable=False),
        sa.Column("group", sa.String(), nullable=False),
        sa.Column("numerator", sa.Float(), nullable=True),
        sa.Column("denominator", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("lower_95", sa.Float(), nullable=True),
        sa.Column("upper_95", sa.Float(), nullable=True),
        sa.Column("lower_99_8", sa.Float(), nullable=True),
        sa.Column("upper_99_8", sa.Float(), nullable=True),
        sa.Column("computed_run_id", sa.Integer(), nullable=False),
        sa.Index("ix_metric_value_run_id", "run_id"),
        sa.Index("ix_metric_value_metric_id", "metric_id"),
    )
    sa.Table(
        "quarantined_row", metadata,
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("refresh_run.id"), nullable=False),
        sa.Column("source_id", sa.String(), nullable=False),
        sa.Column("file", sa.String(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("column", sa.String(), nullable=True),
        sa.Column("value", sa.String(), nullable=True),
        sa.Column("message", sa.String(), nullable=True),
        sa.Column("row_json", sa.Text(), nullable=True),
        sa.Index("ix_quarantined_row_run_id", "run_id"),
        sa.Index("ix_quarantined_row_source_id", "source_id"),
    )
    return metadata


def upgrade() -> None:
    # checkfirst=False: a half-made store (some tables already there) is an error, not a merge.
    schema().create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    schema().drop_all(op.get_bind(), checkfirst=False)
