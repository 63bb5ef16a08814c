"""Run a plan on validated frames: one pass per source, finest grain once, roll-ups from partials.

For each source, every metric's filters become boolean columns on one prepared frame (age bands,
ethnic groups added once). A single ``group_by`` then aggregates every additive metric on that
source to the finest grain — month × LSOA × the sex, ethnic group and age band its breakdowns use —
as partial sums (numerator, denominator, sum of squares). Place, neighbourhood and deprivation are
joined on those cells, which are then summed into small *slices*, one per kind of breakdown
(place × neighbourhood × IMD quintile for the geographic ones, place × sex, place × age band, …),
as GROUPING SETS would. Coarser periods, populations and the statistics work on the slices only.
The slices are what a source's rows reduce to (``Partials``): a source too big to hold is reduced
to them part by part, and the parts' slices add up.

Distinct counts (people seen) are not additive across periods, so they are de-duplicated per
period instead: each person counts once, in the cell of their first qualifying row in the period.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from metrics.definitions import Catalogue, SourceDefinition
from metrics.plan import MetricStep, SourcePlan, age_band_labels
from metrics.sqlfilter import compile_filter
from metrics.stats import dsr, mean_ci_from_moments, proportion_ci, rate_ci

__all__ = ["compute_source", "source_partials", "combine_partials", "finish_source", "Partials", "prepare_frame",
           "OUTPUT_COLUMNS", "period_bounds", "periods_changed", "sorted_people", "sorted_people_exact"]

OUTPUT_COLUMNS = [
    "metric_id", "metric_version", "place", "period_type", "period_start", "period_end", "breakdown", "group",
    "numerator", "denominator", "value", "lower_95", "upper_95", "lower_99_8", "upper_99_8",
]
PERIOD = ["period_type", "period_start", "period_end"]
GEOGRAPHY = ["place", "neighbourhood", "imd_quintile"]
# Rows are aggregated by LSOA; place, neighbourhood and deprivation are joined on the (small)
# aggregated cells rather than on every row.
LSOA = "_lsoa"
# Breakdown name → column on the prepared frame (age bands depend on the metric's scheme).
# Labelled copies (sex_group, ethnic_group) keep the source's own codes intact for filters.
BREAKDOWN_COLUMN = {"neighbourhood": "neighbourhood", "imd_quintile": "imd_quintile", "sex": "sex_group",
                    "ethnicity": "ethnic_group"}
UNKNOWN = "Unknown"
# Queries over aggregated cells run on Polars' in-memory engine while the cells are few: there the
# streaming engine's start-up costs more than the work (inpatient spells' 4 metrics at scale 0.1,
# 27k cells: 0.21 s to compute with it, 0.14 s without). With many cells (1.7M at scale 10) the
# streaming engine is the faster (2.3 s against 3.2 s), so above this it is Polars' choice.
SMALL_CELLS = 500_000


def _engine_for(cells: int) -> str:
    """The engine for queries over ``cells`` rows (cells, or a small source's rows: a population)."""
    return "in-memory" if cells < SMALL_CELLS else "auto"


# --- preparing the frame -------------------------------------------------------------------------


def _age_band_index(bands: tuple[int, ...], dtype: pl.DataType) -> pl.Expr:
    """1 for the first band … ``len(bands)`` for the last (bands ascend); null below the first band
    or for an unknown age. Grouping rows on it is far cheaper than on the labels.

    Whole-year ages (``dtype``, the age column's type, an integer type) look their band up in a
    table, one gather a row: 8× faster than comparing each age with every band's lower bound
    (3.4M contacts: 0.011 s against 0.091 s), which the refresh did several times a row."""
    age = pl.col("age")
    if dtype.is_integer() and bands[0] >= 0:
        # Table position p holds the band of age p - 1 (position 0: any negative age, below every
        # band); ages from the last band's lower bound up share the last position.
        index = [bisect.bisect_right(bands, age_in_years) for age_in_years in range(bands[-1] + 1)]
        table = pl.Series([None, *[i or None for i in index]], dtype=pl.UInt8)
        return pl.lit(table).gather(age.cast(pl.Int64).clip(-1, bands[-1]) + 1)
    index = functools.reduce(operator.add, [(age >= lower).cast(pl.UInt8) for lower in bands])
    return pl.when(index > 0).then(index)


def _age_band_label(index: pl.Expr, bands: tuple[int, ...]) -> pl.Expr:
    labels = dict(enumerate(age_band_labels(bands), start=1))
    return index.replace_strict(labels, default=None, return_dtype=pl.String)


def _sex_group(sex: pl.Expr, catalogue: Catalogue) -> pl.Expr:
    labels = catalogue.dimensions.sex.get("labels", {})
    return sex.replace_strict(labels, default=sex, return_dtype=pl.String).fill_null(UNKNOWN)


def _ethnic_group(ethnicity: pl.Expr, catalogue: Catalogue) -> pl.Expr:
    dims = catalogue.dimensions
    groups = {code: group for group, codes in dims.ethnicity.groups.items() for code in codes}
    return (ethnicity.replace_strict(groups, default=dims.ethnicity.otherwise, return_dtype=pl.String)
            .fill_null(dims.ethnicity.otherwise))


def prepare_frame(frame: pl.DataFrame | pl.LazyFrame, source: SourceDefinition, catalogue: Catalogue,
                  age_schemes: set[tuple[int, ...]]) -> pl.LazyFrame:
    """Add the breakdown columns every metric on this source needs (the source's own columns stay
    as they are, for filters)."""
    lf = frame.lazy()
    extra = [pl.col(source.geography).alias(LSOA)] if source.geography else []
    if "sex" in source.columns:
        extra.append(_sex_group(pl.col("sex"), catalogue).alias("sex_group"))
    if "ethnicity" in source.columns:
        extra.append(_ethnic_group(pl.col("ethnicity"), catalogue).alias("ethnic_group"))
    if "age" in source.columns:
        age_type = lf.collect_schema()["age"]
        extra += [_age_band_label(_age_band_index(bands, age_type), bands).alias(_band_column(bands))
                  for bands in sorted(age_schemes)]
    return lf.with_columns(extra) if extra else lf


# Cell key → (a cheap code to group rows by, code → the key's label): ``_cell_codes``.
Codes = dict[str, tuple[pl.Expr, Callable[[pl.Expr], pl.Expr]]]


def _cell_codes(lf: pl.LazyFrame, catalogue: Catalogue, age_schemes: set[tuple[int, ...]]) -> Codes:
    """Cell key on the prepared frame → (a cheap code to group rows by, code → the key's label).

    Rows are grouped on the source's own sex and ethnicity codes and on age band numbers; the
    labels (``prepare_frame``'s mappings) are put on the aggregated cells only. Two codes with one
    label make two cells that the next ``group_by`` sums."""
    schema = lf.collect_schema()
    codes: Codes = {LSOA: (pl.col(LSOA), lambda code: code.cast(pl.String))}
    for column, raw, label in [("sex_group", "sex", _sex_group), ("ethnic_group", "ethnicity", _ethnic_group)]:
        if column in schema and schema[raw] == pl.String:
            codes[column] = (pl.col(raw), lambda code, label=label: label(code.cast(pl.String), catalogue))
    for bands in age_schemes:
        if _band_column(bands) in schema:
            codes[_band_column(bands)] = (_age_band_index(bands, schema["age"]),
                                          functools.partial(_age_band_label, bands=bands))
    return codes


def _band_column(bands: tuple[int, ...]) -> str:
    return "age_band__" + "_".join(str(b) for b in bands)


# --- periods -------------------------------------------------------------------------------------


def period_bounds(grain: str, date: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(period_start, period_end) of the period of ``grain`` containing ``date``."""
    month = date.dt.truncate("1mo")
    if grain == "month":
        start = month
    elif grain == "financial_quarter":  # NHS quarters (Apr-Jun = Q1) share calendar quarter boundaries
        start = date.dt.truncate("1q")
    elif grain == "financial_year":
        year = date.dt.year() - (date.dt.month() < 4).cast(pl.Int32)
        start = pl.date(year, 4, 1)
    elif grain == "calendar_year":
        start = date.dt.truncate("1y")
    elif grain == "academic_year":  # September to August, for school measures
        year = date.dt.year() - (date.dt.month() < 9).cast(pl.Int32)
        start = pl.date(year, 9, 1)
    else:
        raise ValueError(f"no fixed period for grain {grain!r}")
    months = {"month": "1mo", "financial_quarter": "3mo", "financial_year": "12mo", "calendar_year": "12mo",
              "academic_year": "12mo"}[grain]
    return start, start.dt.offset_by(months).dt.offset_by("-1d")


def _coverage(source: SourceDefinition, months: pl.Series, grains: list[str]) -> tuple[dt.date, dt.date]:
    """First and last month a source covers, for deciding which periods are complete.

    For an annual collection (``complete_periods: as_collected``) each period with data counts as
    complete: the coverage stretches to the bounds of the periods around the first and last month."""
    first, last = months.min(), months.max()
    if source.complete_periods != "as_collected":
        return first, last
    frame = pl.DataFrame({"first": [first], "last": [last]})
    for grain in (g for g in grains if not _rolling_months(g)):
        start, _ = period_bounds(grain, pl.col("first"))
        _, end = period_bounds(grain, pl.col("last"))
        bounds = frame.select(start.alias("s"), end.dt.truncate("1mo").alias("e")).row(0)
        first, last = min(first, bounds[0]), max(last, bounds[1])
    return first, last


def _rolling_months(grain: str) -> int | None:
    return int(grain.split("_")[1]) if grain.startswith("rolling_") else None


def _month_index(date: pl.Expr) -> pl.Expr:
    """Months since January of year 0: on millions of rows, grouping, shifting and offsetting an
    integer is far cheaper than truncating and offsetting dates (``_month_date`` turns it back)."""
    return date.dt.year().cast(pl.Int32) * 12 + date.dt.month().cast(pl.Int32) - 1


def _month_date(index: pl.Expr) -> pl.Expr:
    return pl.date(index // 12, index % 12 + 1, 1)


_EPOCH = dt.date(1970, 1, 1)
_TABLE_DAYS = 1 << 16  # the month table covers 1970–2149


@functools.cache
def _month_of_day() -> pl.Series:
    """``_month_index`` of each day since 1970: gathering from it is several times cheaper than
    taking the year and month of millions of dates."""
    days = pl.date_range(_EPOCH, _EPOCH + dt.timedelta(days=_TABLE_DAYS - 1), "1d", eager=True)
    return days.to_frame("day").select(_month_index(pl.col("day")))["day"]


def _month_index_of(frame: pl.DataFrame, date: pl.Expr) -> pl.Expr:
    """``_month_index(date)`` for the rows of ``frame``: from the table when all its dates are in it."""
    first, last = frame.select(date.min().alias("first"), date.max().alias("last")).row(0)
    if first is not None and first >= _EPOCH and (last - _EPOCH).days < _TABLE_DAYS:
        return pl.lit(_month_of_day()).gather(date.cast(pl.Int32))
    return _month_index(date)


# (months in a period, first month counted from January) of the fixed grains: ``period_bounds``'
# periods, numbered on month indexes (``test_period_numbers_match_period_bounds``).
_PERIOD_MONTHS = {"month": (1, 0), "financial_quarter": (3, 0), "financial_year": (12, 3), "calendar_year": (12, 0),
                  "academic_year": (12, 8)}


def _period_number(grain: str, month: pl.Expr) -> pl.Expr:
    """A number per period of ``grain`` of the month index ``month``, the same for every month in it."""
    length, first = _PERIOD_MONTHS[grain]
    return (month - first) // length


def _complete(lf: pl.LazyFrame, first_month: dt.date, last_month: dt.date) -> pl.LazyFrame:
    """Keep only periods wholly inside the months the extract covers (no partial quarters or years)."""
    last_day = pl.lit(last_month).dt.month_end()
    return lf.filter((pl.col("period_start") >= pl.lit(first_month)) & (pl.col("period_end") <= last_day))


def _roll_months(monthly: pl.LazyFrame, grain: str, keys: list[str], values: list[str],
                 first_month: dt.date, last_month: dt.date) -> pl.LazyFrame:
    """Additive partials by month → partials by ``grain`` (sums over the months of each period)."""
    window = _rolling_months(grain)
    if window:
        offsets = pl.LazyFrame({"_offset": list(range(window))}, schema={"_offset": pl.Int32})
        lf = monthly.join(offsets, how="cross").with_columns(
            pl.col("month").dt.offset_by(pl.format("{}mo", pl.col("_offset"))).alias("_window_end"))
        lf = lf.with_columns(
            pl.col("_window_end").dt.offset_by(f"-{window - 1}mo").alias("period_start"),
            pl.col("_window_end").dt.month_end().alias("period_end"),
        )
    else:
        start, end = period_bounds(grain, pl.col("month"))
        lf = monthly.with_columns(start.alias("period_start"), end.alias("period_end"))
    lf = lf.group_by(["period_start", "period_end", *keys]).agg(pl.col(values).sum())
    return _complete(lf.with_columns(pl.lit(grain).alias("period_type")), first_month, last_month)


# --- the metric partials -------------------------------------------------------------------------


def _flags(step: MetricStep, columns: list[str], prefix: str) -> list[pl.Expr]:
    """Boolean 'in scope' / 'counted' columns and the measure, for one metric."""
    in_scope = (compile_filter(step.denominator_filter, columns, context=f"{step.metric_id} denominator.filter")
                .fill_null(False) if step.denominator_filter else pl.lit(True))
    counted = in_scope & (compile_filter(step.numerator_filter, columns, context=f"{step.metric_id} numerator.filter")
                          .fill_null(False) if step.numerator_filter else pl.lit(True))
    if step.value_type == "mean":
        measure = pl.col(step.measure).cast(pl.Float64)
        in_scope = in_scope & measure.is_not_null()
        return [pl.when(in_scope).then(measure).otherwise(0.0).alias(f"{prefix}num"),
                in_scope.cast(pl.Int64).alias(f"{prefix}den"),
                pl.when(in_scope).then(measure * measure).otherwise(0.0).alias(f"{prefix}sq")]
    if step.value_type == "count" and step.measure:
        measure = pl.col(step.measure).cast(pl.Float64)
        return [pl.when(counted).then(measure).otherwise(0.0).fill_null(0.0).alias(f"{prefix}num"),
                in_scope.cast(pl.Int64).alias(f"{prefix}den")]
    return [counted.cast(pl.Int64).alias(f"{prefix}num"), in_scope.cast(pl.Int64).alias(f"{prefix}den")]


def _cell_keys(lf_columns: list[str], step: MetricStep) -> list[str]:
    """The finest cell of a metric: LSOA plus only the columns its breakdowns (or its DSR) need —
    each extra key multiplies the number of cells every later step works on."""
    wanted = {BREAKDOWN_COLUMN.get(b) for b in step.breakdowns}
    keys = [c for c in [LSOA, "sex_group", "ethnic_group"] if c in lf_columns and (c == LSOA or c in wanted)]
    if step.age_band_column in lf_columns and ("age_band" in step.breakdowns or step.value_type == "dsr"):
        keys.append(step.age_band_column)
    return keys


def _slices(step: MetricStep) -> list[tuple[list[str], list[str]]]:
    """The slices a metric's breakdowns need: (keys, breakdowns served), ``place`` first in each.

    One slice keyed place × neighbourhood × IMD quintile serves the place total and the geographic
    breakdowns; each other breakdown gets place × its column. A DSR keeps its age bands in every
    slice, as it standardises within each group."""
    within = [step.age_band_column] if step.value_type == "dsr" else []
    geographic = [b for b in step.breakdowns if b in ("neighbourhood", "imd_quintile")]
    slices = [(["place", *geographic, *within], ["overall", *geographic])]
    for breakdown in step.breakdowns:
        if breakdown in ("place", "neighbourhood", "imd_quintile"):
            continue
        column = step.age_band_column if breakdown == "age_band" else BREAKDOWN_COLUMN[breakdown]
        slices.append((["place", column, *within], [breakdown]))
    return slices


def _lookup(geography: pl.DataFrame) -> pl.LazyFrame:
    return geography.lazy().select(pl.col("lsoa_code").alias(LSOA), *GEOGRAPHY).with_columns(
        pl.col("imd_quintile").cast(pl.String))


def _qualifying_rows(lf: pl.LazyFrame, step: MetricStep, columns: list[str], keys: list[str],
                     codes: Codes) -> pl.LazyFrame:
    """The rows a distinct count looks at: its qualifying rows' date, person id and cell key codes."""
    counted = _flags(step, columns, "_")[0]
    # String codes as categoricals: 4 bytes a row instead of a 16-byte string view through the sort
    # (memory and time); they are labelled once aggregated (``_labelled``).
    return (lf.filter(counted == 1)
            .select(pl.col(step.date_column).cast(pl.Date).alias("_date"),
                    pl.col(step.count_distinct).cast(pl.String).alias("_id"), *_coded(codes, keys))
            .with_columns(pl.col(pl.String).exclude("_id").cast(pl.Categorical)))


def _geography_labelled(cells: pl.DataFrame, codes: Codes, keys: list[str], lookup: pl.LazyFrame) -> pl.LazyFrame:
    """Coded cells (the finest cells of a source's rows, or of its people) with their keys' labels
    and their LSOA's geography (cells of an LSOA not in the lookup are dropped)."""
    return cells.lazy().with_columns(_labelled(codes, keys)).join(lookup, on=LSOA, how="inner")


def _coded(codes: Codes, keys: list[str]) -> list[pl.Expr]:
    return [codes[k][0].alias(k) if k in codes else pl.col(k) for k in keys]


def _labelled(codes: Codes, keys: list[str]) -> list[pl.Expr]:
    return [(codes[k][1](pl.col(k)) if k in codes else pl.col(k).cast(pl.String)).alias(k) for k in keys]


def _person_months(people: pl.DataFrame) -> pl.DataFrame:
    """The first qualifying row of each person in each month (``_who``, ``_month`` as a month index,
    cell keys), from ``people`` sorted by person and date (``sorted_people``): that row is where the
    person or the month changes (ties keep the extract's order)."""
    return (people.with_columns(_month_index_of(people, pl.col("_date")).alias("_month"))
            .filter(_first_of("_who", "_month"))
            .drop("_date"))


def _distinct_partials(person_months: pl.DataFrame, step: MetricStep, keys: list[str]
                       ) -> tuple[pl.LazyFrame | None, list[tuple[str, pl.LazyFrame]]]:
    """People counted once per period, in the cell of their first qualifying row of that period.

    Rows (``sorted_people``) shrink first to person-months (``_person_months``). Fixed periods
    count each person in their first month in the period: a flag per grain on each person-month,
    summed by month and cell in one pass, then by period: returned as cells by period (every
    period, complete or not: ``finish_source`` keeps the complete ones). Rolling windows avoid exploding every row into every window: a person-month
    is the person's first month in exactly the windows ending from max(month, previous month +
    window) to month + window - 1, so each person-month adds +1 where that range starts and -1
    after it ends; returned as those deltas by window end (additive, so they sum into slices
    before the running sum of ``_running_people`` turns them into counts).
    """
    new_person = pl.col("_who") != pl.col("_who").shift(1)
    fixed_grains = [g for g in step.grains if not _rolling_months(g)]
    first_in = []
    for grain in fixed_grains:
        period = _period_number(grain, pl.col("_month"))
        first_in.append((new_person | (period != period.shift(1))).fill_null(True).cast(pl.UInt32).alias(f"_first_{grain}"))
    # One pass by month and cell: the first-in-period flags, and the person-months (where the
    # rolling windows' -1 deltas go).
    by_month = (person_months.lazy().with_columns(first_in).group_by(["_month", *keys])
                .agg(*[pl.col(f"_first_{g}").sum() for g in fixed_grains], pl.len().alias("_people")).collect())
    fixed = []
    if fixed_grains:
        dated = by_month.lazy().with_columns(_month_date(pl.col("_month")).alias("_month"))
        for grain in fixed_grains:
            start, end = period_bounds(grain, pl.col("_month"))
            part = (dated.with_columns(start.alias("period_start"), end.alias("period_end"))
                    .group_by(["period_start", "period_end", *keys])
                    .agg(pl.col(f"_first_{grain}").sum().cast(pl.Float64).alias("numerator"))
                    .filter(pl.col("numerator") > 0)
                    .with_columns(pl.lit(grain).alias("period_type")))
            fixed.append(part)
    rolling = [(grain, _rolling_deltas(person_months.lazy(), by_month.lazy(), _rolling_months(grain), keys))
               for grain in step.grains if _rolling_months(grain)]
    return (pl.concat(fixed, how="diagonal_relaxed") if fixed else None), rolling


_DAY_BITS = 16  # days since 1970 in the low bits of the sort key: dates up to 2149
_DAYS = pl.lit(1 << _DAY_BITS, pl.UInt128)


def sorted_people(rows: pl.LazyFrame) -> pl.LazyFrame:
    """``rows`` (``_id``, ``_date``, ...) sorted by person then date, ties in the extract's order,
    with ``_who`` (an integer per person) in place of ``_id``.

    Sorting millions of string ids is the slow part of counting people, so the sort runs on one
    128-bit integer per row: a 96-bit code for the person (a 64-bit hash of the id, then 32 bits
    of a second, independent one), then the day since 1970. The ids are never materialised, and
    ``_who`` is the run number of the code. Two people share a code only if both hashes collide
    for the pair: for 20 million people a chance below 10⁻¹⁴ (with a single 64-bit hash, 10⁻⁵
    — too likely at national scale). A row whose date can't be packed (missing, before 1970 or
    after 2149) gets no key and a missing ``_date`` here; then ``sorted_people_exact`` is used.
    """
    ids, day = pl.col("_id"), pl.col("_date").cast(pl.Int32)
    person = (ids.hash(seed=0).cast(pl.UInt128) * pl.lit(1 << 32, pl.UInt128)
              + (ids.hash(seed=1) % (1 << 32)).cast(pl.UInt128))
    key = pl.when((day >= 0) & (day < 1 << _DAY_BITS)).then(person * _DAYS + day.cast(pl.UInt128))
    return (rows.select(key.alias("_key"), pl.exclude("_id", "_date"))
            .sort("_key", maintain_order=True, nulls_last=True)
            .select((pl.col("_key") % _DAYS).cast(pl.Int32).cast(pl.Date).alias("_date"), pl.exclude("_key"),
                    (pl.col("_key") // _DAYS).rle_id().alias("_who")))


def sorted_people_exact(rows: pl.LazyFrame) -> pl.LazyFrame:
    """``sorted_people`` by sorting on the ids themselves (any date, but several times slower)."""
    return (rows.sort(["_id", "_date"], maintain_order=True)
            .with_columns(pl.col("_id").rle_id().alias("_who")).drop("_id"))


def _first_of(*columns: str) -> pl.Expr:
    """True on the first row of each run of equal ``columns`` in a frame sorted by them."""
    changed = pl.lit(False)
    for column in columns:
        changed = changed | (pl.col(column) != pl.col(column).shift(1))
    return changed.fill_null(True)


def _rolling_deltas(person_months: pl.LazyFrame, by_month: pl.LazyFrame, window: int, keys: list[str]) -> pl.LazyFrame:
    # Rows are sorted by person then month, so the previous row is the person's previous month
    # (a plain shift: a window `over` millions of people is far slower). ``_month`` is a month
    # index: adding ``window`` is ``window`` months later.
    previous = pl.when(pl.col("_who") == pl.col("_who").shift(1)).then(pl.col("_month").shift(1))
    starts = (pl.when(previous.is_null()).then(pl.col("_month"))
              .otherwise(pl.max_horizontal(pl.col("_month"), previous + window)))
    # The -1 of every person-month at month + window comes from the counts of ``by_month``.
    return pl.concat([
        person_months.with_columns(starts.alias("_window_end")).group_by(["_window_end", *keys])
        .agg(pl.len().cast(pl.Int64).alias("_delta")),
        by_month.select((pl.col("_month") + window).alias("_window_end"), *keys,
                        -pl.col("_people").cast(pl.Int64).alias("_delta")),
    ]).group_by(["_window_end", *keys]).agg(pl.col("_delta").sum()).with_columns(
        _month_date(pl.col("_window_end")).alias("_window_end"))


def _running_people(deltas: pl.LazyFrame, window: int, keys: list[str],
                    first_month: dt.date, last_month: dt.date) -> pl.LazyFrame:
    """Deltas by window end and cell → people per rolling window (a running sum per cell)."""
    window_ends = pl.LazyFrame({"_window_end": pl.date_range(first_month, last_month, "1mo", eager=True)})
    grid = deltas.select(keys).unique().join(window_ends, how="cross")
    counts = (grid.join(deltas, on=["_window_end", *keys], how="left", nulls_equal=True)
              .with_columns(pl.col("_delta").fill_null(0))
              .sort([*keys, "_window_end"], nulls_last=True)
              .with_columns(pl.col("_delta").cum_sum().over(keys).cast(pl.Float64).alias("numerator"))
              .filter(pl.col("numerator") > 0))
    return counts.select(
        pl.col("_window_end").dt.offset_by(f"-{window - 1}mo").alias("period_start"),
        pl.col("_window_end").dt.month_end().alias("period_end"), *keys, "numerator")


def _population_cells(population: pl.DataFrame, pop_source: SourceDefinition, step: MetricStep,
                      catalogue: Catalogue, lookup: pl.LazyFrame) -> pl.DataFrame:
    """The metric's population by year and every slice key (small: summed into slices later)."""
    lf = prepare_frame(population, pop_source, catalogue, {step.age_bands})
    if step.population_filter:
        lf = lf.filter(compile_filter(step.population_filter, pop_source.all_columns,
                                      context=f"{step.metric_id} denominator.filter").fill_null(False))
    keys = list(dict.fromkeys(k for slice_keys, _ in _slices(step) for k in slice_keys))
    # Summed by LSOA and coded cell first (``_cell_codes``); labels and geography go on those sums.
    codes = _cell_codes(lf, catalogue, {step.age_bands})
    cell = [k for k in keys if k in codes]
    return (lf.group_by(["year", LSOA, *_coded(codes, cell)]).agg(pl.col("population").sum())
            .with_columns(_labelled(codes, cell)).join(lookup, on=LSOA, how="inner")
            .group_by(["year", *keys]).agg(pl.col("population").sum().cast(pl.Float64))
            .collect(engine=_engine_for(population.height)))


def _population_years(periods: pl.LazyFrame, first_year: int, last_year: int) -> pl.LazyFrame:
    """Which mid-year populations make up each period's denominator, and with what weight.

    A period of up to 12 months uses the estimate for the year it starts in. A longer (pooled)
    period uses person-years: each month contributes a twelfth of its year's estimate, so three
    pooled years are the sum of three yearly populations. Years beyond the estimates available
    use the nearest year.
    """
    months = ((pl.col("period_end").dt.year() - pl.col("period_start").dt.year()) * 12
              + pl.col("period_end").dt.month() - pl.col("period_start").dt.month() + 1)
    clamp = lambda year: year.clip(first_year, last_year)  # noqa: E731
    short = (periods.filter(months <= 12)
             .with_columns(clamp(pl.col("period_start").dt.year()).alias("year"), pl.lit(1.0).alias("_weight")))
    long = (periods.filter(months > 12)
            .with_columns(pl.date_ranges("period_start", "period_end", "1mo").alias("_month")).explode("_month")
            .with_columns(clamp(pl.col("_month").dt.year()).alias("year"))
            .group_by([*PERIOD, "year"]).agg((pl.len() / 12).alias("_weight")))
    return pl.concat([short, long], how="diagonal_relaxed").select(*PERIOD, "year", "_weight")


def _with_population(partials: pl.LazyFrame, population: pl.DataFrame, keys: list[str]) -> pl.LazyFrame:
    """Attach the population of each cell. Cells with people but no events still count (zero numerator)."""
    years = (population["year"].min(), population["year"].max())
    cells = population.lazy().group_by(["year", *keys]).agg(pl.col("population").sum())
    weights = _population_years(partials.select(PERIOD).unique(), *years)
    spine = (weights.join(cells, on="year", how="inner")
             .group_by([*PERIOD, *keys]).agg((pl.col("population") * pl.col("_weight")).sum()))
    return (spine.join(partials, on=[*PERIOD, *keys], how="full", coalesce=True, nulls_equal=True)
            .with_columns(pl.col("numerator").fill_null(0.0), pl.col("population").alias("denominator"))
            .drop("population")
            # Cells of rows outside the numerator with no population behind them carry nothing;
            # events without a population are kept, so the statistics flag them.
            .filter(pl.col("denominator").is_not_null() | (pl.col("numerator") > 0)))


def _breakdowns(cells: pl.LazyFrame, step: MetricStep, serves: list[str]) -> pl.LazyFrame:
    """Slice cells → one row per place × period × breakdown group ('overall' is the place total).

    For a DSR the age bands are kept within each group: standardisation happens per group."""
    sums = [pl.col("numerator").sum(), pl.col("denominator").sum(),
            pl.col("sum_squares").sum()]
    within = [step.age_band_column] if step.value_type == "dsr" else []
    parts = []
    for breakdown in serves:
        if breakdown == "overall":
            parts.append(cells.group_by([*PERIOD, "place", *within]).agg(sums)
                         .with_columns(pl.lit("overall").alias("breakdown"), pl.col("place").alias("group")))
            continue
        column = step.age_band_column if breakdown == "age_band" else BREAKDOWN_COLUMN[breakdown]
        parts.append(cells.group_by([*PERIOD, "place", column, *within]).agg(sums).with_columns(
            pl.lit(breakdown).alias("breakdown"),
            pl.col(column).cast(pl.String).fill_null(UNKNOWN).alias("group")).drop(column))
    return pl.concat(parts, how="diagonal_relaxed")


def _statistics(lf: pl.LazyFrame, step: MetricStep) -> pl.LazyFrame:
    if step.value_type == "proportion":
        lf = proportion_ci(lf, "numerator", "denominator", multiplier=step.multiplier)
    elif step.value_type == "rate":
        lf = rate_ci(lf, "numerator", "denominator", multiplier=step.multiplier)
    elif step.value_type == "dsr":
        lf = (dsr(lf, "numerator", "denominator", age_band=step.age_band_column,
                  by=[*PERIOD, "place", "breakdown", "group"], multiplier=step.multiplier)
              .rename({"total_count": "numerator", "total_pop": "denominator"}))
    elif step.value_type == "mean":
        lf = mean_ci_from_moments(lf, "numerator", "sum_squares", "denominator")
    else:  # a count or a sum: the value is the numerator; there is no sampling interval
        lf = lf.with_columns(pl.col("numerator").alias("value"), pl.lit(None, pl.Float64).alias("denominator"),
                             *[pl.lit(None, pl.Float64).alias(c)
                               for c in ("lower_95", "upper_95", "lower_99_8", "upper_99_8")])
    return lf.with_columns(pl.lit(step.metric_id).alias("metric_id"), pl.lit(step.version).alias("metric_version"))


def periods_changed(plan: SourcePlan, changed: pl.DataFrame) -> pl.DataFrame:
    """Every (metric, period) whose rows include one of ``changed`` (rows added to or removed from
    a source): the only values a change can alter, as each value depends on its period's rows only."""
    parts = []
    for step in plan.steps:
        if step.snapshot_column:
            dates = changed.select(pl.col(step.snapshot_column).drop_nulls().unique().alias("period_start"))
            periods = [dates.with_columns(pl.col("period_start").alias("period_end"),
                                          pl.lit("snapshot").alias("period_type"))]
        else:
            months = changed.select(pl.col(step.date_column).cast(pl.Date).dt.truncate("1mo").drop_nulls().unique()
                                    .alias("_month"))
            periods = []
            for grain in step.grains:
                window = _rolling_months(grain)
                if window:  # the windows ending in the month or in the (window - 1) months after it
                    ends = (months.with_columns(pl.int_ranges(0, window).alias("_offset")).explode("_offset")
                            .select(pl.col("_month").dt.offset_by(pl.format("{}mo", pl.col("_offset"))).alias("_end")))
                    bounds = ends.select(pl.col("_end").dt.offset_by(f"-{window - 1}mo").alias("period_start"),
                                         pl.col("_end").dt.month_end().alias("period_end"))
                else:
                    start, end = period_bounds(grain, pl.col("_month"))
                    bounds = months.select(start.alias("period_start"), end.alias("period_end"))
                periods.append(bounds.with_columns(pl.lit(grain).alias("period_type")))
        parts += [p.with_columns(pl.lit(step.metric_id).alias("metric_id")) for p in periods]
    schema = {"metric_id": pl.String, "period_type": pl.String, "period_start": pl.Date, "period_end": pl.Date}
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat([p.select(list(schema)).cast(schema) for p in parts]).unique()


def compute_source(plan: SourcePlan, frame: pl.DataFrame, catalogue: Catalogue, *,
                   geography: pl.DataFrame | None, populations: dict[str, pl.DataFrame] | None = None,
                   only: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every metric of one source, in long form (``OUTPUT_COLUMNS``). ``populations`` holds the
    population sources that rates and DSRs divide by, by source id.

    ``only`` (``periods_changed``): compute just these metrics' periods, from the rows in them.
    Which periods are complete is still judged on the whole frame.

    The rows are reduced to ``source_partials`` first, then finished (``finish_source``): a source
    too big to hold is computed part by part (``combine_partials``) with exactly these numbers."""
    spans: dict[str, pl.Series] = {}
    if only is not None:
        frame, spans = _rows_for(plan, frame, only)
    partials = source_partials(plan, frame, catalogue, geography=geography)
    del frame  # (the partials hold what the rows reduce to)
    values = finish_source(plan, partials, catalogue, geography=geography, populations=populations, spans=spans)
    if only is not None:
        values = values.join(only.select("metric_id", *PERIOD).unique(), on=["metric_id", *PERIOD], how="semi")
    return values


# A slice's keys → sums by period (or window end) and those keys: what partials are made of.
Sliced = dict[tuple[str, ...], pl.DataFrame]


@dataclass
class Partials:
    """What one source's rows reduce to before periods are completed and statistics worked out.

    Every part is a sum over rows, or over people, so the partials of two sets of rows that share
    no person (partitions of a source by a hash of its person id, ``combine_partials``) add up to
    the partials of all of them.

    - ``slices``: the additive metrics' sums (each metric's ``{i}__num``, ``__den`` and ``__sq``)
      by period (month index, or snapshot period) and by the keys of each slice the metrics need
      (``_slices``: place × neighbourhood × IMD quintile, place × sex, ...); None without
      additive metrics.
    - ``slice_months``: the first and last month (dates) of the additive metrics' cells.
    - ``months``: for each distinct count, the first and last month of its date column.
    - ``people``: for each distinct count, people by period (not yet completed) and by the keys of
      each of its slices, and each rolling grain's deltas by window end and slice
      (``_distinct_partials``).

    The rows' finest cells (LSOA × age band × sex × month) are summed into slices as soon as they
    are labelled, part by part, rather than added up first: at national scale a part has millions
    of them, nearly every cell, and adding 19 parts' cells into a running total took 540 of a
    1,331-second refresh; their slices are a few thousand rows."""

    schema: pl.Schema  # the source frame's columns: what the cell keys and codes are worked out from
    slices: Sliced | None = None
    slice_months: pl.Series | None = None
    months: dict[str, pl.Series] = field(default_factory=dict)
    people: dict[str, tuple[Sliced | None, list[tuple[str, Sliced]]]] = field(default_factory=dict)


_SUMMED = "^\\d+__.*$"  # the additive metrics' partial sums in ``Partials.slices``


def combine_partials(parts: list[Partials]) -> Partials:
    """The partials of several sets of rows with no person in common, as if computed on all of them."""
    if len(parts) == 1:
        return parts[0]

    def summed(frames: list[pl.DataFrame], values: str | list[str]) -> pl.DataFrame:
        whole = pl.concat([f.select(frames[0].columns) for f in frames], how="vertical_relaxed")
        keys = whole.drop(pl.col(values)).columns
        return whole.group_by(keys).agg(pl.col(values).sum()).select(whole.columns)  # (the parts' column order)

    def each_slice(frames: list[Sliced], values: str) -> Sliced:
        return {keys: summed([f[keys] for f in frames], values) for keys in frames[0]}

    sliced = [p.slices for p in parts if p.slices is not None]
    people = {}
    for metric_id, (_, rolling) in parts[0].people.items():
        fixed_parts = [f for p in parts if (f := p.people[metric_id][0]) is not None]
        people[metric_id] = (
            each_slice(fixed_parts, "numerator") if fixed_parts else None,
            [(grain, each_slice([dict(p.people[metric_id][1])[grain] for p in parts], "_delta"))
             for grain, _ in rolling])
    spans = [p.slice_months for p in parts if p.slice_months is not None]
    return Partials(schema=parts[0].schema, slices=each_slice(sliced, _SUMMED) if sliced else None,
                    slice_months=pl.concat(spans) if spans else None,
                    months={m: pl.concat([p.months[m] for p in parts]) for m in parts[0].months}, people=people)


class _Context:
    """The prepared frame's shape for one source: its columns, cell codes and filter columns."""

    def __init__(self, plan: SourcePlan, frame: pl.DataFrame, catalogue: Catalogue):
        self.source = catalogue.sources[plan.source_id]
        self.schemes = {s.age_bands for s in plan.steps}
        lf = prepare_frame(frame, self.source, catalogue, self.schemes)
        self.snapshot = plan.steps[0].snapshot_column
        if self.snapshot:
            lf = lf.with_columns(pl.col(self.snapshot).alias("period_start"), pl.col(self.snapshot).alias("period_end"))
        self.lf = lf
        self.columns = lf.collect_schema().names()
        self.codes = _cell_codes(lf, catalogue, self.schemes)
        self.filter_columns = [*self.source.all_columns, *(["period_start", "period_end"] if self.snapshot else [])]
        self.additive = [s for s in plan.steps if not s.distinct]
        self.distinct = [s for s in plan.steps if s.distinct]
        self.all_keys = sorted({k for s in self.additive for k in _cell_keys(self.columns, s)})
        self.time_keys = ["period_start", "period_end"] if self.snapshot else ["month"]


def source_partials(plan: SourcePlan, frame: pl.DataFrame, catalogue: Catalogue, *,
                    geography: pl.DataFrame | None) -> Partials:
    """One source's rows reduced to ``Partials``: one scan of the rows feeds everything."""
    context = _Context(plan, frame, catalogue)
    lf, codes, columns = context.lf, context.codes, context.columns
    # One scan of the rows feeds everything: the finest cells of the additive metrics and, for each
    # distinct count, its qualifying rows and the months the extract covers (collected together so
    # the prepared frame is computed once).
    scans: list[pl.LazyFrame] = []
    if context.additive:
        period_keys = (context.time_keys if context.snapshot
                       else [_month_index_of(frame, pl.col(context.additive[0].date_column).cast(pl.Date)).alias("month")])
        flags = [e for i, s in enumerate(context.additive) for e in _flags(s, context.filter_columns, f"{i}__")]
        scans.append(lf.with_columns(flags).group_by([*period_keys, *_coded(codes, context.all_keys)])
                     .agg(pl.col(_SUMMED).sum()))
    else:
        scans.append(pl.LazyFrame())
    qualifying = {}
    for step in context.distinct:
        date = pl.col(step.date_column).cast(pl.Date)  # (the first and last date's months: truncating every row costs)
        qualifying[step.metric_id] = _qualifying_rows(lf, step, context.filter_columns, _cell_keys(columns, step), codes)
        scans += [sorted_people(qualifying[step.metric_id]),
                  lf.select(pl.concat([date.min(), date.max()]).dt.truncate("1mo").alias("month"))]
    scanned = pl.collect_all(scans)
    lookup = _lookup(geography)
    partials = Partials(schema=frame.schema)
    if context.additive:
        wanted = list(dict.fromkeys(tuple(keys) for step in context.additive for keys, _ in _slices(step)))
        partials.slices = _sliced(scanned[0], codes, context.all_keys, lookup, context.time_keys, wanted, _SUMMED)
        if not context.snapshot:  # (every labelled cell is in every slice: any slice's months are theirs)
            partials.slice_months = partials.slices[wanted[0]].select(
                _month_date(pl.concat([pl.col("month").min(), pl.col("month").max()]))).to_series()
    rows_of = dict(zip((s.metric_id for s in context.distinct), scanned[1::2], strict=True))
    partials.months = {s.metric_id: months.to_series()
                       for s, months in zip(context.distinct, scanned[2::2], strict=True)}
    del scanned, frame  # each step's rows are let go as soon as they are reduced to person-months
    for step in context.distinct:
        keys = _cell_keys(columns, step)
        people = rows_of.pop(step.metric_id)
        if people["_date"].null_count():  # a date the sort key can't hold: sort on the ids
            people = sorted_people_exact(qualifying[step.metric_id]).collect()
        person_months = _person_months(people)
        del people
        fixed, rolling = _distinct_partials(person_months, step, keys)
        del person_months
        slice_keys = [tuple(slice_keys) for slice_keys, _ in _slices(step)]
        partials.people[step.metric_id] = (
            None if fixed is None else _sliced(fixed.collect(), codes, keys, lookup, PERIOD, slice_keys, "numerator"),
            [(grain, _sliced(deltas.collect(), codes, keys, lookup, ["_window_end"], slice_keys, "_delta"))
             for grain, deltas in rolling])
    return partials


def _sliced(cells: pl.DataFrame, codes: Codes, keys: list[str], lookup: pl.LazyFrame, by: list[str],
            slices: list[tuple[str, ...]], values: str) -> Sliced:
    """Coded cells (keyed ``by`` and ``keys``) → their ``values`` summed by ``by`` and each slice's
    keys, once labelled and given their LSOA's geography (cells of an LSOA not in the lookup drop)."""
    labelled = _geography_labelled(cells, codes, keys, lookup).collect(engine=_engine_for(cells.height))
    sums = pl.collect_all([labelled.lazy().group_by([*by, *slice_keys]).agg(pl.col(values).sum())
                           for slice_keys in slices], engine=_engine_for(labelled.height))
    return dict(zip(slices, sums, strict=True))


def finish_source(plan: SourcePlan, partials: Partials, catalogue: Catalogue, *,
                  geography: pl.DataFrame | None, populations: dict[str, pl.DataFrame] | None = None,
                  spans: dict[str, pl.Series] | None = None) -> pl.DataFrame:
    """``Partials`` → every metric of the source in long form (``OUTPUT_COLUMNS``): periods rolled
    up and completed, slices summed, populations joined, statistics worked out.

    ``spans``: the first and last month of a date column over the whole source, when the partials
    come from some of its rows only (``compute_source``'s ``only``)."""
    populations = populations or {}
    spans = spans or {}
    context = _Context(plan, pl.DataFrame(schema=partials.schema), catalogue)
    source, snapshot, time_keys, additive = context.source, context.snapshot, context.time_keys, context.additive
    lookup = _lookup(geography)
    # Metrics dividing by the same population, filter, age bands and slices share its cells.
    pop_cells: dict[tuple, pl.DataFrame] = {}
    # Every slice's cells are collected together at the end: dozens of small queries, run side by
    # side rather than one after another.
    slices: list[tuple[pl.LazyFrame, MetricStep, list[str]]] = []

    def finish(cells: pl.LazyFrame, step: MetricStep, keys: list[str], serves: list[str]) -> None:
        shared = (step.population_source, step.population_filter, step.age_bands,
                  tuple(tuple(slice_keys) for slice_keys, _ in _slices(step)))
        if step.population_source and shared not in pop_cells:
            pop_cells[shared] = _population_cells(populations[step.population_source],
                                                  catalogue.sources[step.population_source], step, catalogue, lookup)
        slices.append((_slice_cells(cells, step, pop_cells.get(shared), keys), step, serves))

    most_cells = 0  # the most cells any slice is summed from (which engine suits them)
    if additive:
        if not snapshot:
            months = spans.get(additive[0].date_column, partials.slice_months)
            first_month, last_month = _coverage(source, months, [g for s in additive for g in s.grains])
        most_cells = max(sums.height for sums in partials.slices.values())
        for i, step in enumerate(additive):
            mine = {f"{i}__num": "numerator", f"{i}__den": "denominator", f"{i}__sq": "sum_squares"}
            for keys, serves in _slices(step):
                sums = partials.slices[tuple(keys)]
                present = {k: v for k, v in mine.items() if k in sums.columns}
                base = sums.lazy().select(*time_keys, *keys, *[pl.col(k).alias(v) for k, v in present.items()])
                if "sum_squares" not in present.values():
                    base = base.with_columns(pl.lit(None, pl.Float64).alias("sum_squares"))
                if snapshot:
                    cells = base.with_columns(pl.lit("snapshot").alias("period_type"))
                else:
                    base = base.with_columns(_month_date(pl.col("month")).alias("month"))
                    cells = pl.concat([_roll_months(base, g, keys, ["numerator", "denominator", "sum_squares"],
                                                    first_month, last_month) for g in step.grains],
                                      how="diagonal_relaxed")
                finish(cells, step, keys, serves)
    for step in context.distinct:
        months = partials.months[step.metric_id]
        first_month, last_month = _coverage(source, spans.get(step.date_column, months), step.grains)
        fixed, rolling = partials.people[step.metric_id]
        held = [sliced for sliced in [fixed, *dict(rolling).values()] if sliced is not None]
        most_cells = max([most_cells, *(cells.height for sliced in held for cells in sliced.values())])
        for slice_keys, serves in _slices(step):
            parts = [] if fixed is None else [_complete(fixed[tuple(slice_keys)].lazy(), first_month, last_month)]
            for grain, deltas in rolling:
                people = _running_people(deltas[tuple(slice_keys)].lazy(), _rolling_months(grain), slice_keys,
                                         first_month, last_month)
                parts.append(_complete(people.with_columns(pl.lit(grain).alias("period_type")), first_month, last_month))
            cells = pl.concat(parts, how="diagonal_relaxed").with_columns(
                pl.lit(None, pl.Float64).alias("sum_squares"), pl.lit(None, pl.Float64).alias("denominator"))
            finish(cells, step, slice_keys, serves)
    # Slices are small; materialising them stops each breakdown's branch re-running the plan.
    cells = pl.collect_all([lf for lf, _, _ in slices], engine=_engine_for(most_cells))
    outputs = [_statistics(_breakdowns(c.lazy(), step, serves), step)
               for c, (_, step, serves) in zip(cells, slices, strict=True)]
    del slices  # (and the cells they were summed from)
    frames = pl.collect_all(outputs, engine=_engine_for(max((c.height for c in cells), default=0)))
    return pl.concat([f.select(OUTPUT_COLUMNS) for f in frames], how="vertical_relaxed")


def _rows_for(plan: SourcePlan, frame: pl.DataFrame, only: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, pl.Series]]:
    """The rows the periods in ``only`` are computed from, and the first and last month of each
    date column over the whole frame (what decides which periods are complete)."""
    keep = pl.lit(False)
    spans = {}
    for step in plan.steps:
        mine = only.filter(pl.col("metric_id") == step.metric_id)
        if step.snapshot_column:
            keep = keep | pl.col(step.snapshot_column).is_in(mine["period_start"].implode())
            continue
        months = (mine.select(pl.date_ranges("period_start", "period_end", "1mo").alias("_m")).explode("_m")
                  .select(_month_index(pl.col("_m")).unique()))
        date = pl.col(step.date_column).cast(pl.Date)
        keep = keep | _month_index_of(frame, date).is_in(months["_m"].implode())
        if step.date_column not in spans:
            spans[step.date_column] = frame.select(pl.concat([date.min(), date.max()]).dt.truncate("1mo")).to_series()
    return frame.filter(keep.fill_null(False)), spans


def _slice_cells(cells: pl.LazyFrame, step: MetricStep, population: pl.DataFrame | None,
                 keys: list[str]) -> pl.LazyFrame:
    """A slice's cells with their denominators: the population's, or the metric's own."""
    if step.population_source:
        cells = cells.group_by([*PERIOD, *keys]).agg(pl.col("numerator", "sum_squares").sum())
        return _with_population(cells, population, keys)
    if step.value_type == "proportion":
        return cells.filter(pl.col("denominator") > 0)
    return cells
