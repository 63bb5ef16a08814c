"""Sources too big to hold are streamed through in parts, with exactly the numbers of a whole load.

A part holds every row of its people and keys (``partition_key``), so de-duplication, quarantine
and distinct counts work within it, and the parts' partial sums add up (``combine_partials``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import store
from conftest import AS_OF, DEFINITIONS, PROJECT
from metrics import compute, sources
from metrics.definitions import load_catalogue
from metrics.plan import build_plan
from metrics import refresh as refresh_module
from metrics.refresh import refresh

PROJECT_DEFINITIONS = PROJECT / "definitions"
DEMO_AS_OF = dt.date(2024, 8, 1)
VALUE_KEY = ["metric_id", "place", "period_type", "period_start", "period_end", "breakdown", "group"]


def _distinct(plan) -> set[str]:
    return {s.count_distinct for s in plan.steps if s.distinct}


def test_the_split_keeps_each_key_and_each_person_counted_in_one_part():
    catalogue = load_catalogue(PROJECT_DEFINITIONS)
    plans = {p.source_id: p for p in build_plan(catalogue).sources}
    # Contacts: resubmissions are keyed by person, service request and contact; people are counted.
    assert sources.partition_key(catalogue.sources["community_contacts"], _distinct(plans["community_contacts"])) == [
        "person_id"]
    # Spells: nobody is counted, so the resubmission key's text column will do.
    assert sources.partition_key(catalogue.sources["inpatient_spells"], set()) == ["spell_id"]
    # Mental health contacts are keyed by contact but count people: no column keeps both together.
    assert sources.partition_key(catalogue.sources["mental_health_contacts"],
                                 _distinct(plans["mental_health_contacts"])) is None
    # Nothing keyed, nothing counted: any split will do.
    unkeyed = catalogue.sources["inpatient_spells"].model_copy(update={"dedup": None, "key": None})
    assert sources.partition_key(unkeyed, set()) == []
    # A number isn't split on: "007" and "7" parse alike but hash apart.
    numbered = unkeyed.model_copy(update={"key": ["admission_method"]})
    assert sources.partition_key(numbered, {"admission_method"}) == ["admission_method"]
    numeric = catalogue.sources["community_contacts"]
    assert sources.partition_key(numeric, {"attendance_status"}) is None


@pytest.fixture(scope="module", params=["csv", "parquet"])
def demo(request, tmp_path_factory) -> Path:
    """15 months of the whole catalogue's demo extracts at scale 0.01, with their defects."""
    from metrics.demo import generate_demo_data

    out = tmp_path_factory.mktemp(f"demo-{request.param}")
    generate_demo_data(out, scale=0.01, months=15, fmt=request.param)
    return out


