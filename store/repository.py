"""Frames in, frames out: start a run, publish it atomically, read what was published.

A run is inserted as ``running`` first (so a crash leaves a trace). ``publish_run`` writes all of
its values, definitions and quarantined rows *and* flips it to ``published`` in one transaction:
readers, who only look at published runs, see either the previous run or the whole new one.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
import json
import os
import socket
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, Float, and_, delete, func, insert, literal, or_, select, update

from store.models import MetricDefinitionRecord, MetricValue, QuarantinedRow, QuarantineShared, RefreshRun, RunFrame

__all__ = [
    "VALUE_COLUMNS",
    "start_run",
    "publish_run",
    "fail_run",
    "record_timings",
    "abandon_stale_runs",
    "latest_run_id",
    "resolve_run",
    "list_runs",
    "read_run",
    "read_values",
    "read_frame",
    "read_definitions",
    "read_quarantine",
]

VALUE_SCHEMA: dict[str, pl.DataType] = {
    "metric_id": pl.String(),
    "metric_version": pl.Int64(),
    "place": pl.String(),
    "period_type": pl.String(),
    "period_start": pl.Date(),
    "period_end": pl.Date(),
    "breakdown": pl.String(),
    "group": pl.String(),
    "numerator": pl.Float64(),
    "denominator": pl.Float64(),
    "value": pl.Float64(),
    "lower_95": pl.Float64(),
    "upper_95": pl.Float64(),
    "lower_99_8": pl.Float64(),
    "upper_99_8": pl.Float64(),
}
VALUE_COLUMNS = [*VALUE_SCHEMA, "run_id"]
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_id": pl.String(), "file": pl.String(), "row_number": pl.Int64(), "rule": pl.String(),
    "column": pl.String(), "value": pl.String(), "message": pl.String(), "row_json": pl.String(),
}
_BATCH = 20_000
# Besides its rows in ``metric_value``, a published run keeps all its values as one Parquet frame
# under this name: reading a whole run (or most of it) back — the apps, an incremental refresh —
# is then one blob instead of tens of thousands of rows. Written from the same frame in the same
# transaction as the rows, so the two always agree; runs published before it fall back to the rows.
_VALUES_FRAME: str | None = "_values"  # None: publish as before it existed (tests of older stores)
_SHARED_QUARANTINE = True  # False: read quarantined rows as before quarantine_shared existed (same)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _chunks(rows: Sequence, size: int = _BATCH) -> Iterable:
    """Slices of ``size`` rows (of a list or a DataFrame)."""
    for start in range(0, len(rows), size):
        yield rows[start:start + size]


def start_run(engine: Engine, *, trigger: str = "cli", data_dir: str = "", code_version: str = "",
              as_of: dt.date | None = None) -> int:
    """Record a new run as ``running`` and return its id."""
    with engine.begin() as conn:
        result = conn.execute(insert(RefreshRun).values(
            status="running", started_at=_now(), trigger=trigger, data_dir=data_dir, code_version=code_version,
            as_of=as_of, host=socket.gethostname(), pid=os.getpid(),
            definitions_json="{}", sources_json="{}", timings_json="{}",
        ))
        return int(result.inserted_primary_key[0])


def publish_run(engine: Engine, run_id: int, *, values: pl.DataFrame, definitions: list[dict[str, Any]],
                quarantine: pl.DataFrame | None = None, sources: dict | None = None,
                timings: dict | None = None, definition_versions: dict | None = None,
                frames: dict[str, pl.DataFrame] | Callable[[], dict[str, pl.DataFrame]] | None = None,
                quarantine_from: tuple[int, Sequence[str]] | None = None,
                values_from: tuple[int, Sequence[str]] | None = None) -> dict[str, int]:
    """Write a run's values, definitions, quarantine and named result ``frames`` and mark it
    published — all or nothing. Returns how many values and quarantined rows the run has.

    ``frames`` may be a function returning them: it is called once the values and quarantined rows
    are written (still inside the transaction), so a caller can work them out meanwhile; if it
    raises, nothing is published. ``timings`` is read after it returns. The transaction (and on
    SQLite the write lock) stays open while it runs: other writers wait, readers don't.
    ``values`` has ``VALUE_SCHEMA`` columns plus ``computed_run_id`` (defaults to this run).
    Rows go in with COPY on PostgreSQL and a prepared executemany on SQLite, in the same transaction as
    the status flip: a crash or kill anywhere before the commit leaves nothing of the run visible.
    ``quarantine_from`` = (earlier run id, source ids): those sources' quarantined rows are the earlier
    run's — they are not written again but shared (``QuarantineShared``), besides ``quarantine``.
    ``values_from`` = (earlier run id, metric ids): ``values``' rows of those metrics are that run's
    rows, unchanged (carried forward); they are copied inside the database (``INSERT … SELECT``)
    rather than sent again, and the publish fails if the counts differ.
    """
    if "computed_run_id" not in values.columns:
        values = values.with_columns(pl.lit(run_id).alias("computed_run_id"))
    # NaN is stored as missing on every backend (SQLite can't hold NaN; PostgreSQL could).
    values = values.select(*[pl.col(c).cast(t) for c, t in VALUE_SCHEMA.items()],
                           pl.col("computed_run_id").cast(pl.Int64), pl.lit(run_id, pl.Int64).alias("run_id"))
    values = values.with_columns(pl.col([c for c, t in VALUE_SCHEMA.items() if t == pl.Float64]).fill_nan(None))
    if quarantine is not None and quarantine.height:
        quarantine = quarantine.select(*[pl.col(c).cast(t) for c, t in QUARANTINE_SCHEMA.items()],
                                       pl.lit(run_id, pl.Int64).alias("run_id"))
    else:
        quarantine = pl.DataFrame(schema={**QUARANTINE_SCHEMA, "run_id": pl.Int64()})
    with engine.begin() as conn:
        if values_from is not None and values_from[1]:
            carried = pl.col("metric_id").is_in(list(values_from[1]))
            _copy_values(conn, values_from[0], list(values_from[1]), run_id, expected=values.filter(carried).height)
            _bulk_insert(conn, MetricValue, values.filter(~carried))
        else:
            _bulk_insert(conn, MetricValue, values)
        _bulk_insert(conn, QuarantinedRow, quarantine)
        quarantined = quarantine.height
        if quarantine_from is not None and quarantine_from[1]:
            quarantined += _share_quarantine(conn, quarantine_from[0], list(quarantine_from[1]), run_id)
        if definitions:
            conn.execute(insert(MetricDefinitionRecord), [{**d, "run_id": run_id} for d in definitions])
        if callable(frames):
            frames = frames()
        for name, frame in {**(frames or {}), **({_VALUES_FRAME: values} if _VALUES_FRAME else {})}.items():
            conn.execute(insert(RunFrame).values(run_id=run_id, name=name, row_count=frame.height,
                                                 columns_json=json.dumps(frame.columns),
                                                 content=_parquet_bytes(frame)))
        now = _now()
        conn.execute(update(RefreshRun).where(RefreshRun.id == run_id).values(
            status="published", finished_at=now, published_at=now,
            values_count=values.height, quarantined_count=quarantined,
            sources_json=json.dumps(sources or {}, default=str),
            timings_json=json.dumps(timings or {}),
            definitions_json=json.dumps(definition_versions or {}),
        ))
    return {"values": values.height, "quarantined": quarantined}


def _copy_values(conn: Connection, from_run: int, metrics: list[str], to_run: int, *, expected: int) -> None:
    """Copy ``metrics``' values of run ``from_run`` to run ``to_run`` (computed_run_id kept)."""
    table = MetricValue.__table__
    columns = [*VALUE_SCHEMA, "computed_run_id"]
    chosen = (select(*(table.c[c] for c in columns), literal(to_run).label("run_id"))
              .where(table.c.run_id == from_run, table.c.metric_id.in_(metrics)))
    copied = conn.execute(insert(table).from_select([*columns, "run_id"], chosen)).rowcount
    if copied is None or copied < 0:  # psycopg doesn't report it for INSERT … SELECT
        copied = conn.execute(select(func.count()).select_from(table).where(
            table.c.run_id == to_run, table.c.metric_id.in_(metrics))).scalar()
    if copied != expected:
        raise ValueError(f"carrying values forward from run {from_run}: copied {copied:,} rows of "
                         f"{', '.join(metrics)} but the run's values have {expected:,}; nothing was published")


