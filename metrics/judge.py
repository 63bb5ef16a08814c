"""Judging computed values for a board: SPC signals, targets, benchmarks and inequality gaps.

Everything here works on the long frame of computed values (``metrics.compute.OUTPUT_COLUMNS``)
and the definitions; nothing reads extracts or the store. ``judge`` returns the frames a refresh
stores with the run, so apps and exports only read them:

- ``spc``: every point of every judged series (metric × place × breakdown group, on the metric's
  SPC period type) with its limits, the special-cause rule and Making Data Count point type, and
  per series the variation and assurance icons;
- ``comparisons``: each value of the SPC period type against the target, the other places and
  any benchmark (England from a Fingertips export), by the 95% and 99.8% CI method;
- ``inequalities``: per place and period, the gap between the most and least deprived quintile
  (absolute and relative, with approximate CIs), the slope and relative index of inequality, and
  an SPC of the absolute gap over time — "is the gap closing?";
- ``scorecard``: one row per metric and place for the latest period.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import polars as pl

from metrics.definitions import Catalogue, MetricDefinition
from metrics.spc import xmr
from metrics.stats import sii

__all__ = ["judge", "inequality_indices", "spc_period_type", "compare_with_benchmark", "Judgements", "COMPARISONS"]

SERIES = ["metric_id", "place", "period_type", "breakdown", "group"]
PERIOD_KEYS = ["metric_id", "period_type", "period_start", "period_end"]
Z95 = 1.959963984540054
COMPARISONS = ("better", "similar", "worse", "higher", "lower", "not_compared")
IMPROVEMENT = {"higher_is_better": "increase", "lower_is_better": "decrease", "neutral": "neutral"}
SII_REPETITIONS = 10_000
SII_SEED = 20240401


class Judgements(dict):
    """``spc``, ``comparisons``, ``inequalities`` and ``scorecard`` frames, by name."""


def spc_period_type(metric: MetricDefinition) -> str:
    """The period type whose series a board sees on an SPC chart: declared, else the finest."""
    settings = (metric.judgement or {}).get("spc", {}) or {}
    if settings.get("period_type"):
        return settings["period_type"]
    return "snapshot" if metric.period.snapshot else metric.period.grains[0]


def _spc_settings(metric: MetricDefinition) -> dict:
    settings = (metric.judgement or {}).get("spc", {}) or {}
    return {
        "improvement": IMPROVEMENT[metric.polarity],
        "rebase_at": tuple(settings.get("rebase_at") or ()),
        "screen_outliers": bool(settings.get("screen_outliers", True)),
        "two_in_three_counts_beyond_limits": bool(settings.get("two_in_three_counts_beyond_limits", False)),
    }


def compare_with_benchmark(lower: pl.Expr, upper: pl.Expr, benchmark: pl.Expr, polarity: pl.Expr) -> pl.Expr:
    """better / similar / worse (higher / similar / lower when neutral) by whether the interval
    [lower, upper] excludes the benchmark value, read through polarity; not_compared when any is missing."""
    above = lower > benchmark
    below = upper < benchmark
    return (
        pl.when(lower.is_null() | upper.is_null() | benchmark.is_null()).then(pl.lit("not_compared"))
        .when(~above & ~below).then(pl.lit("similar"))
        .when(polarity == "neutral").then(pl.when(above).then(pl.lit("higher")).otherwise(pl.lit("lower")))
        .when(above == (polarity == "higher_is_better")).then(pl.lit("better"))
        .otherwise(pl.lit("worse"))
    )


def _metric_frame(catalogue: Catalogue, metric_ids: list[str]) -> pl.DataFrame:
    rows = []
    for metric_id in metric_ids:
        metric = catalogue.metrics[metric_id]
        rows.append({"metric_id": metric_id, "polarity": metric.polarity, "spc_period_type": spc_period_type(metric),
                     "target": metric.target.value if metric.target else None})
    return pl.DataFrame(rows, schema={"metric_id": pl.String, "polarity": pl.String, "spc_period_type": pl.String,
                                      "target": pl.Float64})


def _spc(values: pl.DataFrame, catalogue: Catalogue, metrics: pl.DataFrame,
         earlier: pl.DataFrame | None = None) -> pl.DataFrame:
    judged = values.join(metrics, left_on=["metric_id", "period_type"], right_on=["metric_id", "spc_period_type"])
    parts = []
    if earlier is not None and not earlier.is_empty():
        # Series of unchanged metrics: the earlier run's judgement is what xmr would give again.
        parts.append(earlier)
        judged = judged.filter(~pl.col("metric_id").is_in(earlier["metric_id"].unique().implode()))
    # One vectorised call per distinct combination of settings (a handful), not per series.
    settings = {m: _spc_settings(catalogue.metrics[m]) for m in judged["metric_id"].unique().sort()}
    for combination in {tuple(sorted(s.items())) for s in settings.values()}:
        chosen = [m for m, s in settings.items() if tuple(sorted(s.items())) == combination]
        options = dict(combination)
        frame = judged.filter(pl.col("metric_id").is_in(chosen))
        # Targets apply to the place's own totals; breakdown groups are judged without one.
        frame = frame.with_columns(pl.when(pl.col("breakdown") == "overall").then(pl.col("target")).alias("target"))
        parts.append(xmr(frame, "value", "period_start", by=SERIES, improvement=options["improvement"],
                         target="target", rebase_at=list(options["rebase_at"]) or None,
                         screen_outliers=options["screen_outliers"],
                         two_in_three_counts_beyond_limits=options["two_in_three_counts_beyond_limits"]))
    if not parts:
        return pl.DataFrame()
    out = pl.concat(parts, how="diagonal_relaxed")
    keep = [*SERIES, "period_start", "period_end", "value", "segment", "mean", "lower_limit", "upper_limit",
            "near_lower", "near_upper", "special_cause_rule", "point_type", "variation_icon", "assurance_icon",
            "trial_limits", "target"]
    return out.select([c for c in keep if c in out.columns]).sort([*SERIES, "period_start"])


PAIRED_PLACES_MAX = 8  # places compared with each other place (with more, with targets and benchmarks only)


def _comparisons(values: pl.DataFrame, metrics: pl.DataFrame, benchmarks: pl.DataFrame | None) -> pl.DataFrame:
    """Each value against the target, each other place (up to ``PAIRED_PLACES_MAX`` places), and
    benchmarks (matched on their periods)."""
    base = (values.join(metrics, left_on=["metric_id", "period_type"], right_on=["metric_id", "spc_period_type"])
            .select(*SERIES, "period_start", "period_end", "value", "lower_95", "upper_95", "lower_99_8",
                    "upper_99_8", "polarity", "target"))
    parts = []

    def judged(frame: pl.DataFrame, benchmark_name: pl.Expr, benchmark_value: str) -> pl.DataFrame:
        return frame.select(
            *SERIES, "period_start", "period_end", benchmark_name.alias("benchmark"),
            pl.col(benchmark_value).alias("benchmark_value"), "value",
            compare_with_benchmark(pl.col("lower_95"), pl.col("upper_95"), pl.col(benchmark_value),
                                   pl.col("polarity")).alias("comparison_95"),
            compare_with_benchmark(pl.col("lower_99_8"), pl.col("upper_99_8"), pl.col(benchmark_value),
                                   pl.col("polarity")).alias("comparison_99_8"),
        )

    # Against the target: met or not (the value itself), and whether the CI is clear of it.
    with_target = base.filter(pl.col("breakdown") == "overall", pl.col("target").is_not_null())
    parts.append(judged(with_target, pl.lit("target"), "target"))
    # Against each other place, same metric, period and breakdown group: for a partnership's few
    # places. The pairs grow as the square of the places (79 places at benchmark scale 30 made 23M
    # rows and took a minute), and beyond a handful a board compares with England, not each other.
    if base["place"].n_unique() <= PAIRED_PLACES_MAX:
        # A place's own total is the group named after it, so totals pair on the breakdown alone.
        same_group = pl.when(pl.col("breakdown") == "overall").then(pl.lit("overall")).otherwise(pl.col("group"))
        pairing = ["metric_id", "period_type", "breakdown", "_group", "period_start"]
        others = base.select(*pairing[:3], same_group.alias("_group"), "period_start",
                             pl.col("place").alias("other_place"), pl.col("value").alias("other_value"))
        paired = (base.with_columns(same_group.alias("_group")).join(others, on=pairing)
                  .filter(pl.col("place") != pl.col("other_place")).drop("_group"))
        parts.append(judged(paired, pl.col("other_place"), "other_value"))
    if benchmarks is not None and benchmarks.height:
        # Benchmarks come for their own periods (often financial years), whatever the SPC grain.
        totals = (values.filter(pl.col("breakdown") == "overall")
                  .join(metrics.select("metric_id", "polarity", "target"), on="metric_id")
                  .select(base.columns))
        england = totals.join(
            benchmarks.select("metric_id", "period_type", "period_end", "benchmark",
                              pl.col("value").alias("benchmark_value")),
            on=["metric_id", "period_type", "period_end"])
        parts.append(judged(england, pl.col("benchmark"), "benchmark_value"))
    out = pl.concat(parts, how="vertical_relaxed")
    target_met = (pl.when(pl.col("benchmark") != "target").then(None)
                  .when(pl.col("value").is_null()).then(None)
                  .when(pl.col("polarity") == "lower_is_better").then(pl.col("value") <= pl.col("benchmark_value"))
                  .otherwise(pl.col("value") >= pl.col("benchmark_value")))
    return (out.join(metrics.select("metric_id", "polarity"), on="metric_id")
            .with_columns(target_met.alias("target_met")).drop("polarity")
            .sort([*SERIES, "benchmark", "period_start"]))


def _value_type_for_sii(metric: MetricDefinition) -> tuple[str, float]:
    """phe_sii's value type and the scale of our values (proportions are stored × multiplier)."""
    if metric.value_type == "proportion":
        return "proportion", metric.multiplier
    if metric.value_type in ("rate", "dsr"):
        return "rate", 1.0
    return "other", 1.0


