"""The store on both backends: schema versions and migrations, bulk writes that round-trip exactly,
timezone-aware datetimes, and atomic publishing that concurrent readers can rely on."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import threading
import time

import polars as pl
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from polars.testing import assert_frame_equal
from sqlmodel import SQLModel

import store
import store.repository as repository
from store import db as store_db
from store.schema import FIRST_REVISION, _scripts

HEAD = store.head_revision()


def _values(rows: int, *, seed: int = 0, metric: str = "m") -> pl.DataFrame:
    rng = random.Random(seed)
    start = dt.date(2023, 4, 1)
    return pl.DataFrame({
        "metric_id": [f"{metric}{i % 3}" for i in range(rows)],
        "metric_version": [1] * rows,
        "place": [("Dudley", "Walsall")[i % 2] for i in range(rows)],
        "period_type": ["month"] * rows,
        "period_start": [start + dt.timedelta(days=31 * (i % 36)) for i in range(rows)],
        "period_end": [start + dt.timedelta(days=31 * (i % 36) + 30) for i in range(rows)],
        "breakdown": ["imd_quintile"] * rows,
        "group": [str(i) for i in range(rows)],
        "numerator": [float(rng.randint(0, 500)) for _ in range(rows)],
        "denominator": [float(rng.randint(500, 1000)) for _ in range(rows)],
        "value": [rng.random() * 100 for _ in range(rows)],
        "lower_95": [None if i % 7 == 0 else rng.random() for i in range(rows)],
        "upper_95": [rng.random() for _ in range(rows)],
        "lower_99_8": [rng.random() for _ in range(rows)],
        "upper_99_8": [rng.random() for _ in range(rows)],
    }, schema=repository.VALUE_SCHEMA)


def _publish(engine, values: pl.DataFrame, **kwargs) -> int:
    run_id = store.start_run(engine, trigger="test")
    store.publish_run(engine, run_id, values=values, definitions=kwargs.pop("definitions", []), **kwargs)
    return run_id


def _snapshot(engine) -> dict:
    """Everything a store holds, as frames (timestamps included)."""
    runs = store.list_runs(engine, limit=1000)
    published = runs.filter(pl.col("status") == "published")["run_id"].to_list()
    return {"runs": runs,
            "values": {r: store.read_values(engine, run=r, provenance=True) for r in published},
            "quarantine": {r: store.read_quarantine(engine, run=r) for r in published},
            "definitions": {r: store.read_definitions(engine, run=r) for r in published}}


def _indexes(engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return {index["name"] for index in sa.inspect(conn).get_indexes(table)}


# -- schema -------------------------------------------------------------------------------------


def test_a_new_store_is_at_head_and_matches_the_models(engine):
    status = store.schema_status(engine)
    assert status.current == HEAD and status.up_to_date and not status.unversioned_tables
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata) == []
        timestamps = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns("refresh_run")}
    if engine.dialect.name == "postgresql":
        assert all(timestamps[c].timezone for c in ("started_at", "finished_at", "published_at"))  # timestamptz


def test_upgrading_from_the_first_revision_keeps_every_run(db_url, monkeypatch):
    # Runs published as the first revision's code did: no run frames (that table came later).
    monkeypatch.setattr(store.repository, "_VALUES_FRAME", None)
    monkeypatch.setattr(store.repository, "_SHARED_QUARANTINE", False)
    engine = store.get_engine(db_url, migrate=False)
    assert store.migrate(engine, FIRST_REVISION) == (None, FIRST_REVISION)
    assert "ix_metric_value_run_id" in _indexes(engine, "metric_value")
    first = _publish(engine, _values(50, seed=1), definitions=[_definition("m0")], quarantine=_quarantine(3))
    failed = store.start_run(engine)
    store.fail_run(engine, failed, "RuntimeError: boom")
    second = _publish(engine, _values(80, seed=2), definitions=[_definition("m0"), _definition("m1")])
    before = _snapshot(engine)

    assert store.migrate(engine) == (FIRST_REVISION, HEAD)
    after = _snapshot(engine)
    assert_frame_equal(after["runs"], before["runs"])
    assert list(after["values"]) == [second, first]
    for part in ("values", "quarantine", "definitions"):
        for run_id, frame in before[part].items():
            assert_frame_equal(after[part][run_id], frame)
    assert after["values"][first].height == 50 and after["quarantine"][first].height == 3
    indexes = _indexes(engine, "metric_value")
    assert "ix_metric_value_run_metric_place" in indexes and "ix_metric_value_run_id" not in indexes
    assert store.migrate(engine) == (HEAD, HEAD)  # nothing left to do


def test_a_runs_values_read_from_its_frame_equal_its_rows(engine, monkeypatch):
    """read_values answers from the run's one-blob copy of its values when there is one: the same
    rows, columns, types and order as the rows in metric_value give (every filter, provenance)."""
    values = pl.concat([_values(60, seed=3, metric="a"), _values(45, seed=4, metric="b")]).with_columns(
        pl.when(pl.col("group") == "7").then(None).otherwise(pl.col("value")).alias("value"),
        pl.when(pl.col("group") == "8").then(float("nan")).otherwise(pl.col("lower_95")).alias("lower_95"))
    earlier = _publish(engine, _values(5, seed=5))
    run_id = store.start_run(engine, trigger="test")
    store.publish_run(engine, run_id, definitions=[], values=values.with_columns(
        pl.when(pl.col("metric_id") == "b1").then(earlier).otherwise(run_id).cast(pl.Int64).alias("computed_run_id")))
    monkeypatch.setattr(store.repository, "_VALUES_FRAME", None)
    rows_only = _publish(engine, values)  # as runs published before the frame existed
    monkeypatch.undo()
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.RunFrame)
                            .where(store.RunFrame.run_id == rows_only)).scalar() == 0
    asks = [{}, {"metric": "a1"}, {"metric": ["a0", "b1", "nope"]}, {"place": "Walsall", "breakdown": ["imd_quintile"]},
            {"period_type": "quarter"}, {"provenance": True}, {"metric": "b1", "provenance": True}]
    for ask in asks:
        from_frame = store.read_values(engine, run=run_id, **ask)
        monkeypatch.setattr(store.repository, "_VALUES_FRAME", "-no-such-frame-")
        from_rows = store.read_values(engine, run=run_id, **ask)
        monkeypatch.undo()
        assert from_frame.height == from_rows.height and (not ask or from_frame.height < values.height or ask == {"provenance": True})
        assert_frame_equal(from_frame, from_rows, check_exact=True)
        assert_frame_equal(store.read_values(engine, run=rows_only, **ask).drop("run_id", *(["computed_run_id"] if ask.get("provenance") else [])),
                           from_frame.drop("run_id", *(["computed_run_id"] if ask.get("provenance") else [])), check_exact=True)


def test_carried_values_are_copied_in_the_database_and_must_match(engine):
    first = _publish(engine, pl.concat([_values(30, metric="a"), _values(12, seed=9, metric="b")]))
    earlier = store.read_values(engine, run=first, provenance=True)
    carried = earlier.filter(pl.col("metric_id").is_in(["a0", "a1"])).drop("run_id")
    fresh = _values(9, seed=11, metric="c")
    second = store.start_run(engine, trigger="test")
    store.publish_run(engine, second, definitions=[], values=pl.concat([carried, fresh.with_columns(
        pl.lit(second, pl.Int64).alias("computed_run_id"))]), values_from=(first, ["a0", "a1"]))
    published = store.read_values(engine, run=second, provenance=True)
    assert published.height == carried.height + fresh.height
    assert_frame_equal(published.filter(pl.col("metric_id").is_in(["a0", "a1"])).drop("run_id"), carried)
    assert set(published.filter(pl.col("metric_id") == "c0")["computed_run_id"]) == {second}
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(store.repository, "_VALUES_FRAME", "-none-")  # the rows themselves, not the frame
    assert_frame_equal(store.read_values(engine, run=second, provenance=True), published)
    monkeypatch.undo()
    # The caller's carried rows must be what the earlier run holds: a missing row stops the publish.
    third = store.start_run(engine, trigger="test")
    with pytest.raises(ValueError, match="copied 20 rows of a0, a1 but the run's values have 19"):
        store.publish_run(engine, third, definitions=[], values=carried.slice(1), values_from=(first, ["a0", "a1"]))
    assert store.latest_run_id(engine) == second


@pytest.mark.parametrize("made_by", ["first_revision_models", "todays_models"])
def test_a_store_made_before_migrations_is_adopted(db_url, made_by, monkeypatch):
    monkeypatch.setattr(store.repository, "_VALUES_FRAME", None)  # published as code of that time did
    monkeypatch.setattr(store.repository, "_SHARED_QUARANTINE", False)
    engine = store.get_engine(db_url, migrate=False)
    metadata = _scripts().get_revision(FIRST_REVISION).module.schema() if made_by == "first_revision_models" \
        else SQLModel.metadata
    metadata.create_all(engine)  # what `init_db` did before the store had migrations
    run_id = _publish(engine, _values(20), definitions=[_definition("m0")])
    before = _snapshot(engine)
    status = store.schema_status(engine)
    assert status.current is None and set(status.unversioned_tables) == set(store.schema.STORE_TABLES)

    engine = store.get_engine(db_url)  # first use migrates
    assert store.schema_status(engine).current == HEAD
    after = _snapshot(engine)
    assert_frame_equal(after["runs"], before["runs"])
    assert_frame_equal(after["values"][run_id], before["values"][run_id])
    assert "ix_metric_value_run_metric_place" in _indexes(engine, "metric_value")


def test_tables_that_are_not_the_store_are_left_alone(db_url):
    engine = store.get_engine(db_url, migrate=False)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE refresh_run (id INTEGER PRIMARY KEY, status VARCHAR(20))"))
    with pytest.raises(store.SchemaError, match=r"refresh_run lacks column\(s\) as_of.*nothing was changed") as error:
        store.get_engine(db_url)
    password = engine.url.password
    assert not password or password not in str(error.value)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {"refresh_run"}


def test_processes_starting_on_a_new_store_together_migrate_it_once(db_url):
    url = store.database_url(db_url)
    engines = [store_db._create(url) for _ in range(4)]  # separate pools, as separate processes would have
    results, errors = [], []
    barrier = threading.Barrier(len(engines))

    def start(engine):
        barrier.wait()
        try:
            results.append(store.migrate(engine))
        except Exception as exc:  # noqa: BLE001  (collected and reported below)
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for engine in engines:
        engine.dispose()
    assert not errors, errors
    assert len(results) == 4 and all(after == HEAD for _, after in results)
    assert sum(before is None for before, _ in results) == 1  # exactly one of them did the work


# -- writes and reads ---------------------------------------------------------------------------


def _definition(metric_id: str) -> dict:
    return {"metric_id": metric_id, "version": 2, "content_hash": "0123456789abcdef", "title": "A \"title\", with commas",
            "outcome": "Timely discharge", "value_type": "proportion", "unit": "%", "polarity": "higher_is_better",
            "body_json": '{"definition": "line one\\nline two", "filter": "a = \'x\'"}'}


def _quarantine(rows: int) -> pl.DataFrame:
    awkward = ["", None, "a,b", 'say "hi"', "line\nbreak", "tab\there", "\\N", "NULL", "Ynys Môn ✓"]
    return pl.DataFrame({
        "source_id": ["inpatient_spells"] * rows,
        "file": [f"spells, {i}.csv" for i in range(rows)],
        "row_number": list(range(1, rows + 1)),
        "rule": ["future_date"] * rows,
        "column": [None if i % 2 else "discharge_date" for i in range(rows)],
        "value": [awkward[i % len(awkward)] for i in range(rows)],
        "message": [awkward[(i + 3) % len(awkward)] for i in range(rows)],
        "row_json": ['{"note": "quote \\" and, comma", "n": %d}' % i for i in range(rows)],
    }, schema=repository.QUARANTINE_SCHEMA)


def test_bulk_writes_round_trip_exactly(engine):
    values = _values(300).with_columns(
        pl.Series("group", ["", "a,b", 'q"uote', "new\nline", "\\N", "NULL", "Ynys Môn"] * 42 + ["x"] * 6),
        pl.Series("value", [1 / 3, 1e-300, -2.5e300, 123456789.123456789, 0.0, None] * 50, dtype=pl.Float64),
    )
    quarantine = _quarantine(27)
    run_id = _publish(engine, values, quarantine=quarantine, definitions=[_definition("m0"), _definition("m1")],
                      sources={"s": {"rows": 1}}, timings={"total": 1.5}, definition_versions={"m0": {"version": 2}})
    read = store.read_values(engine, provenance=True)
    expected = values.with_columns(pl.lit(run_id, pl.Int64).alias("run_id"),
                                   pl.lit(run_id, pl.Int64).alias("computed_run_id"))
    order = [c for c in read.columns if c != "lower_95"]  # every row differs somewhere here
    assert_frame_equal(read.sort(order), expected.select(read.columns).sort(order))
    assert_frame_equal(store.read_quarantine(engine).drop("run_id").sort("row_number"), quarantine)
    assert store.read_definitions(engine).drop("run_id").to_dicts() == [_definition("m0"), _definition("m1")]
    run = store.read_run(engine)
    assert (run["values_count"], run["quarantined_count"]) == (300, 27)
    assert run["sources"] == {"s": {"rows": 1}} and run["timings"] == {"total": 1.5}


@pytest.mark.parametrize("rows_per_insert", [500, 7])
def test_sqlite_bulk_writes_store_what_core_inserts_store(tmp_path, monkeypatch, rows_per_insert):
    """SQLite's fast path (INSERTs of many rows each, over plain values) stores every value byte for
    byte as SQLAlchemy Core's insert(model) does: dates as ISO text, NaN and None as NULL, floats
    exact; in one statement or in several with a shorter last one."""
    monkeypatch.setattr(repository, "_SQLITE_ROWS_PER_INSERT", rows_per_insert)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    engine = store.get_engine(url)
    try:
        values = _values(60).with_columns(
            pl.Series("value", [1 / 3, float("nan"), None, 1e-300, -0.0, 2.5e300] * 10, dtype=pl.Float64),
            pl.Series("group", ["", "a,b", 'q"uote', "new\nline", "\\N", "Ynys Môn"] * 10))
        quarantine = _quarantine(20)
        fast, core = store.start_run(engine), store.start_run(engine)
        with engine.begin() as conn:
            for run_id in (fast, core):
                run = pl.lit(run_id, pl.Int64)
                for model, frame in ((store.MetricValue, values.with_columns(run.alias("computed_run_id"))),
                                     (store.QuarantinedRow, quarantine)):
                    frame = frame.with_columns(run.alias("run_id"))
                    if run_id == fast:
                        repository._bulk_insert(conn, model, frame)
                    else:
                        conn.execute(sa.insert(model), frame.to_dicts())

        def stored(model, run_id: int) -> list[str]:
            columns = [c.name for c in model.__table__.columns if c.name not in ("id", "run_id", "computed_run_id")]
            selected = ", ".join(f'"{c}", typeof("{c}")' for c in columns)  # "group" is a keyword
            query = (f"SELECT {selected} "
                     f"FROM {model.__tablename__} WHERE run_id = ? ORDER BY id")
            with engine.connect() as conn:
                return [repr(tuple(row)) for row in conn.exec_driver_sql(query, (run_id,))]

        for model in (store.MetricValue, store.QuarantinedRow):
            assert stored(model, fast) == stored(model, core) != []
    finally:
        store.dispose_engine(url)


def test_sqlite_publishes_without_waiting_for_a_checkpoint(tmp_path):
    """A publish leaves its pages in the write-ahead log (a checkpoint syncs the disk: see
    ``store.db._sqlite_pragmas``), where every reader sees them at once; ``store.checkpoint`` then
    copies them all into the file, and closing the last connection does too."""
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    engine = store.get_engine(url)
    try:
        run_id = _publish(engine, _values(20_000), quarantine=_quarantine(5_000))  # far above SQLite's 1,000 pages
        wal = tmp_path / "store.db-wal"
        assert wal.stat().st_size > 4 * 1000 * 1024 > path.stat().st_size  # (SQLite would have checkpointed at 1,000)
        reader = sqlite3.connect(path)  # another process's view: published, from the log
        assert reader.execute("SELECT count(*) FROM metric_value WHERE run_id = ?", (run_id,)).fetchone() == (20_000,)
        reader.close()
        logged, copied = store.checkpoint(engine)
        assert logged == copied > 1000
        assert path.stat().st_size > 4 * 1000 * 1024
        assert store.checkpoint(engine) == (logged, logged)  # nothing new: nothing more to copy
    finally:
        store.dispose_engine(url)
    assert not wal.exists() or wal.stat().st_size == 0  # the last connection closed: the log is merged
    assert sqlite3.connect(path).execute("SELECT count(*) FROM metric_value").fetchone() == (20_000,)


def test_datetimes_are_timezone_aware_utc(engine):
    before = dt.datetime.now(dt.UTC)
    run_id = _publish(engine, _values(3))
    run = store.read_run(engine, run_id)
    for key in ("started_at", "finished_at", "published_at"):
        assert run[key].utcoffset() == dt.timedelta(0), key
        assert before - dt.timedelta(seconds=1) <= run[key] <= dt.datetime.now(dt.UTC), key
    listed = store.list_runs(engine).row(0, named=True)
    assert listed["started_at"] == run["started_at"].replace(tzinfo=None)  # UTC wall time in frames


def test_a_publish_that_fails_part_way_leaves_nothing(engine, monkeypatch):
    previous = _publish(engine, _values(10))
    monkeypatch.setattr(repository, "_BATCH", 7)  # several batches reach the database before the bad row
    values = pl.concat([_values(40), _values(1).with_columns(pl.lit(None, pl.String).alias("place"))])
    run_id = store.start_run(engine)
    with pytest.raises(Exception, match="(?i)null"):
        store.publish_run(engine, run_id, values=values, definitions=[_definition("m0")], quarantine=_quarantine(5))
    assert store.latest_run_id(engine) == previous
    assert store.list_runs(engine)["status"].to_list() == ["running", "published"]
    with engine.connect() as conn:
        for model in (store.MetricValue, store.QuarantinedRow, store.MetricDefinitionRecord):
            assert conn.execute(sa.select(sa.func.count()).where(model.run_id == run_id)).scalar() == 0


def test_frames_worked_out_while_values_are_written_go_into_the_same_transaction(engine, monkeypatch):
    """``frames`` given as a function is called once the values and quarantined rows are written,
    inside the transaction (the refresh judges while the store writes): what it returns is
    published with them, and timings it records by then are stored; if it raises, nothing is."""
    previous = _publish(engine, _values(10))
    timings: dict = {}
    seen: list[int] = []
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement.split("(")[0].strip())

    real_bulk_insert = repository._bulk_insert  # (COPY on PostgreSQL goes round the event)
    monkeypatch.setattr(repository, "_bulk_insert", lambda conn, model, frame: statements.append(
        f"bulk {model.__tablename__}") or real_bulk_insert(conn, model, frame))

    def frames():
        statements.append("frames()")
        with engine.connect() as conn:  # another connection: the run's rows are not visible yet
            seen.append(conn.execute(sa.select(sa.func.count()).where(store.MetricValue.run_id == run_id)).scalar())
        timings["judge"] = 0.25
        return {"spc": pl.DataFrame({"metric_id": ["m0"], "point_type": ["common_cause"]})}

    run_id = store.start_run(engine)
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        store.publish_run(engine, run_id, values=_values(30), definitions=[], frames=frames, timings=timings,
                          quarantine=_quarantine(3))
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert seen == [0]
    # The values and quarantined rows went in before frames() was called, the frames after it.
    called = statements.index("frames()")
    values_at = [i for i, s in enumerate(statements) if s in ("bulk metric_value", "bulk quarantined_row")]
    frames_at = [i for i, s in enumerate(statements) if s.upper().startswith("INSERT INTO") and "run_frame" in s]
    assert values_at and frames_at and max(values_at) < called < min(frames_at), statements
    assert store.latest_run_id(engine) == run_id
    assert store.read_frame(engine, "spc", run_id).to_dicts() == [{"metric_id": "m0", "point_type": "common_cause"}]
    assert store.read_run(engine, run_id)["timings"] == {"judge": 0.25}

    def failing():
        raise RuntimeError("the judge failed")

    failed = store.start_run(engine)
    with pytest.raises(RuntimeError, match="the judge failed"):
        store.publish_run(engine, failed, values=_values(30), definitions=[_definition("m0")], frames=failing,
                          quarantine=_quarantine(5))
    assert store.latest_run_id(engine) == run_id != previous
    with engine.connect() as conn:
        for model in (store.MetricValue, store.QuarantinedRow, store.MetricDefinitionRecord, store.RunFrame):
            assert conn.execute(sa.select(sa.func.count()).where(model.run_id == failed)).scalar() == 0


def test_readers_always_see_one_complete_run_while_runs_publish(engine):
    """Readers hammer read_values while runs of different sizes publish: each read is one whole run."""
    _publish(engine, _values(500, seed=0))
    stop = threading.Event()
    problems: list[str] = []
    seen: set[int] = set()
    reads = [0]
    published = [1]

    def reader():
        while not stop.is_set():
            try:
                frame = store.read_values(engine)
                runs = frame["run_id"].unique().to_list()
                if len(runs) != 1:
                    problems.append(f"a read mixed runs {runs}")
                    continue
                expected = store.read_run(engine, runs[0])["values_count"]
                if frame.height != expected:
                    problems.append(f"run {runs[0]}: read {frame.height} of {expected} values")
                seen.add(runs[0])
                reads[0] += 1
            except Exception as exc:  # noqa: BLE001  (collected and reported below)
                problems.append(repr(exc))

    def publisher():
        rng = random.Random(1)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not problems:
            try:
                _publish(engine, _values(rng.randint(200, 3000), seed=published[0]))
                published[0] += 1
            except Exception as exc:  # noqa: BLE001
                problems.append(f"publish: {exc!r}")
        stop.set()

    threads = [threading.Thread(target=reader) for _ in range(3)] + [threading.Thread(target=publisher)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not problems, problems[:5]
    assert published[0] >= 3 and len(seen) >= 2 and reads[0] >= 10, (published[0], seen, reads[0])


def test_a_bare_postgresql_url_means_psycopg_and_passwords_are_hidden():
    url = store.database_url("postgresql://outcomes:s3cret@db.example/outcomes")
    assert url == "postgresql+psycopg://outcomes:s3cret@db.example/outcomes"
    assert store.database_url("postgres://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert store.safe_url(url) == "postgresql+psycopg://outcomes:***@db.example/outcomes"


def test_a_run_left_running_on_another_host_is_abandoned_by_the_next_lease_holder(engine):
    run_id = store.start_run(engine, trigger="test")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE refresh_run SET host = 'another-host', pid = 1 WHERE id = :id"), {"id": run_id})
    assert store.abandon_stale_runs(engine) == []  # its process can't be checked from here...
    assert store.abandon_stale_runs(engine, lease_held=True) == [run_id]  # ...but it no longer holds the lease
    run = store.list_runs(engine).row(0, named=True)
    assert run["status"] == "failed" and "abandoned" in run["error"]
