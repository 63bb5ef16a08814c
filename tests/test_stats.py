"""Tests for metrics.stats against the PHEindicatormethods / PHStatsMethods reference values.

Closed-form methods (Wilson, exact Poisson / Byar, Student's t means, DSR, ISR) are compared to
the reference with a relative tolerance of 1e-9 (absolute 1e-12 for values at zero). Simulated
confidence limits (SII) are compared with the tolerance stated at their test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from metrics import stats
from metrics.stats import mean_ci, mean_ci_from_moments, proportion_ci, rate_ci

REF = Path(__file__).parent / "reference" / "phe_methods"
REL = 1e-9
ABS = 1e-12


def ref(name: str) -> pl.DataFrame:
    return pl.read_csv(REF / name, infer_schema_length=None)


def assert_close(actual, expected, *, rel: float = REL, abs_: float = ABS, what: str = "") -> None:
    """Element-wise closeness; null/NaN expected means null actual."""
    actual, expected = list(actual), list(expected)
    assert len(actual) == len(expected), what
    for i, (a, e) in enumerate(zip(actual, expected)):
        if e is None or (isinstance(e, float) and math.isnan(e)):
            assert a is None, f"{what}[{i}]: expected null, got {a}"
        else:
            assert a is not None, f"{what}[{i}]: expected {e}, got null"
            assert a == pytest.approx(e, rel=rel, abs=abs_), f"{what}[{i}]"


REF_CI_COLS = {
    "lower_95": "lower_95_ci",
    "upper_95": "upper_95_ci",
    "lower_99_8": "lower_99_8_ci",
    "upper_99_8": "upper_99_8_ci",
}


def assert_matches_reference(out: pl.DataFrame, expected: pl.DataFrame, *, value_col="Value", **kw):
    assert_close(out["value"], expected[value_col], what="value", **kw)
    for ours, theirs in REF_CI_COLS.items():
        if theirs in expected.columns:
            assert_close(out[ours], expected[theirs], what=ours, **kw)


# ------------------------------------------------------------------------------------ helpers


def test_ci_suffix():
    assert stats.ci_suffix(0.95) == "95"
    assert stats.ci_suffix(0.998) == "99_8"
    assert stats.ci_suffix(0.9) == "90"
    assert stats.ci_suffix(0.999) == "99_9"


def test_z_values_of_design():
    assert stats._z(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert stats._z(0.998) == pytest.approx(3.090232, abs=1e-6)


def test_bad_confidence_raises_early():
    df = pl.DataFrame({"x": [1], "n": [2]})
    with pytest.raises(ValueError):
        proportion_ci(df, "x", "n", confidence=1.5)
    with pytest.raises(ValueError):
        proportion_ci(df, "x", "n", confidence=())


# -------------------------------------------------------------------------------- proportions


@pytest.mark.parametrize("multiplier", [1, 100])
def test_proportion_reference(multiplier):
    data = ref("testdata_Proportion__testdata_Prop.csv").filter(pl.col("multiplier") == multiplier)
    if multiplier == 100:  # the NA rows are listed once, with multiplier 1
        data = pl.concat([data, ref("testdata_Proportion__testdata_Prop.csv").tail(3)])
        data = data.with_columns(
            [pl.when(pl.col("Numerator").is_null() | pl.col("Denominator").is_null()).then(None)
             .otherwise(pl.col(c)).alias(c) for c in ["Value", *REF_CI_COLS.values()]]
        )  # fmt: skip
    out = proportion_ci(data, "Numerator", "Denominator", multiplier=multiplier)
    assert_matches_reference(out, data)
    assert out.filter(pl.col("Numerator").is_null() | pl.col("Denominator").is_null())[
        "ci_note"
    ].null_count() == 0


def test_proportion_reference_grouped():
    """Prop_g: the Prop inputs doubled, aggregated by area (null-propagating sums)."""
    data = ref("testdata_Proportion__testdata_Prop.csv").filter(pl.col("multiplier") == 1)
    expected = ref("testdata_Proportion__testdata_Prop_g.csv")
    doubled = pl.concat([data, data]).group_by("Area", maintain_order=True).agg(
        [pl.when(pl.col(c).null_count() > 0).then(None).otherwise(pl.col(c).sum()).alias(c)
         for c in ["Numerator", "Denominator"]]
    )  # fmt: skip
    out = proportion_ci(doubled, "Numerator", "Denominator", multiplier=1, confidence=0.95)
    assert out["Area"].to_list() == expected["Area"].to_list()
    assert_matches_reference(out, expected)


def test_wilson_helper_reference():
    data = ref("testdata_Byars_Wilson.csv").filter(pl.col("method") == "Wilson")
    for conf, level in [("95%", 0.95), ("99.8%", 0.998)]:
        d = data.filter(pl.col("confidence") == conf)
        out = proportion_ci(d, "x", "n", multiplier=1, confidence=level)
        sfx = stats.ci_suffix(level)
        assert_close(out[f"lower_{sfx}"], d["lowercl"], what=f"lower {conf}")
        assert_close(out[f"upper_{sfx}"], d["uppercl"], what=f"upper {conf}")


def test_proportion_edges_exact():
    df = pl.DataFrame({"x": [0.0, 7.0, 0.0], "n": [7.0, 7.0, 1e9]})
    out = proportion_ci(df, "x", "n", multiplier=100)
    assert out["lower_95"].to_list()[0] == 0.0
    assert out["lower_99_8"].to_list()[2] == 0.0
    assert out["upper_95"].to_list()[1] == 100.0
    assert out["upper_99_8"].to_list()[1] == 100.0
    assert out["ci_note"].null_count() == 3


def test_proportion_invalid_rows():
    df = pl.DataFrame({"x": [5, 5, -1, 11, None, 3], "n": [0, -2, 10, 10, 10, None]})
    out = proportion_ci(df, "x", "n")
    assert out["ci_note"].to_list() == [
        "denominator must be > 0",
        "denominator must be > 0",
        "negative count",
        "numerator > denominator",
        "numerator is null",
        "denominator is null",
    ]
    for c in ["value", "lower_95", "upper_95", "lower_99_8", "upper_99_8"]:
        assert out[c].null_count() == 6


def test_proportion_accepts_expressions_and_single_level():
    df = pl.DataFrame({"a": [30], "b": [70]})
    out = proportion_ci(df, pl.col("a"), pl.col("a") + pl.col("b"), confidence=0.9, multiplier=1)
    assert out.columns == ["a", "b", "value", "lower_90", "upper_90", "ci_note"]
    assert out["value"][0] == pytest.approx(0.3)


# -------------------------------------------------------------------------------------- rates


@pytest.mark.parametrize("multiplier", [100, 100_000])
def test_rate_reference(multiplier):
    data = ref("testdata_Rate__testdata_Rate.csv").filter(pl.col("Multiplier") == multiplier)
    out = rate_ci(data, "Numerator", "Denominator", multiplier=multiplier)
    assert_matches_reference(out, data)


def test_rate_reference_grouped():
    data = ref("testdata_Rate__testdata_Rate.csv").filter(pl.col("Multiplier") == 100_000)
    expected = ref("testdata_Rate__testdata_Rate_g.csv")
    # Rate_g doubles every area except Area12, which appears once.
    doubled = pl.concat([data, data.filter(pl.col("Area") != "Area12")])
    grouped = doubled.group_by("Area", maintain_order=True).agg(
        [pl.when(pl.col(c).null_count() > 0).then(None).otherwise(pl.col(c).sum()).alias(c)
         for c in ["Numerator", "Denominator"]]
    )  # fmt: skip
    out = rate_ci(grouped, "Numerator", "Denominator", confidence=0.95)
    assert out["Area"].to_list() == expected["Area"].to_list()
    assert_matches_reference(out, expected)


def test_byar_helper_reference():
    """Byar limits of a count alone (no population). The 99.8% lower limit for x = 1 is blank in
    the reference (Byar's cube goes negative there); our rates use exact limits below 10, so that
    cell is not applicable and is skipped."""
    data = ref("testdata_Byars_Wilson.csv").filter(pl.col("method") == "Byars")
    for conf, level in [("95%", 0.95), ("99.8%", 0.998)]:
        d = data.filter(pl.col("confidence") == conf)
        z = stats._z(level)
        out = d.select(
            stats._byar_lower(pl.col("x"), z).alias("lo"), stats._byar_upper(pl.col("x"), z).alias("hi")
        )
        keep = d["lowercl"].is_not_null()
        assert_close(out["lo"].filter(keep), d["lowercl"].filter(keep), what=f"byar lower {conf}")
        assert_close(out["hi"], d["uppercl"], what=f"byar upper {conf}")


def test_rate_zero_count():
    out = rate_ci(pl.DataFrame({"x": [0], "n": [1000]}), "x", "n", multiplier=100_000)
    assert out["value"][0] == 0.0
    assert out["lower_95"][0] == 0.0 and out["lower_99_8"][0] == 0.0
    assert out["upper_95"][0] == pytest.approx(3.688879454113936 / 1000 * 100_000, rel=REL)
    assert out["ci_note"][0] is None


def test_rate_exact_below_ten_byar_from_ten():
    from scipy.stats import chi2, norm

    df = pl.DataFrame({"x": [9, 10], "n": [100, 100]})
    out = rate_ci(df, "x", "n", multiplier=1, confidence=0.95)
    assert out["lower_95"][0] == pytest.approx(chi2.ppf(0.025, 18) / 2 / 100, rel=REL)
    assert out["upper_95"][0] == pytest.approx(chi2.ppf(0.975, 20) / 2 / 100, rel=REL)
    z = norm.ppf(0.975)
    assert out["lower_95"][1] == pytest.approx(10 * (1 - 1 / 90 - z / (3 * 10**0.5)) ** 3 / 100, rel=REL)


def test_quantiles_are_scipy_stats_own():
    """The normal, chi-squared and Student's t quantiles come from scipy.special (importing
    scipy.stats costs 0.8 s); they are the functions scipy.stats' ppf calls, so every value is
    the same to the last bit, for every count and level the engine uses."""
    from scipy.stats import chi2, norm, t

    for c in (0.8, 0.9, 0.95, 0.99, 0.998, 0.999):
        assert stats._z(c) == norm.ppf(1 - (1 - c) / 2)
        counts = np.arange(0.0, 10.0)
        lower = np.where(counts > 0, chi2.ppf((1 - c) / 2, 2 * np.where(counts > 0, counts, 1)) / 2, 0.0)
        assert np.array_equal(stats._exact_poisson(counts, c, "lower"), lower)
        assert np.array_equal(stats._exact_poisson(counts, c, "upper"), chi2.ppf((1 + c) / 2, 2 * counts + 2) / 2)
        sizes = np.array([2.0, 3, 5, 10, 31, 100, 1_000, 100_000, 10**7])
        q = 1 - (1 - c) / 2
        assert np.array_equal(stats._t_quantile(sizes, q), t.ppf(q, sizes - 1))
    # (Counts that take no exact limit or quantile stay missing, as before.)
    assert np.isnan(stats._exact_poisson(np.array([10.0, -1.0, np.nan]), 0.95, "upper")).all()
    assert np.isnan(stats._t_quantile(np.array([1.0, 0.0, np.nan]), 0.975)).all()


def test_rate_invalid_rows():
    df = pl.DataFrame({"x": [1, -1, None, 3, 250], "n": [0, 10, 10, None, 220]})
    out = rate_ci(df, "x", "n")
    assert out["ci_note"].to_list() == [
        "denominator must be > 0",
        "negative count",
        "count is null",
        "population is null",
        None,  # more events than people is a valid rate
    ]
    assert out["value"].null_count() == 4 and out["upper_99_8"].null_count() == 4


# -------------------------------------------------------------------------------------- means


def test_mean_reference_grouped_and_whole():
    data = ref("testdata_Mean__testdata_Mean.csv").filter(pl.col("values").is_not_null())
    expected = ref("testdata_Mean__testdata_Mean_results.csv")
    out = mean_ci(data, "values", by="area")
    exp = expected.head(2)
    assert out["area"].to_list() == exp["area"].to_list()
    assert_matches_reference(out, exp)
    for c in ["value_sum", "value_count", "stdev"]:
        assert_close(out[c], exp[c], what=c)
    whole = mean_ci(data, "values")
    assert_matches_reference(whole, expected.tail(1))
    assert_close(whole["stdev"], expected.tail(1)["stdev"], what="stdev")


def test_mean_reference_with_missing_value():
    """A null value in a group nulls that group (PHStatsMethods' NA sheet, first two rows; its
    'No grouping' row mixes complete and incomplete results and is not used)."""
    data = ref("testdata_Mean__testdata_Mean.csv")
    exp = ref("testdata_Mean__testdata_Mean_results_NA.csv").head(2)
    out = mean_ci(data, "values", by="area")
    assert_matches_reference(out, exp)
    for c in ["value_sum", "value_count", "stdev"]:
        assert_close(out[c], exp[c], what=c)
    assert out["ci_note"].to_list() == ["missing values in group", None]


def test_mean_from_moments_agrees_with_mean_ci():
    data = ref("testdata_Mean__testdata_Mean.csv").filter(pl.col("values").is_not_null())
    direct = mean_ci(data, "values", by="area")
    # partials at a finer grain (chunks of 3 rows), rolled up, then finished
    parts = (
        data.with_row_index("i")
        .group_by("area", pl.col("i") // 3)
        .agg(s=pl.col("values").sum(), ss=(pl.col("values") ** 2).sum(), n=pl.len())
        .group_by("area", maintain_order=True)
        .agg(pl.col("s", "ss", "n").sum())
        .sort("area")
    )
    rolled = mean_ci_from_moments(parts, "s", "ss", "n")
    direct = direct.sort("area")
    for c in ["value", "stdev", "lower_95", "upper_95", "lower_99_8", "upper_99_8"]:
        assert_close(rolled[c], direct[c], what=c)
    exp = ref("testdata_Mean__testdata_Mean_results.csv").head(2)
    assert_matches_reference(rolled, exp)


def test_mean_small_groups():
    df = pl.DataFrame({"g": ["a", "b", "b"], "v": [5.0, 1.0, 1.0]})
    out = mean_ci(df, "v", by="g")
    assert out["value"].to_list() == [5.0, 1.0]
    assert out["ci_note"].to_list() == ["count below 2: no CI for a mean", None]
    assert out["lower_95"].to_list() == [None, 1.0]  # zero spread: limits equal the mean
    mom = mean_ci_from_moments(pl.DataFrame({"s": [5.0, 0.0], "ss": [25.0, 0.0], "n": [1, 0]}), "s", "ss", "n")
    assert mom["value"].to_list() == [5.0, None]
    assert mom["ci_note"].to_list() == ["count below 2: no CI for a mean", "no values"]
    assert mom["upper_99_8"].to_list() == [None, None]


def test_mean_multiple_by_and_expressions():
    df = pl.DataFrame({"a": [1, 1, 2, 2], "b": ["x", "x", "y", "y"], "v": [1, 3, 10, 20]})
    out = mean_ci(df, pl.col("v") * 2, by=["a", pl.col("b")], confidence=0.9)
    assert out.columns[:2] == ["a", "b"]
    assert out["value"].to_list() == [4.0, 30.0]
    assert "lower_90" in out.columns



# ---------------------------------------------------------------------------------------- DSR


def dsr_input(name: str) -> pl.DataFrame:
    """Reference DSR/ISR input. Its 12th band is labelled "55-69" (a typo for 55-59 in the
    upstream workbook, matched there by position); fix the label so ESP 2013 matches by band."""
    return ref(name).with_columns(pl.col(pl.String).replace("55-69", "55-59"))


def dsr_expected(area: str, per: int) -> pl.DataFrame:
    return ref("testdata_DSR_ISR__testresults_DSR.csv").filter(
        (pl.col("area") == area) & pl.col("statistic").str.ends_with(f"per {per}")
        | (pl.col("area") == area) & pl.col("Value").is_null()
    ).head(1)


@pytest.mark.parametrize("per", [10_000, 100_000])
def test_dsr_reference_multiarea(per):
    data = dsr_input("testdata_DSR_ISR__testdata_multiarea.csv")
    # PHEindicatormethods counts a missing count as zero (testdata_tiny has one); we return null
    # for missing inputs, so the test fills it as PHE does.
    out = stats.dsr(data.with_columns(pl.col("count").fill_null(0)), "count", "pop",
                    age_band="ageband", by="area", multiplier=per)  # fmt: skip
    assert out["area"].to_list() == ["testdata_big", "testdata_small", "testdata_tiny"]
    exp = pl.concat([dsr_expected(a, per) for a in out["area"]])
    assert_matches_reference(out, exp)
    assert_close(out["total_count"], exp["Total Count"], what="total_count")
    assert_close(out["total_pop"], exp["Total Pop"], what="total_pop")
    assert out["ci_note"].to_list() == [None, None, "fewer than 10 events: DSR not calculated"]
    # without filling, the missing count is reported instead
    raw = stats.dsr(data, "count", "pop", age_band="ageband", by="area", multiplier=per)
    assert raw["ci_note"].to_list() == [None, None, "count is null"]


@pytest.mark.parametrize("per", [10_000, 100_000])
def test_dsr_reference_1976_standard(per):
    """Standard as a column (ESP 1976, 18 bands, one row per band, no age_band). The reference's
    99.8% limits for these rows are ten times too large (known defect): only the value and the
    95% limits are compared."""
    data = ref("testdata_DSR_ISR__testdata_1976.csv")
    out = stats.dsr(data, "count", "pop", standard="esp1976", multiplier=per)
    exp = dsr_expected("testdata_1976", per)
    assert_close(out["value"], exp["Value"], what="value")
    assert_close(out["lower_95"], exp["lower_95_ci"], what="lower_95")
    assert_close(out["upper_95"], exp["upper_95_ci"], what="upper_95")
    assert_close(out["total_count"], exp["Total Count"])
    # the recomputed 99.8% limits are a tenth of the published (defective) cells
    assert_close(out["lower_99_8"], exp["lower_99_8_ci"] / 10, rel=1e-9)
    # the same result with an expression, and with the standard given as a mapping
    by_expr = stats.dsr(data, pl.col("count"), "pop", standard=pl.col("esp1976"), multiplier=per)
    assert_frame_equal(by_expr, out)
    mapping = dict(zip(data["Age Band"], data["esp1976"]))
    by_map = stats.dsr(data, "count", "pop", age_band="Age Band", standard=mapping, multiplier=per)
    assert_frame_equal(by_map, out)


def test_dsr_multigroup_matches_multiarea():
    multi = dsr_input("testdata_DSR_ISR__testdata_multigroup.csv")
    out = stats.dsr(multi, "count", "pop", age_band="ageband", by=["area", "year"], multiplier=100_000)
    assert out.columns[:2] == ["area", "year"] and out.height == 6
    ref2015 = stats.dsr(dsr_input("testdata_DSR_ISR__testdata_multiarea.csv").fill_null(0),
                        "count", "pop", age_band="ageband", by="area")  # fmt: skip
    got = out.filter(pl.col("year") == 2015).drop("year")
    assert_close(got["value"], ref2015["value"])
    assert_close(got["upper_99_8"], ref2015["upper_99_8"])
    assert out.filter(pl.col("area") == "testdata_tiny")["ci_note"].to_list() == [
        "fewer than 10 events: DSR not calculated",
        None,
    ]


def test_dsr_band_lower_bounds_and_lazy():
    data = dsr_input("testdata_DSR_ISR__testdata_multiarea.csv").fill_null(0)
    by_label = stats.dsr(data, "count", "pop", age_band="ageband", by="area")
    lower = data.with_columns(pl.col("ageband").str.extract(r"^(\d+)").cast(pl.Int64))
    by_int = stats.dsr(lower, "count", "pop", age_band="ageband", by="area")
    assert_frame_equal(by_int, by_label)
    lazy = stats.dsr(data.lazy(), "count", "pop", age_band="ageband", by="area")
    assert isinstance(lazy, pl.LazyFrame)
    assert_frame_equal(lazy.collect(), by_label)


def test_dsr_partials_roll_up():
    """Rows repeating a group and band are partial sums and are added together."""
    data = dsr_input("testdata_DSR_ISR__testdata_multiarea.csv").fill_null(0)
    half = data.with_columns(pl.col("count") / 2, pl.col("pop") / 2)
    out = stats.dsr(pl.concat([half, half]), "count", "pop", age_band="ageband", by="area")
    assert_close(out["value"], stats.dsr(data, "count", "pop", age_band="ageband", by="area")["value"])


def test_dsr_groups_with_and_without_repeated_bands():
    """Groups whose rows are their bands and groups that repeat a band (partial sums, a band
    written with spaces, an unknown band) side by side, with a null key: each group is as alone."""
    data = dsr_input("testdata_DSR_ISR__testdata_multiarea.csv").fill_null(0)
    data = data.with_columns(pl.col("count", "pop").cast(pl.Float64))
    big = data.filter(pl.col("area") == "testdata_big")
    half = big.with_columns(pl.col("count") / 2, pl.col("pop") / 2, area=pl.lit("halves"))
    spaced = big.with_columns(area=pl.lit("spaced"), ageband=pl.col("ageband").str.replace("-", " - "))
    mixed = pl.concat([
        big.with_columns(area=pl.lit(None, pl.String)),
        half.head(10), data.filter(pl.col("area") == "testdata_small"), half.tail(9), half,
        spaced, big.with_columns(area=pl.lit("spaced")).head(3),
        big.with_columns(area=pl.lit("unknown")), big.with_columns(area=pl.lit("unknown"), ageband=pl.lit("95+")),
    ])  # fmt: skip
    out = stats.dsr(mixed, "count", "pop", age_band="ageband", by="area")
    assert out["area"].to_list() == [None, "halves", "testdata_small", "spaced", "unknown"]
    for area in out["area"]:
        rows = mixed.filter(pl.col("area").eq_missing(area))
        alone = stats.dsr(rows, "count", "pop", age_band="ageband")
        got = out.filter(pl.col("area").eq_missing(area)).drop("area")
        assert got["ci_note"].to_list() == alone["ci_note"].to_list()
        for c in ["total_count", "total_pop", "value", *LIMITS]:
            assert_close(got[c], alone[c], rel=1e-12, what=f"{area} {c}")
    whole = stats.dsr(data, "count", "pop", age_band="ageband", by="area")["value"][0]
    assert out["value"][1] == pytest.approx(whole, rel=1e-12)  # the halves add up to the area
    assert out["ci_note"][4] == "age band not in the standard"
    assert_frame_equal(stats.dsr(mixed.lazy(), "count", "pop", age_band="ageband", by="area").collect(), out)


def test_dsr_lower_limit_can_be_negative():
    """Dobson limits are not clipped (nor are PHEindicatormethods'): a rate from few events in a
    small population can put DSR − √(var/O)·(O − Byar lower) below 0."""
    df = pl.DataFrame({"g": ["g0", "g0"], "band": ["0-4", "5-9"], "x": [1, 9], "n": [1, 7]})
    out = stats.dsr(df, "x", "n", age_band="band", by="g")
    w, x, n = np.array([5000.0, 5500.0]), np.array([1.0, 9.0]), np.array([1.0, 7.0])
    value = (x * w / n).sum() / w.sum()
    var = (x * (w / n) ** 2).sum() / w.sum() ** 2
    z, O = stats._z(0.998), x.sum()
    lower = value + np.sqrt(var / O) * (O * (1 - 1 / (9 * O) - z / (3 * np.sqrt(O))) ** 3 - O)
    assert out["value"][0] == pytest.approx(value * 100_000, rel=REL)
    assert out["lower_99_8"][0] == pytest.approx(lower * 100_000, rel=REL)
    assert out["lower_99_8"][0] < 0 and out["ci_note"][0] is None


def test_dsr_invalid_inputs():
    err1 = dsr_input("testdata_DSR_ISR__testdata_err1.csv")
    assert stats.dsr(err1, "count", "pop", standard="stdpop")["ci_note"].to_list() == ["negative count"]
    err3 = dsr_input("testdata_DSR_ISR__testdata_err3.csv")
    assert stats.dsr(err3, "count", "pop", age_band="Age Band")["ci_note"].to_list() == [
        "denominator must be > 0"
    ]
    err2 = dsr_input("testdata_DSR_ISR__testdata_err2.csv")
    out = stats.dsr(err2, "count", "pop", age_band="ageband", by="area")
    assert out["ci_note"].to_list() == ["denominator must be > 0", None]
    assert out["value"].to_list()[0] is None and out["value"].to_list()[1] is not None
    bad_band = err2.filter(pl.col("area") == "Area2").with_columns(pl.col("ageband").replace("90+", "95+"))
    assert stats.dsr(bad_band, "count", "pop", age_band="ageband")["ci_note"].to_list() == [
        "age band not in the standard"
    ]


def test_dsr_age_restricted_standard():
    """An indicator for ages 65+ uses only bands 65-69 … 90+; Σw is over those bands."""
    bands = ["65-69", "70-74", "75-79", "80-84", "85-89", "90+"]
    df = pl.DataFrame({"band": bands, "x": [10, 20, 30, 40, 50, 60], "n": [1000] * 6})
    out = stats.dsr(df, "x", "n", age_band="band", confidence=0.95)
    w = np.array(stats.ESP2013[-6:], dtype=float)
    x = np.array([10, 20, 30, 40, 50, 60], dtype=float)
    assert out["value"][0] == pytest.approx((x * w / 1000).sum() / w.sum() * 100_000, rel=REL)


def test_dsr_non_independent_events():
    """PHEindicatormethods' calculate_dsr(independent_events = FALSE): events Σf·people, variance
    Σ f²·Σ people·(w/n)² / (Σw)². With every frequency 1 it reduces to the independent DSR."""
    data = dsr_input("testdata_DSR_ISR__testdata_multiarea.csv").fill_null(0).filter(
        pl.col("area") != "testdata_tiny"
    )
    indep = stats.dsr(data, "count", "pop", age_band="ageband", by="area")
    ones = stats.dsr(data.with_columns(f=pl.lit(1)), "count", "pop", age_band="ageband", by="area",
                     independent_events=False, event_frequency="f")  # fmt: skip
    assert_frame_equal(ones, indep)

    # the R documentation example's split: 10% of events in people with 3, 20% with 2, rest 1
    people = (
        data.with_columns(
            f3=(pl.col("count") * 0.1 / 3).floor(), f2=(pl.col("count") * 0.2 / 2).floor()
        )
        .with_columns(f1=pl.col("count") - 3 * pl.col("f3") - 2 * pl.col("f2"))
        .unpivot(["f1", "f2", "f3"], index=["area", "ageband", "pop"], variable_name="freq",
                 value_name="people")  # fmt: skip
        .with_columns(pl.col("freq").str.slice(1).cast(pl.Int64))
    )
    out = stats.dsr(people, "people", "pop", age_band="ageband", by="area",
                    independent_events=False, event_frequency="freq")  # fmt: skip
    assert_close(out["value"], indep["value"])  # same events, same rate
    assert_close(out["total_count"], indep["total_count"])
    assert (out["upper_95"] - out["lower_95"] > indep["upper_95"] - indep["lower_95"]).all()
    # hand computation of the adjusted limits for one area
    esp = dict(zip(stats.ESP2013_BANDS, stats.ESP2013))
    big = people.filter(pl.col("area") == "testdata_big")
    w = np.array([esp[b] for b in big["ageband"]], dtype=float)
    n, k, f = big["pop"].to_numpy(), big["people"].to_numpy(), big["freq"].to_numpy()
    var = (f**2 * k * (w / n) ** 2).sum() / (w.sum() / 3) ** 2  # each band's weight listed 3 times
    O = (f * k).sum()
    value = (f * k * w / n).sum() / (w.sum() / 3) * 100_000
    z = stats._z(0.95)
    byar_lo = O * (1 - 1 / (9 * O) - z / (3 * np.sqrt(O))) ** 3
    assert out["lower_95"][0] == pytest.approx(value + np.sqrt(var / O) * (byar_lo - O) * 100_000, rel=REL)
    # a population that differs between frequency rows of a band is reported
    broken = people.with_columns(
        pl.when((pl.col("freq") == 2) & (pl.col("ageband") == "0-4")).then(1).otherwise(pl.col("pop")).alias("pop")
    )
    notes = stats.dsr(broken, "people", "pop", age_band="ageband", by="area",
                      independent_events=False, event_frequency="freq")["ci_note"]  # fmt: skip
    assert notes.to_list() == ["population differs between event-frequency rows of a band"] * 2
    with pytest.raises(ValueError):
        stats.dsr(people, "people", "pop", by="area", independent_events=False, event_frequency="freq")


# ---------------------------------------------------------------------------------------- ISR

ISR_RESULTS = "testdata_DSR_ISR__testresults_ISR.csv"


def isr_expected(statistic: str, areas=("testdata_big", "testdata_small", "testdata_tiny")) -> pl.DataFrame:
    exp = ref(ISR_RESULTS).filter(pl.col("Statistic") == statistic)
    return pl.concat([exp.filter(pl.col("area") == a) for a in areas])


def isr_multiarea() -> pl.DataFrame:
    # PHEindicatormethods counts missing counts/populations as zero (na.zero); we return null for
    # missing inputs, so the test fills them as PHE does.
    return ref("testdata_DSR_ISR__testdata_multiarea_isr.csv").fill_null(0)


@pytest.mark.parametrize("multiplier", [1, 100])
def test_isr_ratio_reference(multiplier):
    out = stats.isr(isr_multiarea(), "count", "pop", "refcount", "refpop", by="area", multiplier=multiplier)
    exp = isr_expected(f"indirectly standardised ratio x {multiplier}")
    assert out["area"].to_list() == exp["area"].to_list()
    assert_matches_reference(out, exp)
    assert_close(out["observed"], exp["Observed"], what="observed")
    assert_close(out["expected"], exp["Expected"], what="expected")


@pytest.mark.parametrize("per", [1000, 100_000])
def test_isr_rate_reference(per):
    out = stats.isr_rate(isr_multiarea(), "count", "pop", "refcount", "refpop", by="area", multiplier=per)
    exp = isr_expected(f"indirectly standardised rate per {per}")
    assert_matches_reference(out, exp)
    assert_close(out["ref_rate"], exp["ref_rate"], what="ref_rate")


def test_isr_observed_totals_reference():
    data = isr_multiarea().drop("count")
    lookup = ref("testdata_DSR_ISR__testdata_multiarea_lookup.csv")
    out = stats.isr(data, "total_count", "pop", "refcount", "refpop", by="area", observed=lookup)
    assert_matches_reference(out, isr_expected("indirectly standardised ratio x 1"))


def test_isr_zero_population_band_reference():
    """Area1/Area2 rows: err2 data (a band with population 0) against the reference table."""
    data = ref("testdata_DSR_ISR__testdata_err2.csv").join(
        ref("testdata_DSR_ISR__refdata.csv"), left_on="ageband", right_on="Age Band", how="left"
    )
    for fn, stat, mult in [(stats.isr_rate, "indirectly standardised rate per 100000", 100_000),
                           (stats.isr, "indirectly standardised ratio x 100", 100)]:  # fmt: skip
        out = fn(data, "count", "pop", "refcount", "refpop", by="area", multiplier=mult, confidence=0.95)
        exp = isr_expected(stat, areas=("Area1", "Area2")).drop("lower_99_8_ci", "upper_99_8_ci")
        assert_matches_reference(out, exp)
        assert_close(out["expected"], exp["Expected"])


def test_isr_observed_totals_by_several_columns_reference():
    df = ref("testdata_ISR_obs__df.csv")
    obs = ref("testdata_ISR_obs__obs.csv")
    exp = ref("testdata_ISR_obs__obs_results.csv")
    keys = ["indicatorid", "year", "sex"]
    out = stats.isr(df.drop("obs"), "observed", "pop", "refcount", "refpop", by=keys, observed=obs,
                    confidence=0.95)  # fmt: skip
    joined = exp.join(out, on=keys, how="left")
    assert joined.height == 40
    assert_close(joined["value"], joined["Value"], what="value")
    assert_close(joined["lower_95"], joined["lower_95_ci"], what="lower")
    assert_close(joined["upper_95"], joined["upper_95_ci"], what="upper")
    assert_close(joined["expected_right"], joined["expected"], what="expected")

    # the same reference table given as vectors (isr_dummydata + isr_refdummydata): join by band
    dummy = ref("isr_dummydata.csv")
    refv = ref("isr_refdummydata.csv").with_columns(ageband=pl.int_range(0, 95, 5))
    out2 = stats.isr(dummy.join(refv, on="ageband", how="left"), "observed", "pop", "refcount",
                     "refpop", by=keys, observed=obs, confidence=0.95)  # fmt: skip
    assert_frame_equal(out2, out)


def test_isr_invalid_and_small():
    df = pl.DataFrame({"g": ["a", "a", "b", "c", "d"], "x": [3, 2, -1, 4, 0], "n": [100, 50, 10, 10, 0],
                       "xr": [10, 10, 10, 10, 10], "nr": [1000, 1000, 1000, 0, 1000]})  # fmt: skip
    out = stats.isr(df, "x", "n", "xr", "nr", by="g")
    assert out["ci_note"].to_list() == [
        None,
        "negative count",
        "reference population must be > 0",
        "expected must be > 0",
    ]
    from scipy.stats import chi2

    e = 150 * 10 / 1000
    assert out["lower_95"][0] == pytest.approx(chi2.ppf(0.025, 10) / 2 / e, rel=REL)
    assert out["upper_95"][0] == pytest.approx(chi2.ppf(0.975, 12) / 2 / e, rel=REL)



# ---------------------------------------------------------------------------------- quantiles

POLARITY = {"RAG - Low is good": True, "RAG - High is good": False, "True": True, "False": False}


def quantile_ref() -> pl.DataFrame:
    """phe_quantile's reference sheet. Its Polarity column holds RAG labels (low is good =
    inverted) or literal True/False; GroupSet says how the upstream test groups the rows
    (IndSexReg: by indicator and region, deciles; IndSex: by indicator, septiles; empty: the whole
    sheet, quartiles)."""
    return ref("testdata_Quantiles.csv").with_columns(
        pl.col("Polarity").replace_strict(POLARITY, return_dtype=pl.Boolean).alias("invert")
    )


def assert_quantiles(out: pl.DataFrame) -> None:
    assert out["quantile"].cast(pl.Float64).to_list() == out["QuantileInGrp"].to_list()


def test_quantile_reference_deciles_within_regions():
    data = quantile_ref().filter(pl.col("GroupSet") == "IndSexReg")
    out = stats.quantile(data, "Value", by=["IndSexRef", "ParentCode"], invert="invert")
    assert_quantiles(out)
    # groups with fewer than 10 values (and missing values) get null quantiles, with a note
    notes = out.filter(pl.col("quantile").is_null())["ci_note"].unique().sort().to_list()
    assert notes == ["fewer than 10 values in group: no quantiles", "value is null"]
    # one indicator with a constant invert, as a bool
    high_good = data.filter(pl.col("IndSexRef") == "90366Female")
    assert_quantiles(stats.quantile(high_good, "Value", by="ParentCode", invert=False))


def test_quantile_reference_septiles_and_quartiles():
    data = quantile_ref()
    septiles = data.filter((pl.col("GroupSet") == "IndSex") & (pl.col("Test") != "BadPolarity"))
    assert_quantiles(stats.quantile(septiles, "Value", n_quantiles=7, invert="invert"))
    assert_quantiles(stats.quantile(septiles, pl.col("Value"), n_quantiles=7, invert=False))
    quartiles = data.filter(pl.col("GroupSet").is_null())  # ungrouped, default invert (True)
    out = stats.quantile(quartiles, "Value", n_quantiles=4)
    assert_quantiles(out)
    lazy = stats.quantile(quartiles.lazy(), "Value", n_quantiles=4).collect()
    assert_frame_equal(lazy, out)


def test_quantile_reference_bad_polarity():
    """An invert flag that differs within a group is reported (PHE stops with an error); the
    sheet's expected quantiles are those of a constant invert = True."""
    bad = quantile_ref().filter(pl.col("Test") == "BadPolarity")
    out = stats.quantile(bad, "Value", n_quantiles=7, invert="invert")
    assert out["quantile"].null_count() == bad.height
    assert out["ci_note"].unique().to_list() == ["invert differs within group"]
    assert_quantiles(stats.quantile(bad, "Value", n_quantiles=7, invert=True))


