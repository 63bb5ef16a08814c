"""Making Data Count XmR charts (statistical process control), exactly as NHSRplotthedots 0.2.2.

:func:`xmr` takes a long frame of points (one row per series × period) and returns it row for row
with the centre line, process limits, the special-cause rule that fired and the Making Data Count
point type, variation icon and assurance icon added. It is vectorised: thousands of series are
handled in one pass of Polars expressions (window functions over series × rebase segment and
fixed-width windows over the frame sorted by series, segment and period), never a Python loop
over series or points. A DataFrame in gives a DataFrame out; a LazyFrame in gives a LazyFrame.

The rules (DESIGN.md §7, the reference being ``ptd_spc_standard()``,
``ptd_calculate_point_type()`` and ``ptd_calculate_assurance_type()`` of NHSRplotthedots):

- Within each rebase segment of a series: ``mean`` of the values; moving ranges
  ``|yᵢ − yᵢ₋₁|``; moving ranges ≥ 3.267 × their mean screened out once (``screen_outliers``)
  before the mean moving range is recomputed; limits ``mean ± 2.66 × mean moving range``; the
  "near" (2σ) lines two-thirds of the way from the mean to the limits. All comparisons are strict.
- Special cause, in priority order (``special_cause_rule``): ``"outside_limits"`` (a point above
  the upper or below the lower limit); ``"trend"`` (all points of a run of 7 each strictly higher,
  or each strictly lower, than the one before — a tie breaks it); ``"two_in_three"`` (two of
  three consecutive points beyond a 2σ line but within the limits, all three on the same side of
  the mean, the window wholly inside the segment; only the points in the zone are flagged);
  ``"shift"`` (all points of a run of 7 on one side of the mean; a point on the mean breaks it).
- Direction of a special-cause point: above/below the mean, except for a trend point, whose
  direction is the step to the next point when the next point is also in a trend, otherwise the
  step from the previous point; only a rising step is rising (so a flat step between two trends,
  or the step down from the peak of a Λ, reads as falling). The direction is read through
  ``improvement`` into ``point_type``.
- Missing values (null or NaN) are never special cause and break every run and window. A segment
  with fewer than ``min_points_for_limits`` values, or whose screened moving ranges are all zero
  (or absent), has null limits and only common cause.
- Per series (repeated on each of its rows): ``variation_icon`` from the type of the last point;
  ``assurance_icon`` from the target (its value on the last row) against the limits of the last
  segment; ``trial_limits`` when the last segment has fewer than ``trial_below`` values.

This module knows nothing of definitions or the store.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

import polars as pl

from metrics.frames import FrameT, IntoExpr
from metrics.frames import as_expr as _expr
from metrics.frames import by_list as _by_list
from metrics.frames import like_input as _finish
from metrics.frames import to_lazy as _lazy
import polars.selectors as cs

__all__ = [
    "LIMIT",
    "NEAR",
    "SCREEN",
    "RULES",
    "POINT_TYPES",
    "VARIATION_ICONS",
    "ASSURANCE_ICONS",
    "xmr",
]

Improvement = Literal["increase", "decrease", "neutral"]
Scalar = int | float | dt.date | dt.datetime

#: Limits are mean ± LIMIT × mean moving range (3σ, with 2.66 = 3 / d₂, d₂ = 1.128).
LIMIT = 2.66
#: The 2σ ("near") lines are mean ± NEAR × mean moving range, as NHSRplotthedots: 2 × (2.66 / 3).
NEAR = 2 * (LIMIT / 3)
#: Moving ranges ≥ SCREEN × their mean are screened out before the limits are computed.
SCREEN = 3.267

#: Values of ``special_cause_rule``, highest priority first.
RULES: tuple[str, ...] = ("outside_limits", "trend", "two_in_three", "shift")
#: Values of ``point_type``.
POINT_TYPES: tuple[str, ...] = (
    "special_cause_improvement",
    "special_cause_concern",
    "special_cause_neutral_high",
    "special_cause_neutral_low",
    "common_cause",
)
#: Values of ``variation_icon`` (the Making Data Count icon names).
VARIATION_ICONS: tuple[str, ...] = (
    "improvement_high",
    "improvement_low",
    "concern_high",
    "concern_low",
    "neutral_high",
    "neutral_low",
    "common_cause",
)
#: Values of ``assurance_icon`` (null when there is no target, no limits, or polarity is neutral).
ASSURANCE_ICONS: tuple[str, ...] = ("consistent_pass", "consistent_fail", "inconsistent")

_P = "__spc_"  # prefix of temporary columns
_Y, _X, _ROW, _SEG, _POS, _N, _T = (f"{_P}{n}" for n in ("y", "x", "row", "seg", "pos", "n", "target"))
_MR, _AMR0, _AMR, _HAS, _HIGH = (f"{_P}{n}" for n in ("mr", "amr0", "amr", "has", "high"))


# --------------------------------------------------------------------------------------- helpers










def _any_ahead(flag: pl.Expr, width: int) -> pl.Expr:
    """True where ``flag`` is true on this row or one of the next ``width - 1`` rows.

    A window flag is set on the *last* row of a window (see :func:`_window`), so this marks every
    row of every window that fired. Windows never cross a segment boundary, so neither does this.
    """
    return pl.any_horizontal([flag.shift(-k).fill_null(False) for k in range(width)])


def _window(cond: pl.Expr, width: int, pos: pl.Expr, *, at_least: int | None = None) -> pl.Expr:
    """True on the last row of a run of ``width`` consecutive rows of one segment where at least
    ``at_least`` (default: all) of them satisfy ``cond``.

    The frame is sorted by series, segment and period, so the ``width`` rows ending at a row lie
    in its segment exactly when its position in the segment is at least ``width - 1``.
    """
    count = cond.fill_null(False).cast(pl.Int32).rolling_sum(width)
    return ((pos >= width - 1) & (count >= (width if at_least is None else at_least))).fill_null(False)


def _segment_raw(lf: pl.LazyFrame, rebase_at: object, series: list[str]) -> pl.Expr:
    """Number of rebase points at or before each row's period (made dense per series later)."""
    x = pl.col(_X)
    if rebase_at is None:
        return pl.lit(0, dtype=pl.Int32)
    if isinstance(rebase_at, (str, pl.Expr)):
        e = _expr(rebase_at)
        schema = lf.select(e.alias("r"), pl.col(_X)).collect_schema()
        dtype, xdtype = schema["r"], schema[_X]
        if dtype == pl.Boolean:  # true on the first row of each new segment
            return e.fill_null(False).cast(pl.Int32).cum_sum().over(series)
        if isinstance(dtype, pl.List):  # the series' rebase dates, repeated on its rows
            steps = e.cast(pl.List(xdtype)).cast(pl.List(pl.Int64)) - x.cast(pl.Int64)
            return steps.list.eval((pl.element() <= 0).sum()).list.first().fill_null(0).cast(pl.Int32)
        raise TypeError(f"rebase_at: expected a boolean or list-of-dates column, got {dtype}")
    dates = [rebase_at] if isinstance(rebase_at, (int, float, dt.date)) else list(rebase_at)  # type: ignore[arg-type]
    if not dates:
        return pl.lit(0, dtype=pl.Int32)
    return pl.sum_horizontal([(x >= pl.lit(d)).fill_null(False).cast(pl.Int32) for d in dates])


