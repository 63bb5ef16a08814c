"""Disclosure control for published values: small-number suppression and rounding (DESIGN.md §8).

:func:`suppress` takes a long frame of published values — one row per metric × place × period ×
breakdown group, with the place total as the ``overall`` breakdown — and returns it row for row
with small counts withheld, the other counts rounded, and ``suppressed`` / ``suppression_note``
added. It is vectorised (window functions over tables; no loop over tables). DataFrame in,
DataFrame out; LazyFrame in, LazyFrame out.

The rules, applied to each count column (numerator, denominator) separately:

1. **Primary suppression.** A count of 1 to ``suppress_below − 1`` (1–7) is withheld. Zero is
   published (DESIGN §8 names counts 1–7).
2. **Secondary suppression within a table.** A *table* is one place's groups for one metric,
   period and breakdown (e.g. its neighbourhoods); they sum to the place's ``overall`` row. When a
   table holds a withheld count and its total is known, subtracting the published groups from the
   total gives the sum of the withheld ones. So, unless the primary cells alone already leave
   each of them uncertain by at least ±2.5 (see the threat model), the smallest further group(s)
   are withheld too: the smallest one whose count exceeds the threshold by enough margin, or
   failing that as many as needed in ascending order. (Plain "next smallest" is not enough
   against an attacker who reads the notes: a primary 3 with an 8 withheld beside it sums to 11,
   and an 8 is known to be ≥ 8, so the 3 would be known to be 1–3.)
3. **Small totals.** If a place total is itself below the threshold it is withheld (rule 1) and
   nothing can be subtracted from it. If the total is published but a table's small groups can't
   be protected even after withholding every other non-zero group (say a total of 9 split 2, 2,
   2, 2, 1), the total's count is withheld as well, and in every other breakdown of that total
   that withholds nothing, its smallest non-zero group is withheld so the total can't be
   rebuilt by adding that breakdown up.
4. **DSRs** (``dsr_min_events``, 10 by PHE practice): the value and limits are not published
   when the events count is below it (the counts follow rules 1–3 as usual).
5. **Rounding.** Every published count is rounded to the nearest ``round_to`` (5). Values and
   confidence limits stay as calculated on the unrounded counts.

Whenever a row's count is withheld, its value columns (value and confidence limits) are withheld
too, since they would give the count back.

Threat model — what is and is not guaranteed
--------------------------------------------
Values are published unrounded, so an attacker can usually get a *published* count back exactly
from its value and rounded denominator (e.g. 80.0% of a rounded 25 can only be 20/25). Rounding
to 5 is therefore treated as presentation, not protection: the attacker is assumed to know every
published count exactly. "Recovering" a withheld count means pinning it to within ±2 (a feasible
range of at most five values, narrower than the 1–7 that primary suppression itself announces).

Guaranteed (and tested by an integer-programming attacker in ``tests/test_disclosure.py``):

- **G1 (note-aware differencing).** For every table whose total is published, an attacker who
  knows the published counts and total exactly, which cells were withheld and why (a primary
  cell is 1–7, any other withheld count is ≥ 8 because it is neither small nor zero), and that
  groups sum to the total — also combining every breakdown of the same total (sex against age
  band), which adds nothing once the total is known — cannot pin any primary cell to ±2, provided
  ``suppress_below`` ≥ 7 (with a lower threshold the range 1..threshold−1 is itself narrower, and
  the rule aims for its full width instead).
- **G2 (differencing without the notes).** An attacker who only knows which cells are withheld
  (each ≥ 1) cannot recover any withheld cell from any combination of a place's tables and its
  total, including when the total was withheld by rule 3.

Not guaranteed:

- An attacker who also uses the *order* in which secondary cells are chosen (the secondary is the
  smallest eligible group, so it is at most the next published one) can narrow a primary cell
  when the secondary ties with, or is close to, the next published group.
- When a place total is small (withheld by rule 1 or 3), the published zeros reveal how many
  groups share those few events, and the notes say which withheld cells are small: a note-aware
  attacker can then narrow them (five age bands sharing a total of at most 7 are each 1–3).
  Publish a generic note rather than the per-row reasons if that matters.
- Differencing across things this function does not see as one table: periods (a year minus its
  published months), geographies (an ICS total minus its places, a place minus its
  neighbourhoods when those are different metrics or breakdowns of another total), different
  metrics sharing a count, and complements (denominator − numerator of a proportion).
- Groups that do not partition the total (people counted in two groups, or an "Unknown" group
  left out of the frame): the rules assume the groups of a breakdown sum to its total.

This module knows nothing of definitions or the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from metrics.frames import FrameT, IntoExpr
from metrics.frames import like_input as _finish
from metrics.frames import to_lazy as _lazy

__all__ = ["DEFAULT_VALUE_COLUMNS", "suppress", "suppression_summary"]


#: Value columns withheld with a withheld count (those present in the frame, when not given).
DEFAULT_VALUE_COLUMNS: tuple[str, ...] = ("value", "lower_95", "upper_95", "lower_99_8", "upper_99_8")
#: A withheld primary cell must stay uncertain over at least this many steps (6 values: not ±2).
_WIDTH = 5

_P = "__disc_"  # prefix of temporary columns
_ROW = f"{_P}row"






def _round(col: str, dtype: pl.DataType, to: int) -> pl.Expr:
    c = pl.col(col)
    if dtype.is_integer():
        return ((c + to // 2) // to * to).cast(dtype)
    return ((c.cast(pl.Float64) / to + 0.5).floor() * to).cast(dtype)


def suppress(
    df: FrameT,
    *,
    count_columns: Sequence[str] = ("numerator", "denominator"),
    value_columns: Sequence[str] | None = None,
    suppress_below: int = 8,
    round_to: int | None = 5,
    group_by: Sequence[str] = ("metric_id", "place", "period_type", "period_start", "breakdown"),
    breakdown: str = "breakdown",
    group: str | None = "group",
    total_breakdown: str = "overall",
    dsr_min_events: int | None = None,
    dsr_rows: IntoExpr | None = None,
) -> FrameT:
    """Withhold small counts (and what would reveal them) and round the rest.

    Parameters
    ----------
    df
        DataFrame or LazyFrame of published values; the same type is returned, row for row.
    count_columns
        Count columns to protect and round. Null counts are left alone.
    value_columns
        Columns withheld whenever a count in the row is (values and confidence limits). Default:
        those of :data:`DEFAULT_VALUE_COLUMNS` present in the frame.
    suppress_below
        Counts from 1 to ``suppress_below − 1`` are withheld (default 8: counts 1–7).
    round_to
        Published counts are rounded to the nearest multiple (default 5); ``None`` or 1: no
        rounding.
    group_by
        Columns identifying one table (one place's groups for one metric, period and breakdown);
        it must include ``breakdown``. Add ``"metric_version"`` if the frame holds several versions
        of a metric.
    breakdown, group
        The breakdown column, and the group label column used to break ties between equal counts
        (``None``: input order).
    total_breakdown
        The breakdown value of each place's total row (``"overall"``).
    dsr_min_events
        When given (10 for a directly standardised rate), the value columns are withheld on rows
        whose events count (the first of ``count_columns``) is below it.
    dsr_rows
        Boolean column/expression choosing the rows ``dsr_min_events`` applies to (default all).

    Returns
    -------
    The frame with withheld counts and values set to null, other counts rounded, and
    ``suppressed`` (bool: anything in the row withheld) and ``suppression_note`` (what and why;
    null when nothing was withheld) added.

    Examples
    --------
    >>> df = pl.DataFrame({
    ...     "metric_id": "m", "place": "Dudley", "period_type": "year", "period_start": 2024,
    ...     "breakdown": ["overall", "sex", "sex"], "group": ["Dudley", "Female", "Male"],
    ...     "numerator": [123, 3, 120], "value": [12.3, 0.6, 24.0],
    ... })
    >>> suppress(df, count_columns=["numerator"]).select("group", "numerator", "value", "suppressed")
    shape: (3, 4)
    ┌────────┬───────────┬───────┬────────────┐
    │ group  ┆ numerator ┆ value ┆ suppressed │
    │ ---    ┆ ---       ┆ ---   ┆ ---        │
    │ str    ┆ i64       ┆ f64   ┆ bool       │
    ╞════════╪═══════════╪═══════╪════════════╡
    │ Dudley ┆ 125       ┆ 12.3  ┆ false      │
    │ Female ┆ null      ┆ null  ┆ true       │
    │ Male   ┆ null      ┆ null  ┆ true       │
    └────────┴───────────┴───────┴────────────┘
    """
    k = int(suppress_below)
    if k < 1:
        raise ValueError("suppress_below must be ≥ 1")
    if breakdown not in group_by:
        raise ValueError(f"group_by must include the breakdown column {breakdown!r}")
    lf = _lazy(df)
    schema = lf.collect_schema()
    missing = [c for c in [*count_columns, *group_by, *([group] if group else [])] if c not in schema]
    if value_columns is None:
        values = [c for c in DEFAULT_VALUE_COLUMNS if c in schema]
    else:
        values = list(value_columns)
        missing += [c for c in values if c not in schema]
    if missing:
        raise ValueError(f"columns not in the frame: {', '.join(missing)}")
    if not count_columns:
        raise ValueError("give at least one count column")

    width = min(_WIDTH, max(k - 2, 0))
    tbl = list(group_by)
    tot = [g for g in tbl if g != breakdown]
    is_total = pl.col(breakdown) == total_breakdown
    grp = ~is_total

    lf = lf.with_row_index(_ROW)
    # Each table and each total keyed by its first row: the many windows below then hash one
    # integer column rather than five, strings among them.
    TBL, TOT = f"{_P}tbl", f"{_P}tot"
    lf = lf.with_columns(pl.col(_ROW).first().over(tbl).alias(TBL),
                         *([pl.col(_ROW).first().over(tot).alias(TOT)] if tot else []))
    tbl = [TBL]

    def over_tot(e: pl.Expr) -> pl.Expr:
        return e.over(TOT) if tot else e

    notes: list[pl.Expr] = []
    withheld_any: list[pl.Expr] = []
    for i, c in enumerate(count_columns):
        X, PRIM, KNOWN, M_P, R_P, ACTIVE, NEED, CAND, ENOUGH, S1, S2, S3 = (
            f"{_P}{n}{i}"
            for n in ("x", "prim", "known", "m_p", "r_p", "active", "need", "cand", "enough", "s1", "s2", "s3")
        )
        x = pl.col(X)
        lf = lf.with_columns(pl.col(c).cast(pl.Float64).alias(X)).with_columns(
            ((x > 0) & (x < k)).fill_null(False).alias(PRIM)
        )
        prim = pl.col(PRIM)
        gprim = grp & prim
        # Each step's windows read columns the step before materialised: a window over an
        # expression holding another window is evaluated once per group (~10 µs a row).
        lf = lf.with_columns(
            # the total is known unless the place's overall row exists and is itself withheld
            (~(over_tot(is_total.any()) & over_tot((is_total & prim).any()))).alias(KNOWN),
            gprim.sum().over(tbl).alias(M_P),
            pl.when(gprim).then(x).otherwise(0.0).sum().over(tbl).alias(R_P),
        )
        known, m_p, r_p = pl.col(KNOWN), pl.col(M_P), pl.col(R_P)
        # the feasible range of a primary cell when only the primary cells are withheld
        only_primary_ok = (m_p >= 2) & (
            pl.min_horizontal(pl.lit(k - 1.0), r_p - (m_p - 1))
            - pl.max_horizontal(pl.lit(1.0), r_p - (k - 1.0) * (m_p - 1))
            >= width
        )
        lf = lf.with_columns(
            (known & (m_p >= 1) & ~only_primary_ok).fill_null(False).alias(ACTIVE),
            (width - (r_p - m_p)).alias(NEED),  # margin the secondary cells must add above the threshold
            (grp & ~prim & (x > 0)).fill_null(False).alias(CAND),
        )
        active, need, cand = pl.col(ACTIVE), pl.col(NEED), pl.col(CAND)

        # candidates first, smallest first (ties by group label, then input order)
        order = [*tbl, ~cand, x, *([group] if group else []), _ROW]
        lf = lf.sort(order, nulls_last=True).with_columns((cand & (x - k >= need)).alias(ENOUGH))
        enough = pl.col(ENOUGH)
        margin = pl.when(cand).then(x - k).otherwise(0.0)
        first_enough = enough & (enough.cast(pl.Int32).cum_sum().over(tbl) == 1)
        cum_before = margin.cum_sum().over(tbl) - margin
        s1 = active & cand & pl.when(enough.any().over(tbl)).then(first_enough).otherwise(cum_before < need)
        short = (margin.sum().over(tbl) < need) | ~cand.any().over(tbl)
        exhausted = active & ~enough.any().over(tbl) & short  # even every candidate is not enough
        lf = lf.with_columns(s1.fill_null(False).alias(S1), (grp & exhausted).alias(S2))
        hide_total = over_tot(pl.col(S2).any())
        lf = lf.with_columns(hide_total.fill_null(False).alias(S2))
        s1c, hidden = pl.col(S1), pl.col(S2)
        nothing_withheld = ~(grp & (prim | s1c)).any().over(tbl)
        first_cand = cand & (cand.cast(pl.Int32).cum_sum().over(tbl) == 1)
        lf = lf.with_columns(
            (hidden & is_total & ~prim & (x > 0)).fill_null(False).alias(S2),
            (hidden & nothing_withheld & first_cand).fill_null(False).alias(S3),
        )
        withheld = prim | s1c | pl.col(S2) | pl.col(S3)
        withheld_any.append(withheld)
        secondary = f"{c}: secondary suppression: "
        notes += [
            pl.when(prim).then(pl.lit(f"{c}: count below {k} suppressed")),
            pl.when(s1c).then(pl.lit(secondary + "withheld so a small count can't be derived from the total")),
            pl.when(pl.col(S2)).then(
                pl.lit(secondary + "total withheld so small counts in its breakdowns can't be narrowed down")
            ),
            pl.when(pl.col(S3)).then(
                pl.lit(secondary + "withheld so the withheld total can't be rebuilt from this breakdown")
            ),
        ]
        lf = lf.with_columns(withheld.alias(f"{_P}w{i}"))

    dsr_flag: pl.Expr = pl.lit(False)
    if dsr_min_events is not None:
        rows = pl.lit(True) if dsr_rows is None else pl.col(dsr_rows) if isinstance(dsr_rows, str) else dsr_rows
        events = pl.col(count_columns[0])
        dsr_flag = (rows & (events < dsr_min_events)).fill_null(False)
        notes.append(pl.when(dsr_flag).then(pl.lit(f"DSR not published: fewer than {dsr_min_events} events")))

    row_withheld = pl.any_horizontal([pl.col(f"{_P}w{i}") for i in range(len(count_columns))])
    out = []
    for i, c in enumerate(count_columns):
        w = pl.col(f"{_P}w{i}")
        published = pl.col(c) if not round_to or round_to == 1 else _round(c, schema[c], int(round_to))
        out.append(pl.when(w).then(pl.lit(None, dtype=schema[c])).otherwise(published).alias(c))
    hide_values = row_withheld | dsr_flag
    out += [pl.when(hide_values).then(pl.lit(None, dtype=schema[v])).otherwise(v).alias(v) for v in values]
    note = pl.col("suppression_note")
    lf = lf.with_columns(
        *out,
        hide_values.alias("suppressed"),
        pl.concat_str(notes, separator="; ", ignore_nulls=True).alias("suppression_note"),
    ).with_columns(pl.when(note == "").then(pl.lit(None, dtype=pl.String)).otherwise(note).alias("suppression_note"))
    keep = [c for c in schema.names() if c not in ("suppressed", "suppression_note")]
    lf = lf.sort(_ROW).select(*keep, "suppressed", "suppression_note")
    return _finish(df, lf)


def suppression_summary(
    df: pl.DataFrame | pl.LazyFrame, *, suppress_below: int = 8, round_to: int | None = 5
) -> str:
    """One line saying what disclosure control did to a frame returned by :func:`suppress`.

    Examples
    --------
    >>> df = pl.DataFrame({
    ...     "metric_id": "m", "place": "Dudley", "period_type": "year", "period_start": 2024,
    ...     "breakdown": ["overall", "sex", "sex"], "group": ["Dudley", "Female", "Male"],
    ...     "numerator": [123, 3, 120],
    ... })
    >>> suppression_summary(suppress(df, count_columns=["numerator"]))
    'Small numbers: counts of 1 to 7 suppressed in 1 row; 1 further row withheld so suppressed counts cannot be derived from totals; other counts rounded to the nearest 5; values and intervals are calculated on unrounded counts.'
    """
    notes = pl.col("suppression_note")
    stats = (
        _lazy(df)
        .select(
            notes.str.contains("count below", literal=True).sum().alias("primary"),
            (notes.str.contains("secondary suppression", literal=True)
             & ~notes.str.contains("count below", literal=True)).sum().alias("secondary"),  # fmt: skip
            notes.str.contains("DSR not published", literal=True).sum().alias("dsr"),
        )
        .collect()
        .row(0, named=True)
    )

    def rows(n: int) -> str:
        return f"{n} row" if n == 1 else f"{n} rows"

    parts = [f"Small numbers: counts of 1 to {suppress_below - 1} suppressed in {rows(stats['primary'] or 0)}"]
    if stats["secondary"]:
        further = rows(stats["secondary"]).replace(" row", " further row")
        parts.append(f"{further} withheld so suppressed counts cannot be derived from totals")
    if stats["dsr"]:
        parts.append(f"{rows(stats['dsr'])} with too few events for a published DSR")
    if round_to and round_to != 1:
        parts.append(f"other counts rounded to the nearest {round_to}")
    parts.append("values and intervals are calculated on unrounded counts")
    return "; ".join(parts) + "."