# ---------------------------------------------------------------------------------------- SII

SII_VALUE_TYPES = {0: "other", 1: "rate", 2: "proportion"}
# (first RecordNo, rows, arguments) of each calculation case in phe_sii's reference sheet
SII_CASES = [
    (1, 20, {}),
    (21, 20, {"confidence": 0.99}),
    (41, 20, {"repetitions": 10_000}),
    (61, 10, {}),  # quintiles: the sheet has only the SII and RII
    (71, 20, {}),
    (91, 20, {}),
    (111, 20, {"multiplier": 100}),
    (131, 20, {"multiplier": -100}),
    (226, 20, {"confidence": (0.95, 0.99)}),
    (246, 20, {}),
    (266, 20, {}),
    (286, 20, {}),
    (306, 20, {"transform": True}),
    (326, 20, {"transform": True}),
    (346, 20, {"transform": True, "multiplier": -1}),
    (366, 20, {"transform": True, "confidence": (0.95, 0.98)}),
    (386, 20, {"transform": True, "multiplier": -1}),
    (406, 20, {"transform": True, "confidence": 0.98}),
    (426, 20, {"transform": True, "rii": False}),
    (446, 20, {"transform": True, "rii": False}),
    (466, 20, {"transform": True, "confidence": 0.98}),
    (486, 20, {"transform": True, "confidence": (0.95, 0.98)}),
]
# Simulated limits: within 2% of the reference interval's width at 100,000 repetitions (5% at
# 10,000). phe_sii's own tests allow a 5% mean relative difference at 10,000 repetitions.
SII_WIDTH_TOL = {100_000: 0.02, 10_000: 0.05}