@pytest.mark.parametrize("parts", [1, 3])
def test_every_source_loaded_and_computed_in_parts_matches_it_loaded_whole(demo, parts, tmp_path, monkeypatch):
    if parts > 1:  # a big Parquet file is split a slice at a time: its rows keep their numbers in the file
        monkeypatch.setattr(sources, "_SPILL_SLICE_ROWS", 37)
    spill = tmp_path / "spill"
    catalogue = load_catalogue(PROJECT_DEFINITIONS)
    plan = build_plan(catalogue)
    geography = sources.load_source(catalogue.sources["geography"], demo, as_of=DEMO_AS_OF)
    known = geography.frame["lsoa_code"].to_list()
    populations = {pid: sources.load_source(catalogue.sources[pid], demo, as_of=DEMO_AS_OF, known_lsoas=known).frame
                   for pid in {s.population_source for p in plan.sources for s in p.steps if s.population_source}}
    streamed = 0
    for source_plan in plan.sources:
        source = catalogue.sources[source_plan.source_id]
        by = sources.partition_key(source, _distinct(source_plan))
        if by is None:
            continue
        whole = sources.load_source(source, demo, as_of=DEMO_AS_OF, known_lsoas=known, columns=source_plan.columns)
        handed: list[pl.DataFrame] = []
        partials = []

        def reduce(rows: list[pl.DataFrame], source_plan=source_plan, handed=handed, partials=partials) -> None:
            frame = rows.pop()
            handed.append(frame)
            partials.append(compute.source_partials(source_plan, frame, catalogue, geography=geography.frame))

        in_parts = sources.load_source_in_parts(source, demo, by=by, parts=parts, on_part=reduce,
                                                as_of=DEMO_AS_OF, known_lsoas=known, columns=source_plan.columns,
                                                spill_dir=spill)
        assert not any(spill.iterdir())  # (the split files are deleted)
        # Every row where a whole load puts it: kept, quarantined (same file, row and rule) or superseded.
        rows = pl.concat(handed).sort("_file", "_row")
        assert_frame_equal(rows, whole.frame.sort("_file", "_row"), check_dtypes=False)
        assert_frame_equal(in_parts.quarantine, whole.quarantine)
        assert (in_parts.rows_read, in_parts.rows_valid, in_parts.rows_quarantined, in_parts.rows_superseded) == (
            whole.rows_read, whole.rows_valid, whole.rows_quarantined, whole.rows_superseded)
        assert in_parts.frame.is_empty() and in_parts.parts == parts
        assert [f["file"] for f in in_parts.files] == [f["file"] for f in whole.files]
        assert [f["rows"] for f in in_parts.files] == [f["rows"] for f in whole.files]
        if parts > 1 and whole.frame.height > 100:
            assert len(handed) == parts and max(f.height for f in handed) < whole.frame.height
            streamed += 1
        # The same values, to the last digit but for the order floating-point sums were added in.
        pops = {p: populations[p] for p in {s.population_source for s in source_plan.steps if s.population_source}}
        expected = compute.compute_source(source_plan, whole.frame, catalogue, geography=geography.frame,
                                          populations=pops)
        got = compute.finish_source(source_plan, compute.combine_partials(partials), catalogue,
                                    geography=geography.frame, populations=pops)
        assert_frame_equal(got.sort(VALUE_KEY), expected.sort(VALUE_KEY), check_exact=False, rel_tol=1e-12)
    assert streamed >= (10 if parts > 1 else 0)


def test_a_parts_partials_are_its_breakdown_slices_not_its_cells(demo):
    """What parts add up is small whatever a part's rows: its sums by period and breakdown slice,
    the finest cells (LSOA x age band x sex x month) summed away within the part."""
    catalogue = load_catalogue(PROJECT_DEFINITIONS)
    plan = next(p for p in build_plan(catalogue).sources if p.source_id == "community_contacts")
    geography = sources.load_source(catalogue.sources["geography"], demo, as_of=DEMO_AS_OF)
    frame = sources.load_source(catalogue.sources["community_contacts"], demo, as_of=DEMO_AS_OF,
                                known_lsoas=geography.frame["lsoa_code"].to_list(), columns=plan.columns).frame
    partials = compute.source_partials(plan, frame, catalogue, geography=geography.frame)
    wanted = {tuple(keys) for step in plan.steps for keys, _ in compute._slices(step)}
    people = [frames for fixed, rolling in partials.people.values()
              for frames in [fixed, *(deltas for _, deltas in rolling)] if frames is not None]
    assert people and set(partials.slices) <= wanted and all(set(frames) <= wanted for frames in people)
    held = [*partials.slices.values(), *(f for frames in people for f in frames.values())]
    assert all(compute.LSOA not in f.columns for f in held)
    # Place x neighbourhood x quintile is the finest slice: far fewer rows than LSOA-level cells.
    cells = frame.select(pl.col("lsoa_code").n_unique()).item() * frame.select(
        pl.col("contact_date").dt.truncate("1mo").n_unique()).item()
    assert max(f.height for f in held) < cells / 4


def _published(engine) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    values = store.read_values(engine).drop("run_id").sort(VALUE_KEY)
    quarantine = store.read_quarantine(engine).drop("run_id", strict=False).sort("source_id", "file", "row_number",
                                                                                    "rule")
    return values, quarantine, store.read_run(engine)["sources"]


