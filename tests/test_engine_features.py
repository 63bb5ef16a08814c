"""Engine features beyond the foundation metrics, each on data small enough to check by hand:
directly standardised rates with a population filter, academic years, pooled-period denominators."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

import store
from conftest import AS_OF
from metrics.compute import _population_years, period_bounds
from metrics.refresh import refresh

DEATHS_SOURCE = """
id: deaths
kind: activity
title: Death registrations
folder: deaths
identifiers: [death_id]
geography: lsoa_code
key: [death_id]
columns:
  death_id: {type: string}
  date_of_death: {type: date, not_future: true}
  age: {type: integer, min: 0, max: 120}
  sex: {type: string, allowed: [F, M]}
  lsoa_code: {type: string}
  underlying_cause: {type: string, pattern: '^[A-Z]\\d{2}'}
"""
CIRCULATORY_DSR = """
id: circulatory_deaths_under_75
version: 1
status: draft
valid_from: 2024-01-01
title: Under 75 mortality from circulatory disease
outcome: Reducing circulatory disease deaths
definition: Deaths under 75 with an underlying circulatory cause, age-standardised.
rationale: Test metric.
owner: Public health
source: deaths
value_type: dsr
standard: esp2013
unit: per 100,000
multiplier: 100000
numerator: {filter: "age < 75 AND underlying_cause LIKE 'I%'"}
denominator: {population: population, filter: "age < 75"}
period: {date: date_of_death, grains: [calendar_year]}
breakdowns: [place, imd_quintile]
polarity: lower_is_better
"""


@pytest.fixture
def deaths_setup(handbuilt_dir, definitions_dir):
    (definitions_dir / "sources" / "deaths.yaml").write_text(DEATHS_SOURCE)
    (definitions_dir / "metrics" / "circulatory_deaths_under_75.yaml").write_text(CIRCULATORY_DSR)
    rows = ["death_id,date_of_death,age,sex,lsoa_code,underlying_cause"]
    # Dudley 2024: 8 circulatory deaths aged 30 (LSOA 2, population aged 30: 100 + 200 across the
    # place), 4 aged 70 (population 50), plus a non-circulatory death and an 80-year-old (excluded).
    rows += [f"d{i},2024-0{1 + i % 9}-10,30,F,E01000002,I21" for i in range(8)]
    rows += [f"e{i},2024-05-1{i},70,M,E01000001,I63" for i in range(4)]
    rows += ["x1,2024-03-03,70,M,E01000001,C34", "x2,2024-03-04,80,F,E01000002,I21"]
    # Walsall: 3 deaths: too few for a DSR.
    rows += [f"w{i},2024-07-0{i + 1},40,M,E01000003,I25" for i in range(3)]
    folder = handbuilt_dir / "deaths"
    folder.mkdir()
    (folder / "deaths_2024.csv").write_text("\n".join(rows) + "\n")
    # Whole calendar year of data: the 2024 period is complete only if the extract spans it.
    (folder / "deaths_2024b.csv").write_text(
        "death_id,date_of_death,age,sex,lsoa_code,underlying_cause\nz1,2024-12-31,50,F,E01000001,K70\n")
    return handbuilt_dir, definitions_dir


def test_dsr_by_hand_with_population_filter(deaths_setup, engine):
    data, definitions = deaths_setup
    refresh(data, definitions_dir=definitions, engine=engine, as_of=AS_OF, metrics=["circulatory_deaths_under_75"])
    values = store.read_values(engine, metric="circulatory_deaths_under_75", breakdown="overall")
    dudley = values.filter(pl.col("place") == "Dudley").row(0, named=True)
    # ESP 2013 weights: 30-34 → 6,500; 70-74 → 5,000. Only bands with population under 75 count.
    weights = {"30-34": 6500, "70-74": 5000}
    rate = (8 / 300 * weights["30-34"] + 4 / 50 * weights["70-74"]) / sum(weights.values())
    assert (dudley["numerator"], dudley["denominator"]) == (12, 350)
    assert dudley["value"] == pytest.approx(rate * 1e5, rel=1e-9)
    assert dudley["period_type"] == "calendar_year" and dudley["period_start"] == dt.date(2024, 1, 1)
    # Dobson: the limits scale the Byar limits of O = 12 by √(var)/√O.
    variance = (8 * (weights["30-34"] / 300) ** 2 + 4 * (weights["70-74"] / 50) ** 2) / sum(weights.values()) ** 2
    z = 1.959963984540054
    upper_o = 13 * (1 - 1 / (9 * 13) + z / (3 * math.sqrt(13))) ** 3
    assert dudley["upper_95"] == pytest.approx((rate + math.sqrt(variance / 12) * (upper_o - 12)) * 1e5, rel=1e-9)
    walsall = values.filter(pl.col("place") == "Walsall").row(0, named=True)
    assert walsall["numerator"] == 3 and walsall["value"] is None  # fewer than 10 events: not calculated


def test_academic_year_bounds():
    frame = pl.DataFrame({"d": [dt.date(2024, 8, 31), dt.date(2024, 9, 1), dt.date(2025, 3, 15)]})
    start, end = period_bounds("academic_year", pl.col("d"))
    out = frame.select(start.alias("start"), end.alias("end"))
    assert out["start"].to_list() == [dt.date(2023, 9, 1), dt.date(2024, 9, 1), dt.date(2024, 9, 1)]
    assert out["end"].to_list() == [dt.date(2024, 8, 31), dt.date(2025, 8, 31), dt.date(2025, 8, 31)]


def test_pooled_periods_use_person_years():
    periods = pl.LazyFrame({
        "period_type": ["month", "rolling_36_months", "rolling_36_months"],
        "period_start": [dt.date(2024, 5, 1), dt.date(2022, 1, 1), dt.date(2022, 4, 1)],
        "period_end": [dt.date(2024, 5, 31), dt.date(2024, 12, 31), dt.date(2025, 3, 31)],
    })
    weights = _population_years(periods, 2023, 2025).collect()
    as_dict = {(r["period_start"], r["year"]): r["_weight"] for r in weights.iter_rows(named=True)}
    assert as_dict[(dt.date(2024, 5, 1), 2024)] == 1.0          # a month: that year's population
    # Jan 2022-Dec 2024: 2022 is before the first estimate, so it borrows 2023's: 2023 counts twice.
    assert as_dict[(dt.date(2022, 1, 1), 2023)] == 2.0 and as_dict[(dt.date(2022, 1, 1), 2024)] == 1.0
    # Apr 2022-Mar 2025: 9 months of 2022 (as 2023) + 12 of 2023 + 12 of 2024 + 3 of 2025.
    assert as_dict[(dt.date(2022, 4, 1), 2023)] == pytest.approx(21 / 12)
    assert as_dict[(dt.date(2022, 4, 1), 2025)] == pytest.approx(3 / 12)
    assert sum(w for (start, _), w in as_dict.items() if start == dt.date(2022, 4, 1)) == pytest.approx(3.0)


def test_dsr_definitions_reject_age_bands(definitions_dir):
    from metrics.definitions import load_definitions

    (definitions_dir / "sources" / "deaths.yaml").write_text(DEATHS_SOURCE)
    (definitions_dir / "metrics" / "c.yaml").write_text(CIRCULATORY_DSR.replace("[place, imd_quintile]",
                                                                               "[place, age_band]"))
    _, issues = load_definitions(definitions_dir)
    assert any("'age_band' is not a breakdown for it" in str(i) for i in issues)


def test_people_sort_on_hashed_codes_agrees_with_sorting_the_ids():
    """Counting people sorts rows by person and date on a 128-bit key (a 96-bit person code from two
    hashes, then the day); a date it can't pack (before 1970) comes back missing, the signal to sort
    on the ids. Both give each person's rows together, in date order, ties in the extract's order."""
    import datetime as dt
    import random

    from metrics.compute import sorted_people, sorted_people_exact

    rng = random.Random(7)
    rows = pl.DataFrame({
        "_id": [f"P{rng.randrange(300):04d}" for _ in range(5000)],
        "_date": [dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(900)) for _ in range(5000)],
        "_row": range(5000),
    })
    expected = rows.sort(["_id", "_date", "_row"])
    fast = sorted_people(rows.lazy()).collect()
    assert fast["_date"].null_count() == 0
    # Each person's rows are together (one run of _who per person), in date order, ties in row order.
    assert fast["_who"].n_unique() == rows["_id"].n_unique() == 300
    runs = fast.group_by("_who", maintain_order=True).agg("_row", "_date")
    by_id = expected.group_by("_id", maintain_order=True).agg("_row", "_date")
    assert sorted(runs["_row"].to_list()) == sorted(by_id["_row"].to_list())
    assert sorted(runs["_date"].to_list()) == sorted(by_id["_date"].to_list())
    old = rows.with_columns(pl.when(pl.col("_row") == 0).then(dt.date(1960, 1, 1)).otherwise(pl.col("_date"))
                            .alias("_date"))
    assert sorted_people(old.lazy()).collect()["_date"].null_count() == 1
    exact = sorted_people_exact(old.lazy()).collect()
    assert exact["_row"].to_list() == old.sort(["_id", "_date", "_row"])["_row"].to_list()