def sii_case(start: int, rows: int) -> pl.DataFrame:
    data = ref("testdata_SII.csv")
    return data.filter(pl.col("RecordNo").is_between(start, start + rows - 1))


@pytest.mark.parametrize(("start", "rows", "kwargs"), SII_CASES, ids=[str(c[0]) for c in SII_CASES])
def test_sii_reference(start, rows, kwargs):
    data = sii_case(start, rows)
    kwargs = {"confidence": 0.95, **kwargs}
    value_type = SII_VALUE_TYPES[data["ValueType"][0]]
    out = stats.sii(data, "Value", "Population", "Quantile", by="Area", lower="LowerCL",
                    upper="UpperCL", value_type=value_type, seed=2024, **kwargs)  # fmt: skip
    exp = data.filter(pl.col("sii").is_not_null())
    assert out["Area"].to_list() == exp["Area"].to_list()
    assert out["ci_note"].null_count() == out.height
    # the regression itself is closed form: 1e-9
    assert_close(out["sii"], exp["sii"], what="sii")
    if kwargs.get("rii", True):
        assert_close(out["rii"], exp["rii"], what="rii")
    else:
        assert not [c for c in out.columns if c.startswith("rii")]
    if exp["Intercept"].null_count() == 0:
        assert_close(out["intercept"], exp["Intercept"], what="intercept")
    levels = kwargs["confidence"] if isinstance(kwargs["confidence"], tuple) else (kwargs["confidence"],)
    tol = SII_WIDTH_TOL[kwargs.get("repetitions", 100_000)]
    for i, c in enumerate(levels, 1):
        sfx = stats.ci_suffix(c)
        for stat in ("sii", "rii") if kwargs.get("rii", True) else ("sii",):
            lo_ref, hi_ref = exp[f"{stat}_lowercl_{i}"], exp[f"{stat}_uppercl_{i}"]
            if lo_ref.null_count():
                continue
            width = (hi_ref - lo_ref).abs()
            for ours, theirs in ((f"{stat}_lower_{sfx}", lo_ref), (f"{stat}_upper_{sfx}", hi_ref)):
                err = ((out[ours] - theirs).abs() / width).max()
                assert err < tol, f"{ours}: {err:.4f} of the interval width"


