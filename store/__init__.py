"""The store: refresh runs, published metric values, definitions as published, quarantined rows.

SQLModel tables over SQLite (default, ``var/outcomes.db``) or PostgreSQL (``OUTCOMES_DATABASE_URL``),
their schema versioned by Alembic migrations shipped in ``store/migrations`` (``migrate``).
Frames in, frames out. The store knows nothing of the engine: it keeps what it is given and
publishes a run atomically, so readers always see one complete run; a lease (``store.lease``) lets
exactly one refresh run at a time.
"""

from store.db import checkpoint, database_url, default_sqlite_path, dispose_engine, get_engine, init_db, safe_url
from store.lease import (
    DEFAULT_LEASE,
    Lease,
    LeaseHeld,
    LeaseInfo,
    LeaseLost,
    last_runs,
    make_holder,
    previous_published_run,
    read_lease,
    record_skipped_run,
    release_lease,
    renew_lease,
    try_acquire_lease,
)
from store.models import (MetricDefinitionRecord, MetricValue, QuarantinedRow, QuarantineShared, RefreshLease,
                          RefreshRun, RunFrame)
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
    "DEFAULT_LEASE",
    "VALUE_COLUMNS",
    "Lease",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseLost",
    "MetricDefinitionRecord",
    "MetricValue",
    "QuarantinedRow",
    "RefreshLease",
    "RefreshRun",
    "RunFrame",
    "QuarantineShared",
    "SchemaError",
    "SchemaStatus",
    "abandon_stale_runs",
    "checkpoint",
    "database_url",
    "dispose_engine",
    "fail_run",
    "get_engine",
    "head_revision",
    "init_db",
    "last_runs",
    "latest_run_id",
    "list_runs",
    "make_holder",
    "migrate",
    "previous_published_run",
    "publish_run",
    "read_definitions",
    "read_quarantine",
    "read_run",
    "read_frame",
    "read_lease",
    "read_values",
    "record_skipped_run",
    "record_timings",
    "release_lease",
    "renew_lease",
    "resolve_run",
    "safe_url",
    "default_sqlite_path",
    "schema_status",
    "start_run",
    "try_acquire_lease",
]
