"""Publishing: atomic runs, failed sources carried forward, failures and kills leave the last good run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import polars as pl
import pytest

import store
from conftest import AS_OF, DEFINITIONS, PROJECT
from metrics.refresh import refresh


def test_a_run_records_its_provenance(published, engine, handbuilt_dir):
    run = store.read_run(engine)
    assert run["id"] == published.run_id and run["status"] == "published"
    assert run["definitions"]["discharged_on_ready_date"]["version"] == 1
    assert len(run["definitions"]["discharged_on_ready_date"]["content_hash"]) == 16
    spells = run["sources"]["inpatient_spells"]
    assert spells["rows_read"] == 18 and spells["rows_quarantined"] == 4 and spells["rows_superseded"] == 1
    assert spells["quarantined_by_rule"] == {"discharge_not_before_admission": 1, "future_date": 1,
                                             "type_integer": 1, "unknown_lsoa": 1}
    assert {"load_validate", "compute", "write", "total"} <= set(run["timings"])
    assert run["code_version"].startswith("0.1.0")
    assert run["values_count"] == store.read_values(engine).height
    assert run["quarantined_count"] == store.read_quarantine(engine).height == 4
    definitions = store.read_definitions(engine)
    assert definitions.height == 7 and "Wilson" in definitions.filter(
        pl.col("metric_id") == "discharged_on_ready_date")["body_json"][0]


def test_a_refresh_starts_by_checkpointing_the_last_runs_log(published, engine, handbuilt_dir, monkeypatch):
    """Publishing doesn't checkpoint SQLite's log (``store.checkpoint``); the next refresh does, first."""
    calls = []
    monkeypatch.setattr(store, "checkpoint", lambda e: calls.append((e, store.latest_run_id(e))))
    second = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    for thread in threading.enumerate():  # (it isn't waited for)
        if thread.name == "checkpoint":
            thread.join()
    assert calls == [(engine, published.run_id)] and second.run_id != published.run_id


def test_a_broken_source_is_carried_forward_and_others_refresh(published, engine, handbuilt_dir):
    before = store.read_values(engine, provenance=True)
    # Next month: contacts change, spells extract arrives broken.
    (handbuilt_dir / "inpatient_spells" / "spells_2024-06.csv").write_text("garbage\n")
    contacts = handbuilt_dir / "community_contacts" / "contacts_2024-06.csv"
    contacts.write_text(contacts.read_text().replace(",2,,01,A10", ",5,20,01,A10"))  # c8 now attended
    result = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    assert result.failed_sources == ["inpatient_spells"]
    assert set(result.carried_forward) == {"delayed_bed_days", "discharged_on_ready_date", "mean_discharge_delay_days",
                                           "spells_with_discharge_ready_date"}
    assert "missing column(s)" in store.read_run(engine)["sources"]["inpatient_spells"]["error"]
    after = store.read_values(engine, provenance=True)
    spells_metrics = pl.col("metric_id").is_in(result.carried_forward)
    # Carried-forward values are identical and say which run computed them.
    keep = [c for c in before.columns if c != "run_id"]
    assert after.filter(spells_metrics).select(keep).equals(before.filter(spells_metrics).select(keep))
    assert after.filter(spells_metrics)["computed_run_id"].unique().to_list() == [published.run_id]
    # The refreshed source shows the new data.
    june = after.filter(pl.col("metric_id") == "community_contacts_per_1000", pl.col("place") == "Walsall",
                        pl.col("breakdown") == "overall", pl.col("period_type") == "month",
                        pl.col("period_start") == pl.date(2024, 6, 1))
    assert june["numerator"].to_list() == [1]
    assert after.filter(~spells_metrics)["computed_run_id"].unique().to_list() == [result.run_id]


@pytest.mark.parametrize("stage", ["compute_source", "inequality_indices", "judge"])
def test_a_failure_leaves_the_previous_run_published(published, engine, handbuilt_dir, monkeypatch, stage):
    """Also when the judge fails: it runs while the store is already writing the run's values; and
    when a source's SIIs, simulated on the judge's thread while later sources load, fail."""
    before = store.read_values(engine)
    import metrics.refresh as refresh_module

    def broken(*_args, **_kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(refresh_module, stage, broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["failed", "published"]
    assert "disk on fire" in runs["error"][0]
    assert store.latest_run_id(engine) == published.run_id
    assert store.read_values(engine).equals(before)
    _nothing_written_for(engine, runs["run_id"][0])


def _nothing_written_for(engine, run_id: int) -> None:
    import sqlalchemy as sa

    with engine.connect() as conn:
        for model in (store.MetricValue, store.QuarantinedRow, store.MetricDefinitionRecord, store.RunFrame):
            assert conn.execute(sa.select(sa.func.count()).where(model.run_id == run_id)).scalar() == 0, model


def test_a_stop_asked_for_while_judging_rolls_the_publish_back(published, engine, handbuilt_dir, monkeypatch):
    """The judge runs while the store writes the values: a stop that comes meanwhile (the service's
    second SIGTERM) must still roll the publish back, as a stop before publishing always has."""
    import threading

    import metrics.refresh as refresh_module
    from metrics.refresh import RefreshCancelled

    cancel = threading.Event()
    real_judge = refresh_module.judge

    def judge_then_stop(*args, **kwargs):
        result = real_judge(*args, **kwargs)
        cancel.set()
        return result

    monkeypatch.setattr(refresh_module, "judge", judge_then_stop)
    with pytest.raises(RefreshCancelled):
        refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF, cancel=cancel)
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["failed", "published"]
    assert store.latest_run_id(engine) == published.run_id
    _nothing_written_for(engine, runs["run_id"][0])


def test_a_missing_geography_fails_the_run(published, engine, handbuilt_dir):
    (handbuilt_dir / "geography" / "geography.csv").unlink()
    with pytest.raises(Exception, match="geography lookup could not be loaded"):
        refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    assert store.latest_run_id(engine) == published.run_id


KILLER = textwrap.dedent("""
    import datetime as dt, os, signal, sys
    import store, store.repository as repository, metrics.refresh as refresh_module
    point = sys.argv[2]
    if point == "compute":
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        refresh_module.compute_source = die
    elif point == "write":
        original = repository._chunks
        def chunks(rows, size=repository._BATCH):
            for index, chunk in enumerate(original(rows, 5)):
                if index == 3:  # some rows are already inserted in the open transaction
                    os.kill(os.getpid(), signal.SIGKILL)
                yield chunk
        repository._chunks = chunks
    engine = store.get_engine()  # OUTCOMES_DATABASE_URL, as in production
    refresh_module.refresh(sys.argv[1], engine=engine, as_of=dt.date(2026, 1, 1))