# ------------------------------------------------------------------------------------------- XmR


def xmr(
    df: FrameT,
    value: IntoExpr,
    period: IntoExpr,
    *,
    by: IntoExpr | Sequence[IntoExpr] | None = None,
    improvement: Improvement = "increase",
    target: IntoExpr | float | None = None,
    rebase_at: IntoExpr | Scalar | Sequence[Scalar] | None = None,
    screen_outliers: bool = True,
    two_in_three_counts_beyond_limits: bool = False,
    min_points_for_limits: int = 2,
    trial_below: int = 13,
) -> FrameT:
    """Add XmR limits, special-cause rules and Making Data Count icons to every point.

    Parameters
    ----------
    df
        DataFrame or LazyFrame with one row per point; the same type is returned, row for row and
        in the input order.
    value
        Column name or expression: the value plotted (cast to Float64; null or NaN = missing).
    period
        Column name or expression ordering the points (a date, datetime or integer).
    by
        Column(s) identifying a series (e.g. ``["metric_id", "place", "breakdown", "group"]``);
        ``None`` for a single series.
    improvement
        ``"increase"`` or ``"decrease"`` (the direction that is better), or ``"neutral"``.
    target
        A number applying to every series, or a column name/expression giving each series' target
        (its value on the series' last row is used). ``None``: no assurance icon.
    rebase_at
        Where new segments start (a known change in the process): a date (or a sequence of
        dates) applying to every series — a point on or after a date is in the segment it starts —
        or a column name/expression holding either each series' rebase dates as a list (repeated
        on its rows) or a boolean that is true on the first point of each new segment.
    screen_outliers
        Screen moving ranges ≥ 3.267 × their mean once before computing the limits (the
        NHSRplotthedots default); ``False`` as the Making Data Count Excel tools.
    two_in_three_counts_beyond_limits
        ``False`` (NHSRplotthedots): only points between a 2σ line and its limit count towards and
        are flagged by the two-in-three rule. ``True`` (MDC Excel): points beyond the limit count
        too (they are flagged ``"outside_limits"`` anyway).
    min_points_for_limits
        A segment with fewer non-missing values has no limits and only common cause (default 2:
        a single point has no moving range).
    trial_below
        ``trial_limits`` is true when the series' last segment has fewer non-missing values.

    Returns
    -------
    The frame with ``segment`` (Int32, 1 upwards within a series), ``mean``, ``lower_limit``,
    ``upper_limit``, ``near_lower``, ``near_upper``, ``moving_range`` (unscreened; null on a
    segment's first point), ``special_cause_rule`` (one of :data:`RULES` or null),
    ``point_type`` (:data:`POINT_TYPES`), and per series ``variation_icon``
    (:data:`VARIATION_ICONS`), ``assurance_icon`` (:data:`ASSURANCE_ICONS` or null) and
    ``trial_limits`` added. Existing columns of those names are replaced.

    Examples
    --------
    >>> df = pl.DataFrame({"month": range(1, 9), "y": [10.0, 12, 11, 13, 12, 11, 12, 18]})
    >>> out = xmr(df, "y", "month", target=6)
    >>> out.select("y", "mean", "upper_limit", "special_cause_rule", "point_type").with_columns(
    ...     cs.float().round(2)
    ... ).tail(3)
    shape: (3, 5)
    ┌──────┬───────┬─────────────┬────────────────────┬───────────────────────────┐
    │ y    ┆ mean  ┆ upper_limit ┆ special_cause_rule ┆ point_type                │
    │ ---  ┆ ---   ┆ ---         ┆ ---                ┆ ---                       │
    │ f64  ┆ f64   ┆ f64         ┆ str                ┆ str                       │
    ╞══════╪═══════╪═════════════╪════════════════════╪═══════════════════════════╡
    │ 11.0 ┆ 12.38 ┆ 17.7        ┆ null               ┆ common_cause              │
    │ 12.0 ┆ 12.38 ┆ 17.7        ┆ null               ┆ common_cause              │
    │ 18.0 ┆ 12.38 ┆ 17.7        ┆ outside_limits     ┆ special_cause_improvement │
    └──────┴───────┴─────────────┴────────────────────┴───────────────────────────┘
    >>> out.select("variation_icon", "assurance_icon", "trial_limits").row(0)
    ('improvement_high', 'consistent_pass', True)
    """
    if improvement not in ("increase", "decrease", "neutral"):
        raise ValueError(f"improvement must be 'increase', 'decrease' or 'neutral', got {improvement!r}")
    if not isinstance(min_points_for_limits, int) or min_points_for_limits < 2:
        raise ValueError("min_points_for_limits must be an integer ≥ 2")

    keys = _by_list(by) or [pl.lit(0)]
    S = [f"{_P}by{i}" for i in range(len(keys))]
    G = [*S, _SEG]
    if target is None:
        t = pl.lit(None, dtype=pl.Float64)
    elif isinstance(target, (int, float)) and not isinstance(target, bool):
        t = pl.lit(float(target))
    else:
        t = _expr(target).cast(pl.Float64)

    lf = (
        _lazy(df)
        .with_row_index(_ROW)
        .with_columns(
            _expr(value).cast(pl.Float64).fill_nan(None).alias(_Y),
            _expr(period).alias(_X),
            t.alias(_T),
            *[k.alias(s) for k, s in zip(keys, S)],
        )
        .sort([*S, _X], maintain_order=True)
    )
    lf = lf.with_columns(_segment_raw(lf, rebase_at, S).alias(_SEG)).with_columns(
        pl.col(_SEG).rank("dense").over(S).cast(pl.Int32)
    )

    y = pl.col(_Y)
    pos = pl.col(_POS)
    step = y - y.shift(1)  # the step from the previous row; valid where pos ≥ 1

    # --- centre line, moving ranges and limits, per segment
    lf = lf.with_columns(
        pl.int_range(pl.len(), dtype=pl.Int32).over(G).alias(_POS),
        y.count().over(G).alias(_N),
        y.mean().over(G).alias("mean"),
    ).with_columns(pl.when(pos >= 1).then(step.abs()).alias(_MR))
    mr = pl.col(_MR)
    lf = lf.with_columns(mr.mean().over(G).alias(_AMR0))
    screened = pl.when(mr < SCREEN * pl.col(_AMR0)).then(mr) if screen_outliers else mr
    lf = lf.with_columns(screened.mean().over(G).alias(_AMR))
    amr, mean = pl.col(_AMR), pl.col("mean")
    lf = lf.with_columns(((amr > 0) & (pl.col(_N) >= min_points_for_limits)).fill_null(False).alias(_HAS))
    has = pl.col(_HAS)
    lf = lf.with_columns(
        pl.when(has).then(mean - LIMIT * amr).alias("lower_limit"),
        pl.when(has).then(mean + LIMIT * amr).alias("upper_limit"),
        pl.when(has).then(mean - NEAR * amr).alias("near_lower"),
        pl.when(has).then(mean + NEAR * amr).alias("near_upper"),
        mr.alias("moving_range"),
    )

    # --- the four rules (on the frame sorted by series, segment, period)
    lo, hi = pl.col("lower_limit"), pl.col("upper_limit")
    outside = ((y > hi) | (y < lo)).fill_null(False)
    above = (y > mean).fill_null(False)
    below = (y < mean).fill_null(False)
    beyond_2s = ((y > pl.col("near_upper")) | (y < pl.col("near_lower"))).fill_null(False)
    zone = beyond_2s if two_in_three_counts_beyond_limits else beyond_2s & ~outside

    rising = (step > 0).fill_null(False)
    falling = (step < 0).fill_null(False)
    # a trend of 7 points = 6 consecutive steps in one direction ending on the row (pos ≥ 6)
    trend_end = ((pos >= 6) & (_window(rising, 6, pos) | _window(falling, 6, pos))).fill_null(False)
    in_trend = _any_ahead(trend_end, 7)
    two3_end = _window(zone, 3, pos, at_least=2) & (_window(above, 3, pos) | _window(below, 3, pos))
    in_two3 = zone & _any_ahead(two3_end, 3)
    in_shift = _any_ahead(_window(above, 7, pos) | _window(below, 7, pos), 7)

    rule = (
        pl.when(~has | y.is_null()).then(pl.lit(None, dtype=pl.String))
        .when(outside).then(pl.lit("outside_limits"))
        .when(in_trend).then(pl.lit("trend"))
        .when(in_two3).then(pl.lit("two_in_three"))
        .when(in_shift).then(pl.lit("shift"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )  # fmt: skip
    lf = lf.with_columns(rule.alias("special_cause_rule"), in_trend.alias("__spc_in_trend"))

    # direction: a trend point looks at the step to the next point when that point is in a trend
    # too (the next row of the same segment), otherwise at the step from the previous point
    next_in_trend = (pl.col("__spc_in_trend").shift(-1) & (pos.shift(-1) == pos + 1)).fill_null(False)
    trend_rising = pl.when(next_in_trend).then(rising.shift(-1)).otherwise(rising & (pos >= 1))
    r = pl.col("special_cause_rule")
    lf = lf.with_columns(pl.when(r == "trend").then(trend_rising).otherwise(above).alias(_HIGH))
    high = pl.col(_HIGH)
    if improvement == "neutral":
        special = pl.when(high).then(pl.lit("special_cause_neutral_high")).otherwise(
            pl.lit("special_cause_neutral_low")
        )
    else:
        good = high if improvement == "increase" else ~high
        special = pl.when(good).then(pl.lit("special_cause_improvement")).otherwise(
            pl.lit("special_cause_concern")
        )
    lf = lf.with_columns(pl.when(r.is_null()).then(pl.lit("common_cause")).otherwise(special).alias("point_type"))

    # --- per series: icons from the last point / last segment
    icons = {
        "common_cause": "common_cause",
        "special_cause_neutral_high": "neutral_high",
        "special_cause_neutral_low": "neutral_low",
        "special_cause_improvement": "improvement_low" if improvement == "decrease" else "improvement_high",
        "special_cause_concern": "concern_high" if improvement == "decrease" else "concern_low",
    }
    last = {c: pl.col(c).last().over(S) for c in ("point_type", "lower_limit", "upper_limit", _T, _N)}
    if improvement == "neutral":
        assurance = pl.lit(None, dtype=pl.String)
    else:
        above_is = "consistent_fail" if improvement == "increase" else "consistent_pass"
        below_is = "consistent_pass" if improvement == "increase" else "consistent_fail"
        tgt, ll, ul = last[_T], last["lower_limit"], last["upper_limit"]
        assurance = (
            pl.when(tgt.is_null() | ul.is_null()).then(pl.lit(None, dtype=pl.String))
            .when(tgt > ul).then(pl.lit(above_is))
            .when(tgt < ll).then(pl.lit(below_is))
            .otherwise(pl.lit("inconsistent"))
        )  # fmt: skip
    lf = lf.with_columns(
        last["point_type"].replace_strict(icons, return_dtype=pl.String).alias("variation_icon"),
        assurance.alias("assurance_icon"),
        (last[_N] < trial_below).alias("trial_limits"),
        pl.col(_SEG).alias("segment"),
    )

    out_cols = [
        "segment", "mean", "lower_limit", "upper_limit", "near_lower", "near_upper", "moving_range",
        "special_cause_rule", "point_type", "variation_icon", "assurance_icon", "trial_limits",
    ]  # fmt: skip
    lf = lf.sort(_ROW).select(~cs.starts_with(_P) & ~cs.by_name(out_cols, require_all=False), *out_cols)
    return _finish(df, lf)