def _share_quarantine(conn: Connection, from_run: int, sources: list[str], to_run: int) -> int:
    """Record that ``sources``' quarantined rows of run ``to_run`` include all of run ``from_run``'s
    (held where those are: its own rows and the runs it shares from); return how many rows that is."""
    earlier = _quarantine_holders(conn, from_run)
    held = {source: sorted({from_run, *earlier.get(source, ())}) for source in sorted(set(sources))}
    conn.execute(insert(QuarantineShared), [{"run_id": to_run, "source_id": source, "held_by_run_id": holder}
                                            for source, holders in held.items() for holder in holders])
    return int(conn.execute(select(func.count()).select_from(QuarantinedRow).where(_held_rows(held))).scalar())


def _quarantine_holders(conn: Connection, run_id: int) -> dict[str, list[int]]:
    """The sources of which ``run_id`` shares quarantined rows held under other runs, and those runs."""
    held: dict[str, list[int]] = {}
    for source, holder in conn.execute(select(QuarantineShared.source_id, QuarantineShared.held_by_run_id)
                                       .where(QuarantineShared.run_id == run_id)):
        held.setdefault(source, []).append(holder)
    return held


def _held_rows(held: dict[str, list[int]]):
    """WHERE clause: the quarantined rows of each source under the runs holding them."""
    return or_(*(and_(QuarantinedRow.source_id == source, QuarantinedRow.run_id.in_(runs)) for source, runs in held.items()))


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, compression="zstd", statistics=False)
    return buffer.getvalue()