def test_sii_standard_error_and_limits_agree():
    """Supplying the standard error (on the working scale) instead of the 95% limits gives the
    same result (the sheet's SEs are rounded, so 1e-3)."""
    for start in (1, 71, 91):
        data = sii_case(start, 20)
        vt = SII_VALUE_TYPES[data["ValueType"][0]]
        a = stats.sii(data, "Value", "Population", "Quantile", by="Area", lower="LowerCL",
                      upper="UpperCL", value_type=vt, seed=7, repetitions=20_000)  # fmt: skip
        b = stats.sii(data, "Value", "Population", "Quantile", by="Area", se="StandardError",
                      value_type=vt, seed=7, repetitions=20_000)  # fmt: skip
        for c in ["sii", "rii", "sii_lower_95", "sii_upper_99_8", "rii_upper_95"]:
            assert_close(a[c], b[c], rel=1e-3, abs_=0, what=f"{start} {c}")


def test_sii_reproducible_by_seed_and_lazy():
    data = sii_case(1, 20)
    kw = dict(by="Area", se="StandardError", repetitions=5_000, seed=11)
    one = stats.sii(data, "Value", "Population", "Quantile", **kw)
    assert_frame_equal(one, stats.sii(data, "Value", "Population", "Quantile", **kw))
    assert_frame_equal(one, stats.sii(data.lazy(), "Value", "Population", "Quantile", **kw).collect())
    # a group's limits do not depend on the other groups
    alone = stats.sii(data.filter(pl.col("Area") == "area2"), "Value", "Population", "Quantile", **kw)
    assert_frame_equal(alone, one.filter(pl.col("Area") == "area2"))
    other = stats.sii(data, "Value", "Population", "Quantile", **{**kw, "seed": 12})
    assert other["sii_lower_95"].to_list() != one["sii_lower_95"].to_list()
    assert other["sii"].to_list() == one["sii"].to_list()