SII_COLUMNS = ["sii", "sii_lower_95", "sii_upper_95", "rii", "rii_lower_95", "rii_upper_95"]
GAP_KEYS = ["metric_id", "place", "period_type", "period_start", "period_end"]


def _quintile_gaps(values: pl.DataFrame, metrics: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The quintile rows of the SPC period type, and per place and period with all five quintiles'
    values the gap between the most and least deprived; None when there are none."""
    quintiles = (values.filter(pl.col("breakdown") == "imd_quintile")
                 .join(metrics, left_on=["metric_id", "period_type"], right_on=["metric_id", "spc_period_type"]))
    if quintiles.is_empty():
        return None
    keys = GAP_KEYS
    complete = (quintiles.group_by(keys).agg(pl.col("group").n_unique().alias("_n"),
                                              pl.col("value").null_count().alias("_nulls"))
                .filter((pl.col("_n") == 5) & (pl.col("_nulls") == 0)).select(keys))
    quintiles = quintiles.join(complete, on=keys)
    half_width = (pl.col("upper_95") - pl.col("lower_95")) / (2 * Z95)
    most = quintiles.filter(pl.col("group") == "1").select(
        *keys, pl.col("value").alias("most_deprived"), half_width.alias("_se1"))
    least = quintiles.filter(pl.col("group") == "5").select(
        *keys, pl.col("value").alias("least_deprived"), half_width.alias("_se5"))
    gap = pl.col("most_deprived") - pl.col("least_deprived")
    # The gap's interval treats the two quintiles as independent, with standard errors read from
    # their 95% limits: an approximation for asymmetric (Wilson, Byar) intervals, stated as such.
    spread = Z95 * (pl.col("_se1") ** 2 + pl.col("_se5") ** 2).sqrt()
    gaps = most.join(least, on=keys).with_columns(
        gap.alias("absolute_gap"), (gap - spread).alias("absolute_gap_lower_95"),
        (gap + spread).alias("absolute_gap_upper_95"),
        (pl.col("most_deprived") / pl.col("least_deprived")).alias("relative_gap"),
    ).drop("_se1", "_se5")
    return quintiles, gaps


def _simulated(quintiles: pl.DataFrame, todo: pl.DataFrame, catalogue: Catalogue) -> list[pl.DataFrame]:
    """phe_sii's SII and RII of each place and period in ``todo``, one call per metric."""
    parts = []
    for metric_id in todo["metric_id"].unique().sort():
        metric = catalogue.metrics[metric_id]
        value_type, scale = _value_type_for_sii(metric)
        frame = (quintiles.filter(pl.col("metric_id") == metric_id, pl.col("denominator") > 0)
                 .join(todo, on=GAP_KEYS, how="semi"))
        if frame.is_empty():
            continue
        frame = frame.with_columns((pl.col("value", "lower_95", "upper_95") / scale),
                                   pl.col("group").cast(pl.Int64).alias("quintile"))
        result = sii(frame, "value", "denominator", "quintile", by=GAP_KEYS, lower="lower_95", upper="upper_95",
                     value_type=value_type, multiplier=scale, repetitions=SII_REPETITIONS, seed=SII_SEED,
                     confidence=0.95)
        parts.append(result.select(*GAP_KEYS, *SII_COLUMNS))
    return parts


def inequality_indices(values: pl.DataFrame, catalogue: Catalogue) -> pl.DataFrame:
    """The slope and relative index of inequality (``GAP_KEYS``, ``SII_COLUMNS``) of every place and
    period of ``values`` that ``judge`` gives them for: the simulations, the slow part of judging.

    Each depends only on its own period's quintile values (its simulation is seeded by its key), so
    they can be worked out for part of a run's values — a refresh does so for each source's as soon
    as they are computed, while the next source loads — and handed to ``judge`` (``indices``)."""
    values = values.filter(pl.col("metric_id").is_in(list(catalogue.metrics)))
    found = _quintile_gaps(values, _metric_frame(catalogue, values["metric_id"].unique().sort().to_list()))
    parts = _simulated(*found, catalogue) if found is not None else []
    return pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame()


def _inequalities(values: pl.DataFrame, catalogue: Catalogue, metrics: pl.DataFrame,
                  known: list[pl.DataFrame]) -> pl.DataFrame:
    found = _quintile_gaps(values, metrics)
    if found is None:
        return pl.DataFrame()
    quintiles, gaps = found
    keys = GAP_KEYS
    sii_parts = []
    todo = gaps.select(keys)
    for frame in known:  # simulated already: earlier, or while the refresh went on
        if frame is None or frame.is_empty() or not set(SII_COLUMNS) <= set(frame.columns):
            continue
        have = frame.select(*keys, *SII_COLUMNS).join(todo, on=keys, how="semi")
        sii_parts.append(have)
        todo = todo.join(have.select(keys), on=keys, how="anti")
    sii_parts += _simulated(quintiles, todo, catalogue)
    if sii_parts:
        gaps = gaps.join(pl.concat(sii_parts, how="vertical_relaxed"), on=keys, how="left")
    # Is the gap closing? An SPC of the absolute gap's size, where smaller is better.
    series = gaps.with_columns(pl.col("absolute_gap").abs().alias("gap_size"),
                               pl.lit("imd_quintile").alias("breakdown"), pl.lit("1 vs 5").alias("group"))
    judged = xmr(series, "gap_size", "period_start", by=SERIES, improvement="decrease")
    direction = (pl.when(pl.col("point_type") == "special_cause_improvement").then(pl.lit("closing"))
                 .when(pl.col("point_type") == "special_cause_concern").then(pl.lit("widening"))
                 .otherwise(pl.lit("no significant change")))
    return (judged.with_columns(direction.alias("gap_direction"),
                                pl.col("variation_icon").alias("gap_variation_icon"))
            .select(*keys, "most_deprived", "least_deprived", "absolute_gap", "absolute_gap_lower_95",
                    "absolute_gap_upper_95", "relative_gap",
                    *[c for c in ("sii", "sii_lower_95", "sii_upper_95", "rii", "rii_lower_95", "rii_upper_95")
                      if c in judged.columns],
                    "gap_size", "mean", "lower_limit", "upper_limit", "point_type", "gap_direction",
                    "gap_variation_icon")
            .sort(keys))


def _scorecard(values: pl.DataFrame, catalogue: Catalogue, metrics: pl.DataFrame, spc: pl.DataFrame,
               comparisons: pl.DataFrame, inequalities: pl.DataFrame) -> pl.DataFrame:
    overall = (values.filter(pl.col("breakdown") == "overall")
               .join(metrics, left_on=["metric_id", "period_type"], right_on=["metric_id", "spc_period_type"]))
    latest = (overall.filter(pl.col("value").is_not_null())
              .sort("period_start").group_by("metric_id", "place").last())
    card = latest.select("metric_id", "place", "period_type", "period_start", "period_end", "value",
                         "lower_95", "upper_95", "numerator", "denominator", "polarity", "target")
    if not spc.is_empty():
        icons = (spc.filter(pl.col("breakdown") == "overall")
                 .group_by("metric_id", "place").agg(pl.col("variation_icon", "assurance_icon", "trial_limits").last()))
        card = card.join(icons, on=["metric_id", "place"], how="left")
    comparison_keys = ["metric_id", "place", "period_start"]
    target = comparisons.filter(pl.col("benchmark") == "target", pl.col("breakdown") == "overall").select(
        *comparison_keys, pl.col("target_met"), pl.col("comparison_95").alias("target_comparison_95"))
    card = card.join(target, on=comparison_keys, how="left")
    others = comparisons.filter(pl.col("breakdown") == "overall", ~pl.col("benchmark").is_in(["target", "England"]))
    if others.height:
        # "The other place": for two places, the other one; with more, the first other by name.
        chosen = (others.sort("benchmark").group_by(comparison_keys)
                  .agg(pl.col("benchmark").first().alias("other_place"),
                       pl.col("benchmark_value").first().alias("other_place_value"),
                       pl.col("comparison_95").first().alias("vs_other_place")))
        card = card.join(chosen, on=comparison_keys, how="left")
    # England: the latest period with a benchmark (often a financial year, not the latest month).
    england = (comparisons.filter(pl.col("benchmark") == "England", pl.col("breakdown") == "overall")
               .sort("period_end").group_by("metric_id", "place")
               .agg(pl.col("benchmark_value").last().alias("england_value"),
                    pl.col("comparison_95").last().alias("vs_england"),
                    pl.col("period_type").last().alias("england_period_type"),
                    pl.col("period_end").last().alias("england_period_end")))
    card = card.join(england, on=["metric_id", "place"], how="left")
    if not inequalities.is_empty():
        gap = (inequalities.sort("period_start").group_by("metric_id", "place")
               .agg(pl.col("absolute_gap").last().alias("inequality_gap"),
                    pl.col("period_end").last().alias("inequality_period_end"),
                    pl.col("gap_direction").last()))
        card = card.join(gap, on=["metric_id", "place"], how="left")
    info = pl.DataFrame([{"metric_id": m.id, "title": m.title, "outcome": m.outcome, "unit": m.unit,
                          "priority": m.priority} for m in catalogue.metrics.values()])
    for column in ("variation_icon", "assurance_icon", "trial_limits", "target_met", "target_comparison_95",
                   "other_place", "other_place_value", "vs_other_place", "england_value", "vs_england",
                   "england_period_type", "england_period_end",
                   "inequality_gap", "inequality_period_end", "gap_direction"):
        if column not in card.columns:
            card = card.with_columns(pl.lit(None).alias(column))
    return card.join(info, on="metric_id", how="left").sort("outcome", "metric_id", "place")


def judge(values: pl.DataFrame, catalogue: Catalogue, *, benchmarks: pl.DataFrame | None = None,
          earlier: Mapping[str, pl.DataFrame] | None = None, unchanged: Collection[str] = (),
          unchanged_periods: pl.DataFrame | None = None, indices: Collection[pl.DataFrame] = ()) -> Judgements:
    """All judgements on one run's values. ``benchmarks``: metric_id, period_end, benchmark, value.

    ``indices``: SIIs already simulated (``inequality_indices``) for some of these values; the rest
    are simulated here. They are matched by key (metric, place, period) and used as given, so they
    must come from these same values (the caller's responsibility): then the result is the same.

    ``earlier`` (an incremental refresh): the frames judged in the run whose values were carried
    (same values, same definitions) — for the ``unchanged`` metrics, and for the periods listed in
    ``unchanged_periods`` (metric_id, period_type, period_start, period_end) of any metric. The
    unchanged metrics' SPC series and the SII simulations of unchanged metrics and periods are taken
    from there rather than recomputed: the result is the same, only faster."""
    values = values.filter(pl.col("metric_id").is_in(list(catalogue.metrics)))
    metrics = _metric_frame(catalogue, values["metric_id"].unique().sort().to_list())
    earlier, reuse = earlier or {}, list(unchanged)

    def earlier_rows(name: str) -> pl.DataFrame | None:
        frame = earlier.get(name)
        if frame is None or frame.is_empty() or not reuse:
            return None
        return frame.filter(pl.col("metric_id").is_in(reuse))

    earlier_gaps = earlier.get("inequalities")
    if earlier_gaps is not None and not earlier_gaps.is_empty():
        # An SII depends only on its own period's quintile values (every group's simulations scale
        # the same seeded draws by its own values), so a period whose values were carried has the
        # SII it had.
        same = pl.col("metric_id").is_in(reuse)
        if unchanged_periods is not None and unchanged_periods.height:
            carried = unchanged_periods.select(PERIOD_KEYS).unique().with_columns(pl.lit(True).alias("_carried"))
            earlier_gaps = (earlier_gaps.join(carried, on=PERIOD_KEYS, how="left")
                            .filter(same | pl.col("_carried").fill_null(False)).drop("_carried"))
        else:
            earlier_gaps = earlier_gaps.filter(same)

    spc = _spc(values, catalogue, metrics, earlier_rows("spc"))
    comparisons = _comparisons(values, metrics, benchmarks)
    inequalities = _inequalities(values, catalogue, metrics, [earlier_gaps, *indices])
    scorecard = _scorecard(values, catalogue, metrics, spc, comparisons, inequalities)
    return Judgements(spc=spc, comparisons=comparisons, inequalities=inequalities, scorecard=scorecard)
