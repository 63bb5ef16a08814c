"""Tests for the realistic demo data generator (metrics/demo.py) and the IMD geography reader.

Everything runs at a small scale (a few percent of the Dudley + Walsall population), so the
calibration tolerances here are wider than the ones the generator meets at scale 1.
"""

from __future__ import annotations

import hashlib
import math
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the package may not be installed in the test environment
    sys.path.insert(0, str(ROOT))

from metrics import geography_data as geo  # noqa: E402
from metrics.demo import SOURCES, generate_demo_data  # noqa: E402
from metrics.demo_catalogue import CATALOGUE_SOURCES  # noqa: E402

SCALE = 0.03
SEED = 20240401
SOURCE_DIR = ROOT / "definitions" / "sources"
FUTURE = date(2031, 1, 1)

INTEGER_TYPES = {pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64}


def _declared(source: str) -> dict:
    return yaml.safe_load((SOURCE_DIR / f"{source}.yaml").read_text(encoding="utf-8"))


def _read(folder: Path, source: str, ext: str = "parquet") -> pl.DataFrame:
    files = sorted((folder / source).glob(f"*.{ext}"))
    assert files, f"no {ext} files for {source}"
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical")


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    messages: list[str] = []
    summary = generate_demo_data(out, scale=SCALE, seed=SEED, progress=messages.append)
    assert messages, "progress callback was never called"
    return out, summary


@pytest.fixture(scope="module")
def tables(demo) -> dict[str, pl.DataFrame]:
    out, _ = demo
    return {s: _read(out, s) for s in SOURCES}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("clean")
    return out, generate_demo_data(out, scale=SCALE, seed=SEED, defect_rate=0.0)


# ---------------------------------------------------------------------------------------------
# layout, schema, determinism


def test_folder_and_file_layout(demo):
    out, summary = demo
    assert sorted(p.name for p in out.iterdir()) == sorted([*SOURCES, *CATALOGUE_SOURCES, "benchmarks"])
    assert [p.name for p in (out / "benchmarks").iterdir()] == ["fingertips_england.csv"]
    names = {s: sorted(p.name for p in (out / s).iterdir()) for s in SOURCES}  # the catalogue's: test_demo_catalogue
    assert names["geography"] == ["geography.parquet"]
    assert names["population"] == [f"population_{y}.parquet" for y in (2023, 2024, 2025, 2026)]
    months = [f"{y}-{m:02d}" for y in (2023, 2024, 2025, 2026) for m in range(1, 13)]
    months = [m for m in months if "2023-04" <= m <= "2026-03"]
    assert len(months) == 36
    assert names["inpatient_spells"] == [f"spells_{m}.parquet" for m in months]
    assert names["community_contacts"] == [f"contacts_{m}.parquet" for m in months]
    quarter_ends = [
        f"{y}-{md}" for y in (2023, 2024, 2025, 2026) for md in ("03-31", "06-30", "09-30", "12-31")
    ]
    quarter_ends = [q for q in quarter_ends if "2023-06-30" <= q <= "2026-03-31"]
    assert names["breast_screening"] == [f"screening_{q}.parquet" for q in quarter_ends]
    # The summary agrees with what is on disk.
    assert summary["period"]["start_date"] == "2023-04-01"
    assert summary["period"]["end_date"] == "2026-03-31"
    for s in SOURCES:
        assert sorted(Path(f).name for f in summary["files"][s]) == names[s]
        assert summary["rows"][s] == sum(pl.read_parquet(out / f).height for f in summary["files"][s])