def test_sii_of_all_zero_values_has_no_relative_index_and_no_warning():
    """Every quantile at 0 (a count nobody had, say): the slope is 0, and the RII, relative to an
    intercept of 0, is NaN (0/0, as R's phe_sii gives) — silently, not a RuntimeWarning per call."""
    import warnings

    zeros = pl.DataFrame({"q": [1, 2, 3, 4, 5], "pop": [100.0] * 5, "v": [0.0] * 5, "se": [0.5] * 5})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = stats.sii(zeros, "v", "pop", "q", se="se", repetitions=1_000, seed=3)
    assert out["sii"].item() == 0 and out["intercept"].item() == 0
    assert math.isnan(out["rii"].item()) and out["ci_note"].item() is None


def test_sii_reference_error_cases_give_notes():
    cases = {
        151: ("other", {"se": "StandardError"}, "population must be > 0"),
        161: ("other", {"se": "StandardError"}, "negative standard error"),
        171: ("proportion", {"lower": "LowerCL", "upper": "UpperCL"}, "proportion must be between 0 and 1"),
        181: ("other", {"se": "StandardError"}, "value is null"),
        191: ("other", {"se": "StandardError"}, "standard error is null"),
        201: ("other", {"se": "StandardError"}, "population must be > 0"),
    }
    for start, (vt, kw, note) in cases.items():
        data = sii_case(start, 10)
        out = stats.sii(data, "Value", "Population", "Quantile", value_type=vt, repetitions=1000, seed=1, **kw)
        assert out["ci_note"].to_list() == [note], start
        assert out["sii"].to_list() == [None]
    # more than 10 quantiles only warns upstream: calculated here
    many = stats.sii(sii_case(211, 15), "Value", "Population", "Quantile", se="StandardError",
                     repetitions=1000, seed=1)  # fmt: skip
    assert many["ci_note"].to_list() == [None] and many["sii"][0] is not None
    # an area missing a quantile that others have
    data = sii_case(1, 20).filter(~((pl.col("Area") == "area1") & (pl.col("Quantile") == 3)))
    out = stats.sii(data, "Value", "Population", "Quantile", by="Area", se="StandardError", repetitions=1000)
    assert out["ci_note"].to_list() == ["not every quantile present in group", None]


