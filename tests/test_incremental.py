"""Incremental refresh: nothing changed → a skipped run; one source changed → only its metrics are
recomputed, the rest carried forward, and what is published equals a full refresh exactly."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

import store
from conftest import AS_OF, DEFINITIONS
from metrics.definitions import load_catalogue
from metrics.refresh import _identity, _input_change, refresh

HANDBUILT_SOURCES = {"geography", "population", "inpatient_spells", "community_contacts", "breast_screening"}
FRAMES = ("spc", "comparisons", "inequalities", "scorecard", "benchmarks")
CONTACTS_JULY = """contact_id,person_id,service_request_id,contact_date,attendance_status,duration_minutes,\
consultation_medium,team_type,age,sex,ethnicity,lsoa_code,gp_practice_code,submission_id
c9,P2,R2,2024-07-02,5,15,04,A03,30,F,H,E01000002,M87002,4
c10,P5,R5,2024-07-11,5,30,01,A10,66,F,A,E01000004,M91002,4
c11,P6,R6,2024-07-12,6,30,01,A10,70,M,A,E01000003,M91001,4
c12,P6,R6,2024-07-13,9,30,01,A10,70,M,A,E01000003,M91001,4
c3,P2,R2,2024-04-05,5,30,01,A03,30,F,H,E01000002,M87002,4
"""


def handbuilt_definitions(target: Path) -> Path:
    """The project's definitions, narrowed to the metrics the hand-built extracts can feed."""
    shutil.copytree(DEFINITIONS, target)
    for path in (target / "metrics").glob("*.y*ml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        population = (data.get("denominator") or {}).get("population")
        if data.get("source") not in HANDBUILT_SOURCES or (population and population not in HANDBUILT_SOURCES):
            path.unlink()
    for path in (target / "sources").glob("*.y*ml"):
        if yaml.safe_load(path.read_text(encoding="utf-8")).get("id") not in HANDBUILT_SOURCES:
            path.unlink()
    return target


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    return handbuilt_definitions(tmp_path / "definitions")


def assert_same_publication(engine, run: int, full: int) -> None:
    """Two runs published the same thing: values, quarantined rows and every judgement frame."""
    assert_frame_equal(store.read_values(engine, run=run).drop("run_id"),
                       store.read_values(engine, run=full).drop("run_id"))
    order = ["source_id", "file", "row_number", "rule"]
    assert_frame_equal(store.read_quarantine(engine, run=run).drop("run_id").sort(order),
                       store.read_quarantine(engine, run=full).drop("run_id").sort(order))
    assert store.read_run(engine, run)["quarantined_count"] == store.read_run(engine, full)["quarantined_count"]
    assert store.read_run(engine, run)["definitions"] == store.read_run(engine, full)["definitions"]
    for name in FRAMES:
        assert_frame_equal(store.read_frame(engine, name, run), store.read_frame(engine, name, full), check_exact=True)


def computed_by(engine, run: int) -> dict[str, set[int]]:
    values = store.read_values(engine, run=run, provenance=True)
    return {m: set(ids) for m, ids in values.group_by("metric_id").agg(pl.col("computed_run_id").unique()).rows()}


def test_what_counts_as_a_change_to_a_source(definitions):
    catalogue = load_catalogue(definitions)
    files = [{"file": "a.csv", "bytes": 10, "sha256": "1" * 64, "rows": 3}]
    summary = {"status": "ok", "files": files, "quarantined_by_rule": {"missing_value": 2}, "as_of": "2026-01-01",
               **{k: v for k, v in _identity(catalogue, "community_contacts", AS_OF).items() if k != "as_of"}}

    def change(summary=summary, current=files, as_of=AS_OF):
        found = _input_change(catalogue, "community_contacts", summary, current, as_of)
        return found and found[0]

    assert change() is None
    assert change(current=[{**files[0], "rows": None}]) is None  # row counts come from loading, not comparing
    assert change(current=[{**files[0], "sha256": "2" * 64}]) == "files"
    assert change(current=[*files, {"file": "b.csv", "bytes": 1, "sha256": "3" * 64}]) == "files"
    assert change(summary={**summary, "definition_hash": "x"}) == "definition"
    assert change(summary={**summary, "dimensions_hash": "x"}) == "definition"
    assert change(summary=None) == "definition"
    # A later refresh date matters only if rows were quarantined as being in the future; an earlier one always.
    assert change(as_of=AS_OF + dt.timedelta(days=30)) is None
    assert change(summary={**summary, "quarantined_by_rule": {"future_date; unknown_lsoa": 1}},
                  as_of=AS_OF + dt.timedelta(days=30)) == "as_of"
    assert change(as_of=AS_OF - dt.timedelta(days=1)) == "as_of"
    # A source that failed to load, with the same files, would fail the same way: no change.
    assert change(summary={**summary, "status": "failed", "files": None}, current=None) is None


def test_an_incremental_refresh_publishes_exactly_what_a_full_refresh_would(engine, handbuilt_dir, definitions):
    first = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    before = store.read_values(engine)

    # Nothing changed: a skipped run, nothing published.
    again = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True,
                    trigger="schedule:full_refresh")
    assert again.status == "skipped" and again.based_on == first.run_id and again.values == 0
    assert again.reason == f"nothing changed since run {first.run_id}"
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["skipped", "published"]
    assert runs["error"][0] == again.reason and runs["trigger"][0] == "schedule:full_refresh"
    # Readers still see the published run; a skipped run is not something they can ask for.
    assert store.latest_run_id(engine) == first.run_id
    assert store.read_values(engine).equals(before)
    with pytest.raises(LookupError, match="not a published run"):
        store.read_values(engine, run=again.run_id)

    def step(as_of=AS_OF):
        incremental = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=as_of,
                              incremental=True)
        full = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=as_of)
        assert incremental.status == "published"
        assert_same_publication(engine, incremental.run_id, full.run_id)
        return incremental

    # A new month of community contacts (one row quarantined): only the contacts metrics are recomputed.
    (handbuilt_dir / "community_contacts" / "contacts_2024-07.csv").write_text(CONTACTS_JULY)
    contacts = step()
    assert contacts.recomputed == ["community_contacts"]
    assert "community_contacts: files new contacts_2024-07.csv" in contacts.reason
    assert computed_by(engine, contacts.run_id) == {
        "breast_screening_coverage": {first.run_id}, "community_contacts_per_1000": {first.run_id, contacts.run_id},
        "people_seen_by_community_services_per_1000": {first.run_id, contacts.run_id},
        "delayed_bed_days": {first.run_id}, "discharged_on_ready_date": {first.run_id},
        "mean_discharge_delay_days": {first.run_id}, "spells_with_discharge_ready_date": {first.run_id}}
    # The new file was appended: only the periods its rows fall in were computed again — July (its
    # quarter and year are not complete yet), and April, whose contact c3 it resubmits as attended —
    # while May and June keep the first run's values.
    fresh = (store.read_values(engine, run=contacts.run_id, metric="community_contacts_per_1000", provenance=True)
             .filter(pl.col("computed_run_id") == contacts.run_id))
    assert set(fresh.select("period_type", "period_start").unique().rows()) == {
        ("month", dt.date(2024, 7, 1)), ("month", dt.date(2024, 4, 1)), ("financial_quarter", dt.date(2024, 4, 1))}
    run = store.read_run(engine, contacts.run_id)
    assert run["sources"]["inpatient_spells"]["carried_from_run"] == first.run_id
    # Only the new file was read: the earlier months came from the rows the last run validated.
    assert run["sources"]["community_contacts"]["files_read"] == 1
    assert run["sources"]["community_contacts"]["periods_recomputed"] > 0
    assert run["sources"]["community_contacts"]["rows_read"] == store.read_run(engine, contacts.run_id + 1)[
        "sources"]["community_contacts"]["rows_read"]
    assert run["sources"]["community_contacts"]["rows_quarantined"] == 1
    assert store.read_quarantine(engine, run=contacts.run_id, source="inpatient_spells").height == 4
    july = store.read_values(engine, run=contacts.run_id, metric="community_contacts_per_1000", breakdown="overall",
                             period_type="month").filter(pl.col("period_start") == dt.date(2024, 7, 1))
    assert dict(july.select("place", "numerator").rows()) == {"Dudley": 1, "Walsall": 2}

    # New population estimates: the metrics that divide by population (on contacts) are recomputed.
    population = handbuilt_dir / "population" / "population_2024.csv"
    population.write_text(population.read_text().replace("E01000003,40,M,300", "E01000003,40,M,310"))
    assert step().recomputed == ["community_contacts"]

    # A metric's definition changes: its source is recomputed, whatever the schedule.
    target = definitions / "metrics" / "discharged_on_ready_date.yaml"
    target.write_text(target.read_text().replace("version: 1", "version: 2", 1))
    edited = step(AS_OF + dt.timedelta(days=1))
    # ...and so is the one source with rows quarantined as 'in the future' as the refresh date moves on.
    assert edited.recomputed == ["inpatient_spells"] and "discharged_on_ready_date" in edited.reason
    assert "the refresh date moved" in edited.reason


