"""Public health statistics as pure frame-in / frame-out functions over Polars.

Every function takes a :class:`polars.DataFrame` or :class:`polars.LazyFrame` and returns the same
type with columns added (or, for the aggregating functions, one row per group). Column arguments
accept a column name or a :class:`polars.Expr`. The methods agree with PHEindicatormethods (R) and
PHStatsMethods (Python); see DESIGN.md §6.

Confidence levels are given as a float or a tuple of floats (default ``(0.95, 0.998)``). For each
level ``c`` the limits are written to ``lower_<pct>`` and ``upper_<pct>`` where ``<pct>`` is the
percentage with the dot replaced by ``_``: 0.95 → ``lower_95``, 0.998 → ``lower_99_8``,
0.9 → ``lower_90``. z = Φ⁻¹(1 − (1 − c)/2).

Invalid rows never raise: their value and limits are null and ``ci_note`` says why (``ci_note`` is
null when the row is fine). Null inputs give null outputs. An existing ``ci_note`` column is
replaced.

This module knows nothing of definitions or the store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from metrics.frames import FrameT, IntoExpr
from metrics.frames import as_expr as _expr
from metrics.frames import by_list as _by_list
from metrics.frames import like_input as _finish
from metrics.frames import to_lazy as _lazy
import polars.selectors as cs
# The quantile functions scipy.stats' ``ppf`` methods call for these distributions, without
# importing scipy.stats (0.8-1.2 s: a third of a command-line refresh's start-up).
from scipy import special as _special

__all__ = [
    "ESP2013",
    "ESP2013_BANDS",
    "ci_suffix",
    "proportion_ci",
    "rate_ci",
    "mean_ci",
    "mean_ci_from_moments",
    "dsr",
    "isr",
    "isr_rate",
    "quantile",
    "sii",
]

Confidence = float | Sequence[float]

#: Labels of the 19 European Standard Population 2013 age bands, youngest first.
ESP2013_BANDS: tuple[str, ...] = tuple(f"{a}-{a + 4}" for a in range(0, 90, 5)) + ("90+",)
#: European Standard Population 2013 weights for :data:`ESP2013_BANDS` (sum 100,000).
ESP2013: tuple[int, ...] = (
    5000, 5500, 5500, 5500, 6000, 6000, 6500, 7000, 7000, 7000,
    7000, 6500, 6000, 5500, 5000, 4000, 2500, 1500, 1000,
)  # fmt: skip

NOTE = "ci_note"
_P = "__stats_"  # prefix of temporary columns


# --------------------------------------------------------------------------------------- helpers




def _levels(confidence: Confidence) -> tuple[float, ...]:
    levels = (confidence,) if isinstance(confidence, (int, float)) else tuple(confidence)
    if not levels:
        raise ValueError("confidence: give at least one level")
    for c in levels:
        if not 0 < float(c) < 1:
            raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {c!r}")
    return tuple(float(c) for c in levels)


def ci_suffix(c: float) -> str:
    """Column suffix for a confidence level: 0.95 → ``"95"``, 0.998 → ``"99_8"``, 0.9 → ``"90"``.

    Examples
    --------
    >>> ci_suffix(0.998)
    '99_8'
    """
    return f"{c * 100:.10g}".replace(".", "_")


def _z(c: float) -> float:
    return float(_special.ndtri(1 - (1 - c) / 2))






def _note(*checks: tuple[pl.Expr, str]) -> pl.Expr:
    """First failing check's message (checks are conditions that are true when *invalid*)."""
    chain = None
    for cond, msg in checks:
        chain = (pl.when if chain is None else chain.when)(cond.fill_null(False)).then(pl.lit(msg))
    assert chain is not None
    return chain.otherwise(pl.lit(None, dtype=pl.String)).alias(NOTE)


def _ok() -> pl.Expr:
    return pl.col(NOTE).is_null()


def _numpy_map(col: str, fn: Callable[[np.ndarray], np.ndarray]) -> pl.Expr:
    """Apply a vectorised numpy/scipy function to a whole Float64 column (never row by row)."""

    def run(s: pl.Series) -> pl.Series:
        a = s.cast(pl.Float64).to_numpy()
        with np.errstate(all="ignore"):
            out = fn(np.asarray(a, dtype=np.float64))
        return pl.Series(s.name, out, dtype=pl.Float64).fill_nan(None)

    return pl.col(col).map_batches(run, return_dtype=pl.Float64, is_elementwise=True)


def _chi2_quantile(p: float, df: np.ndarray) -> np.ndarray:
    """scipy.stats.chi2.ppf(p, df) for 0 < p < 1 and df > 0, as scipy computes it."""
    return 2 * _special.gammaincinv(df / 2, p)


def _exact_poisson(a: np.ndarray, c: float, side: str) -> np.ndarray:
    """Exact (chi-squared) Poisson limit of a count, computed only where the count is < 10."""
    out = np.full(a.shape, np.nan)
    m = np.isfinite(a) & (a >= 0) & (a < 10)
    # counts below 10 take few distinct values: evaluate the quantile once per distinct count
    u, inv = np.unique(a[m], return_inverse=True)
    if side == "lower":
        vals = np.where(u > 0, _chi2_quantile((1 - c) / 2, 2 * np.where(u > 0, u, 1)) / 2, 0.0)
    else:
        vals = _chi2_quantile((1 + c) / 2, 2 * u + 2) / 2
    out[m] = vals[inv]
    return out


def _byar_lower(x: pl.Expr, z: float) -> pl.Expr:
    return x * (1 - 1 / (9 * x) - z / (3 * x.sqrt())) ** 3


def _byar_upper(x: pl.Expr, z: float) -> pl.Expr:
    x1 = x + 1
    return x1 * (1 - 1 / (9 * x1) + z / (3 * x1.sqrt())) ** 3


def _poisson_limits(x_col: str, c: float) -> tuple[pl.Expr, pl.Expr]:
    """Limits of a Poisson count: exact below 10, Byar from 10 (as PHEindicatormethods)."""
    z = _z(c)
    x = pl.col(x_col)
    small = x < 10
    lower = (
        pl.when(small)
        .then(_numpy_map(x_col, lambda a: _exact_poisson(a, c, "lower")))
        .otherwise(_byar_lower(x, z))
    )
    upper = (
        pl.when(small)
        .then(_numpy_map(x_col, lambda a: _exact_poisson(a, c, "upper")))
        .otherwise(_byar_upper(x, z))
    )
    return lower, upper


