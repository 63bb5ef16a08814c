"""Every foundation metric on the hand-built extracts (tests/handbuilt.py) against sums done by hand.

Tolerances: counts and values exact (1e-9 relative); confidence limits are recomputed here from the
textbook formulas (DESIGN §6) independently of metrics.stats and agree to 1e-9.
"""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy import stats as sp

import store

Z95, Z998 = 1.959963984540054, 3.090232306167813


def wilson(x: float, n: float, z: float) -> tuple[float, float]:
    centre, spread = 2 * x + z * z, z * math.sqrt(z * z + 4 * x * (1 - x / n))
    return (centre - spread) / (2 * (n + z * z)) * 100, (centre + spread) / (2 * (n + z * z)) * 100


def poisson_limits(x: float, confidence: float) -> tuple[float, float]:
    alpha = 1 - confidence
    if x < 10:
        lower = sp.chi2.ppf(alpha / 2, 2 * x) / 2 if x > 0 else 0.0
        return lower, sp.chi2.ppf(1 - alpha / 2, 2 * x + 2) / 2
    z = sp.norm.ppf(1 - alpha / 2)
    return (x * (1 - 1 / (9 * x) - z / (3 * math.sqrt(x))) ** 3,
            (x + 1) * (1 - 1 / (9 * (x + 1)) + z / (3 * math.sqrt(x + 1))) ** 3)


def one(values: pl.DataFrame, **where) -> dict:
    rows = values.filter(*[pl.col(k) == v for k, v in where.items()])
    assert rows.height == 1, f"expected one row for {where}, got {rows.height}"
    return rows.row(0, named=True)


APRIL, MAY, JUNE, Q1 = dt.date(2024, 4, 1), dt.date(2024, 5, 1), dt.date(2024, 6, 1), dt.date(2024, 4, 1)


@pytest.fixture
def values(published, engine) -> pl.DataFrame:
    return store.read_values(engine)


def test_discharged_on_ready_date_by_hand(values):
    drd = values.filter(pl.col("metric_id") == "discharged_on_ready_date")
    # Dudley April: s1 (on DRD), s2 (resubmitted: discharged 4 days after DRD), s3 (on DRD).
    # Excluded: s4 day case, s5 died, s6 child, s7 no DRD; bad1-bad4 quarantined.
    expected = {("Dudley", "month", APRIL): (2, 3), ("Dudley", "month", MAY): (1, 2),
                ("Dudley", "month", JUNE): (0, 1), ("Dudley", "financial_quarter", Q1): (3, 6),
                ("Walsall", "month", APRIL): (1, 2), ("Walsall", "month", MAY): (1, 1),
                ("Walsall", "financial_quarter", Q1): (2, 3)}
    overall = drd.filter(pl.col("breakdown") == "overall")
    assert overall.height == len(expected)  # no Walsall June (no spells) and no incomplete year
    for (place, period_type, start), (x, n) in expected.items():
        row = one(overall, place=place, period_type=period_type, period_start=start)
        assert (row["numerator"], row["denominator"]) == (x, n)
        assert row["value"] == pytest.approx(100 * x / n, rel=1e-9)
        assert (row["lower_95"], row["upper_95"]) == pytest.approx(wilson(x, n, Z95), rel=1e-9, abs=1e-12)
        assert (row["lower_99_8"], row["upper_99_8"]) == pytest.approx(wilson(x, n, Z998), rel=1e-9, abs=1e-12)


def test_discharged_on_ready_date_breakdowns_by_hand(values):
    drd = values.filter(pl.col("metric_id") == "discharged_on_ready_date", pl.col("period_start") == APRIL,
                        pl.col("period_type") == "month", pl.col("place") == "Dudley")
    # IMD quintile 1 = LSOA E01000001 (s1 on DRD, s2 late); quintile 5 = E01000002 (s3 on DRD).
    assert (one(drd, breakdown="imd_quintile", group="1")["numerator"], one(drd, breakdown="imd_quintile", group="1")["denominator"]) == (1, 2)
    assert one(drd, breakdown="imd_quintile", group="5")["value"] == pytest.approx(100.0)
    assert one(drd, breakdown="neighbourhood", group="North")["denominator"] == 2
    # Age bands 18-44 / 45-64 / 65-74 / 75-84 / 85+: s3 aged 30, s1 aged 70, s2 aged 80.
    assert {r["group"]: r["denominator"] for r in drd.filter(pl.col("breakdown") == "age_band").iter_rows(named=True)} \
        == {"18-44": 1, "65-74": 1, "75-84": 1}
    assert {r["group"]: r["numerator"] for r in drd.filter(pl.col("breakdown") == "sex").iter_rows(named=True)} \
        == {"Female": 1, "Male": 1}
    # Ethnicity codes A (White) for s1, s2 and H (Asian) for s3.
    assert {r["group"]: r["denominator"] for r in drd.filter(pl.col("breakdown") == "ethnicity").iter_rows(named=True)} \
        == {"White": 2, "Asian or Asian British": 1}
    # Breakdowns add up to the place total.
    for breakdown in ("imd_quintile", "neighbourhood", "age_band", "sex", "ethnicity"):
        assert drd.filter(pl.col("breakdown") == breakdown)["denominator"].sum() == 3


