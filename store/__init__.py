"""The store: refresh runs, published metric values, definitions as published, quarantined rows.

SQLModel tables over SQLite (default, ``var/outcomes.db``) or PostgreSQL (``OUTCOMES_DATABASE_URL``).
Frames in, frames out. The store knows nothing of the engine: it keeps what it is given and
publishes a run atomically, so readers always see one complete run.
"""

from store.db import database_url, get_engine, init_db
from store.models import MetricDefinitionRecord, MetricValue, QuarantinedRow, RefreshRun
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
    read_values,
    record_timings,
    resolve_run,
    start_run,
)

__all__ = [
    "VALUE_COLUMNS",
    "MetricDefinitionRecord",
    "MetricValue",
    "QuarantinedRow",
    "RefreshRun",
    "abandon_stale_runs",
    "database_url",
    "fail_run",
    "get_engine",
    "init_db",
    "latest_run_id",
    "list_runs",
    "publish_run",
    "read_definitions",
    "read_quarantine",
    "read_run",
    "read_values",
    "record_timings",
    "resolve_run",
    "start_run",
]