def _drop_temps(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.drop(cs.starts_with(_P))


# ---------------------------------------------------------------------------------- proportions


def proportion_ci(
    df: FrameT,
    numerator: IntoExpr,
    denominator: IntoExpr,
    *,
    confidence: Confidence = (0.95, 0.998),
    multiplier: float = 100,
) -> FrameT:
    """Add a proportion and its Wilson score confidence limits.

    ``value = numerator / denominator × multiplier``; limits are
    ``(2x + z² ∓ z·√(z² + 4x(1 − x/n))) / (2(n + z²)) × multiplier``. A numerator of 0 gives a
    lower limit of exactly 0; numerator = denominator gives an upper limit of exactly
    ``multiplier``. Non-integer numerators are accepted (as PHEindicatormethods).

    Parameters
    ----------
    df
        DataFrame or LazyFrame; the same type is returned.
    numerator, denominator
        Column names or expressions.
    confidence
        A level or a tuple of levels; one ``lower_<pct>``/``upper_<pct>`` pair per level.
    multiplier
        100 for a percentage (default), 1 for a proportion.

    Returns
    -------
    The frame with ``value``, the limit columns and ``ci_note`` added. Rows with a denominator
    ≤ 0, a negative numerator or numerator > denominator get null value and limits and a note.

    Examples
    --------
    >>> df = pl.DataFrame({"x": [65, 0], "n": [100, 10]})
    >>> proportion_ci(df, "x", "n", confidence=0.95).with_columns(cs.float().round(4))
    shape: (2, 6)
    ┌─────┬─────┬───────┬──────────┬──────────┬─────────┐
    │ x   ┆ n   ┆ value ┆ lower_95 ┆ upper_95 ┆ ci_note │
    │ --- ┆ --- ┆ ---   ┆ ---      ┆ ---      ┆ ---     │
    │ i64 ┆ i64 ┆ f64   ┆ f64      ┆ f64      ┆ str     │
    ╞═════╪═════╪═══════╪══════════╪══════════╪═════════╡
    │ 65  ┆ 100 ┆ 65.0  ┆ 55.2544  ┆ 73.6358  ┆ null    │
    │ 0   ┆ 10  ┆ 0.0   ┆ 0.0      ┆ 27.7533  ┆ null    │
    └─────┴─────┴───────┴──────────┴──────────┴─────────┘
    """
    levels = _levels(confidence)
    X, N = f"{_P}x", f"{_P}n"
    lf = _lazy(df).with_columns(
        _expr(numerator).cast(pl.Float64).alias(X), _expr(denominator).cast(pl.Float64).alias(N)
    )
    x, n = pl.col(X), pl.col(N)
    lf = lf.with_columns(
        _note(
            (x.is_null(), "numerator is null"),
            (n.is_null(), "denominator is null"),
            (~x.is_finite() | ~n.is_finite(), "numerator and denominator must be finite"),
            (n <= 0, "denominator must be > 0"),
            (x < 0, "negative count"),
            (x > n, "numerator > denominator"),
        )
    )
    ok = _ok()
    outs = [pl.when(ok).then(x / n * multiplier).alias("value")]
    for c in levels:
        z = _z(c)
        root = z * (z**2 + 4 * x * (1 - x / n)).sqrt()
        denom = 2 * (n + z**2)
        lo = pl.when(x == 0).then(0.0).otherwise((2 * x + z**2 - root) / denom * multiplier)
        hi = pl.when(x == n).then(float(multiplier)).otherwise((2 * x + z**2 + root) / denom * multiplier)
        sfx = ci_suffix(c)
        outs += [pl.when(ok).then(lo).alias(f"lower_{sfx}"), pl.when(ok).then(hi).alias(f"upper_{sfx}")]
    lf = lf.with_columns(outs)
    lf = lf.select(pl.exclude(NOTE), pl.col(NOTE))
    return _finish(df, _drop_temps(lf))


# ---------------------------------------------------------------------------------------- rates


def rate_ci(
    df: FrameT,
    count: IntoExpr,
    population: IntoExpr,
    *,
    multiplier: float = 100_000,
    confidence: Confidence = (0.95, 0.998),
) -> FrameT:
    """Add a crude rate and its Poisson confidence limits.

    ``value = count / population × multiplier``. Limits of the count are exact (chi-squared) below
    10 events and Byar's approximation from 10, then divided by the population and multiplied.
    A count of 0 is valid: lower 0, upper χ²₍(1+c)/2, 2₎/2 / n (3.689/n × multiplier at 95%).
    The count may exceed the population (e.g. admissions per person).

    Parameters
    ----------
    df
        DataFrame or LazyFrame; the same type is returned.
    count, population
        Column names or expressions.
    multiplier
        Rate per ``multiplier`` population (default 100,000).
    confidence
        A level or a tuple of levels.

    Returns
    -------
    The frame with ``value``, the limit columns and ``ci_note`` added. A population ≤ 0 or a
    negative count gives null value and limits and a note.

    Examples
    --------
    >>> df = pl.DataFrame({"deaths": [0, 65], "pop": [1000, 100]})
    >>> rate_ci(df, "deaths", "pop", multiplier=100, confidence=0.95).with_columns(cs.float().round(3))
    shape: (2, 6)
    ┌────────┬──────┬───────┬──────────┬──────────┬─────────┐
    │ deaths ┆ pop  ┆ value ┆ lower_95 ┆ upper_95 ┆ ci_note │
    │ ---    ┆ ---  ┆ ---   ┆ ---      ┆ ---      ┆ ---     │
    │ i64    ┆ i64  ┆ f64   ┆ f64      ┆ f64      ┆ str     │
    ╞════════╪══════╪═══════╪══════════╪══════════╪═════════╡
    │ 0      ┆ 1000 ┆ 0.0   ┆ 0.0      ┆ 0.369    ┆ null    │
    │ 65     ┆ 100  ┆ 65.0  ┆ 50.163   ┆ 82.849   ┆ null    │
    └────────┴──────┴───────┴──────────┴──────────┴─────────┘
    """
    levels = _levels(confidence)
    X, N = f"{_P}x", f"{_P}n"
    lf = _lazy(df).with_columns(
        _expr(count).cast(pl.Float64).alias(X), _expr(population).cast(pl.Float64).alias(N)
    )
    x, n = pl.col(X), pl.col(N)
    lf = lf.with_columns(
        _note(
            (x.is_null(), "count is null"),
            (n.is_null(), "population is null"),
            (~x.is_finite() | ~n.is_finite(), "count and population must be finite"),
            (n <= 0, "denominator must be > 0"),
            (x < 0, "negative count"),
        )
    )
    ok = _ok()
    outs = [pl.when(ok).then(x / n * multiplier).alias("value")]
    for c in levels:
        lo, hi = _poisson_limits(X, c)
        sfx = ci_suffix(c)
        outs += [
            pl.when(ok).then(lo / n * multiplier).alias(f"lower_{sfx}"),
            pl.when(ok).then(hi / n * multiplier).alias(f"upper_{sfx}"),
        ]
    lf = lf.with_columns(outs)
    lf = lf.select(pl.exclude(NOTE), pl.col(NOTE))
    return _finish(df, _drop_temps(lf))


# ---------------------------------------------------------------------------------------- means


def _t_quantile(a: np.ndarray, q: float) -> np.ndarray:
    """Student's t quantile with n − 1 degrees of freedom for counts n ≥ 2 (NaN otherwise),
    evaluated once per distinct count."""
    out = np.full(a.shape, np.nan)
    m = np.isfinite(a) & (a >= 2)
    u, inv = np.unique(a[m], return_inverse=True)
    out[m] = _special.stdtrit(u - 1, q)[inv]  # (scipy.stats.t.ppf(q, u - 1))
    return out


def _t_limits(mean: str, sd: str, cnt: str, levels: tuple[float, ...]) -> list[pl.Expr]:
    ok = _ok()
    outs = []
    for c in levels:
        q = 1 - (1 - c) / 2
        t = _numpy_map(cnt, lambda a, q=q: _t_quantile(a, q))
        half = t * pl.col(sd) / pl.col(cnt).sqrt()
        sfx = ci_suffix(c)
        outs += [
            pl.when(ok).then(pl.col(mean) - half).alias(f"lower_{sfx}"),
            pl.when(ok).then(pl.col(mean) + half).alias(f"upper_{sfx}"),
        ]
    return outs


def mean_ci(
    df: FrameT,
    value: IntoExpr,
    *,
    by: IntoExpr | Sequence[IntoExpr] | None = None,
    confidence: Confidence = (0.95, 0.998),
) -> FrameT:
    """Aggregate row-level values to a mean per group with Student's t confidence limits.

    As PHEindicatormethods' ``phe_mean``: per group ``value_sum``, ``value_count`` (non-null
    values), ``stdev`` (sample standard deviation, n − 1), ``value`` (the mean) and limits
    ``mean ± t₍1−(1−c)/2, n−1₎ · sd / √n``. A group containing any null value gets null sum, sd,
    mean and limits (note "missing values in group"). A group of one value keeps its mean but has
    no stdev or limits (note "count below 2: no CI for a mean").

    Parameters
    ----------
    df
        DataFrame or LazyFrame of row-level values; the same type is returned.
    value
        Column name or expression.
    by
        Column name(s) or expression(s) to group by; ``None`` gives one row for the whole frame.
        Groups come out in order of first appearance.
    confidence
        A level or a tuple of levels.

    Examples
    --------
    >>> df = pl.DataFrame({"g": ["a", "a", "a"], "v": [1.0, 2.0, 6.0]})
    >>> mean_ci(df, "v", by="g", confidence=0.95).with_columns(cs.float().round(3))
    shape: (1, 8)
    ┌─────┬───────────┬─────────────┬───────┬───────┬──────────┬──────────┬─────────┐
    │ g   ┆ value_sum ┆ value_count ┆ stdev ┆ value ┆ lower_95 ┆ upper_95 ┆ ci_note │
    │ --- ┆ ---       ┆ ---         ┆ ---   ┆ ---   ┆ ---      ┆ ---      ┆ ---     │
    │ str ┆ f64       ┆ u32         ┆ f64   ┆ f64   ┆ f64      ┆ f64      ┆ str     │
    ╞═════╪═══════════╪═════════════╪═══════╪═══════╪══════════╪══════════╪═════════╡
    │ a   ┆ 9.0       ┆ 3           ┆ 2.646 ┆ 3.0   ┆ -3.572   ┆ 9.572    ┆ null    │
    └─────┴───────────┴─────────────┴───────┴───────┴──────────┴──────────┴─────────┘
    """
    levels = _levels(confidence)
    v = _expr(value).cast(pl.Float64)
    has_null = v.null_count() > 0
    aggs = [
        pl.when(has_null).then(None).otherwise(v.sum()).alias("value_sum"),
        v.count().alias("value_count"),
        pl.when(has_null).then(None).otherwise(v.std(ddof=1)).alias("stdev"),
        has_null.alias(f"{_P}has_null"),
    ]
    lf = _lazy(df)
    keys = _by_list(by)
    lf = lf.group_by(keys, maintain_order=True).agg(aggs) if keys else lf.select(aggs)
    lf = lf.with_columns(
        _note(
            (pl.col(f"{_P}has_null"), "missing values in group"),
            (pl.col("value_count") == 0, "no values"),
            (pl.col("value_count") < 2, "count below 2: no CI for a mean"),
        )
    )
    short = pl.col(NOTE) == "count below 2: no CI for a mean"
    lf = lf.with_columns(
        pl.when(_ok() | short.fill_null(False)).then(pl.col("value_sum") / pl.col("value_count")).alias("value")
    )
    lf = lf.with_columns(_t_limits("value", "stdev", "value_count", levels))
    lf = lf.select(pl.exclude(NOTE), pl.col(NOTE))
    return _finish(df, _drop_temps(lf))


def mean_ci_from_moments(
    df: FrameT,
    total: IntoExpr,
    total_squares: IntoExpr,
    count: IntoExpr,
    *,
    confidence: Confidence = (0.95, 0.998),
) -> FrameT:
    """Add a mean and Student's t limits from per-group partial sums (Σx, Σx², n).

    Partial sums add up, so a caller can aggregate them at the finest grain, roll them up, and
    then call this. ``stdev = √((Σx² − (Σx)²/n) / (n − 1))`` (floored at 0 against rounding),
    ``value = Σx / n``, limits as :func:`mean_ci`, with which it agrees.

    Parameters
    ----------
    df
        DataFrame or LazyFrame with one row per group; the same type is returned.
    total, total_squares, count
        Column names or expressions for Σx, Σx² and n.
    confidence
        A level or a tuple of levels.

    Returns
    -------
    The frame with ``stdev``, ``value``, the limit columns and ``ci_note`` added. n = 0 or a null
    input gives nulls; n = 1 keeps the mean with null stdev and limits.

    Examples
    --------
    >>> df = pl.DataFrame({"s": [9.0], "ss": [41.0], "n": [3]})
    >>> mean_ci_from_moments(df, "s", "ss", "n", confidence=0.95).with_columns(cs.float().round(3))
    shape: (1, 8)
    ┌─────┬──────┬─────┬───────┬───────┬──────────┬──────────┬─────────┐
    │ s   ┆ ss   ┆ n   ┆ stdev ┆ value ┆ lower_95 ┆ upper_95 ┆ ci_note │
    │ --- ┆ ---  ┆ --- ┆ ---   ┆ ---   ┆ ---      ┆ ---      ┆ ---     │
    │ f64 ┆ f64  ┆ i64 ┆ f64   ┆ f64   ┆ f64      ┆ f64      ┆ str     │
    ╞═════╪══════╪═════╪═══════╪═══════╪══════════╪══════════╪═════════╡
    │ 9.0 ┆ 41.0 ┆ 3   ┆ 2.646 ┆ 3.0   ┆ -3.572   ┆ 9.572    ┆ null    │
    └─────┴──────┴─────┴───────┴───────┴──────────┴──────────┴─────────┘
    """
    levels = _levels(confidence)
    S, SS, N = f"{_P}s", f"{_P}ss", f"{_P}n"
    lf = _lazy(df).with_columns(
        _expr(total).cast(pl.Float64).alias(S),
        _expr(total_squares).cast(pl.Float64).alias(SS),
        _expr(count).cast(pl.Float64).alias(N),
    )
    s, ss, n = pl.col(S), pl.col(SS), pl.col(N)
    short_msg = "count below 2: no CI for a mean"
    lf = lf.with_columns(
        _note(
            (s.is_null() | ss.is_null() | n.is_null(), "missing total, total of squares or count"),
            (n < 0, "negative count"),
            (n == 0, "no values"),
            (ss < 0, "negative total of squares"),
            (n < 2, short_msg),
        )
    )
    short = (pl.col(NOTE) == short_msg).fill_null(False)
    var = ((ss - s * s / n) / (n - 1)).clip(lower_bound=0.0)
    lf = lf.with_columns(
        pl.when(_ok()).then(var.sqrt()).alias("stdev"),
        pl.when(_ok() | short).then(s / n).alias("value"),
    )
    lf = lf.with_columns(_t_limits("value", "stdev", N, levels))
    lf = lf.select(pl.exclude(NOTE), pl.col(NOTE))
    return _finish(df, _drop_temps(lf))


# ------------------------------------------------------------------------------ standardisation


def _band_key(band: pl.Expr) -> pl.Expr:
    """Normalise an age band to a string key: labels lose spaces, integers become their digits."""
    return band.cast(pl.String).str.replace_all(" ", "", literal=True)


def _standard_mapping(standard: str | dict) -> dict[str, float]:
    if isinstance(standard, str):
        if standard.lower() != "esp2013":
            raise ValueError(f"unknown built-in standard {standard!r}")
        pairs = list(zip(ESP2013_BANDS, ESP2013))
        pairs += [(str(5 * i), w) for i, w in enumerate(ESP2013)]
    else:
        pairs = list(standard.items())
    return {str(k).replace(" ", ""): float(w) for k, w in pairs}


def dsr(
    df: FrameT,
    count: IntoExpr,
    population: IntoExpr,
    *,
    age_band: IntoExpr | None = None,
    by: IntoExpr | Sequence[IntoExpr] | None = None,
    standard: str | pl.Expr | dict = "esp2013",
    multiplier: float = 100_000,
    confidence: Confidence = (0.95, 0.998),
    independent_events: bool = True,
    event_frequency: IntoExpr | None = None,
    min_count: int = 10,
) -> FrameT:
    """Directly standardised rate per group with Dobson confidence limits.

    ``DSR = Σ(Oᵢwᵢ/nᵢ) / Σwᵢ × multiplier``, ``var = Σ(Oᵢwᵢ²/nᵢ²) / (Σwᵢ)²`` and limits
    ``DSR + √(var/O) · (Byar limit of O − O) × multiplier`` with ``O = ΣOᵢ``, as
    PHEindicatormethods' ``calculate_dsr``. Groups with fewer than ``min_count`` (10) events get a
    null value and limits ("fewer than 10 events: DSR not calculated"). The limits are not
    clipped: with few events and unequal band rates the lower limit can be below 0, as there.

    Parameters
    ----------
    df
        DataFrame or LazyFrame with one row per group and standardisation category (age band).
        Rows repeating a group and band are added together (counts and populations are partial
        sums), so partials can be rolled up before calling this.
    count, population
        Events and population per row (column names or expressions).
    age_band
        The standardisation category. Required for ``standard="esp2013"`` or a mapping, and for
        non-independent events. ESP 2013 accepts the labels ``"0-4", "5-9", …, "85-89", "90+"``
        (spaces ignored) or the integer lower bounds ``0, 5, …, 90``. Without ``age_band`` every
        row is its own category and ``standard`` must be a column.
    by
        Grouping column(s); ``None`` gives one row for the whole frame. Groups come out in order
        of first appearance.
    standard
        ``"esp2013"`` (built in, the default), a mapping ``{band: weight}``, or a column name or
        expression giving each row's standard population (a column that is itself named
        "esp2013" must be passed as ``pl.col("esp2013")``). Σwᵢ is over the bands present in a
        group, so an indicator restricted to ages 65+ simply supplies bands 65-69 … 90+.
        Supply every band of a group, with zero counts, or its weight is left out.
    multiplier
        Rate per ``multiplier`` (default 100,000).
    confidence
        A level or a tuple of levels.
    independent_events
        ``False`` applies PHEindicatormethods' adjustment for people with repeated events: each
        row's ``count`` is then the number of *people* with ``event_frequency`` events in that
        group and band; events are ``Σ f·count`` and the variance ``Σ f²·count·(w/n)² / (Σw)²``.
        Population and standard must be the same on every frequency row of a band. (Σw is over
        the group's distinct bands; PHEindicatormethods sums it per frequency, which is the
        same when every frequency lists every band.)
    event_frequency
        Column or expression with the event frequency (required when ``independent_events`` is
        False).
    min_count
        Fewest events for which a DSR is calculated (10, as PHE).

    Returns
    -------
    One row per group: the ``by`` columns, ``total_count``, ``total_pop``, ``value``, limits and
    ``ci_note``.

    Examples
    --------
    >>> df = pl.DataFrame({"band": ["65-69", "70-74"], "deaths": [30, 50], "pop": [1000, 800]})
    >>> dsr(df, "deaths", "pop", age_band="band", confidence=0.95).with_columns(cs.float().round(1))
    shape: (1, 6)
    ┌─────────────┬───────────┬────────┬──────────┬──────────┬─────────┐
    │ total_count ┆ total_pop ┆ value  ┆ lower_95 ┆ upper_95 ┆ ci_note │
    │ ---         ┆ ---       ┆ ---    ┆ ---      ┆ ---      ┆ ---     │
    │ f64         ┆ f64       ┆ f64    ┆ f64      ┆ f64      ┆ str     │
    ╞═════════════╪═══════════╪════════╪══════════╪══════════╪═════════╡
    │ 80.0        ┆ 1800.0    ┆ 4547.6 ┆ 3604.1   ┆ 5662.0   ┆ null    │
    └─────────────┴───────────┴────────┴──────────┴──────────┴─────────┘
    """
    levels = _levels(confidence)
    if not independent_events and (event_frequency is None or age_band is None):
        raise ValueError("non-independent events need both event_frequency and age_band")
    keys = _by_list(by)
    X, N, W, F, B, G, BIT = (f"{_P}{s}" for s in ("x", "n", "w", "f", "b", "bad", "bit"))
    lf = _lazy(df)
    key_names = [f"{_P}k{i}" for i in range(len(keys))]
    # output names of the keys are resolved after the aggregation
    cols = [k.alias(kn) for k, kn in zip(keys, key_names)]
    cols += [_expr(count).cast(pl.Float64).alias(X), _expr(population).cast(pl.Float64).alias(N)]
    builtin = isinstance(standard, dict) or (isinstance(standard, str) and standard.lower() == "esp2013")
    if builtin:
        if age_band is None:
            raise ValueError("standard='esp2013' or a mapping needs age_band")
        mapping = _standard_mapping(standard)
        band = _band_key(_expr(age_band))
        weight = band.replace_strict(mapping, default=None, return_dtype=pl.Float64)  # type: ignore[arg-type]
        cols += [band.alias(B), weight.alias(W)]
        if independent_events and keys and len(mapping) <= 64:  # a bit per band: finds repeats
            bits = {k: 1 << i for i, k in enumerate(mapping)}
            cols.append(band.replace_strict(bits, default=None, return_dtype=pl.UInt64).alias(BIT))
    else:
        cols += [_expr(standard).cast(pl.Float64).alias(W)]
        cols += [(_expr(age_band) if age_band is not None else pl.int_range(pl.len())).alias(B)]
    f = _expr(event_frequency).cast(pl.Float64) if not independent_events else pl.lit(1.0)
    cols.append(f.alias(F))
    lf = lf.select(cols)
    cols_out = [c.meta.output_name() for c in cols]

    x, n, w, fr = pl.col(X), pl.col(N), pl.col(W), pl.col(F)
    row_bad = _note(
        (x.is_null(), "count is null"),
        (n.is_null(), "population is null"),
        (pl.col(B).is_null(), "age band is null"),
        (w.is_null() & pl.lit(builtin), "age band not in the standard"),
        (w.is_null(), "standard population is null"),
        (fr.is_null(), "event frequency is null"),
        (~x.is_finite() | ~n.is_finite() | ~w.is_finite(), "inputs must be finite"),
        (x < 0, "negative count"),
        (n <= 0, "denominator must be > 0"),
        (w < 0, "negative standard population"),
        (fr < 0, "negative event frequency"),
    ).alias(G)
    lf = lf.with_columns(row_bad)
    SWR, SSQ, SW, WD, ND, DUP = (f"{_P}{s}" for s in ("swr", "ssq", "sw", "wdiff", "ndiff", "dup"))
    stat_cols = ["total_count", "total_pop", SWR, SSQ, SW, G, WD, ND]

    # sums per group when each row is a band of its own (f is 1 when events are independent)
    row_sums = [
        x.sum().alias("total_count"),
        n.sum().alias("total_pop"),
        (x * w / n).sum().alias(SWR),
        (x * (w / n) ** 2).sum().alias(SSQ),
        w.sum().alias(SW),
        pl.col(G).drop_nulls().first().alias(G),
        pl.lit(False).alias(WD),  # a band of one row agrees with itself
        pl.lit(False).alias(ND),
    ]

    def by_group(frame: pl.LazyFrame, aggs: list[pl.Expr]) -> pl.LazyFrame:
        return frame.group_by(key_names, maintain_order=True).agg(aggs) if key_names else frame.select(aggs)

    def by_band(frame: pl.LazyFrame) -> pl.LazyFrame:
        """Sums per group through one row per group and band: events Σf·x, variance weight
        Σf²·x, n and w per band. Needed when a group repeats a band (partial sums, or one row per
        event frequency)."""
        # a built-in standard gives every row of a band the same weight; a column might not
        w_diff = pl.lit(False) if builtin else (w.max() != w.min())
        n_agg = n.sum() if independent_events else n.first()
        n_diff = pl.lit(False) if independent_events else (n.max() != n.min())
        frame = frame.group_by([*key_names, B], maintain_order=True).agg(
            (fr * x).sum().alias(X),
            (fr * fr * x).sum().alias(f"{_P}x2"),
            n_agg.alias(N),
            w.first().alias(W),
            pl.col(G).drop_nulls().first().alias(G),
            w_diff.alias(WD),
            n_diff.alias(ND),
        )
        return by_group(frame, [
            x.sum().alias("total_count"),
            n.sum().alias("total_pop"),
            (x * w / n).sum().alias(SWR),
            (pl.col(f"{_P}x2") * (w / n) ** 2).sum().alias(SSQ),
            w.sum().alias(SW),
            pl.col(G).drop_nulls().first().alias(G),
            pl.col(WD).any().alias(WD),
            pl.col(ND).any().alias(ND),
        ])  # fmt: skip

    if age_band is None:  # every row is its own band: the sums per band are the rows
        lf = by_group(lf, row_sums)
    elif not independent_events or not key_names:
        # a row per band and event frequency; or one group, whose bands are few
        lf = by_band(lf)
    else:
        # Where a group's rows are its bands (the usual case) the sums per band are the rows
        # themselves, so one pass over the rows gives the same sums as a pass through a row per
        # group and band, which for 100,000 groups × 19 bands means 1.9M groups. Groups that
        # repeat a band (partial sums) are redone through bands and joined back on the key.
        rows = lf.cache()  # read by both passes: prepare the rows once
        if BIT in cols_out:  # a band repeats, or is not in the standard (null bit), or is null
            repeats_band = pl.col(BIT).bitwise_or().bitwise_count_ones() != pl.len()
        else:
            repeats_band = pl.col(B).n_unique() < pl.len()
        fast = by_group(rows, [*row_sums, repeats_band.alias(DUP)])
        repeats = fast.filter(pl.col(DUP)).select(key_names)
        # in row order: a band's weight and note are those of its first row
        again = rows.join(repeats, on=key_names, how="semi", nulls_equal=True, maintain_order="left")
        redo = by_band(again).select(*key_names, *(pl.col(c).alias(f"{_P}redo{c}") for c in stat_cols))
        lf = fast.join(redo, on=key_names, how="left", nulls_equal=True, maintain_order="left")
        lf = lf.with_columns(
            pl.when(pl.col(DUP)).then(pl.col(f"{_P}redo{c}")).otherwise(pl.col(c)).alias(c) for c in stat_cols
        )
    O = pl.col("total_count")
    group_note = _note(
        (pl.col(WD), "standard population differs within an age band"),
        (pl.col(ND), "population differs between event-frequency rows of a band"),
        (pl.col(SW) <= 0, "standard population sums to 0"),
        (O < min_count, f"fewer than {min_count} events: DSR not calculated"),
    )
    lf = lf.with_columns(pl.coalesce(pl.col(G), group_note).alias(NOTE))
    ok = _ok()
    sw = pl.col(SW)
    value = pl.col(SWR) / sw * multiplier
    var = pl.col(SSQ) / sw**2
    outs = [pl.when(ok).then(value).alias("value")]
    for c in levels:
        z = _z(c)
        scale = (var / O).sqrt() * multiplier
        sfx = ci_suffix(c)
        outs += [
            pl.when(ok).then(value + scale * (_byar_lower(O, z) - O)).alias(f"lower_{sfx}"),
            pl.when(ok).then(value + scale * (_byar_upper(O, z) - O)).alias(f"upper_{sfx}"),
        ]
    lf = lf.with_columns(outs)
    out_names = [k.meta.output_name() for k in keys]
    lf = lf.rename(dict(zip(key_names, out_names)))
    head = [*out_names, "total_count", "total_pop"]
    lf = lf.select(*head, pl.exclude(*head, NOTE), NOTE)
    return _finish(df, _drop_temps(lf))


def _isr(
    df: FrameT,
    count: IntoExpr | None,
    population: IntoExpr,
    ref_count: IntoExpr,
    ref_population: IntoExpr,
    *,
    by: IntoExpr | Sequence[IntoExpr] | None,
    multiplier: float,
    confidence: Confidence,
    observed: pl.DataFrame | pl.LazyFrame | None,
    as_rate: bool,
) -> FrameT:
    levels = _levels(confidence)
    keys = _by_list(by)
    out_names = [k.meta.output_name() for k in keys]
    X, N, XR, NR, G = (f"{_P}{s}" for s in ("x", "n", "xr", "nr", "bad"))
    if observed is not None and not isinstance(count, str):
        raise ValueError("with observed totals, count must name the column of the observed frame")
    cols = [*keys, _expr(population).cast(pl.Float64).alias(N)]
    cols += [_expr(ref_count).cast(pl.Float64).alias(XR), _expr(ref_population).cast(pl.Float64).alias(NR)]
    x_in = pl.lit(0.0) if observed is not None else _expr(count).cast(pl.Float64)  # type: ignore[arg-type]
    cols.append(x_in.alias(X))
    lf = _lazy(df).select(cols)
    x, n, xr, nr = pl.col(X), pl.col(N), pl.col(XR), pl.col(NR)
    lf = lf.with_columns(
        _note(
            (x.is_null(), "count is null"),
            (n.is_null(), "population is null"),
            (xr.is_null() | nr.is_null(), "reference count or population is null"),
            (~x.is_finite() | ~n.is_finite() | ~xr.is_finite() | ~nr.is_finite(), "inputs must be finite"),
            (x < 0, "negative count"),
            (n < 0, "negative population"),
            (xr < 0, "negative reference count"),
            (nr <= 0, "reference population must be > 0"),
        ).alias(G)
    )
    aggs = [
        x.sum().alias("observed"),
        (n * xr / nr).sum().alias("expected"),
        pl.col(G).drop_nulls().first().alias(G),
    ]
    if as_rate:
        aggs.append((xr.sum() / nr.sum() * multiplier).alias("ref_rate"))
    lf = lf.group_by(out_names, maintain_order=True).agg(aggs) if out_names else lf.select(aggs)
    if observed is not None:
        observed_count = pl.col(count).cast(pl.Float64).alias("observed")  # type: ignore[arg-type]
        obs = _lazy(observed).select(*out_names, observed_count)
        lf = lf.drop("observed")
        if out_names:
            lf = lf.join(obs, on=out_names, how="left", nulls_equal=True, maintain_order="left")
        else:
            lf = lf.join(obs, how="cross", maintain_order="left")
    O, E = pl.col("observed"), pl.col("expected")
    lf = lf.with_columns(
        pl.coalesce(
            pl.col(G),
            _note(
                (O.is_null(), "observed is null"),
                (O < 0, "negative count"),
                (E <= 0, "expected must be > 0"),
            ),
        ).alias(NOTE)
    )
    ok = _ok()
    scale = (pl.col("ref_rate") if as_rate else pl.lit(float(multiplier))) / E
    outs = [pl.when(ok).then(O * scale).alias("value")]
    for c in levels:
        lo, hi = _poisson_limits("observed", c)
        sfx = ci_suffix(c)
        outs += [
            pl.when(ok).then(lo * scale).alias(f"lower_{sfx}"),
            pl.when(ok).then(hi * scale).alias(f"upper_{sfx}"),
        ]
    lf = lf.with_columns(outs)
    head = [*out_names, "observed", "expected", *(["ref_rate"] if as_rate else [])]
    lf = lf.select(*head, pl.exclude(*head, NOTE), NOTE)
    return _finish(df, _drop_temps(lf))


def isr(
    df: FrameT,
    count: IntoExpr | None,
    population: IntoExpr,
    ref_count: IntoExpr,
    ref_population: IntoExpr,
    *,
    by: IntoExpr | Sequence[IntoExpr] | None = None,
    multiplier: float = 1,
    confidence: Confidence = (0.95, 0.998),
    observed: pl.DataFrame | pl.LazyFrame | None = None,
) -> FrameT:
    """Indirectly standardised ratio per group (observed / expected), as ``calculate_ISRatio``.

    ``E = Σ nᵢ · x_refᵢ / n_refᵢ``; ``value = O / E × multiplier``; limits are the exact Poisson
    (O < 10) or Byar (O ≥ 10) limits of O divided by E, times the multiplier.

    Parameters
    ----------
    df
        DataFrame or LazyFrame with one row per group and standardisation category, carrying the
        reference count and population of that category (join them on first).
    count
        Observed events per row. When ``observed`` is given, the name of its count column
        instead (``df`` then needs no count).
    population
        Population per row (≥ 0; a category with no population adds nothing to E).
    ref_count, ref_population
        Reference events and population for the row's category (reference population > 0).
    by
        Grouping column(s); ``None`` gives one row. Groups come out in order of first appearance.
    multiplier
        1 for a ratio (default), 100 for a ratio × 100 (an SMR).
    confidence
        A level or a tuple of levels.
    observed
        Optional frame of observed totals per group (the ``by`` columns and ``count``), for when
        the events are not broken down by category.

    Returns
    -------
    One row per group: the ``by`` columns, ``observed``, ``expected``, ``value``, limits and
    ``ci_note``.

    Examples
    --------
    >>> df = pl.DataFrame({"x": [5, 20], "n": [1000, 500], "xr": [400, 3000], "nr": [100000, 50000]})
    >>> isr(df, "x", "n", "xr", "nr", multiplier=100, confidence=0.95).with_columns(cs.float().round(2))
    shape: (1, 6)
    ┌──────────┬──────────┬───────┬──────────┬──────────┬─────────┐
    │ observed ┆ expected ┆ value ┆ lower_95 ┆ upper_95 ┆ ci_note │
    │ ---      ┆ ---      ┆ ---   ┆ ---      ┆ ---      ┆ ---     │
    │ f64      ┆ f64      ┆ f64   ┆ f64      ┆ f64      ┆ str     │
    ╞══════════╪══════════╪═══════╪══════════╪══════════╪═════════╡
    │ 25.0     ┆ 34.0     ┆ 73.53 ┆ 47.57    ┆ 108.55   ┆ null    │
    └──────────┴──────────┴───────┴──────────┴──────────┴─────────┘
    """
    return _isr(
        df, count, population, ref_count, ref_population, by=by, multiplier=multiplier,
        confidence=confidence, observed=observed, as_rate=False,
    )  # fmt: skip


def isr_rate(
    df: FrameT,
    count: IntoExpr | None,
    population: IntoExpr,
    ref_count: IntoExpr,
    ref_population: IntoExpr,
    *,
    by: IntoExpr | Sequence[IntoExpr] | None = None,
    multiplier: float = 100_000,
    confidence: Confidence = (0.95, 0.998),
    observed: pl.DataFrame | pl.LazyFrame | None = None,
) -> FrameT:
    """Indirectly standardised rate per group, as ``calculate_ISRate``.

    The ratio of :func:`isr` times the reference rate ``ref_rate = Σx_ref / Σn_ref × multiplier``
    (summed over the group's categories); limits scale the same way. Arguments as :func:`isr`.

    Returns
    -------
    One row per group: the ``by`` columns, ``observed``, ``expected``, ``ref_rate``, ``value``,
    limits and ``ci_note``.

    Examples
    --------
    >>> df = pl.DataFrame({"x": [5, 20], "n": [1000, 500], "xr": [400, 3000], "nr": [100000, 50000]})
    >>> isr_rate(df, "x", "n", "xr", "nr", confidence=0.95).with_columns(cs.float().round(1))
    shape: (1, 7)
    ┌──────────┬──────────┬──────────┬────────┬──────────┬──────────┬─────────┐
    │ observed ┆ expected ┆ ref_rate ┆ value  ┆ lower_95 ┆ upper_95 ┆ ci_note │
    │ ---      ┆ ---      ┆ ---      ┆ ---    ┆ ---      ┆ ---      ┆ ---     │
    │ f64      ┆ f64      ┆ f64      ┆ f64    ┆ f64      ┆ f64      ┆ str     │
    ╞══════════╪══════════╪══════════╪════════╪══════════╪══════════╪═════════╡
    │ 25.0     ┆ 34.0     ┆ 2266.7   ┆ 1666.7 ┆ 1078.3   ┆ 2460.4   ┆ null    │
    └──────────┴──────────┴──────────┴────────┴──────────┴──────────┴─────────┘
    """
    return _isr(
        df, count, population, ref_count, ref_population, by=by, multiplier=multiplier,
        confidence=confidence, observed=observed, as_rate=True,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------- quantiles


def quantile(
    df: FrameT,
    value: IntoExpr,
    *,
    by: IntoExpr | Sequence[IntoExpr] | None = None,
    n_quantiles: int = 10,
    invert: bool | IntoExpr = True,
    name: str = "quantile",
) -> FrameT:
    """Assign each row to a quantile of ``value`` within its group, as ``phe_quantile``.

    With ``n`` the number of non-null values in the group and ``rank`` the row's rank (ties get
    the lowest rank; descending when inverted),
    ``quantile = floor((q + 1) − ceil((n + 1 − rank) / (n / q)))`` with 0 raised to 1. Groups
    with fewer than ``q`` values get null quantiles.

    Parameters
    ----------
    df
        DataFrame or LazyFrame; the same type is returned, row for row.
    value
        Column name or expression to rank by (e.g. an IMD score or rank).
    by
        Grouping column(s): quantiles are assigned separately within each group.
    n_quantiles
        Number of quantiles (10 for deciles, 5 for quintiles).
    invert
        ``True`` (the default, as PHEindicatormethods): quantile 1 holds the *highest* values
        (e.g. IMD score, higher = more deprived, so decile 1 = most deprived). ``False``:
        quantile 1 holds the lowest values (e.g. IMD rank, 1 = most deprived). A column name or
        boolean expression sets it per group (it must be the same within a group).
    name
        Name of the output column (default ``"quantile"``).

    Returns
    -------
    The frame with ``name`` (Int32) and ``ci_note`` added ("value is null", "fewer than q
    values in group: no quantiles", "invert differs within group").

    Examples
    --------
    >>> df = pl.DataFrame({"score": [40.0, 10.0, 25.0, 5.0, 33.0]})
    >>> quantile(df, "score", n_quantiles=5)
    shape: (5, 3)
    ┌───────┬──────────┬─────────┐
    │ score ┆ quantile ┆ ci_note │
    │ ---   ┆ ---      ┆ ---     │
    │ f64   ┆ i32      ┆ str     │
    ╞═══════╪══════════╪═════════╡
    │ 40.0  ┆ 1        ┆ null    │
    │ 10.0  ┆ 4        ┆ null    │
    │ 25.0  ┆ 3        ┆ null    │
    │ 5.0   ┆ 5        ┆ null    │
    │ 33.0  ┆ 2        ┆ null    │
    └───────┴──────────┴─────────┘
    """
    if not isinstance(n_quantiles, int) or n_quantiles < 1:
        raise ValueError("n_quantiles must be a positive integer")
    keys = _by_list(by)
    V, I = f"{_P}v", f"{_P}inv"
    inv = pl.lit(invert) if isinstance(invert, bool) else _expr(invert).cast(pl.Boolean)
    lf = _lazy(df).with_columns(_expr(value).cast(pl.Float64).alias(V), inv.alias(I))
    v, i = pl.col(V), pl.col(I)

    def over(e: pl.Expr) -> pl.Expr:
        return e.over(keys) if keys else e

    n = over(v.count())
    asc, desc = over(v.rank("min")), over(v.rank("min", descending=True))
    rank = pl.when(i).then(desc).otherwise(asc).cast(pl.Float64)
    q = float(n_quantiles)
    raw = ((q + 1) - ((n + 1 - rank) / (n / q)).ceil()).floor()
    lf = lf.with_columns(
        _note(
            (v.is_null() | ~v.is_finite(), "value is null"),
            (i.is_null(), "invert is null"),
            (over(i.n_unique()) > 1, "invert differs within group"),
            (n < n_quantiles, f"fewer than {n_quantiles} values in group: no quantiles"),
        )
    )
    lf = lf.with_columns(
        pl.when(_ok()).then(pl.when(raw == 0).then(1.0).otherwise(raw)).cast(pl.Int32).alias(name)
    )
    lf = lf.select(pl.exclude(NOTE), pl.col(NOTE))
    return _finish(df, _drop_temps(lf))


# ------------------------------------------------------------------------------------------ SII

_VALUE_TYPES = ("other", "rate", "proportion")


def _from_scale(a: np.ndarray, value_type: str) -> np.ndarray:
    if value_type == "rate":
        return np.exp(a)
    if value_type == "proportion":
        return 1 / (1 + np.exp(-a))
    return a


def _scale_expr(e: pl.Expr, value_type: str) -> pl.Expr:
    if value_type == "rate":
        return e.log()
    if value_type == "proportion":
        return (e / (1 - e)).log()
    return e


def _sii_draws(seed: int | None, repetitions: int, quantiles: int) -> np.ndarray:
    """The standard normals (``repetitions`` × ``quantiles``) every group's simulations are made
    from: reproducible by ``seed`` (fresh without one).

    Common random numbers: each group scales and shifts the same draws by its own values and
    standard errors, so each group's simulations have exactly the distribution phe_sii draws
    from, and a group's limits depend only on its own values (not on the other groups, the order
    or the batching). Only the groups' Monte Carlo errors are correlated — at 10,000 repetitions
    the 2.5% point's is about 1.5% of the interval's half-width. Drawing 50,000 normals for each
    of a refresh's ~400 groups was half the simulations' CPU time."""
    return np.random.default_rng(None if seed is None else [seed, quantiles]).standard_normal((repetitions, quantiles))


#: Bytes of simulations a worker holds at once: ten groups at 10,000 × 5 (a chunk stays in cache).
_SII_CHUNK_BYTES = 1 << 22
#: Threads simulating chunks of groups side by side (each group's results do not depend on it).
_SII_THREADS = min(8, os.cpu_count() or 1)


def _sii_positions(repetitions: int, c: float) -> tuple[int, int]:
    """0-based order statistics of the lower and upper limits at level ``c``."""
    cv = c + (1 - c) / 2
    lo = int(np.rint(repetitions * (1 - cv)))
    hi = int(np.rint(repetitions * cv))
    return max(lo, 1) - 1, min(max(hi, 1), repetitions) - 1


def _sii_row_width(repetitions: int, q: int) -> int:
    """Repetitions per row when a group's (R, Q) draws are viewed as (R/m, m·Q) rows: per-quantile
    operands then broadcast along rows of m·Q values instead of rows of Q (numpy's inner loop)."""
    return max((m for m in range(1, max(1, 1024 // q) + 1) if repetitions % m == 0), default=1)


def _order_stats(x: np.ndarray, ks: list[int]) -> np.ndarray:
    """``np.partition(row, ks)[ks]`` for every row of ``x`` (``ks`` ascending), bit for bit.

    One single-k partition per k: numpy selects a single k far faster than a list of them (about
    17 µs against 160 µs for k = 249 and 9,749 of 10,000). The k-th smallest value of a row is
    unique, and so are its bits unless it is a zero (±0 tie) or a NaN; those rows, and rows
    holding a NaN, are selected with the list as before."""
    work = x.copy()
    out = np.empty((x.shape[0], len(ks)))
    done = 0  # work[:, :done] holds the `done` smallest values of each row
    for j, k in enumerate(ks):
        rest = work[:, done:]
        rest.partition(k - done, axis=1)
        out[:, j] = rest[:, k - done]
        done = k + 1
    redo = np.flatnonzero((out == 0).any(axis=1) | np.isnan(out).any(axis=1) | np.isnan(x).any(axis=1))
    for i in redo:
        out[i] = np.partition(x[i], ks)[ks]
    return out


def _sii_groups(
    pop: np.ndarray,
    y: np.ndarray,
    se: np.ndarray,
    draws: np.ndarray,
    *,
    value_type: str,
    transform: bool,
    multiplier: float,
    repetitions: int,
    levels: tuple[float, ...],
) -> dict[str, np.ndarray]:
    """SII/RII of G groups of Q quantiles: ``pop``, ``y`` and ``se`` are (G, Q), ``y`` and ``se``
    on the working scale (log/logit for rates and proportions), columns ordered by quantile;
    every group's simulations are ``draws`` (R × Q standard normals, ``_sii_draws``) scaled by its
    standard errors and shifted by its values. Follows PHEindicatormethods' phe_sii.

    Every value comes from the same floating-point operations, in the same order, as computing
    the group alone (the R × Q draws, the same BLAS call per group through batched matmul, the
    same order statistics), so a group's results do not depend on the other groups, the chunking
    or the threads. What is shared is the Python work: the element-wise steps run in place over a
    chunk of groups in a reused buffer, and chunks run on ``_SII_THREADS`` threads."""
    G, Q = y.shape
    R = repetitions
    a = pop / pop.sum(axis=1, keepdims=True)
    b = np.cumsum(a, axis=1) - a / 2  # mid-point of each quantile's cumulative population share
    sqrt_a = np.sqrt(a)
    X = np.stack([sqrt_a, b * sqrt_a], axis=2)  # (G, Q, 2)
    Xt = X.transpose(0, 2, 1)
    inv_m = np.linalg.solve(Xt @ X, Xt)  # (G, 2, Q) least-squares operators
    back = (lambda v: v) if transform else (lambda v: _from_scale(v, value_type))
    fit = (inv_m @ (sqrt_a * back(y))[:, :, None])[:, :, 0]
    b0, b1 = fit[:, 0], fit[:, 1]

    ks = sorted({k for c in levels for k in _sii_positions(R, c)})
    logistic = value_type == "proportion" and not transform
    # 1/(1 + exp(-(z·se + y))): z·(-se) + (-y) is exactly -(z·se + y) (up to the sign of a zero
    # sum, which exp ignores), so the negation costs no pass over the simulations.
    scale, shift = (-se, -y) if logistic else (se, y)
    m = _sii_row_width(R, Q)

    def rows(v: np.ndarray) -> np.ndarray:  # (n, Q) -> (n, 1, m·Q), broadcast along the rows
        return np.tile(v, (1, m))[:, None, :]

    z = draws.reshape(1, R // m, m * Q)  # (broadcast over a chunk's groups)
    chunk = max(1, min(G, _SII_CHUNK_BYTES // (R * Q * 8)))
    slope_k = np.empty((G, len(ks)))
    ratio_k = np.empty((G, len(ks)))

    def simulate(starts: range) -> None:  # one worker: its own buffers, its chunks in turn
        sims = np.empty((chunk, R, Q))
        params = np.empty((chunk, R, 2))
        for start in starts:
            n = min(chunk, G - start)
            part = slice(start, start + n)
            v = sims[:n].reshape(n, R // m, m * Q)
            np.multiply(z, rows(scale[part]), out=v)
            np.add(v, rows(shift[part]), out=v)
            if value_type == "rate" and not transform:
                np.exp(v, out=v)
            elif logistic:
                np.exp(v, out=v)
                np.add(v, 1.0, out=v)
                np.divide(1.0, v, out=v)
            np.multiply(v, rows(sqrt_a[part]), out=v)
            p = np.matmul(sims[:n], inv_m[part].transpose(0, 2, 1), out=params[:n])
            icpt_s, slope_s = p[:, :, 0], p[:, :, 1]
            if transform:
                slope_k[part] = _order_stats(slope_s, ks)
            else:
                slope_k[part] = _order_stats(multiplier * slope_s, ks)
                with np.errstate(divide="ignore", invalid="ignore"):  # (RII of a zero intercept: see below)
                    r = (slope_s + icpt_s) / icpt_s
                if multiplier < 0:
                    np.divide(1.0, r, out=r)
                ratio_k[part] = _order_stats(r, ks)

    starts = range(0, G, chunk)
    workers = max(1, min(_SII_THREADS, len(starts)))
    if workers == 1:
        simulate(starts)
    else:  # numpy releases the GIL for the draws, the element-wise passes, BLAS and the selection
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(simulate, [starts[i::workers] for i in range(workers)]))

    def at(stat: np.ndarray, k: int) -> np.ndarray:
        return stat[:, ks.index(k)]

    out: dict[str, np.ndarray] = {}
    if not transform:
        out["sii"] = multiplier * b1
        # A fitted intercept of 0 (every quantile's value 0, say) has no relative index: NaN (0/0)
        # or ±inf, as R's arithmetic gives it in phe_sii, and no warning from every call.
        with np.errstate(divide="ignore", invalid="ignore"):
            rii = (b0 + b1) / b0
        out["rii"] = 1 / rii if multiplier < 0 else rii
        out["intercept"] = b0
        for c in levels:
            lo, hi = _sii_positions(R, c)
            sfx = ci_suffix(c)
            out[f"sii_lower_{sfx}"], out[f"sii_upper_{sfx}"] = at(slope_k, lo), at(slope_k, hi)
            out[f"rii_lower_{sfx}"], out[f"rii_upper_{sfx}"] = at(ratio_k, lo), at(ratio_k, hi)
        return out

    def g(v):  # back to the indicator's scale
        return _from_scale(v, value_type)

    x1 = b0 + b1
    xh = (b0 + x1) / 2
    out["sii"] = (g(x1) - g(b0)) * multiplier
    out["rii"] = g(b0) / g(x1) if multiplier < 0 else g(x1) / g(b0)
    out["intercept"] = g(b0) * abs(multiplier)
    for c in levels:
        lo, hi = _sii_positions(R, c)
        sl, su = at(slope_k, lo), at(slope_k, hi)
        diff_l, diff_u = g(xh + sl / 2) - g(xh - sl / 2), g(xh + su / 2) - g(xh - su / 2)
        ratio_l, ratio_u = g(xh + sl / 2) / g(xh - sl / 2), g(xh + su / 2) / g(xh - su / 2)
        sfx = ci_suffix(c)
        if multiplier < 0:
            out[f"sii_lower_{sfx}"], out[f"sii_upper_{sfx}"] = diff_u * multiplier, diff_l * multiplier
            out[f"rii_lower_{sfx}"], out[f"rii_upper_{sfx}"] = 1 / ratio_u, 1 / ratio_l
        else:
            out[f"sii_lower_{sfx}"], out[f"sii_upper_{sfx}"] = diff_l * multiplier, diff_u * multiplier
            out[f"rii_lower_{sfx}"], out[f"rii_upper_{sfx}"] = ratio_l, ratio_u
    return out


def sii(
    df: FrameT,
    value: IntoExpr,
    population: IntoExpr,
    quantile: IntoExpr,
    *,
    by: IntoExpr | Sequence[IntoExpr] | None = None,
    se: IntoExpr | None = None,
    lower: IntoExpr | None = None,
    upper: IntoExpr | None = None,
    value_type: str = "other",
    transform: bool = False,
    multiplier: float = 1,
    repetitions: int = 100_000,
    seed: int | None = None,
    rii: bool = True,
    confidence: Confidence = (0.95, 0.998),
) -> FrameT:
    """Slope and relative index of inequality per group with simulated limits, as ``phe_sii``.

    Quantiles are ordered (1 = most deprived first); each gets the mid-point ``b`` of its share
    ``a`` of the group's cumulative population, and ``y·√a = β₀·√a + β₁·b√a`` is fitted by least
    squares. SII = β₁ × multiplier (the fitted difference between ranks 1 and 0), RII =
    (β₀ + β₁)/β₀, intercept = β₀ (not multiplied, as phe_sii). Limits come from ``repetitions`` simulations drawing each
    quantile's value from N(value, se) on the working scale (log for rates, logit for
    proportions, back-transformed before the regression unless ``transform``), taking the
    order statistics at positions round(R·(1 − c)/2) and round(R·(1 + c)/2).

    Parameters
    ----------
    df
        DataFrame or LazyFrame with one row per group and quantile; the same type is returned.
    value, population, quantile
        Indicator value (for a proportion as a fraction 0–1: pass ``pl.col("x") / pl.col("n")``
        if needed), quantile population (> 0) and quantile label (sortable; 1 = most deprived).
    by
        Grouping column(s); ``None`` gives one row. Every group must have every quantile that
        appears anywhere in the frame (5 to 100 of them).
    se
        Standard error of ``value`` on the working scale (log/logit for rates/proportions).
        Otherwise give ``lower`` and ``upper``, the 95% limits of ``value``:
        se = (t(upper) − t(lower)) / (2 × 1.959964) with t the log/logit transform.
    value_type
        ``"other"`` (normal, e.g. life expectancy), ``"rate"`` or ``"proportion"``.
    transform
        Fit on the log/logit scale and back-transform the results (rates and proportions
        only, needs ``lower``/``upper``), as ``phe_sii(transform = TRUE)``: SII = (g(β₀ + β₁) −
        g(β₀)) × multiplier, RII = g(β₀ + β₁)/g(β₀), intercept = g(β₀) × |multiplier|, and the
        limits keep the fitted mid-point fixed. (For rates phe_sii swaps the limits when the
        multiplier is below 1 rather than below 0; here any negative multiplier swaps them and
        a positive one never does. The reference cases, with ±1, agree.)
    multiplier
        Scales the SII (e.g. 100 for percentages); negative reverses polarity and inverts the
        RII.
    repetitions
        Number of simulations (default 100,000; at least 1,000).
    seed
        Seed for reproducible limits. Every group's simulations scale and shift the same standard
        normals drawn from ``seed`` (common random numbers), so a group's limits depend only on
        its own values, not on the other groups in the frame.
    rii
        Include ``rii`` and its limits (default True).
    confidence
        A level or a tuple of levels.

    Returns
    -------
    One row per group: the ``by`` columns, ``sii``, ``sii_lower_<pct>``, ``sii_upper_<pct>``,
    (``rii`` and its limits), ``intercept`` and ``ci_note``.

    Examples
    --------
    >>> df = pl.DataFrame({"q": [1, 2, 3, 4, 5], "pop": [100, 100, 100, 100, 100],
    ...                    "le": [76.0, 77.0, 78.0, 79.0, 80.0], "se": [0.5] * 5})
    >>> out = sii(df, "le", "pop", "q", se="se", confidence=0.95, repetitions=10_000, seed=1)
    >>> out.select("sii", "rii", "intercept").with_columns(cs.float().round(3))
    shape: (1, 3)
    ┌─────┬───────┬───────────┐
    │ sii ┆ rii   ┆ intercept │
    │ --- ┆ ---   ┆ ---       │
    │ f64 ┆ f64   ┆ f64       │
    ╞═════╪═══════╪═══════════╡
    │ 5.0 ┆ 1.066 ┆ 75.5      │
    └─────┴───────┴───────────┘
    """
    levels = _levels(confidence)
    if value_type not in _VALUE_TYPES:
        raise ValueError(f"value_type must be one of {_VALUE_TYPES}, got {value_type!r}")
    if se is None and (lower is None or upper is None):
        raise ValueError("sii needs se, or both lower and upper")
    if transform and (value_type == "other" or lower is None or upper is None or se is not None):
        raise ValueError("transform needs a rate or proportion with lower and upper (and no se)")
    if repetitions < 1000:
        raise ValueError("repetitions must be at least 1000")
    keys = _by_list(by)
    out_names = [k.meta.output_name() for k in keys]
    Q, N, V, S, L, U = (f"{_P}{s}" for s in ("q", "n", "v", "se", "lo", "hi"))
    cols = [*keys, _expr(quantile).alias(Q), _expr(population).cast(pl.Float64).alias(N)]
    cols.append(_expr(value).cast(pl.Float64).alias(V))
    if se is not None:
        cols.append(_expr(se).cast(pl.Float64).alias(S))
    else:
        cols += [_expr(lower).cast(pl.Float64).alias(L), _expr(upper).cast(pl.Float64).alias(U)]
    lf = _lazy(df).select(cols)
    n, v, q = pl.col(N), pl.col(V), pl.col(Q)
    checks: list[tuple[pl.Expr, str]] = [
        (q.is_null(), "quantile is null"),
        (n.is_null() | (n <= 0), "population must be > 0"),
        (v.is_null() | ~v.is_finite(), "value is null"),
    ]
    if se is not None:
        checks += [
            (pl.col(S).is_null(), "standard error is null"),
            (pl.col(S) < 0, "negative standard error"),
        ]
        lims: list[pl.Expr] = [v]
    else:
        checks.append((pl.col(L).is_null() | pl.col(U).is_null(), "confidence limit is null"))
        lims = [v, pl.col(L), pl.col(U)]
    if value_type == "proportion":
        outside = pl.any_horizontal([(e <= 0) | (e >= 1) for e in lims])
        checks.append((outside, "proportion must be between 0 and 1"))
    elif value_type == "rate":
        checks.append((pl.any_horizontal([e <= 0 for e in lims]), "rate must be > 0"))
    lf = lf.with_columns(_note(*checks).alias(f"{_P}bad"), q.drop_nulls().n_unique().alias(f"{_P}nq"))
    if se is not None:
        se_expr = pl.col(S)
    else:  # from the 95% limits on the working scale (z hard-coded at 95%, as phe_sii)
        lo_t, hi_t = _scale_expr(pl.col(L), value_type), _scale_expr(pl.col(U), value_type)
        se_expr = (hi_t - lo_t) / _z(0.95) / 2
    t_v = _scale_expr(v, value_type)
    lf = lf.with_columns(
        pl.when(pl.col(f"{_P}bad").is_null()).then(t_v).alias(V),
        pl.when(pl.col(f"{_P}bad").is_null()).then(se_expr).alias(S),
    )
    aggs = [
        pl.col(N).sort_by(Q).alias(N),
        pl.col(V).sort_by(Q).alias(V),
        pl.col(S).sort_by(Q).alias(S),
        pl.col(f"{_P}bad").drop_nulls().first().alias(f"{_P}bad"),
        q.n_unique().alias(f"{_P}gq"),
        pl.len().alias(f"{_P}rows"),
        pl.col(f"{_P}nq").first().alias(f"{_P}nq"),
    ]
    group_keys = out_names or [pl.lit(0).alias(f"{_P}one")]  # lists need a group, even if one
    lf = lf.group_by(group_keys, maintain_order=True).agg(aggs)
    nq = pl.col(f"{_P}nq")
    lf = lf.with_columns(
        pl.coalesce(
            pl.col(f"{_P}bad"),
            _note(
                ((nq < 5) | (nq > 100), "need 5 to 100 quantiles"),
                (pl.col(f"{_P}rows") > pl.col(f"{_P}gq"), "quantile repeated in group"),
                (pl.col(f"{_P}gq") < nq, "not every quantile present in group"),
            ),
        ).alias(NOTE)
    )
    stat_names = ["sii"] + [f"sii_{s}_{ci_suffix(c)}" for c in levels for s in ("lower", "upper")]
    stat_names += ["rii"] + [f"rii_{s}_{ci_suffix(c)}" for c in levels for s in ("lower", "upper")]
    stat_names.append("intercept")
    dtype = pl.Struct({k: pl.Float64 for k in stat_names})
    settings = dict(
        value_type=value_type, transform=transform, multiplier=float(multiplier),
        repetitions=int(repetitions), levels=levels,
    )  # fmt: skip

    def run(s: pl.Series) -> pl.Series:
        fields = s.struct.unnest()
        ok = fields[NOTE].is_null()
        done = fields.filter(ok)
        at = np.flatnonzero(ok.to_numpy())
        stats = {k: np.zeros(len(s)) for k in stat_names}
        sizes = done[N].list.len().to_numpy()
        for size in np.unique(sizes):  # groups without a note have every quantile: one size
            these = np.flatnonzero(sizes == size)
            part = done[these]
            pop, y, se_ = (
                np.ascontiguousarray(part[c].explode().to_numpy(), dtype=float).reshape(-1, int(size))
                for c in (N, V, S)
            )
            draws = _sii_draws(seed, int(repetitions), int(size))
            res = _sii_groups(pop, y, se_, draws, **settings)  # type: ignore[arg-type]
            for k in stat_names:
                stats[k][at[these]] = res[k]
        return pl.DataFrame(stats).with_columns(pl.when(pl.lit(ok)).then(pl.all())).to_struct(s.name)

    packed = pl.struct([*out_names, N, V, S, NOTE]).map_batches(run, return_dtype=dtype)
    lf = lf.with_columns(packed.alias(f"{_P}res")).unnest(f"{_P}res")
    keep = [*out_names, *stat_names]
    if not rii:
        keep = [k for k in keep if not k.startswith("rii")]
    lf = lf.select(*keep, NOTE)
    return _finish(df, lf)