def _sii_one_reference(pop, y, se, *, value_type, transform, multiplier, repetitions, levels, draws):
    """One group at a time, as sii first computed it (R × Q normals, a 2-parameter least squares,
    np.partition): the batched implementation must give the same bits."""

    def g(v):
        return np.exp(v) if value_type == "rate" else 1 / (1 + np.exp(-v)) if value_type == "proportion" else v

    a = pop / pop.sum()
    b = np.cumsum(a) - a / 2
    sqrt_a = np.sqrt(a)
    X = np.column_stack([sqrt_a, b * sqrt_a])
    inv_m = np.linalg.solve(X.T @ X, X.T)
    back = (lambda v: v) if transform else g
    b0, b1 = inv_m @ (sqrt_a * back(y))
    params = (back(draws * se + y) * sqrt_a) @ inv_m.T
    icpt_s, slope_s = params[:, 0], params[:, 1]
    pos = {c: stats._sii_positions(repetitions, c) for c in levels}
    ks = sorted({k for c in levels for k in pos[c]})
    out = {}
    if not transform:
        out["sii"], rii, out["intercept"] = multiplier * b1, (b0 + b1) / b0, b0
        out["rii"] = 1 / rii if multiplier < 0 else rii
        s_sorted = np.partition(multiplier * slope_s, ks)
        r_sims = (slope_s + icpt_s) / icpt_s
        r_sorted = np.partition(1 / r_sims if multiplier < 0 else r_sims, ks)
        for c, (lo, hi) in pos.items():
            sfx = stats.ci_suffix(c)
            out[f"sii_lower_{sfx}"], out[f"sii_upper_{sfx}"] = s_sorted[lo], s_sorted[hi]
            out[f"rii_lower_{sfx}"], out[f"rii_upper_{sfx}"] = r_sorted[lo], r_sorted[hi]
        return out
    x1 = b0 + b1
    xh = (b0 + x1) / 2
    out["sii"] = (g(x1) - g(b0)) * multiplier
    out["rii"] = g(b0) / g(x1) if multiplier < 0 else g(x1) / g(b0)
    out["intercept"] = g(b0) * abs(multiplier)
    s_sorted = np.partition(slope_s, ks)
    for c, (lo, hi) in pos.items():
        sl, su = s_sorted[lo], s_sorted[hi]
        diff_l, diff_u = g(xh + sl / 2) - g(xh - sl / 2), g(xh + su / 2) - g(xh - su / 2)
        ratio_l, ratio_u = g(xh + sl / 2) / g(xh - sl / 2), g(xh + su / 2) / g(xh - su / 2)
        sfx = stats.ci_suffix(c)
        if multiplier < 0:
            out[f"sii_lower_{sfx}"], out[f"sii_upper_{sfx}"] = diff_u * multiplier, diff_l * multiplier
            out[f"rii_lower_{sfx}"], out[f"rii_upper_{sfx}"] = 1 / ratio_u, 1 / ratio_l
        else:
            out[f"sii_lower_{sfx}"], out[f"sii_upper_{sfx}"] = diff_l * multiplier, diff_u * multiplier
            out[f"rii_lower_{sfx}"], out[f"rii_upper_{sfx}"] = ratio_l, ratio_u
    return out