@pytest.mark.parametrize("source", SOURCES)
def test_columns_and_types_match_source_declarations(tables, source):
    declared = _declared(source)
    assert declared["folder"] == source
    columns = declared["columns"]
    frame = tables[source]
    assert frame.columns == list(columns), "column names and order follow the YAML declaration"
    for name, spec in columns.items():
        dtype = frame.schema[name]
        kind = spec["type"]
        if kind == "string":
            assert dtype == pl.String, name
        elif kind == "integer":
            assert dtype in INTEGER_TYPES, name
        elif kind == "date":
            assert dtype == pl.Date, name
        elif kind == "boolean":
            assert dtype == pl.Boolean, name
        else:  # pragma: no cover - a new type in the YAML needs a mapping here
            raise AssertionError(f"unmapped type {kind} for {source}.{name}")
        if not spec.get("nullable", False):
            assert frame[name].null_count() == 0, f"{source}.{name} is not nullable"
        if "allowed" in spec:
            values = set(frame[name].drop_nulls().unique().to_list())
            assert values <= set(spec["allowed"]), (name, values - set(spec["allowed"]))
        if "pattern" in spec:
            assert frame[name].drop_nulls().str.contains(spec["pattern"]).all(), name
        if "min" in spec and kind == "integer":
            assert frame[name].drop_nulls().min() >= spec["min"], name
        if "max" in spec and kind == "integer":
            assert frame[name].drop_nulls().max() <= spec["max"], name


def test_same_seed_same_bytes_and_other_seed_differs(demo, tmp_path):
    out, summary = demo
    again = tmp_path / "again"
    other = tmp_path / "other"
    summary_again = generate_demo_data(again, scale=SCALE, seed=SEED)
    generate_demo_data(other, scale=SCALE, seed=SEED + 1)
    assert _digests(again) == _digests(out)
    assert {k: v for k, v in summary_again.items() if k != "out"} == {
        k: v for k, v in summary.items() if k != "out"
    }
    first, second = _digests(out), _digests(other)
    assert first.keys() == second.keys()
    changed = [k for k in first if first[k] != second[k]]
    # Only the seed-independent geography lookup and England benchmarks may be identical.
    assert set(first) - set(changed) <= {"geography/geography.parquet", "benchmarks/fingertips_england.csv"}


def test_rerun_replaces_earlier_files(tmp_path):
    generate_demo_data(tmp_path, scale=0.02, months=3)
    generate_demo_data(tmp_path, scale=0.02, start_month="2024-01", months=2)
    spells = sorted(p.name for p in (tmp_path / "inpatient_spells").iterdir())
    assert spells == ["spells_2024-01.parquet", "spells_2024-02.parquet"]
    assert sorted(p.name for p in (tmp_path / "population").iterdir()) == ["population_2024.parquet"]


# ---------------------------------------------------------------------------------------------
# geography and population