def test_ready_date_recording_by_hand(values):
    recorded = values.filter(pl.col("metric_id") == "spells_with_discharge_ready_date", pl.col("breakdown") == "overall",
                             pl.col("period_type") == "month", pl.col("period_start") == APRIL)
    # Dudley April adult ordinary stays of a night or more, alive: s1, s2, s3 and s7 (no DRD).
    dudley = one(recorded, place="Dudley")
    assert (dudley["numerator"], dudley["denominator"], dudley["value"]) == (3, 4, 75.0)
    assert one(recorded, place="Walsall")["value"] == 100.0


def test_mean_delay_by_hand(values):
    mean = values.filter(pl.col("metric_id") == "mean_discharge_delay_days", pl.col("breakdown") == "overall")
    # Dudley Q1 delays: April 0, 4, 0; May 6, 0; June 1 → 11 days over 6 spells.
    q1 = one(mean, place="Dudley", period_type="financial_quarter")
    delays = [0, 4, 0, 6, 0, 1]
    m, s, n = sum(delays) / 6, pl.Series(delays).std(), 6
    assert (q1["numerator"], q1["denominator"], q1["value"]) == (11, 6, pytest.approx(11 / 6, rel=1e-9))
    t95, t998 = sp.t.ppf(0.975, n - 1), sp.t.ppf(0.999, n - 1)
    assert q1["lower_95"] == pytest.approx(m - t95 * s / math.sqrt(n), rel=1e-9)
    assert q1["upper_99_8"] == pytest.approx(m + t998 * s / math.sqrt(n), rel=1e-9)
    april = one(mean, place="Dudley", period_type="month", period_start=APRIL)
    assert april["value"] == pytest.approx(4 / 3, rel=1e-9)
    # One spell: a mean but no interval.
    june = one(mean, place="Dudley", period_type="month", period_start=JUNE)
    assert june["value"] == 1 and june["lower_95"] is None


def test_delayed_bed_days_by_hand(values):
    bed_days = values.filter(pl.col("metric_id") == "delayed_bed_days", pl.col("breakdown") == "overall")
    assert one(bed_days, place="Dudley", period_type="financial_quarter")["value"] == 11
    assert one(bed_days, place="Walsall", period_type="month", period_start=APRIL)["value"] == 1  # w1: 1 day
    assert one(bed_days, place="Walsall", period_type="month", period_start=MAY)["value"] == 0
    assert bed_days["lower_95"].null_count() == bed_days.height  # a count has no sampling interval


def test_community_contacts_rate_by_hand(values):
    rate = values.filter(pl.col("metric_id") == "community_contacts_per_1000", pl.col("breakdown") == "overall")
    # Dudley population 100 + 50 + 200 + 150 = 500; attended contacts (status 5/6): April c1, c2;
    # May c4, c5; June c6. Walsall population 700: c7 (resubmitted as attended) in April only.
    expected = {("Dudley", APRIL): 2, ("Dudley", MAY): 2, ("Dudley", JUNE): 1,
                ("Walsall", APRIL): 1, ("Walsall", MAY): 0, ("Walsall", JUNE): 0}
    for (place, start), count in expected.items():
        row = one(rate, place=place, period_type="month", period_start=start)
        population = 500 if place == "Dudley" else 700
        assert (row["numerator"], row["denominator"]) == (count, population)
        assert row["value"] == pytest.approx(count / population * 1000, rel=1e-9, abs=1e-12)
        lower, upper = poisson_limits(count, 0.95)
        assert (row["lower_95"], row["upper_95"]) == pytest.approx(
            (lower / population * 1000, upper / population * 1000), rel=1e-9, abs=1e-12)
    quarter = one(rate, place="Dudley", period_type="financial_quarter")
    assert (quarter["numerator"], quarter["denominator"], quarter["value"]) == (5, 500, pytest.approx(10.0))


def test_community_rate_breakdowns_include_zero_cells(values):
    rate = values.filter(pl.col("metric_id") == "community_contacts_per_1000", pl.col("place") == "Dudley",
                         pl.col("period_type") == "month", pl.col("period_start") == APRIL)
    # Age bands of the default scheme: population 30 F (100 + 200) and 70 M (50) and 80 F (150).
    by_age = {r["group"]: (r["numerator"], r["denominator"])
              for r in rate.filter(pl.col("breakdown") == "age_band").iter_rows(named=True)}
    assert by_age == {"18-44": (0, 300), "65-74": (2, 50), "75-84": (0, 150)}
    assert "ethnicity" not in rate["breakdown"].to_list()  # no ethnicity in the population denominator