def test_a_scoped_refresh_leaves_other_sources_to_their_own_schedule(engine, handbuilt_dir, definitions):
    with pytest.raises(ValueError, match="don't name metrics"):
        refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True,
                metrics=["delayed_bed_days"])
    with pytest.raises(ValueError, match="unknown source"):
        refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True,
                scope=["nope"])
    assert store.list_runs(engine).is_empty()
    first = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    (handbuilt_dir / "community_contacts" / "contacts_2024-07.csv").write_text(CONTACTS_JULY)
    spells = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True,
                     scope=["inpatient_spells"])
    assert spells.status == "skipped"
    assert spells.reason == (f"nothing changed since run {first.run_id} "
                             "(community_contacts changed: left for its own schedule)")
    contacts = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True,
                       scope=["community_contacts"])
    assert contacts.status == "published" and contacts.recomputed == ["community_contacts"]
    # A changed lookup is everyone's business: every source is recomputed, whichever job noticed.
    geography = handbuilt_dir / "geography" / "geography.csv"
    geography.write_text(geography.read_text().replace(",Central,", ",Town centre,"))
    lookup = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True,
                     scope=["inpatient_spells"])
    assert lookup.recomputed == ["breast_screening", "community_contacts", "inpatient_spells"]
    assert "Town centre" in store.read_values(engine, breakdown="neighbourhood")["group"].to_list()


