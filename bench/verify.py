"""Check a baseline's numbers against what the engine published (read from the engine run's store)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from bench import common as C


def engine_values(db: str | Path) -> pl.DataFrame:
    import store

    engine = store.get_engine(f"sqlite:///{db}")
    values = store.read_values(engine, run="latest")
    store.dispose_engine(engine)
    return canonical(values)


def canonical(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        pl.col("metric_id").cast(pl.String), pl.col("place").cast(pl.String), pl.col("period_type").cast(pl.String),
        pl.col("period_start").cast(pl.Date), pl.col("breakdown").cast(pl.String), pl.col("group").cast(pl.String),
        pl.col("numerator").cast(pl.Float64), pl.col("denominator").cast(pl.Float64))


def compare(engine: pl.DataFrame, baseline: pl.DataFrame, *, tolerance: float = 1e-6) -> dict:
    """Full outer join on the keys; a row missing on one side counts as numerator 0 and denominator 0
    (the engine also publishes empty cells, e.g. a mean's group with no spells in scope). Counts
    have no denominator in the engine; theirs is not compared."""
    base = canonical(baseline)
    joined = engine.join(base, on=C.KEYS, how="full", coalesce=True, suffix="_b", nulls_equal=True)
    is_count = pl.col("metric_id") == "delayed_bed_days"
    num_diff = (pl.col("numerator").fill_null(0) - pl.col("numerator_b").fill_null(0)).abs()
    den_diff = pl.when(is_count).then(0.0).otherwise(
        (pl.col("denominator").fill_null(0) - pl.col("denominator_b").fill_null(0)).abs())
    bad = joined.filter((num_diff > tolerance) | (den_diff > tolerance))
    return {
        "engine_rows": engine.height,
        "baseline_rows": base.height,
        "matched_rows": joined.filter(pl.col("numerator").is_not_null() & pl.col("numerator_b").is_not_null()).height,
        "mismatches": bad.height,
        "examples": bad.head(8).with_columns(pl.col("period_start").cast(pl.String)).rows(named=True),
        "per_metric": bad.group_by("metric_id", "period_type", "breakdown").len().sort("len", descending=True)
        .head(20).rows(),
    }