def _as_parquet(extracts: Path) -> None:
    """Every CSV extract as a Parquet file of text columns (read exactly as the CSV would be)."""
    for csv in extracts.rglob("*.csv"):
        pl.read_csv(csv, infer_schema=False).write_parquet(csv.with_suffix(".parquet"))
        csv.unlink()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_refresh_streams_sources_too_big_to_hold_and_publishes_what_a_whole_load_would(
        handbuilt_dir, tmp_path, monkeypatch, fmt):
    if fmt == "parquet":
        _as_parquet(handbuilt_dir)
    whole_engine = store.get_engine(f"sqlite:///{tmp_path / 'whole.db'}")
    refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=whole_engine, as_of=AS_OF)
    monkeypatch.setenv("OUTCOMES_PART_ROWS", "4")  # the hand-built extracts hold 9-18 rows a source
    streamed_engine = store.get_engine(f"sqlite:///{tmp_path / 'streamed.db'}")
    messages: list[str] = []
    result = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=streamed_engine, as_of=AS_OF,
                     progress=messages.append)
    assert result.status == "published"
    whole_values, whole_quarantine, whole_sources = _published(whole_engine)
    values, quarantine, recorded = _published(streamed_engine)
    assert_frame_equal(values, whole_values, check_exact=False, rel_tol=1e-12)
    assert_frame_equal(quarantine, whole_quarantine)
    assert recorded["inpatient_spells"]["parts"] > 1 and recorded["community_contacts"]["parts"] > 1
    assert "parts" not in recorded["population"]  # (a population is loaded whole, for every metric using it)
    drop = {"seconds", "parts"}
    for source_id, summary in whole_sources.items():
        assert {k: v for k, v in recorded[source_id].items() if k not in drop} == {
            k: v for k, v in summary.items() if k not in drop}, source_id
    assert any("in 5 parts" in m for m in messages if m.strip().startswith("inpatient_spells"))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_streamed_source_with_a_broken_file_fails_naming_that_file(handbuilt_dir, tmp_path, monkeypatch, fmt):
    monkeypatch.setenv("OUTCOMES_PART_ROWS", "4")
    engine = store.get_engine(f"sqlite:///{tmp_path / 'o.db'}")
    broken = handbuilt_dir / "inpatient_spells" / "spells_2024-06.csv"
    broken.write_text(broken.read_text().replace("admission_date", "admitted", 1))
    if fmt == "parquet":
        _as_parquet(handbuilt_dir)
    result = refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF)
    assert result.failed_sources == ["inpatient_spells"]
    error = store.read_run(engine)["sources"]["inpatient_spells"]["error"]
    assert f"spells_2024-06.{fmt}" in error and "missing column(s) admission_date" in error
    # Nothing of the split is left on disk, though the source failed while it was being split.
    spilled = refresh_module.spill_dir(engine)
    assert spilled.is_dir() and not any(spilled.iterdir())


def test_a_refresh_clears_what_a_killed_refresh_left_of_its_split(handbuilt_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OUTCOMES_PART_ROWS", "4")
    engine = store.get_engine(f"sqlite:///{tmp_path / 'o.db'}")
    left = refresh_module.spill_dir(engine) / "spill-community_contacts-abc123"
    left.mkdir(parents=True)
    (left / "0-0-0.parquet").write_bytes(b"rows of a refresh that was killed")
    kept = refresh_module.spill_dir(engine) / "notes.txt"  # (only the split's own folders go)
    kept.write_text("not the engine's")
    assert refresh(handbuilt_dir, definitions_dir=DEFINITIONS, engine=engine, as_of=AS_OF).status == "published"
    assert not left.exists() and kept.exists()


def test_a_source_is_held_whole_up_to_one_limit_and_split_into_smaller_parts_above_it(handbuilt_dir, monkeypatch):
    catalogue = load_catalogue(DEFINITIONS)
    plans = [p for p in build_plan(catalogue).sources if p.source_id == "inpatient_spells"]
    rows = sources.estimated_rows(catalogue.sources["inpatient_spells"], handbuilt_dir)
    streamed = refresh_module._streamed
    assert streamed(catalogue, plans, handbuilt_dir, (rows, 2), set()) == {}  # (fits: held whole, however small a part)
    assert streamed(catalogue, plans, handbuilt_dir, (rows - 1, 4), set()) == {
        "inpatient_spells": (["spell_id"], -(-rows // 4))}
    assert streamed(catalogue, plans, handbuilt_dir, (1, 4), {"inpatient_spells"}) == {}  # (a population: whole)
    monkeypatch.setenv("OUTCOMES_PART_ROWS", "7")
    assert refresh_module._part_rows() == (7, 7)
    monkeypatch.delenv("OUTCOMES_PART_ROWS")
    held, part = refresh_module._part_rows()
    assert part > 0 and abs(held - 3 * part) <= 2  # (parts a third of what is held whole: a part peaks higher a row)