def test_an_appended_file_whose_rows_are_all_quarantined_changes_no_value(engine, handbuilt_dir, definitions):
    first = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    header = CONTACTS_JULY.splitlines()[0]
    (handbuilt_dir / "community_contacts" / "contacts_2024-08.csv").write_text(
        header + "\nc20,P9,R9,2099-08-01,5,10,01,A10,50,F,A,E01000001,M87001,5\n")  # in the future
    incremental = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True)
    full = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    assert_same_publication(engine, incremental.run_id, full.run_id)
    run = store.read_run(engine, incremental.run_id)
    assert run["sources"]["community_contacts"]["periods_recomputed"] == 0
    assert run["sources"]["community_contacts"]["rows_quarantined"] == 1
    assert computed_by(engine, incremental.run_id)["community_contacts_per_1000"] == {first.run_id}


def test_only_a_pure_append_lets_a_load_start_from_the_last_one(definitions):
    from metrics.sources import appended_files

    sources = load_catalogue(definitions).sources
    contacts, screening = sources["community_contacts"], sources["breast_screening"]
    assert contacts.dedup and not contacts.key  # resubmissions only
    june, july = ({"file": f"contacts_2024-0{m}.csv", "bytes": m, "sha256": str(m) * 64} for m in (6, 7))
    assert appended_files(contacts, [june], [june, july]) == [july["file"]]
    assert appended_files(contacts, [june], [june]) is None                     # nothing new
    assert appended_files(contacts, [july], [june, july]) is None               # a new file sorting earlier
    assert appended_files(contacts, [june], [{**june, "sha256": "x" * 64}, july]) is None  # an earlier file changed
    assert appended_files(contacts, [june, july], [july]) is None               # a file removed
    assert appended_files(screening, [june], [june, july]) == [july["file"]]    # a key only: still an append
    both = contacts.model_copy(update={"key": ["contact_id"]})
    assert appended_files(both, [june], [june, july]) is None  # resubmissions *and* a key: read everything


