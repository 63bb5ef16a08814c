"""What the store keeps: one class per table, the shape and its meaning side by side.

The schema itself is versioned by the migrations in ``store/migrations/versions``: a change here
needs a new revision there (a test compares the two).
Datetimes are timezone-aware UTC (sqlmodel's ``UTCDateTime``): ``timestamptz`` on PostgreSQL, UTC
text on SQLite, returned aware in UTC by both.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Column, Float, Index, LargeBinary, Table, Text, Unicode
from sqlmodel import Field, SQLModel

__all__ = ["RefreshRun", "MetricValue", "MetricDefinitionRecord", "QuarantinedRow", "QuarantineShared", "RunFrame",
           "RefreshLease",
           "SCHEDULER_JOBS", "RUN_STATUSES"]

# skipped: an incremental refresh found nothing changed and published nothing (readers only see published runs).
RUN_STATUSES = ("running", "published", "failed", "skipped")


class RefreshRun(SQLModel, table=True):
    """One refresh: what it read, what it computed, how long it took and whether it was published."""

    __tablename__ = "refresh_run"

    id: int | None = Field(default=None, primary_key=True)
    status: str = Field(index=True, description="running | published | failed | skipped")
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    published_at: dt.datetime | None = Field(default=None, index=True)
    trigger: str = "cli"
    data_dir: str = ""
    as_of: dt.date | None = Field(default=None, description="the date 'not in the future' checks used")
    code_version: str = ""
    host: str = ""
    pid: int | None = None
    # JSON documents: small, read whole, never queried inside.
    definitions_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    sources_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    timings_json: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    values_count: int = 0
    quarantined_count: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class MetricValue(SQLModel, table=True):
    """One published number: a metric for a place, period and breakdown group, with its CIs."""

    __tablename__ = "metric_value"
    # Readers fix the run and usually the metric and place (migration 0002).
    __table_args__ = (Index("ix_metric_value_run_metric_place", "run_id", "metric_id", "place"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="refresh_run.id")
    metric_id: str = Field(index=True)
    metric_version: int
    place: str
    period_type: str
    period_start: dt.date
    period_end: dt.date
    breakdown: str = Field(description="'overall' for the place's own total, else the breakdown dimension")
    group: str = Field(description="the breakdown group, e.g. '1' for IMD quintile 1; the place name for overall")
    numerator: float | None = None
    denominator: float | None = None
    value: float | None = None
    lower_95: float | None = None
    upper_95: float | None = None
    lower_99_8: float | None = None
    upper_99_8: float | None = None
    computed_run_id: int = Field(description="the run that computed it (earlier when carried forward)")


class MetricDefinitionRecord(SQLModel, table=True):
    """A metric definition exactly as a run used it, so apps can describe what they show."""

    __tablename__ = "metric_definition"

    run_id: int = Field(foreign_key="refresh_run.id", primary_key=True)
    metric_id: str = Field(primary_key=True)
    version: int
    content_hash: str
    title: str
    outcome: str
    value_type: str
    unit: str
    polarity: str
    body_json: str = Field(sa_column=Column(Text, nullable=False))


class QuarantinedRow(SQLModel, table=True):
    """A source row that failed validation, with the rule it broke. Kept whole: nothing is lost."""

    __tablename__ = "quarantined_row"
    # Read by run and source: a run's own rows, and those it shares (QuarantineShared; migration 0005).
    __table_args__ = (Index("ix_quarantined_row_run_source", "run_id", "source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="refresh_run.id")
    source_id: str = Field(index=True)
    file: str
    row_number: int
    rule: str
    column: str | None = None
    value: str | None = None
    message: str | None = None
    row_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class QuarantineShared(SQLModel, table=True):
    """Quarantined rows of one source that a run shares with an earlier run, kept once.

    An incremental refresh that didn't change a source (or only appended files to it) has the
    quarantined rows for it of the run it started from: instead of copying them, it records that
    they are held under the runs that wrote them — one row per such run (that run's own rows of the
    source, plus the runs it shared from in turn; a full refresh writes them all again).
    ``read_quarantine`` reads through it (migration 0005)."""

    __tablename__ = "quarantine_shared"

    run_id: int = Field(foreign_key="refresh_run.id", primary_key=True)
    source_id: str = Field(primary_key=True)
    held_by_run_id: int = Field(foreign_key="refresh_run.id", primary_key=True)


class RunFrame(SQLModel, table=True):
    """A named table of results a run publishes besides its values (SPC points, comparisons,
    inequality gaps, the scorecard), kept as Parquet so its columns can evolve with the engine
    without a schema change. Published in the same transaction as the run's values."""

    __tablename__ = "run_frame"

    run_id: int = Field(foreign_key="refresh_run.id", primary_key=True)
    name: str = Field(primary_key=True)
    row_count: int
    columns_json: str = Field(sa_column=Column(Text, nullable=False))
    content: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RefreshLease(SQLModel, table=True):
    """Who may refresh now. One row per lease name; taken atomically (an INSERT, or an UPDATE of an
    expired row), renewed by the holder's heartbeat while it refreshes, deleted when it is done.
    A holder that crashes stops renewing: its lease expires and another process takes over (migration 0004)."""

    __tablename__ = "refresh_lease"

    name: str = Field(primary_key=True)
    holder: str = Field(description="host:pid:uuid of the process holding it")
    purpose: str = Field(default="", description="what the holder is doing, e.g. 'schedule:community_contacts'")
    acquired_at: dt.datetime
    expires_at: dt.datetime
    heartbeat: dt.datetime = Field(description="the holder's last renewal")


# The scheduler's persistent job store: APScheduler 3's SQLAlchemyJobStore table, declared here and
# created by migration 0004 so the schema stays versioned (the job store's own CREATE is then a no-op
# and two services starting together don't race to create it). Rows are pickled APScheduler jobs.
SCHEDULER_JOBS = Table(
    "apscheduler_jobs", SQLModel.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
