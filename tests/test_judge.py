"""Judgements on hand-built value frames: comparisons read through polarity, targets, SPC wiring,
inequality gaps and the scorecard — each expected answer reasoned out by hand."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from conftest import DEFINITIONS
from metrics.definitions import load_catalogue
from metrics.judge import compare_with_benchmark, inequality_indices, judge

CATALOGUE = load_catalogue(DEFINITIONS)


@pytest.mark.parametrize(("lower", "upper", "benchmark", "polarity", "expected"), [
    (80, 90, 70, "higher_is_better", "better"),     # whole CI above the benchmark
    (80, 90, 95, "higher_is_better", "worse"),
    (80, 90, 85, "higher_is_better", "similar"),    # CI includes it
    (80, 90, 90, "higher_is_better", "similar"),    # on the limit: not excluded
    (80, 90, 70, "lower_is_better", "worse"),
    (80, 90, 95, "lower_is_better", "better"),
    (80, 90, 70, "neutral", "higher"),
    (80, 90, 95, "neutral", "lower"),
    (None, 90, 70, "higher_is_better", "not_compared"),
])
def test_benchmark_comparison_through_polarity(lower, upper, benchmark, polarity, expected):
    frame = pl.DataFrame({"lo": [lower], "hi": [upper], "b": [benchmark], "p": [polarity]},
                         schema={"lo": pl.Float64, "hi": pl.Float64, "b": pl.Float64, "p": pl.String})
    result = frame.select(compare_with_benchmark(pl.col("lo"), pl.col("hi"), pl.col("b"), pl.col("p"))).item()
    assert result == expected


def _values(metric: str, place: str, values: list[float], *, breakdown="overall", group=None, half_width=1.0,
            start=dt.date(2023, 4, 1), denominator=1000.0) -> pl.DataFrame:
    months = pl.date_range(start, start.replace(year=start.year + 5), "1mo", eager=True)[: len(values)]
    return pl.DataFrame({
        "metric_id": metric, "metric_version": 1, "place": place, "period_type": "month",
        "period_start": months, "period_end": months.dt.month_end(), "breakdown": breakdown,
        "group": group or place, "numerator": [v * 10 for v in values], "denominator": denominator,
        "value": values, "lower_95": [v - half_width for v in values], "upper_95": [v + half_width for v in values],
        "lower_99_8": [v - 1.6 * half_width for v in values], "upper_99_8": [v + 1.6 * half_width for v in values],
    })


def test_spc_reads_improvement_through_polarity():
    # 12 stable months then 8 clearly lower: for mean delay (lower is better) that is improvement,
    # for the share on the ready date (higher is better) it is concern.
    series = [5.0, 5.2, 4.9, 5.1, 5.0, 4.8, 5.2, 5.1, 4.9, 5.0, 5.1, 5.0] + [3.0] * 8
    frame = pl.concat([_values("mean_discharge_delay_days", "Dudley", series),
                       _values("discharged_on_ready_date", "Dudley", [v * 18 for v in series])])
    spc = judge(frame, CATALOGUE)["spc"]
    last = spc.filter(pl.col("period_start") == spc["period_start"].max())
    types = dict(zip(last["metric_id"], last["point_type"], strict=True))
    assert types == {"mean_discharge_delay_days": "special_cause_improvement",
                     "discharged_on_ready_date": "special_cause_concern"}
    icons = dict(zip(last["metric_id"], last["variation_icon"], strict=True))
    assert icons == {"mean_discharge_delay_days": "improvement_low", "discharged_on_ready_date": "concern_low"}


def test_target_comparison_and_assurance():
    # Steady around 95 with small variation: limits well above the 90% target → consistently passing.
    steady = [95.0, 95.5, 94.5, 95.2, 94.8, 95.1, 94.9, 95.3, 94.7, 95.0, 95.4, 94.6, 95.0, 95.1]
    frame = pl.concat([_values("discharged_on_ready_date", "Dudley", steady, half_width=0.5),
                       _values("discharged_on_ready_date", "Walsall", [v - 10 for v in steady], half_width=0.5)])
    judged = judge(frame, CATALOGUE)
    card = {r["place"]: r for r in judged["scorecard"].iter_rows(named=True)}
    assert card["Dudley"]["assurance_icon"] == "consistent_pass" and card["Dudley"]["target_met"] is True
    assert card["Walsall"]["assurance_icon"] == "consistent_fail" and card["Walsall"]["target_met"] is False
    assert card["Dudley"]["target_comparison_95"] == "better"   # CI (94.5, 95.5) clear above 90
    assert card["Walsall"]["target_comparison_95"] == "worse"
    # Each place against the other: Dudley's CI excludes Walsall's value, higher is better.
    assert (card["Dudley"]["other_place"], card["Dudley"]["vs_other_place"]) == ("Walsall", "better")
    assert card["Walsall"]["vs_other_place"] == "worse"
    assert card["Dudley"]["trial_limits"] is False and card["Dudley"]["value"] == 95.1


def test_places_are_paired_only_for_a_partnership(monkeypatch):
    """Each place is compared with each other place while there are few (a partnership); with more
    than ``PAIRED_PLACES_MAX`` the pairs (the square of the places) are skipped, and targets and
    benchmarks are still judged."""
    from metrics import judge as judge_module

    steady = [95.0, 95.5, 94.5, 95.2, 94.8, 95.1, 94.9, 95.3, 94.7, 95.0, 95.4, 94.6, 95.0, 95.1]
    frame = pl.concat([_values("discharged_on_ready_date", place, [v - i for v in steady], half_width=0.5)
                       for i, place in enumerate(["Dudley", "Walsall", "Sandwell"])])
    paired = judge(frame, CATALOGUE)["comparisons"]
    others = paired.filter(~pl.col("benchmark").is_in(["target", "England"]))
    assert others.height == 3 * 2 * len(steady)  # every place against each of the other two, every month
    monkeypatch.setattr(judge_module, "PAIRED_PLACES_MAX", 2)
    judged = judge(frame, CATALOGUE)
    assert set(judged["comparisons"]["benchmark"]) == {"target"}
    assert judged["comparisons"].height == 3 * len(steady)
    card = judged["scorecard"]
    assert card["other_place"].null_count() == card.height == 3
    assert card["target_met"].to_list() == [True, True, True]


def test_inequality_gap_by_hand():
    quintile_values = {"1": 60.0, "2": 64.0, "3": 68.0, "4": 72.0, "5": 76.0}
    frames = [_values("breast_screening_coverage", "Dudley", [v] * 3, breakdown="imd_quintile", group=g,
                      half_width=2.0) for g, v in quintile_values.items()]
    frame = pl.concat(frames).with_columns(pl.lit("snapshot").alias("period_type"))
    inequalities = judge(frame, CATALOGUE)["inequalities"]
    row = inequalities.row(0, named=True)
    assert row["absolute_gap"] == -16.0 and row["relative_gap"] == pytest.approx(60 / 76)
    # Standard errors from the 95% half-widths (2.0 / 1.96 each): gap ± 1.96·√(2·se²) = ± 2√2.
    assert row["absolute_gap_upper_95"] - row["absolute_gap"] == pytest.approx(2 * 2 ** 0.5)
    # Values rise evenly by 4 points a quintile with equal populations: the slope across the whole
    # deprivation range is 5 × 4 = 20 points (least minus most deprived), and positive.
    assert row["sii"] == pytest.approx(20.0, rel=1e-9)
    assert row["sii_lower_95"] < 20 < row["sii_upper_95"]
    assert inequalities["gap_direction"].to_list() == ["no significant change"] * 3


def test_carried_periods_keep_their_sii_and_the_result_equals_judging_afresh():
    """An incremental refresh passes the earlier run's frames and the periods whose values it
    carried: their SII is reused, the rest simulated — and everything equals a fresh judgement."""
    from polars.testing import assert_frame_equal

    def quintiles(shift: float) -> pl.DataFrame:
        return pl.concat([_values("breast_screening_coverage", place, [v + i * 0.7 + shift for i in range(6)],
                                  breakdown="imd_quintile", group=g, half_width=2.0)
                          for place in ("Dudley", "Walsall")
                          for g, v in {"1": 60.0, "2": 63.0, "3": 69.0, "4": 70.0, "5": 77.0}.items()]
                         ).with_columns(pl.lit("snapshot").alias("period_type"))

    before = quintiles(0.0)
    earlier = judge(before, CATALOGUE)
    # Months 5 and 6 change; months 1-4 are carried (same values).
    changed = before["period_start"].unique().sort()[4:]
    after = pl.concat([before.filter(~pl.col("period_start").is_in(changed.implode())),
                       quintiles(3.0).filter(pl.col("period_start").is_in(changed.implode()))])
    carried = (before.filter(~pl.col("period_start").is_in(changed.implode()))
               .select("metric_id", "period_type", "period_start", "period_end").unique())
    fresh = judge(after, CATALOGUE)
    reused = judge(after, CATALOGUE, earlier={"inequalities": earlier["inequalities"]}, unchanged_periods=carried)
    for name in ("inequalities", "spc", "scorecard"):
        assert_frame_equal(reused[name], fresh[name], check_exact=True)
    assert fresh["inequalities"].height == 12 and fresh["inequalities"]["sii"].null_count() == 0
    # The reuse is real: a deliberately wrong earlier SII for a carried period shows through.
    doctored = earlier["inequalities"].with_columns(pl.col("sii") + 100)
    wrong = judge(after, CATALOGUE, earlier={"inequalities": doctored}, unchanged_periods=carried)["inequalities"]
    moved = wrong.join(fresh["inequalities"], on=["place", "period_start"]).filter(pl.col("sii") != pl.col("sii_right"))
    assert sorted(moved["period_start"].unique()) == sorted(carried["period_start"])


def test_sii_simulated_ahead_for_parts_of_the_values_equal_judging_them_all_at_once():
    """A refresh works out each source's SIIs (``inequality_indices``) while the next source loads
    and hands them to ``judge``: the judgements are exactly those of judging everything at once."""
    from polars.testing import assert_frame_equal

    def quintiles(metric: str, period_type: str, base: float) -> pl.DataFrame:
        return pl.concat([_values(metric, place, [base + q * 3.0 + i * 0.5 for i in range(4)],
                                  breakdown="imd_quintile", group=str(q), half_width=2.0)
                          for place in ("Dudley", "Walsall") for q in range(1, 6)]
                         ).with_columns(pl.lit(period_type).alias("period_type"))

    breast = quintiles("breast_screening_coverage", "snapshot", 60.0)
    discharge = quintiles("discharged_on_ready_date", "month", 40.0)
    everything = pl.concat([breast, discharge])
    at_once = judge(everything, CATALOGUE)
    ahead = [inequality_indices(part, CATALOGUE) for part in (breast, discharge)]
    assert [frame.height for frame in ahead] == [8, 8]  # 2 places × 4 periods each
    given = judge(everything, CATALOGUE, indices=ahead)
    partly = judge(everything, CATALOGUE, indices=ahead[:1])  # the other metric's are simulated here
    for name in ("inequalities", "spc", "comparisons", "scorecard"):
        assert_frame_equal(given[name], at_once[name], check_exact=True)
        assert_frame_equal(partly[name], at_once[name], check_exact=True)
    # The indices given are the ones used (not simulated again): a doctored one shows through.
    doctored = [ahead[0].with_columns(pl.col("sii") + 100), ahead[1]]
    used = judge(everything, CATALOGUE, indices=doctored)["inequalities"]
    moved = used.join(at_once["inequalities"], on=["metric_id", "place", "period_start"])
    assert (moved.filter(pl.col("sii") != pl.col("sii_right"))["metric_id"].unique().to_list()
            == ["breast_screening_coverage"])


def test_scorecard_has_one_row_per_metric_and_place(published, engine):
    import store

    values = store.read_values(engine).drop("run_id")
    card = judge(values, CATALOGUE)["scorecard"]
    assert card.select("metric_id", "place").unique().height == card.height == 14
    latest = card.filter(pl.col("metric_id") == "discharged_on_ready_date", pl.col("place") == "Dudley").row(0, named=True)
    assert latest["period_start"] == dt.date(2024, 6, 1) and latest["value"] == 0.0
    assert latest["trial_limits"] is True  # three months: trial limits only