def test_people_seen_counts_each_person_once_per_period(values):
    seen = values.filter(pl.col("metric_id") == "people_seen_by_community_services_per_1000",
                         pl.col("breakdown") == "overall", pl.col("place") == "Dudley")
    # April P1 (twice) → 1; May P3, P1 → 2; June P2 → 1; the quarter P1, P3, P2 → 3 (not 4).
    assert [one(seen, period_type="month", period_start=d)["numerator"] for d in (APRIL, MAY, JUNE)] == [1, 2, 1]
    assert one(seen, period_type="financial_quarter")["numerator"] == 3
    assert one(seen, period_type="financial_quarter")["value"] == pytest.approx(3 / 500 * 1000)
    # Three months of data cannot fill a rolling 12-month window: none is published.
    assert "rolling_12_months" not in seen["period_type"].to_list()


def test_breast_screening_coverage_by_hand(values):
    coverage = values.filter(pl.col("metric_id") == "breast_screening_coverage")
    overall = coverage.filter(pl.col("breakdown") == "overall")
    # Dudley eligible 53-70 not ceased: B1, B2, B3, B4 (B5 aged 52, B6 ceased); screened within 36
    # months before 2024-03-31: B1 (2022-01-01), B4 (2023-06-01). Walsall: B7 (2021-04-01, in),
    # B8 (2021-03-31, exactly 36 months: out), B9 (on the snapshot date, in).
    dudley = one(overall, place="Dudley")
    walsall = one(overall, place="Walsall")
    assert (dudley["numerator"], dudley["denominator"]) == (2, 4)
    assert (walsall["numerator"], walsall["denominator"]) == (2, 3)
    assert dudley["period_type"] == "snapshot" and dudley["period_end"] == dt.date(2024, 3, 31)
    assert (dudley["lower_95"], dudley["upper_95"]) == pytest.approx(wilson(2, 4, Z95), rel=1e-9)
    by_age = {r["group"]: r["denominator"]
              for r in coverage.filter(pl.col("place") == "Dudley", pl.col("breakdown") == "age_band").iter_rows(named=True)}
    assert by_age == {"53-59": 1, "60-64": 1, "65+": 2}


def test_every_value_belongs_to_the_run(values, published):
    assert values["run_id"].unique().to_list() == [published.run_id]
    assert set(values["metric_id"]) == {
        "discharged_on_ready_date", "mean_discharge_delay_days", "delayed_bed_days",
        "community_contacts_per_1000", "people_seen_by_community_services_per_1000", "breast_screening_coverage",
        "spells_with_discharge_ready_date"}
    assert set(values["place"]) == {"Dudley", "Walsall"}


def test_period_numbers_match_period_bounds():
    """Counting people groups months by integer month index and period number (``_month_index``,
    ``_period_number``); both must agree with the dates of ``period_bounds`` for every grain."""
    from metrics.compute import (
        _PERIOD_MONTHS,
        _month_date,
        _month_index,
        _month_index_of,
        _period_number,
        period_bounds,
    )

    months = pl.DataFrame({"month": pl.date_range(dt.date(1999, 1, 1), dt.date(2031, 12, 1), "1mo", eager=True)})
    back = months.select(_month_date(_month_index(pl.col("month"))).alias("back"))["back"]
    assert back.to_list() == months["month"].to_list()
    for grain in _PERIOD_MONTHS:
        start, _ = period_bounds(grain, pl.col("month"))
        got = months.select(start.alias("start"), _period_number(grain, _month_index(pl.col("month"))).alias("n"))
        # The same period number exactly when the same period start.
        assert got.n_unique() == got["start"].n_unique() == got["n"].n_unique(), grain
    # The month table (1970–2149) and, for a frame with an earlier date, the arithmetic agree.
    days = pl.DataFrame({"day": pl.date_range(dt.date(1970, 1, 1), dt.date(2149, 6, 6), "1d", eager=True)})
    for frame in (days, pl.concat([days, pl.DataFrame({"day": [dt.date(1969, 12, 31), None]})])):
        by_table = frame.select(_month_index_of(frame, pl.col("day")).alias("i"))["i"]
        assert by_table.to_list() == frame.select(_month_index(pl.col("day")).alias("i"))["i"].to_list()