@pytest.mark.parametrize(
    ("value_type", "transform"),
    [("other", False), ("rate", False), ("proportion", False), ("rate", True), ("proportion", True)],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sii_batched_gives_the_bits_of_one_group_at_a_time(monkeypatch, value_type, transform):
    """The simulations run a chunk of groups at a time, chunks side by side on threads; every
    group still gets exactly (bit for bit) what computing it alone from the same draws gives,
    whatever the chunk and the threads."""
    rng = np.random.default_rng(99)
    G, Q, R = 13, 7, 1234
    pop = rng.integers(1, 50_000, (G, Q)).astype(float)
    y = rng.normal(-2 if value_type != "other" else 70, 1, (G, Q))
    se = rng.uniform(0.01, 0.5, (G, Q))
    se[3] = 0.0  # every simulation equal
    y[4], se[4] = 0.25, 0.0  # a flat group: slopes of ±0
    se[5, 2] = np.nan  # NaN simulations
    keys = [(f"area{i}", i) for i in range(G)]
    for chunk_groups, threads, multiplier, levels in [
        (1, 1, 1.0, (0.95,)), (4, 3, -100.0, (0.95, 0.998)), (G, 2, 2.5, (0.8, 0.5)), (2, 2, -1.0, (0.9,)),
    ]:  # fmt: skip
        monkeypatch.setattr(stats, "_SII_CHUNK_BYTES", chunk_groups * R * Q * 8)
        monkeypatch.setattr(stats, "_SII_THREADS", threads)
        settings_ = dict(value_type=value_type, transform=transform, multiplier=multiplier,
                         repetitions=R, levels=levels)  # fmt: skip
        draws = stats._sii_draws(5, R, Q)
        got = stats._sii_groups(pop, y, se, draws, **settings_)
        for i, key in enumerate(keys):
            exp = _sii_one_reference(pop[i], y[i], se[i], draws=draws, **settings_)
            assert sorted(got) == sorted(exp)
            for name, value in exp.items():
                assert np.float64(got[name][i]).tobytes() == np.float64(value).tobytes(), (key, name)


def test_sii_order_stats_bits_of_np_partition():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 2001))
    x[1] = np.round(x[1])  # ties, including +0 and -0 at the selected positions
    x[1, ::3] *= -0.0
    x[2, 5] = np.nan
    x[3, :1500] = np.nan  # the upper position falls on a NaN
    x[4, 7] = np.inf
    x[5, 9] = -np.inf
    x[6] = 0.0
    x[7] = -x[7] * 1e-300
    ks = [0, 49, 1000, 1950, 2000]
    got = stats._order_stats(x, ks)
    for i, row in enumerate(x):
        assert got[i].tobytes() == np.partition(row, ks)[ks].tobytes(), i


# --------------------------------------------------------------------------- property tests

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = ["lower_95", "upper_95", "lower_99_8", "upper_99_8"]

counts = st.integers(min_value=0, max_value=10**7)


@st.composite
def x_n_rows(draw, allow_bad=False):
    rows = draw(st.lists(st.tuples(counts, st.integers(1, 10**7)), min_size=1, max_size=30))
    xs, ns = [], []
    for x, n in rows:
        if not allow_bad:
            x = min(x, n)
        xs.append(x)
        ns.append(n)
    return pl.DataFrame({"x": xs, "n": ns})