""")


@pytest.mark.parametrize("point", ["compute", "write"])
def test_killing_a_refresh_leaves_the_last_run_published(published, engine, handbuilt_dir, tmp_path, point):
    before = store.read_values(engine)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    # The URL (with its password: str(engine.url) hides it) goes by the environment, never the command line.
    env = {**os.environ, "OUTCOMES_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    process = subprocess.run([sys.executable, str(script), str(handbuilt_dir), point], cwd=PROJECT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert store.latest_run_id(engine) == published.run_id
    assert store.read_values(engine).equals(before)
    assert store.list_runs(engine)["status"].to_list() == ["running", "published"]
    # The next refresh notices the abandoned run and publishes normally.
    result = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["published", "failed", "published"]
    assert "abandoned" in runs["error"][1]
    assert store.read_values(engine).drop("run_id").equals(before.drop("run_id"))
    assert result.run_id == runs["run_id"][0]


def test_unknown_metric_is_refused(engine, handbuilt_dir):
    with pytest.raises(ValueError, match="unknown metric"):
        refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, metrics=["nope"], as_of=AS_OF)
    assert store.list_runs(engine).is_empty()


def test_default_store_is_sqlite_in_var(monkeypatch):
    monkeypatch.delenv("OUTCOMES_DATABASE_URL", raising=False)
    assert store.database_url().endswith("var/outcomes.db")
    monkeypatch.setenv("OUTCOMES_DATABASE_URL", "sqlite:///elsewhere.db")
    assert store.database_url() == "sqlite:///elsewhere.db"


RANDOM_KILLS = 6


def test_killing_a_refresh_at_random_moments(published, engine, handbuilt_dir):
    """SIGKILL a real refresh process at seeded random moments across its whole run (loading,
    validating, computing, judging, writing, committing): every time the store shows either the
    previous run or a complete new one, never part of one, and the next refresh succeeds."""
    import random
    import time

    env = {**os.environ, "OUTCOMES_DATABASE_URL": engine.url.render_as_string(hide_password=False),
           "OUTCOMES_DEFINITIONS": str(DEFINITIONS)}
    command = [sys.executable, "-m", "metrics.cli", "refresh", "--data", str(handbuilt_dir), "--as-of", "2026-01-01"]
    started = time.perf_counter()
    subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, timeout=120, check=True)
    duration = time.perf_counter() - started
    chooser = random.Random(20240401)
    for _ in range(RANDOM_KILLS):
        last = store.latest_run_id(engine)
        before = store.read_values(engine, run=last)
        process = subprocess.Popen(command, cwd=PROJECT, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        time.sleep(chooser.uniform(0.2, 1.0) * duration)
        process.kill()
        process.wait(timeout=60)
        now = store.latest_run_id(engine)
        if now == last:  # killed before its commit: the previous run is untouched
            assert store.read_values(engine, run=last).equals(before)
        else:  # killed after its commit: the new run is whole
            run = store.read_run(engine, now)
            assert run["status"] == "published"
            assert store.read_values(engine, run=now).height == run["values_count"] == before.height
    result = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    assert result.status == "published"
    statuses = store.list_runs(engine)["status"].to_list()
    assert "running" not in statuses  # every killed run was found abandoned


def test_an_error_while_sources_load_does_not_wait_for_queued_simulations():
    """The judge's thread (``_worker``) may hold several sources' SII jobs: a refresh stopped or
    failing meanwhile waits for the job running, not for those queued behind it."""
    import threading

    from metrics.refresh import _raise_if_failed, _worker

    running, ran = threading.Event(), []
    with pytest.raises(RuntimeError, match="stopped"), _worker("test") as pool:
        pool.submit(running.wait, 5)
        queued = pool.submit(ran.append, "queued")
        threading.Timer(0.2, running.set).start()  # the running job ends only after the error
        raise RuntimeError("stopped")
    assert queued.cancelled() and ran == []
    # A job that failed is raised from the refresh's thread at its next check, not at the end.
    with _worker("test") as pool:
        failed = pool.submit(lambda: 1 / 0)
        failed.exception()
        with pytest.raises(ZeroDivisionError):
            _raise_if_failed([pool.submit(int), failed])


ACTIVITY_SOURCES = ["breast_screening", "community_contacts", "inpatient_spells"]


@pytest.mark.parametrize("prefetch", [True, False], ids=["next-loads-while-one-computes", "one-at-a-time"])
def test_the_next_source_loads_while_one_computes_unless_that_one_is_big(
        published, engine, handbuilt_dir, monkeypatch, prefetch):
    """While a source computes, the next one loads (on the loader's thread), unless the one computing
    holds more rows than the budget (then one at a time, as two big sources would not fit); and the
    first two small sources load side by side, as nothing computes yet. The published values are
    the same either way."""
    import threading
    import time

    import metrics.refresh as refresh_module

    if not prefetch:
        monkeypatch.setattr(refresh_module, "_held_cache_budget", lambda: 0)
    real_load, real_compute = refresh_module.load_source, refresh_module.compute_source
    events, lock = [], threading.Lock()

    def load_source(source, *args, **kwargs):
        if source.id in ACTIVITY_SOURCES:
            with lock:
                events.append(("load", source.id))
                first = len(events) == 1
            if prefetch and first:  # the first source's load waits for the second to start beside it
                deadline = time.monotonic() + 30
                while len(events) < 2:
                    assert time.monotonic() < deadline, "the second source did not load beside the first"
                    time.sleep(0.005)
        return real_load(source, *args, **kwargs)

    def compute(plan, *args, **kwargs):
        computed = sum(kind == "computed" for kind, _ in events)
        if prefetch and computed + 1 < len(ACTIVITY_SOURCES):  # the next source starts loading meanwhile
            deadline = time.monotonic() + 30
            while sum(kind == "load" for kind, _ in events) < computed + 2:
                assert time.monotonic() < deadline, "the next source did not start loading during a compute"
                time.sleep(0.005)
        result = real_compute(plan, *args, **kwargs)
        with lock:
            events.append(("computed", plan.source_id))
        return result

    monkeypatch.setattr(refresh_module, "load_source", load_source)
    monkeypatch.setattr(refresh_module, "compute_source", compute)
    result = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    loads = [source for kind, source in events if kind == "load"]
    computed = [s for k, s in events if k == "computed"]
    assert sorted(loads) == ACTIVITY_SOURCES and sorted(computed) == ACTIVITY_SOURCES
    if prefetch:  # (the first two in either order: they start together)
        assert sorted(loads[:2]) == sorted(computed[:2]) and loads[2:] == computed[2:]
        assert [kind for kind, _ in events][:2] == ["load", "load"]
    else:  # each loaded only once the one before it was computed
        assert loads == computed
        assert [kind for kind, _ in events] == ["load", "computed"] * len(ACTIVITY_SOURCES)
    order = ["metric_id", "place", "period_type", "period_start", "breakdown", "group"]
    assert store.read_values(engine, run=result.run_id).drop("run_id").sort(order).equals(
        store.read_values(engine, run=published.run_id).drop("run_id").sort(order))


def test_a_load_failing_on_the_loaders_thread_leaves_the_previous_run_published(
        published, engine, handbuilt_dir, monkeypatch):
    import metrics.refresh as refresh_module

    real_load = refresh_module.load_source

    def load_source(source, *args, **kwargs):
        if source.id == "community_contacts":
            raise RuntimeError("disk on fire")
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(refresh_module, "load_source", load_source)
    with pytest.raises(RuntimeError, match="disk on fire"):
        refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["failed", "published"] and "disk on fire" in runs["error"][0]
    assert store.latest_run_id(engine) == published.run_id
    _nothing_written_for(engine, runs["run_id"][0])