def test_age_band_table_matches_lower_bounds():
    """Whole-year ages find their band in a table (``_age_band_index`` with an integer type); the
    band must be the one the lower bounds give, for ages below, in and above every band, negative
    ages, unknown ages, and schemes that start above 0."""
    from metrics.compute import _age_band_index

    ages = pl.DataFrame({"age": [None, *range(-3, 131), 10**6, -(10**6)]}, schema={"age": pl.Int64})
    for bands in [(0, 18, 45, 65, 75, 85), (0, 5, 18, 65), (50, 53, 65, 71), (25,), (0,)]:
        for dtype in (pl.Int64, pl.Int16, pl.UInt8, pl.Float64):
            frame = (ages.filter(pl.col("age").is_between(0, 255)) if dtype == pl.UInt8
                     else ages.filter(pl.col("age").abs() < 30_000) if dtype == pl.Int16 else ages)
            frame = frame.cast({"age": dtype})
            # By hand: the number of lower bounds at or below the age; none: below the first band.
            want = [None if a is None or a < bands[0] else sum(a >= lower for lower in bands) for a in frame["age"]]
            got = frame.select(_age_band_index(bands, dtype).alias("band"))["band"].to_list()
            assert got == want, (bands, dtype)


def test_people_are_counted_on_the_ids_when_a_date_cannot_be_packed(handbuilt_dir, monkeypatch):
    """Counting people sorts on a 128-bit key holding the day since 1970 in its low bits; when a
    qualifying row's date doesn't fit (here: no date fits, as the day gets no bits), the count must
    come from sorting the ids instead, with the same numbers."""
    from conftest import AS_OF, DEFINITIONS

    from metrics import compute
    from metrics.definitions import load_catalogue
    from metrics.plan import build_plan
    from metrics.sources import load_source

    catalogue = load_catalogue(DEFINITIONS)
    plan = next(p for p in build_plan(catalogue, ["people_seen_by_community_services_per_1000"]).sources)
    geography = load_source(catalogue.sources["geography"], handbuilt_dir, as_of=AS_OF)
    lsoas = geography.frame["lsoa_code"].to_list()
    population = load_source(catalogue.sources["population"], handbuilt_dir, as_of=AS_OF, known_lsoas=lsoas)
    contacts = load_source(catalogue.sources[plan.source_id], handbuilt_dir, as_of=AS_OF, known_lsoas=lsoas,
                           columns=plan.columns)

    def people_seen() -> pl.DataFrame:
        values = compute.compute_source(plan, contacts.frame, catalogue, geography=geography.frame,
                                        populations={"population": population.frame})
        return values.sort("period_type", "period_start", "place", "breakdown", "group")

    packed = people_seen()
    exact_sorts = []
    real_exact = compute.sorted_people_exact
    monkeypatch.setattr(compute, "sorted_people_exact", lambda rows: exact_sorts.append(1) or real_exact(rows))
    monkeypatch.setattr(compute, "_DAY_BITS", 0)
    on_ids = people_seen()
    assert exact_sorts == [1]
    assert on_ids.equals(packed)
    assert packed.filter(pl.col("breakdown") == "overall", pl.col("period_type") == "financial_quarter",
                         pl.col("place") == "Dudley")["numerator"].to_list() == [3]


def test_the_engine_polars_runs_small_queries_on_does_not_change_a_number(handbuilt_dir, monkeypatch):
    """Queries over few aggregated cells run on Polars' in-memory engine, over many on Polars' own
    choice (``compute.SMALL_CELLS``): only the speed may differ, for every metric on every source."""
    from conftest import AS_OF, DEFINITIONS

    from metrics import compute
    from metrics.definitions import load_catalogue
    from metrics.plan import build_plan
    from metrics.sources import load_source

    catalogue = load_catalogue(DEFINITIONS)
    geography = load_source(catalogue.sources["geography"], handbuilt_dir, as_of=AS_OF)
    lsoas = geography.frame["lsoa_code"].to_list()
    population = load_source(catalogue.sources["population"], handbuilt_dir, as_of=AS_OF, known_lsoas=lsoas)
    engines: list[str] = []
    real_engine_for = compute._engine_for
    monkeypatch.setattr(compute, "_engine_for", lambda cells: engines.append(real_engine_for(cells)) or engines[-1])

    def every_value() -> pl.DataFrame:
        parts = []
        for plan in build_plan(catalogue, None).sources:
            loaded = load_source(catalogue.sources[plan.source_id], handbuilt_dir, as_of=AS_OF, known_lsoas=lsoas,
                                 columns=plan.columns)
            parts.append(compute.compute_source(plan, loaded.frame, catalogue, geography=geography.frame,
                                                populations={"population": population.frame}))
        return pl.concat(parts, how="vertical_relaxed").sort(compute.OUTPUT_COLUMNS[:8])

    in_memory = every_value()
    assert set(engines) == {"in-memory"}
    engines.clear()
    monkeypatch.setattr(compute, "SMALL_CELLS", 0)
    polars_choice = every_value()
    assert set(engines) == {"auto"}
    assert in_memory.height > 100
    assert_frame_equal(polars_choice, in_memory)
