"""The store: refresh runs, published metric values, definitions as published, quarantined rows.

SQLModel tables over SQLite (default, ``var/outcomes.db``) or PostgreSQL (``OUTCOMES_DATABASE_URL``),
their schema versioned by Alembic migrations shipped in ``store/migrations`` (``migrate``).
Frames in, frames out. The store knows nothing of the engine: it keeps what it is given and
publishes a run atomically, so readers always see one complete run.
"""

from store.db import database_url, dispose_engine, get_engine, init_db, safe_url
from store.models import MetricDefinitionRecord, MetricValue, QuarantinedRow, RefreshRun, RunFrame
from store.repository import (
    VALUE_COLUMNS,
    abandon_stale_runs,
    fail_run,
    latest_run_id,
    list_runs,
    publish_run,
    read_definitions,
    read_quarantine,
    read_run,
    read_frame,
    read_values,
    record_timings,
    resolve_run,
    start_run,
)
from store.schema import SchemaError, SchemaStatus, head_revision, migrate
from store.schema import status as schema_status

__all__ = [
    "VALUE_COLUMNS",
    "MetricDefinitionRecord",
    "MetricValue",
    "QuarantinedRow",
    "RefreshRun",
    "RunFrame",
    "SchemaError",
    "SchemaStatus",
    "abandon_stale_runs",
    "database_url",
    "dispose_engine",
    "fail_run",
    "get_engine",
    "head_revision",
    "init_db",
    "latest_run_id",
    "list_runs",
    "migrate",
    "publish_run",
    "read_definitions",
    "read_quarantine",
    "read_run",
    "read_frame",
    "read_values",
    "record_timings",
    "resolve_run",
    "safe_url",
    "schema_status",
    "start_run",
]
