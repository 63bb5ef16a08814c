"""Time proportion_ci, rate_ci and dsr on 100,000 groups (median of 5 runs).

Run: .venv/bin/python bench/bench_stats.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import median_time as _median_time  # noqa: E402

from metrics.stats import ESP2013_BANDS, dsr, proportion_ci, rate_ci  # noqa: E402

GROUPS = 100_000
RUNS = 5


def median_time(fn) -> float:
    return _median_time(fn, RUNS)


def main() -> None:
    rng = np.random.default_rng(0)
    n = rng.integers(1, 50_000, GROUPS)
    x = rng.binomial(n, 0.3)
    rows = pl.DataFrame({"group": np.arange(GROUPS), "x": x, "n": n})
    small = rows.with_columns(x=pl.col("x") % 15)  # plenty of counts below 10 (exact Poisson)

    bands = len(ESP2013_BANDS)
    banded = pl.DataFrame(
        {
            "group": np.repeat(np.arange(GROUPS), bands),
            "band": np.tile(np.array(ESP2013_BANDS), GROUPS),
            "deaths": rng.poisson(20, GROUPS * bands),
            "pop": rng.integers(500, 5_000, GROUPS * bands),
        }
    )

    results = {
        f"proportion_ci  {GROUPS:,} rows": median_time(lambda: proportion_ci(rows, "x", "n")),
        f"rate_ci        {GROUPS:,} rows (mixed exact/Byar)": median_time(lambda: rate_ci(small, "x", "n")),
        f"dsr            {GROUPS:,} groups x {bands} bands": median_time(
            lambda: dsr(banded, "deaths", "pop", age_band="band", by="group")
        ),
    }
    for name, seconds in results.items():
        print(f"{name:<50} {seconds * 1000:8.1f} ms (median of {RUNS})")


if __name__ == "__main__":
    main()
