"""Time metrics.spc.xmr on 2,000 and 10,000 series × 36 monthly points (median of 5 runs).

Run: .venv/bin/python bench/bench_spc.py
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import median_time as _median_time  # noqa: E402

from metrics.spc import xmr  # noqa: E402

POINTS = 36
RUNS = 5


def median_time(fn) -> float:
    return _median_time(fn, RUNS)


def frame(series: int, rng: np.random.Generator) -> pl.DataFrame:
    months = [dt.date(2022 + m // 12, m % 12 + 1, 1) for m in range(POINTS)]
    level = np.repeat(rng.normal(100, 20, series), POINTS)
    shift = np.where(np.tile(np.arange(POINTS), series) >= 24, np.repeat(rng.normal(0, 8, series), POINTS), 0)
    y = level + shift + rng.normal(0, 5, series * POINTS)
    y[rng.random(series * POINTS) < 0.01] = np.nan  # a few missing values
    return pl.DataFrame(
        {
            "metric_id": np.repeat(np.arange(series) % 50, POINTS),
            "place": np.repeat(np.arange(series) // 50, POINTS),
            "period": months * series,
            "value": y,
            "target": np.repeat(rng.normal(100, 20, series), POINTS),
        }
    )


def main() -> None:
    rng = np.random.default_rng(0)
    for series in (2_000, 10_000):
        df = frame(series, rng)
        kw = dict(by=["metric_id", "place"], target="target")
        plain = median_time(lambda: xmr(df, "value", "period", **kw))
        rebased = median_time(lambda: xmr(df, "value", "period", rebase_at=dt.date(2024, 1, 1), **kw))
        label = f"xmr {series:>6,} series x {POINTS} points ({df.height:,} rows)"
        print(f"{label:<50} {plain * 1000:8.1f} ms; with a rebase {rebased * 1000:8.1f} ms (median of {RUNS})")


if __name__ == "__main__":
    main()