def _check_bracketing(out: pl.DataFrame, lo_bound=None, hi_bound=None):
    ok = out.filter(pl.col("ci_note").is_null())
    eps = 1e-9
    for r in ok.iter_rows(named=True):
        v = r["value"]
        assert r["lower_99_8"] - eps * max(1, abs(v)) <= r["lower_95"] <= v + eps * max(1, abs(v))
        assert v - eps * max(1, abs(v)) <= r["upper_95"] <= r["upper_99_8"] + eps * max(1, abs(v))
        if lo_bound is not None:
            assert r["lower_99_8"] >= lo_bound
        if hi_bound is not None:
            assert r["upper_99_8"] <= hi_bound


@FAST
@given(x_n_rows(), st.sampled_from([1, 100]))
def test_prop_proportion_properties(df, mult):
    out = proportion_ci(df, "x", "n", multiplier=mult)
    assert out["ci_note"].null_count() == out.height
    _check_bracketing(out, 0, mult)
    assert_frame_equal(proportion_ci(df.lazy(), "x", "n", multiplier=mult).collect(), out)


@FAST
@given(x_n_rows(allow_bad=True))
def test_prop_rate_properties(df):
    out = rate_ci(df, "x", "n")
    assert out["ci_note"].null_count() == out.height
    _check_bracketing(out, 0, None)
    assert_frame_equal(rate_ci(df.lazy(), "x", "n").collect(), out)


odd_floats = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
    st.floats(-1e6, 1e6).filter(lambda v: abs(v) > 1e-6),
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.integers(-5, 50), odd_floats),
            st.one_of(st.none(), st.integers(-5, 50), odd_floats),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_prop_invalid_rows_never_raise(rows):
    df = pl.DataFrame({"x": [float(r[0]) if r[0] is not None else None for r in rows],
                       "n": [float(r[1]) if r[1] is not None else None for r in rows]},
                      schema={"x": pl.Float64, "n": pl.Float64})  # fmt: skip
    for fn in (proportion_ci, rate_ci):
        out = fn(df, "x", "n")
        bad = out.filter(pl.col("ci_note").is_not_null())
        for c in ["value", *LIMITS]:
            assert bad[c].null_count() == bad.height
        good = out.filter(pl.col("ci_note").is_null())
        for c in ["value", *LIMITS]:
            assert good[c].null_count() == 0
            assert good[c].is_finite().all()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(-1e6, 1e6, allow_nan=False)),
        min_size=1,
        max_size=40,
    )
)
def test_prop_mean_grouping_and_moments(rows):
    df = pl.DataFrame({"g": [r[0] for r in rows], "v": [r[1] for r in rows]})
    out = mean_ci(df, "v", by="g").sort("g")
    lazy = mean_ci(df.lazy(), "v", by="g").collect().sort("g")
    assert_frame_equal(out, lazy)
    for g in out["g"]:
        sub = df.filter(pl.col("g") == g)
        alone = mean_ci(sub, "v")
        row = out.filter(pl.col("g") == g)
        assert_close(row["value"], alone["value"], rel=1e-12)
    _check_bracketing(out.filter(pl.col("value_count") >= 2))
    mom = df.group_by("g").agg(s=pl.col("v").sum(), ss=(pl.col("v") ** 2).sum(), n=pl.len()).sort("g")
    rolled = mean_ci_from_moments(mom, "s", "ss", "n")
    assert rolled["ci_note"].to_list() == out["ci_note"].to_list()
    scale = max(1.0, float(df["v"].abs().max()))
    for c in ["value", "lower_95", "upper_99_8"]:
        # Σx² − (Σx)²/n loses digits when the spread is tiny next to the values: compare on scale
        assert_close(rolled[c], out[c], rel=1e-9, abs_=1e-6 * scale, what=c)


@st.composite
def banded_groups(draw):
    """A few groups over ESP 2013 bands, with occasional zero counts."""
    n_groups = draw(st.integers(1, 4))
    bands = draw(st.lists(st.sampled_from(stats.ESP2013_BANDS), min_size=1, max_size=19, unique=True))
    rows = []
    for g in range(n_groups):
        for b in bands:
            rows.append({"g": f"g{g}", "band": b, "x": draw(st.integers(0, 500)), "n": draw(st.integers(1, 10**5))})
    return pl.DataFrame(rows)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(banded_groups())
def test_prop_dsr_and_isr_properties(df):
    out = stats.dsr(df, "x", "n", age_band="band", by="g")
    assert out["g"].to_list() == df["g"].unique(maintain_order=True).to_list()
    small = out.filter(pl.col("total_count") < 10)
    assert small["value"].null_count() == small.height
    assert set(small["ci_note"].to_list()) <= {"fewer than 10 events: DSR not calculated"}
    # Dobson's lower limit may be negative (see test_dsr_lower_limit_can_be_negative): no bound
    _check_bracketing(out)
    assert (out.filter(pl.col("ci_note").is_null())["value"] >= 0).all()
    assert_frame_equal(stats.dsr(df.lazy(), "x", "n", age_band="band", by="g").collect(), out)
    # each group alone gives the same as grouped
    first = out["g"][0]
    alone = stats.dsr(df.filter(pl.col("g") == first), "x", "n", age_band="band")
    assert_close(alone["value"], out.filter(pl.col("g") == first)["value"], rel=1e-12)

    ref_tbl = df.group_by("band").agg(xr=pl.col("x").sum() + 1, nr=pl.col("n").sum())
    data = df.join(ref_tbl, on="band", how="left", maintain_order="left")
    ratio = stats.isr(data, "x", "n", "xr", "nr", by="g")
    _check_bracketing(ratio, 0, None)
    assert ratio["ci_note"].null_count() == ratio.height
    rate = stats.isr_rate(data, "x", "n", "xr", "nr", by="g")
    assert_close(rate["value"], ratio["value"] * rate["ref_rate"], rel=1e-12)
    assert_frame_equal(stats.isr(data.lazy(), "x", "n", "xr", "nr", by="g").collect(), ratio)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False)), min_size=0, max_size=60),
    st.integers(1, 10),
    st.booleans(),
)
def test_prop_quantile_properties(values, q, invert):
    df = pl.DataFrame({"v": values}, schema={"v": pl.Float64})
    out = stats.quantile(df, "v", n_quantiles=q, invert=invert)
    assert out.height == df.height
    got = out.filter(pl.col("quantile").is_not_null())
    if got.height:
        assert got["quantile"].min() >= 1 and got["quantile"].max() <= q
        # order-preserving: higher values never get a 'lower-valued' quantile than lower values
        srt = got.sort("v")
        qs = srt["quantile"].to_list()
        assert qs == sorted(qs, reverse=invert)
    n_valid = df["v"].drop_nulls().len()
    if n_valid < q:
        assert out["quantile"].null_count() == df.height
    assert_frame_equal(stats.quantile(df.lazy(), "v", n_quantiles=q, invert=invert).collect(), out)


def test_prop_sii_brackets_and_grouping():
    data = sii_case(1, 20)
    out = stats.sii(data, "Value", "Population", "Quantile", by=["Area", "Grouping1"],
                    se="StandardError", repetitions=2_000, seed=3)  # fmt: skip
    assert out.columns[:2] == ["Area", "Grouping1"]
    for r in out.iter_rows(named=True):
        assert r["sii_lower_99_8"] <= r["sii_lower_95"] <= r["sii"] <= r["sii_upper_95"] <= r["sii_upper_99_8"]
        assert r["rii_lower_99_8"] <= r["rii_lower_95"] <= r["rii"] <= r["rii_upper_95"] <= r["rii_upper_99_8"]


def test_docstring_examples():
    import doctest

    result = doctest.testmod(stats, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 10