def test_the_cached_rows_grow_by_a_part_per_pure_append_and_are_rewritten_after_a_resubmission(
        engine, handbuilt_dir, definitions):
    """The source cache keeps each appended file's rows as one more part (no rewrite of the rows it
    had); a file that replaces earlier rows (a resubmission) rewrites it whole. Each incremental
    refresh still publishes exactly what a full one does."""
    import json

    from metrics.refresh import cache_dir

    refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    header = CONTACTS_JULY.splitlines()[0]
    folder = handbuilt_dir / "community_contacts"
    months = {"2024-07": "c30,P2,R2,2024-07-02,5,15,04,A03,30,F,H,E01000002,M87002,4\n",
              "2024-08": "c31,P5,R5,2024-08-11,5,30,01,A10,66,F,A,E01000004,M91002,5\n"}
    parts = []
    for month, rows in months.items():
        (folder / f"contacts_{month}.csv").write_text(f"{header}\n{rows}")
        incremental = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True)
        full = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
        assert incremental.recomputed == ["community_contacts"]
        assert_same_publication(engine, incremental.run_id, full.run_id)
        assert store.read_run(engine, incremental.run_id)["sources"]["community_contacts"]["files_read"] == 1
        # The full refresh rewrote the cache whole; re-run the incremental step against the cache the
        # incremental refresh itself wrote, so the parts can be seen growing.
        parts.append(json.loads((cache_dir(engine) / "community_contacts.json").read_text())["parts"])
    assert [len(p) for p in parts] == [1, 1]  # each full refresh writes one part

    # Pure appends one after another, without full refreshes in between: one part more each time.
    grown = []
    # Each new file has a row quarantined (a date in the future): the runs after it share those rows.
    future = "c4{n},P6,R6,2099-01-01,5,30,01,A10,70,M,A,E01000003,M91001,{n}\n"
    for month, rows in {"2024-09": "c32,P6,R6,2024-09-12,5,30,01,A10,70,M,A,E01000003,M91001,6\n" + future.format(n=6),
                        "2024-10": "c33,P6,R6,2024-10-13,5,30,01,A10,70,M,A,E01000003,M91001,7\n" + future.format(n=7)
                        }.items():
        (folder / f"contacts_{month}.csv").write_text(f"{header}\n{rows}")
        refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True)
        grown.append(json.loads((cache_dir(engine) / "community_contacts.json").read_text())["parts"])
    assert len(grown[0]) == 2 and len(grown[1]) == 3 and grown[1][:2] == grown[0]
    assert sorted(p.name for p in cache_dir(engine).glob("community_contacts-*.arrow")) == sorted(grown[1])
    incremental = store.latest_run_id(engine)
    full = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    assert_same_publication(engine, incremental, full.run_id)
    assert store.read_quarantine(engine, run=incremental, source="community_contacts")["value"].to_list().count(
        "2099-01-01") == 2

    # A file resubmitting an earlier contact (c30, now not attended): the earlier row is replaced,
    # so the cached rows are written again as one part.
    (folder / "contacts_2024-11.csv").write_text(f"{header}\nc30,P2,R2,2024-07-02,6,15,04,A03,30,F,H,E01000002,M87002,8\n")
    refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True)
    assert len(json.loads((cache_dir(engine) / "community_contacts.json").read_text())["parts"]) == 1
    (folder / "contacts_2024-12.csv").write_text(f"{header}\nc34,P2,R2,2024-11-02,5,15,04,A03,30,F,H,E01000002,M87002,9\n")
    refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True)
    incremental = store.latest_run_id(engine)
    full = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    assert_same_publication(engine, incremental, full.run_id)


@pytest.mark.parametrize("hold", [True, False], ids=["held-until-computed", "written-at-once"])
def test_a_source_is_cached_once_computed_unless_holding_its_rows_passes_the_budget(
        engine, handbuilt_dir, definitions, monkeypatch, hold):
    """A full refresh writes each source's cache once the source is computed (writing it while it
    computed slowed it), unless holding the rows until then would pass the memory budget: then it
    is written as soon as the source is loaded. Either way the next
    incremental refresh starts from that cache and publishes what a full refresh does."""
    import json
    import threading

    import metrics.refresh as refresh_module
    from metrics.refresh import cache_dir

    if not hold:
        monkeypatch.setattr(refresh_module, "_held_cache_budget", lambda: 0)
    events, saved = [], {}
    real_compute, real_save = refresh_module.compute_source, refresh_module.source_cache.save

    def compute(plan, *args, **kwargs):
        if not hold:  # its cache was started when it loaded: let it get written first
            assert saved.setdefault(plan.source_id, threading.Event()).wait(timeout=30)
        result = real_compute(plan, *args, **kwargs)
        events.append(("computed", plan.source_id))
        return result

    def save(folder, loaded, depends_on):
        events.append(("save", loaded.source.id))
        real_save(folder, loaded, depends_on)
        saved.setdefault(loaded.source.id, threading.Event()).set()

    monkeypatch.setattr(refresh_module, "compute_source", compute)
    monkeypatch.setattr(refresh_module.source_cache, "save", save)
    refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    computed = [source for kind, source in events if kind == "computed"]
    cached = [source for kind, source in events if kind == "save"]
    assert sorted(computed) == sorted(cached) == ["breast_screening", "community_contacts", "inpatient_spells"]
    if hold:  # each written once its source was computed
        assert all(events.index(("save", s)) > events.index(("computed", s)) for s in computed)
    else:  # each written before its source was computed
        assert all(events.index(("save", s)) < events.index(("computed", s)) for s in computed)
    meta = json.loads((cache_dir(engine) / "community_contacts.json").read_text())
    assert meta["rows"] == store.read_run(engine, store.latest_run_id(engine))["sources"]["community_contacts"]["rows_valid"]

    folder = handbuilt_dir / "community_contacts"
    (folder / "contacts_2024-07.csv").write_text(CONTACTS_JULY)
    incremental = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF, incremental=True)
    assert store.read_run(engine, incremental.run_id)["sources"]["community_contacts"]["files_read"] == 1
    full = refresh(handbuilt_dir, definitions_dir=definitions, engine=engine, as_of=AS_OF)
    assert_same_publication(engine, incremental.run_id, full.run_id)
