"""Naive Polars baseline: validate, de-duplicate, then one eager query per metric × grain × breakdown.

This is what a first attempt in Polars looks like: correct, but without the engine's single pass
per source and roll-ups from partials. Every query re-filters the row-level frame, re-joins the
geography and re-derives its period and group columns. No confidence intervals.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

from bench import common as C

GRAINS = ["month", "financial_quarter", "financial_year"]


def _read(data_dir: Path, source_id: str) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in C.files(data_dir, source_id)], how="vertical")


def _valid(source_id: str, as_of: dt.date, known: pl.Series | None) -> pl.Expr:
    ok = pl.lit(True)
    spec = C.source_spec(source_id)
    for name, chk in C.column_checks(source_id).items():
        col = pl.col(name)
        good = pl.lit(True)
        if chk["allowed"] is not None:
            good &= col.is_in(chk["allowed"])
        if chk["min"] is not None:
            good &= col >= chk["min"]
        if chk["max"] is not None:
            good &= col <= chk["max"]
        if chk["pattern"]:
            good &= col.str.contains(chk["pattern"])
        if chk["not_future"]:
            good &= col <= as_of
        if known is not None and name == spec.get("geography"):
            good &= col.is_in(known.implode())
        ok &= col.is_not_null() & good if not chk["nullable"] else col.is_null() | good
    return ok.fill_null(False)


RULES = {
    "inpatient_spells": (pl.col("discharge_date") >= pl.col("admission_date")).fill_null(True)
    & (pl.col("discharge_ready_date").is_null() | ((pl.col("discharge_ready_date") >= pl.col("admission_date"))
                                                    & (pl.col("discharge_ready_date") <= pl.col("discharge_date"))))
    .fill_null(True),
    "breast_screening": (pl.col("last_adequate_screen_date").is_null()
                         | (pl.col("last_adequate_screen_date") <= pl.col("snapshot_date"))).fill_null(True),
    "geography": (pl.col("imd_quintile") == (pl.col("imd_decile") / 2.0).ceil()).fill_null(True),
}


def load(data_dir: Path, source_id: str, as_of: dt.date, known: pl.Series | None) -> pl.DataFrame:
    df = _read(data_dir, source_id)
    df = df.filter(_valid(source_id, as_of, known) & RULES.get(source_id, pl.lit(True)))
    spec = C.source_spec(source_id)
    if spec.get("dedup"):
        key, by = spec["dedup"]["key"], spec["dedup"]["keep_latest_by"]
        df = (df.with_row_index("_i").sort([by, "_i"]).unique(subset=key, keep="last").sort("_i").drop("_i"))
    if spec.get("key"):
        df = df.unique(subset=spec["key"], keep="first", maintain_order=True)
    return df


def _band(bands: list[int]) -> pl.Expr:
    labels = C.age_labels(bands)
    expr = pl.when(pl.col("age") < bands[0]).then(None)
    for lo, label in reversed(list(zip(bands, labels))):
        expr = expr.when(pl.col("age") >= lo).then(pl.lit(label))
    return expr.otherwise(None)


def _period(grain: str, date: pl.Expr) -> pl.Expr:
    if grain == "month":
        return date.dt.truncate("1mo")
    if grain == "financial_quarter":
        return date.dt.truncate("1q")
    return pl.date(date.dt.year() - (date.dt.month() < 4).cast(pl.Int32), 4, 1)


def _end(grain: str, start: pl.Expr) -> pl.Expr:
    return start.dt.offset_by({"month": "1mo", "financial_quarter": "3mo", "financial_year": "12mo"}[grain]) \
        .dt.offset_by("-1d")


def _group_expr(breakdown: str, bands: list[int]) -> pl.Expr:
    return {
        "overall": pl.col("place"),
        "neighbourhood": pl.col("neighbourhood"),
        "imd_quintile": pl.col("imd_quintile").cast(pl.String),
        "age_band": _band(bands),
        "sex": pl.col("sex").replace_strict(C.SEX_LABELS, default=pl.col("sex"), return_dtype=pl.String),
        "ethnicity": pl.col("ethnicity").replace_strict(C.ETHNIC_GROUP, default=C.ETHNIC_OTHERWISE,
                                                        return_dtype=pl.String),
    }[breakdown].fill_null(C.UNKNOWN)


def _complete(df: pl.DataFrame, grain: str, first: dt.date, last: dt.date) -> pl.DataFrame:
    end = df["period_start"].to_frame().select(_end(grain, pl.col("period_start")))
    last_day = pl.select(pl.lit(last).dt.month_end()).item()
    return df.filter((pl.col("period_start") >= first) & (end.to_series() <= last_day))


SPELL_DEN = (pl.col("patient_classification") == 1) & (pl.col("discharge_date") > pl.col("admission_date")) \
    & (pl.col("discharge_method") != 4) & (pl.col("age") >= 18)
SPELL_METRICS = {
    # metric: (denominator filter, numerator filter or measure, kind)
    "discharged_on_ready_date": (SPELL_DEN & pl.col("discharge_ready_date").is_not_null(),
                                 pl.col("discharge_date") == pl.col("discharge_ready_date"), "proportion"),
    "spells_with_discharge_ready_date": (SPELL_DEN, pl.col("discharge_ready_date").is_not_null(), "proportion"),
    "mean_discharge_delay_days": (SPELL_DEN & pl.col("discharge_ready_date").is_not_null(), None, "mean"),
    "delayed_bed_days": (SPELL_DEN & pl.col("discharge_ready_date").is_not_null(), pl.col("delay_days") > 0, "count"),
}
SPELL_BREAKDOWNS = ["overall", "neighbourhood", "imd_quintile", "age_band", "sex", "ethnicity"]
CONTACT_BREAKDOWNS = ["overall", "neighbourhood", "imd_quintile", "age_band", "sex"]
SCREEN_BREAKDOWNS = ["overall", "neighbourhood", "imd_quintile", "age_band", "ethnicity"]


def run(data_dir: Path, as_of: dt.date) -> pl.DataFrame:
    data_dir = Path(data_dir)
    geo = load(data_dir, "geography", as_of, None)
    known = geo["lsoa_code"]
    geo = geo.select("lsoa_code", "place", "neighbourhood", "imd_quintile")
    out: list[pl.DataFrame] = []

    # --- inpatient spells: one query per metric × grain × breakdown
    spells = load(data_dir, "inpatient_spells", as_of, known).with_columns(
        (pl.col("discharge_date") - pl.col("discharge_ready_date")).dt.total_days().clip(lower_bound=0)
        .alias("delay_days"))
    months = spells.select(pl.col("discharge_date").dt.truncate("1mo")).to_series()
    first, last = months.min(), months.max()
    for metric, (den, num, kind) in SPELL_METRICS.items():
        for grain in GRAINS:
            for breakdown in SPELL_BREAKDOWNS:
                q = spells.join(geo, on="lsoa_code", how="inner").with_columns(
                    _period(grain, pl.col("discharge_date")).alias("period_start"),
                    _group_expr(breakdown, C.SPELL_AGE_BANDS).alias("group"))
                if kind == "proportion":
                    q = q.filter(den).group_by("place", "period_start", "group").agg(
                        num.sum().cast(pl.Float64).alias("numerator"), pl.len().cast(pl.Float64).alias("denominator"))
                elif kind == "mean":
                    q = q.filter(den).group_by("place", "period_start", "group").agg(
                        pl.col("delay_days").sum().cast(pl.Float64).alias("numerator"),
                        pl.len().cast(pl.Float64).alias("denominator"))
                else:
                    q = q.filter(den & num).group_by("place", "period_start", "group").agg(
                        pl.col("delay_days").sum().cast(pl.Float64).alias("numerator"),
                        pl.lit(None, pl.Float64).alias("denominator"))
                q = _complete(q, grain, first, last)
                out.append(q.with_columns(pl.lit(metric).alias("metric_id"), pl.lit(grain).alias("period_type"),
                                          pl.lit(breakdown).alias("breakdown")))
    del spells

    # --- population denominators: one query per grain × breakdown
    pop = load(data_dir, "population", as_of, known).join(geo, on="lsoa_code", how="inner")
    years = (pop["year"].min(), pop["year"].max())

    def population(grain: str, breakdown: str, periods: list[dt.date]) -> pl.DataFrame:
        spine = pl.DataFrame({"period_start": periods}).with_columns(
            pl.col("period_start").dt.year().clip(*years).alias("year"))
        return (spine.join(pop, on="year").with_columns(_group_expr(breakdown, C.DEFAULT_AGE_BANDS).alias("group"))
                .group_by("place", "period_start", "group")
                .agg(pl.col("population").sum().cast(pl.Float64).alias("denominator")))

    # --- community contacts
    contacts = load(data_dir, "community_contacts", as_of, known)
    months = contacts.select(pl.col("contact_date").dt.truncate("1mo")).to_series()
    first, last = months.min(), months.max()
    attended = pl.col("attendance_status").is_in([5, 6])
    for metric in ("community_contacts_per_1000", "people_seen_by_community_services_per_1000"):
        for grain in GRAINS:
            periods = _complete(contacts.select(_period(grain, pl.col("contact_date")).alias("period_start")).unique(),
                                grain, first, last)["period_start"].to_list()
            for breakdown in CONTACT_BREAKDOWNS:
                q = contacts.filter(attended).with_columns(
                    _period(grain, pl.col("contact_date")).alias("period_start"))
                if metric.startswith("people_seen"):
                    q = (q.sort(["person_id", "contact_date"], maintain_order=True)
                         .unique(subset=["person_id", "period_start"], keep="first", maintain_order=True))
                q = (q.join(geo, on="lsoa_code", how="inner")
                     .with_columns(_group_expr(breakdown, C.DEFAULT_AGE_BANDS).alias("group"))
                     .group_by("place", "period_start", "group").agg(pl.len().cast(pl.Float64).alias("numerator")))
                q = q.filter(pl.col("period_start").is_in(periods))
                q = population(grain, breakdown, periods).join(q, on=["place", "period_start", "group"], how="full",
                                                               coalesce=True).with_columns(
                    pl.col("numerator").fill_null(0.0))
                out.append(q.with_columns(pl.lit(metric).alias("metric_id"), pl.lit(grain).alias("period_type"),
                                          pl.lit(breakdown).alias("breakdown")))
    del contacts

    # --- breast screening snapshots
    screens = load(data_dir, "breast_screening", as_of, known)
    den = (pl.col("sex") == "F") & pl.col("age").is_between(53, 70) & ~pl.col("ceased")
    num = (pl.col("last_adequate_screen_date") > pl.col("snapshot_date").dt.offset_by("-36mo")).fill_null(False)
    for breakdown in SCREEN_BREAKDOWNS:
        q = (screens.filter(den.fill_null(False)).join(geo, on="lsoa_code", how="inner")
             .with_columns(pl.col("snapshot_date").alias("period_start"),
                           _group_expr(breakdown, C.SCREEN_AGE_BANDS).alias("group"))
             .group_by("place", "period_start", "group")
             .agg(num.sum().cast(pl.Float64).alias("numerator"), pl.len().cast(pl.Float64).alias("denominator")))
        out.append(q.with_columns(pl.lit("breast_screening_coverage").alias("metric_id"),
                                  pl.lit("snapshot").alias("period_type"), pl.lit(breakdown).alias("breakdown")))
    return pl.concat([f.select(C.COLUMNS) for f in out], how="vertical_relaxed")
