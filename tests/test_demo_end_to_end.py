"""The whole path on a small-scale demo: generate extracts, refresh, and read back believable numbers
near the published calibration figures (DESIGN §4), with the deprivation gradient visible."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

import store
from conftest import PROJECT_DEFINITIONS
from metrics.demo import generate_demo_data
from metrics.refresh import refresh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_values(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo_data(root / "extracts", scale=0.04, seed=7)
    engine = store.get_engine(f"sqlite:///{root / 'demo.db'}")
    result = refresh(root / "extracts", definitions_dir=PROJECT_DEFINITIONS, engine=engine, as_of=dt.date(2026, 11, 1))
    return result, store.read_values(engine), store.read_quarantine(engine), engine


def _overall(values, metric, period_type):
    return values.filter(pl.col("metric_id") == metric, pl.col("breakdown") == "overall",
                         pl.col("period_type") == period_type)


def test_every_metric_has_values_for_both_places(demo_values):
    result, values, _, _ = demo_values
    assert result.failed_sources == []
    counts = values.filter(pl.col("breakdown") == "overall").group_by("metric_id").agg(pl.col("place").n_unique())
    assert counts.height >= 26 and set(counts["place"].to_list()) == {2}


def test_discharge_on_ready_date_near_87_percent_and_improving(demo_values):
    _, values, _, _ = demo_values
    monthly = _overall(values, "discharged_on_ready_date", "month")
    totals = monthly.select(pl.col("numerator").sum() / pl.col("denominator").sum() * 100).item()
    assert 84 <= totals <= 90
    before = monthly.filter(pl.col("period_start") < dt.date(2025, 1, 1))
    after = monthly.filter(pl.col("period_start") >= dt.date(2025, 1, 1))
    rate = lambda f: f["numerator"].sum() / f["denominator"].sum()  # noqa: E731
    assert rate(after) > rate(before) + 0.015


def test_screening_coverage_calibrated_with_a_deprivation_gradient(demo_values):
    _, values, _, _ = demo_values
    march = values.filter(pl.col("metric_id") == "breast_screening_coverage",
                          pl.col("period_end") == dt.date(2025, 3, 31))
    overall = {r["place"]: r["value"] for r in march.filter(pl.col("breakdown") == "overall").iter_rows(named=True)}
    assert overall["Dudley"] == pytest.approx(71.1, abs=3)
    assert overall["Walsall"] == pytest.approx(66.6, abs=3)
    by_quintile = march.filter(pl.col("breakdown") == "imd_quintile").group_by("group").agg(
        (pl.col("numerator").sum() / pl.col("denominator").sum()).alias("coverage")).sort("group")
    assert by_quintile["coverage"][0] < by_quintile["coverage"][-1] - 0.04  # most vs least deprived


def test_quarantine_catches_the_planted_defects(demo_values):
    result, _, quarantine, _ = demo_values
    rules = set(quarantine["rule"])
    assert {"discharge_not_before_admission", "future_date", "unknown_lsoa"} <= rules
    spells = result.sources["inpatient_spells"]
    assert spells["rows_read"] == spells["rows_valid"] + spells["rows_quarantined"] + spells["rows_superseded"]
    assert 0 < spells["rows_quarantined"] < 0.02 * spells["rows_read"]
    assert result.sources["community_contacts"]["rows_superseded"] > 0
    # Quarantined rows keep the source file and row for follow-up.
    assert quarantine["file"].null_count() == 0 and quarantine["row_number"].min() >= 1


def test_judgements_are_published_with_the_run(demo_values):
    _, _, _, engine = demo_values
    scorecard = store.read_frame(engine, "scorecard")
    assert scorecard.height == 2 * scorecard["metric_id"].n_unique() >= 52
    assert set(scorecard["place"]) == {"Dudley", "Walsall"}
    screening = scorecard.filter(pl.col("metric_id") == "breast_screening_coverage")
    # England 71.8% at 31 March 2025, from the demo's Fingertips-format export.
    assert screening["england_value"].to_list() == [71.8, 71.8]
    assert screening["england_period_end"].to_list() == [dt.date(2025, 3, 31)] * 2
    assert set(screening["vs_england"]) <= {"better", "similar", "worse"}
    spc = store.read_frame(engine, "spc")
    drd = spc.filter(pl.col("metric_id") == "discharged_on_ready_date", pl.col("breakdown") == "overall")
    assert drd.select("place").n_unique() == 2 and drd.height == 72
    # The improvement from January 2025 is a signal, not noise, in at least one place.
    improved = drd.filter(pl.col("period_start") >= dt.date(2025, 1, 1),
                          pl.col("point_type") == "special_cause_improvement")
    assert improved.height >= 3
    inequalities = store.read_frame(engine, "inequalities")
    assert {"absolute_gap", "sii", "gap_direction"} <= set(inequalities.columns)
    assert inequalities.filter(pl.col("metric_id") == "breast_screening_coverage")["absolute_gap"].max() < 0