def test_geography_lookup(tables):
    g = tables["geography"]
    assert g.height == 201 + 167
    assert g["lsoa_code"].is_unique().all()
    counts = dict(g.group_by("place").len().iter_rows())
    assert counts == {"Dudley": 201, "Walsall": 167}
    assert set(g["place_code"].unique()) == {"E08000027", "E08000030"}
    assert (g["imd_quintile"] == ((g["imd_decile"] + 1) // 2)).all()
    nbs = g.group_by("place").agg(pl.col("neighbourhood").unique().sort())
    expected = {place: sorted(names) for place, names in (
        ("Dudley", geo.NEIGHBOURHOOD_NAMES[geo.DUDLEY]),
        ("Walsall", geo.NEIGHBOURHOOD_NAMES[geo.WALSALL]),
    )}
    assert {r[0]: r[1] for r in nbs.iter_rows()} == expected
    sizes = g.group_by("neighbourhood").len()["len"]
    assert sizes.min() >= 25 and sizes.max() <= 50


def test_read_lsoas_has_imd_and_population_fields():
    lsoas = geo.read_lsoas()
    assert lsoas.height == 368
    for col in ("imd_rank", "imd_decile", "imd_quintile", "pop_total_2015", "pop_0_15_2015", "pop_16_59_2015", "pop_60_plus_2015"):
        assert lsoas.schema[col] == pl.Int64
    parts = lsoas["pop_0_15_2015"] + lsoas["pop_16_59_2015"] + lsoas["pop_60_plus_2015"]
    assert (parts == lsoas["pop_total_2015"]).all()
    # Thousands separators were stripped: ranks above 999 exist and are in range.
    assert lsoas["imd_rank"].max() > 999 and lsoas["imd_rank"].max() <= 32_844
    assert geo.select_places_for_scale(0.5) == ["E08000027", "E08000030"]
    assert geo.select_places_for_scale(2) == ["E08000027", "E08000030", "E08000028", "E08000031"]
    assert geo.select_places_for_scale(3)[:5] == ["E08000027", "E08000030", "E08000028", "E08000031", "E08000025"]


def test_population_totals_and_shape(tables):
    pop = tables["population"].join(tables["geography"].select("lsoa_code", "place"), on="lsoa_code")
    totals = {(r[0], r[1]): r[2] for r in pop.group_by("place", "year").agg(pl.col("population").sum()).iter_rows()}
    assert totals[("Dudley", 2024)] == round(331_930 * SCALE)
    assert totals[("Walsall", 2024)] == round(295_678 * SCALE)
    assert totals[("Dudley", 2026)] > totals[("Dudley", 2023)]  # mild growth
    assert pop.height == 4 * 368 * 91 * 2
    assert pop.select("year", "lsoa_code", "age", "sex").is_unique().all()
    y24 = pop.filter(pl.col("year") == 2024)
    share_65 = y24.filter(pl.col("age") >= 65)["population"].sum() / y24["population"].sum()
    assert 0.15 < share_65 < 0.24
    old = y24.filter(pl.col("age") >= 85).group_by("sex").agg(pl.col("population").sum())
    old = dict(old.iter_rows())
    assert old["F"] > old["M"]
    children = y24.filter(pl.col("age") < 16)["population"].sum()
    assert y24.filter(pl.col("age") == 90)["population"].sum() < children / 10


# ---------------------------------------------------------------------------------------------
# calibration


@pytest.fixture(scope="module")
def spells(tables) -> pl.DataFrame:
    g = tables["geography"].select("lsoa_code", "place", "imd_quintile")
    return (
        tables["inpatient_spells"]
        .sort("submission_id")
        .unique("spell_id", keep="last", maintain_order=True)
        .join(g, on="lsoa_code", how="inner")
        .filter(pl.col("discharge_date") < FUTURE, pl.col("discharge_date") >= pl.col("admission_date"))
        .with_columns(
            (pl.col("discharge_date") - pl.col("admission_date")).dt.total_days().alias("los"),
            (pl.col("discharge_date") - pl.col("discharge_ready_date")).dt.total_days().alias("delay"),
        )
    )


@pytest.fixture(scope="module")
def drd_eligible(spells) -> pl.DataFrame:
    return spells.filter(
        pl.col("patient_classification") == 1,
        pl.col("los") >= 1,
        pl.col("discharge_method") != 4,
        pl.col("age") >= 18,
    )


def test_inpatient_volume_and_mix(spells, tables):
    person_years = tables["population"].filter(pl.col("year") == 2024)["population"].sum() * 3
    ordinary = spells.filter(pl.col("patient_classification") == 1, pl.col("los") >= 1)
    assert 0.085 < ordinary.height / person_years < 0.115
    assert 0.21 < (spells["patient_classification"] == 2).mean() < 0.29
    assert 0.015 < (spells["discharge_method"] == 4).mean() < 0.045
    assert 3 <= ordinary["los"].median() <= 5
    assert (ordinary["age"] >= 65).mean() > 0.4
    assert set(spells["provider_code"].unique()) >= {"RNA", "RBK"}
    died = spells.filter(pl.col("discharge_method") == 4)
    assert (died["discharge_destination"] == "79").all()
    eth = spells["ethnicity"].drop_nulls()
    assert 0.72 < eth.is_in(["A", "B", "C"]).mean() < 0.88
    assert 0.06 < eth.is_in(["H", "J", "K", "L"]).mean() < 0.15


def test_discharge_ready_date_calibration(drd_eligible):
    with_drd = drd_eligible.filter(pl.col("discharge_ready_date").is_not_null())
    missing = drd_eligible["discharge_ready_date"].is_null().mean()
    assert 0.005 < missing < 0.04
    # DRD lies within the spell for valid rows.
    assert (with_drd["discharge_ready_date"] >= with_drd["admission_date"]).all()
    assert (with_drd["delay"] >= 0).all()
    on_date = with_drd.select((pl.col("delay") == 0).mean()).item()
    assert abs(on_date - 0.87) <= 0.03
    by_q = dict(with_drd.group_by("imd_quintile").agg((pl.col("delay") == 0).mean()).iter_rows())
    assert by_q[1] < by_q[5]
    flagged = with_drd.with_columns(
        pl.col("discharge_date").dt.month().is_in([12, 1, 2]).alias("winter"),
        (pl.col("discharge_date") >= date(2025, 1, 1)).alias("post"),
    )
    winter = dict(flagged.group_by("winter").agg((pl.col("delay") == 0).mean()).iter_rows())
    assert winter[True] < winter[False]
    post = dict(flagged.group_by("post").agg((pl.col("delay") == 0).mean()).iter_rows())
    assert post[True] - post[False] > 0.015
    delayed = with_drd.filter(pl.col("delay") > 0)
    assert 4.5 < delayed["delay"].mean() < 9
    assert delayed["delay"].max() >= 21


def test_screening_coverage_calibration(tables):
    s = tables["breast_screening"].join(
        tables["geography"].select("lsoa_code", "place", "imd_quintile"), on="lsoa_code"
    )
    assert (s["sex"] == "F").all()
    assert s["age"].min() >= 50 and s["age"].max() <= 70
    assert s.select("snapshot_date", "person_id").is_unique().all()
    assert s.filter(pl.col("last_adequate_screen_date") > pl.col("snapshot_date")).height == 0
    assert 0.003 < s["ceased"].mean() < 0.02
    march = s.filter(
        pl.col("snapshot_date") == date(2025, 3, 31), pl.col("age").is_between(53, 70), ~pl.col("ceased")
    ).with_columns(
        (pl.col("last_adequate_screen_date") > pl.col("snapshot_date").dt.offset_by("-36mo"))
        .fill_null(False)
        .alias("covered")
    )
    by_place = dict(march.group_by("place").agg(pl.col("covered").mean()).iter_rows())
    assert abs(by_place["Dudley"] - 0.711) <= 0.03
    assert abs(by_place["Walsall"] - 0.666) <= 0.03
    by_q = dict(march.group_by("imd_quintile").agg(pl.col("covered").mean()).iter_rows())
    assert by_q[1] < by_q[5]
    assert by_q[5] - by_q[1] > 0.05
    # Histories persist: a woman's last screen never moves backwards between snapshots.
    hist = s.sort("person_id", "snapshot_date").with_columns(
        pl.col("last_adequate_screen_date").shift(1).over("person_id").alias("previous")
    )
    assert hist.filter(pl.col("last_adequate_screen_date") < pl.col("previous")).height == 0


def test_community_contacts_calibration(tables):
    c = tables["community_contacts"]
    latest = c.sort("submission_id").unique(
        ["person_id", "service_request_id", "contact_id"], keep="last", maintain_order=True
    )
    person_years = tables["population"].filter(pl.col("year") == 2024)["population"].sum() * 3
    assert 1.5 < latest.height / person_years < 2.1
    assert abs((latest["age"] >= 65).mean() - 0.60) <= 0.08
    status = dict(latest["attendance_status"].value_counts(normalize=True).iter_rows())
    assert 0.8 < status[5] < 0.9
    assert 0.6 < (latest["consultation_medium"] == "01").mean() < 0.85
    g = tables["geography"].select("lsoa_code", "imd_quintile")
    pop_q = tables["population"].filter(pl.col("year") == 2024).join(g, on="lsoa_code").group_by("imd_quintile").agg(
        pl.col("population").sum()
    )
    rate = (
        latest.join(g, on="lsoa_code").group_by("imd_quintile").len().join(pop_q, on="imd_quintile")
        .with_columns((pl.col("len") / pl.col("population")).alias("rate"))
    )
    rate = dict(rate.select("imd_quintile", "rate").iter_rows())
    assert rate[1] > rate[5]


def test_contact_resubmissions_follow_in_next_month(demo):
    out, summary = demo
    files = sorted((out / "community_contacts").glob("*.parquet"))
    frames = [pl.read_parquet(f).with_columns(pl.lit(i).alias("file")) for i, f in enumerate(files)]
    c = pl.concat(frames)
    key = ["person_id", "service_request_id", "contact_id"]
    repeated = c.filter(pl.len().over(key) > 1).sort(*key, "submission_id")
    n_resub = summary["defects"]["community_contacts"]["resubmitted_rows"]
    assert repeated.height == 2 * n_resub
    assert 0.01 < n_resub / c.height < 0.03
    pairs = repeated.group_by(key, maintain_order=True).agg(
        pl.col("file"), pl.col("submission_id"), pl.col("attendance_status")
    )
    assert pairs.height == n_resub
    assert all(f[1] == f[0] + 1 for f in pairs["file"].to_list())
    assert all(s[1] > s[0] for s in pairs["submission_id"].to_list())
    changed = sum(a[0] != a[1] for a in pairs["attendance_status"].to_list())
    assert 0 < changed < pairs.height


def test_people_are_consistent_across_sources(tables):
    ids = pl.concat(
        [
            tables[s].select("person_id", "sex", "lsoa_code")
            for s in ("inpatient_spells", "community_contacts", "breast_screening")
        ]
    )
    assert ids["person_id"].str.contains(r"^P[0-9A-F]{10}$").all()
    known = tables["geography"]["lsoa_code"]
    per_person = ids.filter(pl.col("lsoa_code").is_in(known.implode())).group_by("person_id").agg(
        pl.col("sex").n_unique().alias("sexes"), pl.col("lsoa_code").n_unique().alias("lsoas")
    )
    assert per_person["sexes"].max() == 1
    assert per_person["lsoas"].max() == 1


# ---------------------------------------------------------------------------------------------
# defects


def _spell_defects(out: Path, known: pl.Series) -> dict[str, int]:
    s = _read(out, "inpatient_spells")
    return {
        "discharge_before_admission": s.filter(pl.col("discharge_date") < pl.col("admission_date")).height,
        "future_date": s.filter(pl.col("discharge_date") >= FUTURE).height,
        "unknown_lsoa": s.filter(~pl.col("lsoa_code").is_in(known.implode())).height,
        "duplicate_resubmission": s.height - s["spell_id"].n_unique(),
        "rows": s.height,
    }


def _contact_defects(out: Path, known: pl.Series) -> dict[str, int]:
    c = _read(out, "community_contacts")
    return {
        "future_date": c.filter(pl.col("contact_date") >= FUTURE).height,
        "unknown_lsoa": c.filter(~pl.col("lsoa_code").is_in(known.implode())).height,
        "rows": c.height,
    }


def test_defects_at_the_requested_rate(demo, tables):
    out, summary = demo
    known = tables["geography"]["lsoa_code"]
    sp = _spell_defects(out, known)
    reported = summary["defects"]["inpatient_spells"]
    for kind in ("discharge_before_admission", "future_date", "unknown_lsoa", "duplicate_resubmission"):
        assert sp[kind] == reported[kind] > 0, kind
    total = sum(v for k, v in sp.items() if k != "rows")
    assert 0.5 * 0.005 < total / sp["rows"] < 1.5 * 0.005
    future = _read(out, "inpatient_spells").filter(pl.col("discharge_date") >= FUTURE)
    assert future["discharge_date"].dt.year().min() >= 2031
    dup = _read(out, "inpatient_spells").filter(pl.len().over("spell_id") > 1)
    # Duplicates are exact apart from a later submission id.
    assert dup.drop("submission_id").unique().height == dup.height // 2
    co = _contact_defects(out, known)
    assert co["future_date"] == summary["defects"]["community_contacts"]["future_date"] > 0
    assert co["unknown_lsoa"] == summary["defects"]["community_contacts"]["unknown_lsoa"] > 0
    assert 0.5 * 0.005 < (co["future_date"] + co["unknown_lsoa"]) / co["rows"] < 1.5 * 0.005


def test_no_defects_when_rate_is_zero(clean):
    out, summary = clean
    known = pl.read_parquet(out / "geography" / "geography.parquet")["lsoa_code"]
    sp = _spell_defects(out, known)
    assert {k: v for k, v in sp.items() if k != "rows"} == {
        "discharge_before_admission": 0,
        "future_date": 0,
        "unknown_lsoa": 0,
        "duplicate_resubmission": 0,
    }
    co = _contact_defects(out, known)
    assert co["future_date"] == 0 and co["unknown_lsoa"] == 0
    s = _read(out, "inpatient_spells")
    drd = s.filter(pl.col("discharge_ready_date").is_not_null())
    assert (drd["discharge_ready_date"] >= drd["admission_date"]).all()
    assert (drd["discharge_ready_date"] <= drd["discharge_date"]).all()
    assert all(v == 0 for k, v in summary["defects"]["inpatient_spells"].items())


# ---------------------------------------------------------------------------------------------
# CSV format and arguments


def test_csv_format_matches_parquet(tmp_path):
    kwargs = dict(scale=0.02, seed=7, start_month="2024-11", months=5)
    csv_out, pq_out = tmp_path / "csv", tmp_path / "pq"
    generate_demo_data(csv_out, fmt="csv", **kwargs)
    generate_demo_data(pq_out, fmt="parquet", **kwargs)
    for source in SOURCES:
        csv_files = sorted((csv_out / source).glob("*.csv"))
        pq_files = sorted((pq_out / source).glob("*.parquet"))
        assert [f.stem for f in csv_files] == [f.stem for f in pq_files]
        for cf, pf in zip(csv_files, pq_files, strict=True):
            raw = cf.read_bytes()
            assert not raw.startswith(b"\xef\xbb\xbf")
            raw.decode("utf-8")
            expected = pl.read_parquet(pf)
            text = pl.read_csv(cf, infer_schema=False)
            assert text.columns == expected.columns
            for name, dtype in expected.schema.items():
                values = text[name].drop_nulls()
                if dtype == pl.Date:
                    assert values.str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
                elif dtype == pl.Boolean:
                    assert set(values.unique().to_list()) <= {"true", "false"}
            parsed = text.with_columns(
                pl.col(n).str.to_date("%Y-%m-%d") if t == pl.Date
                else (pl.col(n) == "true") if t == pl.Boolean
                else pl.col(n).cast(t) if t != pl.String
                else pl.col(n)
                for n, t in expected.schema.items()
            )
            assert parsed.equals(expected), cf.name
    assert sorted(p.name for p in (csv_out / "breast_screening").iterdir()) == [
        "screening_2024-12-31.csv",
        "screening_2025-03-31.csv",
    ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fmt": "xlsx"},
        {"scale": 0},
        {"scale": -1},
        {"months": 0},
        {"start_month": "2023-4"},
        {"start_month": "April 2023"},
        {"defect_rate": -0.1},
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_demo_data(tmp_path, **kwargs)


def test_scale_is_linear_in_people(tmp_path):
    small = generate_demo_data(tmp_path / "a", scale=0.02, months=2)
    larger = generate_demo_data(tmp_path / "b", scale=0.04, months=2)
    ratio = larger["residents"] / small["residents"]
    assert math.isclose(ratio, 2.0, rel_tol=0.02)
    assert [p["lsoas"] for p in small["places"]] == [201, 167]


def test_validating_only_the_rows_that_may_fail_quarantines_exactly_what_validating_all_does(demo, monkeypatch):
    """metrics.sources runs pandera only on the rows a one-pass check of the same rules flags; on the
    demo's planted defects (every rule kind) that must give the same frames and quarantine as
    validating every row with pandera."""
    from polars.testing import assert_frame_equal

    from metrics import sources
    from metrics.definitions import load_catalogue

    out, _ = demo
    catalogue = load_catalogue(ROOT / "definitions")
    known = sources.load_source(catalogue.sources["geography"], out, as_of=date(2026, 11, 22)).frame["lsoa_code"].to_list()
    quarantined = 0
    for source_id in [s for s in SOURCES if s in catalogue.sources and s != "geography"]:
        source = catalogue.sources[source_id]
        fast = sources.load_source(source, out, as_of=date(2026, 11, 22), known_lsoas=known)
        with monkeypatch.context() as patched:
            patched.setattr(sources, "_suspects", lambda *args, **kwargs: None)  # pandera on every row
            every_row = sources.load_source(source, out, as_of=date(2026, 11, 22), known_lsoas=known)
        assert_frame_equal(fast.frame, every_row.frame)
        assert_frame_equal(fast.quarantine, every_row.quarantine)
        quarantined += fast.quarantine.height
    assert quarantined > 100  # the planted defects were there to find
