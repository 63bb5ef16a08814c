"""Time proportion_ci, rate_ci and dsr on 100,000 groups, and sii on 2,000 groups of 5 quintiles
at the refresh's 10,000 repetitions (median of 5 runs).

Run: .venv/bin/python bench/bench_stats.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import median_time as _median_time  # noqa: E402

from metrics.stats import ESP2013_BANDS, dsr, proportion_ci, rate_ci, sii  # noqa: E402

GROUPS = 100_000
SII_GROUPS = 2_000  # a refresh's inequalities: one group per metric, place and period
RUNS = 5


def median_time(fn) -> float:
    return _median_time(fn, RUNS)


def sii_quintiles(rng: np.random.Generator, value_type: str) -> pl.DataFrame:
    """SII_GROUPS groups x 5 quintiles with 95% limits, as judge._inequalities passes them."""
    group = np.repeat(np.arange(SII_GROUPS), 5)
    quintile = np.tile(np.arange(1, 6), SII_GROUPS)
    n = rng.integers(2_000, 60_000, SII_GROUPS * 5).astype(float)
    if value_type == "proportion":
        v = rng.uniform(0.05, 0.4, SII_GROUPS)[group] * (1 + 0.08 * (3 - quintile))
        half = 1.96 * np.sqrt(v * (1 - v) / n)
        lo, hi = v - half, v + half
    else:  # rate
        v = rng.uniform(50, 900, SII_GROUPS)[group] * (1 + 0.1 * (3 - quintile)) / 1e5
        factor = np.exp(1.96 / np.sqrt(v * n))
        lo, hi = v / factor, v * factor
    return pl.DataFrame(
        {"place": group, "quintile": quintile, "value": v, "pop": n, "lower": lo, "upper": hi}
    )


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
    for value_type in ("proportion", "rate"):
        quintiles = sii_quintiles(rng, value_type)
        results[f"sii {value_type:<10} {SII_GROUPS:,} groups x 5, 10,000 reps"] = median_time(
            lambda q=quintiles, vt=value_type: sii(
                q, "value", "pop", "quintile", by="place", lower="lower", upper="upper",
                value_type=vt, repetitions=10_000, seed=1, confidence=0.95,
            )
        )
    for name, seconds in results.items():
        print(f"{name:<50} {seconds * 1000:8.1f} ms (median of {RUNS})")


if __name__ == "__main__":
    main()