def read_frame(engine: Engine, name: str, run: int | str | None = "latest") -> pl.DataFrame:
    """A named result frame (e.g. ``"spc"``, ``"scorecard"``) of a published run; empty if none."""
    run_id = resolve_run(engine, run)
    if run_id is None:
        return pl.DataFrame()
    with engine.connect() as conn:
        content = conn.execute(select(RunFrame.content).where(RunFrame.run_id == run_id, RunFrame.name == name)).scalar()
    return pl.read_parquet(io.BytesIO(content)) if content is not None else pl.DataFrame()


def _bulk_insert(conn: Connection, model: type, frame: pl.DataFrame) -> None:
    """Insert a frame's rows into ``model``'s table inside the connection's open transaction."""
    if frame.is_empty():
        return
    if conn.dialect.name == "postgresql":
        # COPY through the same psycopg connection (so the same transaction): CSV written by Polars,
        # where an unquoted empty field is NULL and a quoted one ("") the empty string.
        quote = conn.dialect.identifier_preparer.quote
        statement = (f"COPY {quote(model.__tablename__)} ({', '.join(quote(c) for c in frame.columns)}) "
                     "FROM STDIN (FORMAT csv)")
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for chunk in _chunks(frame):
                copy.write(chunk.write_csv(include_header=False))
        return
    # SQLite: INSERTs of many rows each (``VALUES (?, …), (?, …), …``) over plain values, through
    # the same connection (so the same transaction). Core's insert(model) with a dict per row spent
    # most of its time building the dicts and converting values one by one; here the values are
    # converted as SQLAlchemy would store them (_sqlite_bindable) column-wise, and exec_driver_sql
    # keeps SQLAlchemy's error wrapping (a locked database is still an OperationalError, retried).
    # Not executemany: it lets go of the GIL at every row, and with another thread running Python
    # (the judge, a service's threads) each row can then wait out that thread's switch interval:
    # 14k values took 0.3 s beside the judge instead of 0.12 s, and 42 s beside a busy Python loop.
    table = model.__table__
    if any(c.default is not None for c in table.columns if c.name not in frame.columns):
        for chunk in _chunks(frame):  # Core fills in Python-side defaults (none of the bulk tables has any)
            conn.execute(insert(model), chunk.to_dicts())
        return
    frame = _sqlite_bindable(frame, table, conn.dialect)
    quote = conn.dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in frame.columns)}) VALUES "
    row = f"({', '.join('?' * frame.width)})"
    per_statement = max(1, min(_SQLITE_ROWS_PER_INSERT, _sqlite_variable_limit(conn) // frame.width))
    for chunk in _chunks(frame.rows(), per_statement):
        conn.exec_driver_sql(head + ", ".join([row] * len(chunk)), tuple(itertools.chain.from_iterable(chunk)))


#: Rows per multi-row INSERT on SQLite: fastest around here (100 to 2,000 measured), within the
#: statement's bound-variable limit (``_sqlite_variable_limit``).
_SQLITE_ROWS_PER_INSERT = 500


def _sqlite_variable_limit(conn: Connection) -> int:
    """How many ``?`` one SQLite statement may have (32,766 since SQLite 3.32; 999 before)."""
    try:
        return conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    except (AttributeError, sqlite3.Error):
        return 999


_DATE_PROBES = (dt.date(1, 1, 1), dt.date(999, 12, 31), dt.date(2024, 2, 29), dt.date(9999, 12, 31))


def _sqlite_bindable(frame: pl.DataFrame, table: Any, dialect: Any) -> pl.DataFrame:
    """``frame`` with every value as SQLAlchemy's bind processors would send it to the driver, so
    rows written from it are stored exactly as ``insert(model)`` would store them.

    Columns whose type has no processor (strings, integers) pass as they are; Float is ``float()``
    (a cast); a Date column becomes the dialect's text, made by Polars when it is ISO
    'YYYY-MM-DD' (SQLite's default, checked on probe dates); any other processed type (datetimes,
    booleans, ...) goes through its own processor value by value.
    """
    converted = []
    for name in frame.columns:
        column_type = table.c[name].type
        process = column_type.dialect_impl(dialect).bind_processor(dialect)
        series = frame.get_column(name)
        if process is None:
            continue
        if isinstance(column_type, Float) and not column_type.asdecimal:
            converted.append(series.cast(pl.Float64))
        elif (series.dtype == pl.Date and
              [process(d) for d in _DATE_PROBES] == pl.Series(_DATE_PROBES).dt.strftime("%Y-%m-%d").to_list()):
            converted.append(series.dt.strftime("%Y-%m-%d"))
        else:
            converted.append(pl.Series(name, [process(v) for v in series.to_list()], dtype=pl.Object))
    return frame.with_columns(converted) if converted else frame


def fail_run(engine: Engine, run_id: int, error: str, *, sources: dict | None = None,
             timings: dict | None = None) -> None:
    """Record that a run failed; nothing it computed is published."""
    with engine.begin() as conn:
        conn.execute(update(RefreshRun).where(RefreshRun.id == run_id).values(
            status="failed", finished_at=_now(), error=error,
            sources_json=json.dumps(sources or {}, default=str), timings_json=json.dumps(timings or {}),
        ))


def record_timings(engine: Engine, run_id: int, timings: dict) -> None:
    """Update a run's stage timings (e.g. the write time, known only after the publish commits)."""
    with engine.begin() as conn:
        conn.execute(update(RefreshRun).where(RefreshRun.id == run_id).values(timings_json=json.dumps(timings)))


def abandon_stale_runs(engine: Engine, *, lease_held: bool = False) -> list[int]:
    """Mark ``running`` runs that can no longer finish as failed (killed mid-refresh).

    Without the refresh lease only this host's runs whose process has gone can be known dead.
    With it (``lease_held``: the caller holds the lease every refresh takes for its whole run),
    every other ``running`` run, on any host, lost its lease and can never publish."""
    host = socket.gethostname()
    with engine.begin() as conn:
        rows = conn.execute(select(RefreshRun.id, RefreshRun.pid, RefreshRun.host)
                            .where(RefreshRun.status == "running")).all()
        stale = [r.id for r in rows
                 if lease_held or (r.host == host and r.pid is not None and not _alive(r.pid))]
        if stale:
            conn.execute(update(RefreshRun).where(RefreshRun.id.in_(stale)).values(
                status="failed", finished_at=_now(),
                error="abandoned: the refresh process ended (or lost the refresh lease) before publishing"))
            # Nothing of an unpublished run is visible, but don't keep its half-written rows either.
            conn.execute(delete(MetricValue).where(MetricValue.run_id.in_(stale)))
    return stale


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def latest_run_id(engine: Engine) -> int | None:
    """The most recently published run, or None if nothing has been published."""
    with engine.connect() as conn:
        return conn.execute(select(func.max(RefreshRun.id)).where(RefreshRun.status == "published")).scalar()


def resolve_run(engine: Engine, run: int | str | None = "latest") -> int | None:
    """``"latest"``/None → the latest published run id; an id must name a published run."""
    if run in (None, "latest"):
        return latest_run_id(engine)
    run_id = int(run)
    with engine.connect() as conn:
        status = conn.execute(select(RefreshRun.status).where(RefreshRun.id == run_id)).scalar()
    if status != "published":
        raise LookupError(f"run {run_id} is not a published run (status: {status or 'not found'})")
    return run_id


def _frame(rows, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


def _query_frame(conn: Connection, query, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """A query's rows as a frame. On SQLite the rows come straight from the driver and dates are
    parsed by Polars in one go: SQLAlchemy's per-value date processing dominated reading values."""
    if conn.dialect.name != "sqlite" or not all(t in (pl.String, pl.Int64, pl.Float64, pl.Date)
                                                 for t in schema.values()):
        return _frame(conn.execute(query), schema)
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    raw = {c: (pl.String() if t == pl.Date else t) for c, t in schema.items()}
    frame = pl.DataFrame(conn.exec_driver_sql(str(compiled), params).fetchall(), schema=raw, orient="row")
    dates = [c for c, t in schema.items() if t == pl.Date]
    return frame.with_columns(pl.col(dates).str.to_date("%Y-%m-%d")) if dates else frame


def read_values(engine: Engine, *, metric: str | list[str] | None = None, place: str | list[str] | None = None,
                breakdown: str | list[str] | None = None, period_type: str | list[str] | None = None,
                run: int | str | None = "latest", provenance: bool = False) -> pl.DataFrame:
    """Published values in long form (``VALUE_COLUMNS``), from one run (default: the latest).

    ``provenance=True`` adds ``computed_run_id``: the run that computed each value (an earlier run
    when a failed source's values were carried forward).
    """
    run_id = resolve_run(engine, run)
    schema = {**VALUE_SCHEMA, "run_id": pl.Int64()}
    columns = [getattr(MetricValue, c) for c in VALUE_SCHEMA] + [MetricValue.run_id]
    if provenance:
        schema["computed_run_id"] = pl.Int64()
        columns.append(MetricValue.computed_run_id)
    if run_id is None:
        return pl.DataFrame(schema=schema)
    wanted = {"metric_id": metric, "place": place, "breakdown": breakdown, "period_type": period_type}
    wanted = {c: [w] if isinstance(w, str) else list(w) for c, w in wanted.items() if w is not None}
    order = ["metric_id", "place", "period_type", "breakdown", "group", "period_start"]
    with engine.connect() as conn:
        content = None if _VALUES_FRAME is None else conn.execute(
            select(RunFrame.content).where(RunFrame.run_id == run_id, RunFrame.name == _VALUES_FRAME)).scalar()
        if content is None:  # published before runs kept their values as one frame
            query = select(*columns).where(MetricValue.run_id == run_id)
            for column, chosen in wanted.items():
                query = query.where(getattr(MetricValue, column).in_(chosen))
            return _query_frame(conn, query.order_by(*(getattr(MetricValue, c) for c in order)), schema)
    frame = pl.read_parquet(io.BytesIO(content), columns=list(schema))
    if wanted:
        frame = frame.filter(*(pl.col(c).is_in(chosen) for c, chosen in wanted.items()))
    # The rows' order as the query's ORDER BY gives it on SQLite (bytewise; nulls first).
    return frame.sort(order, nulls_last=False, maintain_order=True).cast(schema)


RUN_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Int64(), "status": pl.String(), "started_at": pl.Datetime("us"), "finished_at": pl.Datetime("us"),
    "published_at": pl.Datetime("us"), "trigger": pl.String(), "data_dir": pl.String(), "as_of": pl.Date(),
    "code_version": pl.String(), "values_count": pl.Int64(), "quarantined_count": pl.Int64(),
    "error": pl.String(), "sources_json": pl.String(), "timings_json": pl.String(), "definitions_json": pl.String(),
}


def list_runs(engine: Engine, limit: int = 50) -> pl.DataFrame:
    """Recent runs, newest first, whatever their status."""
    columns = [RefreshRun.id, *(getattr(RefreshRun, c) for c in list(RUN_SCHEMA)[1:])]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(RefreshRun.id.desc()).limit(limit))
        return _frame(rows, RUN_SCHEMA)


def read_run(engine: Engine, run: int | str | None = "latest") -> dict[str, Any] | None:
    """One run as a dict, with its JSON documents decoded."""
    run_id = latest_run_id(engine) if run in (None, "latest") else int(run)
    if run_id is None:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(RefreshRun).where(RefreshRun.id == run_id)).mappings().first()
    if row is None:
        return None
    record = dict(row["RefreshRun"].model_dump()) if "RefreshRun" in row else dict(row)
    for key in ("sources_json", "timings_json", "definitions_json"):
        record[key.removesuffix("_json")] = json.loads(record.pop(key) or "{}")
    return record


def read_definitions(engine: Engine, run: int | str | None = "latest") -> pl.DataFrame:
    """Definitions as the run published them; ``body_json`` holds every field."""
    run_id = resolve_run(engine, run)
    schema = {"metric_id": pl.String(), "version": pl.Int64(), "content_hash": pl.String(), "title": pl.String(),
              "outcome": pl.String(), "value_type": pl.String(), "unit": pl.String(), "polarity": pl.String(),
              "body_json": pl.String(), "run_id": pl.Int64()}
    if run_id is None:
        return pl.DataFrame(schema=schema)
    columns = [getattr(MetricDefinitionRecord, c) for c in schema]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).where(MetricDefinitionRecord.run_id == run_id)
                            .order_by(MetricDefinitionRecord.metric_id))
        return _frame(rows, schema)


def read_quarantine(engine: Engine, run: int | str | None = "latest", *, source: str | None = None,
                    limit: int | None = None) -> pl.DataFrame:
    """Quarantined rows of a run (default: the latest published), with the rule each broke."""
    run_id = resolve_run(engine, run)
    schema = {**QUARANTINE_SCHEMA, "run_id": pl.Int64()}
    if run_id is None:
        return pl.DataFrame(schema=schema)
    with engine.connect() as conn:
        # Its own rows (for a shared source: the records of files it read itself), and the rows it
        # shares with the run that wrote them.
        held = _quarantine_holders(conn, run_id) if _SHARED_QUARANTINE else {}
        mine = QuarantinedRow.run_id == run_id
        query = (select(*(getattr(QuarantinedRow, c) for c in QUARANTINE_SCHEMA), literal(run_id).label("run_id"))
                 .where(or_(mine, _held_rows(held)) if held else mine))
        if source:
            query = query.where(QuarantinedRow.source_id == source)
        query = query.order_by(QuarantinedRow.source_id, QuarantinedRow.file, QuarantinedRow.row_number)
        if limit:
            query = query.limit(limit)
        return _query_frame(conn, query, schema)
