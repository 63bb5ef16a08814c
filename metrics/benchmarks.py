"""Benchmark values (England, a region, the ICS) read from Fingertips' CSV data export.

A user downloads an indicator's data from Fingertips ("Export table as CSV file") and drops it in
the extracts folder's ``benchmarks/`` sub-folder. Rows are matched to metrics by the definition's
``fingertips_id`` and to periods by Fingertips' time period labels:

- ``2024/25`` → the financial year ending 31 March 2025 (for a snapshot metric: the 31 March snapshot;
  for a school measure published by academic year: September 2024 to August 2025);
- ``2024`` → calendar year 2024;
- ``2022 - 24`` → the three calendar years 2022 to 2024 pooled (``rolling_36_months`` ending December);
- ``2023/24 Q2`` → a financial quarter.

For a snapshot metric (coverage "as at" a date) the benchmark applies to the snapshot on the
period's last day. Only the area named in ``area`` (default England, E92000001) is used as the benchmark.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl

from metrics.definitions import Catalogue

__all__ = ["read_fingertips", "parse_time_period", "FINGERTIPS_COLUMNS", "ENGLAND"]

ENGLAND = "E92000001"
FINGERTIPS_COLUMNS = {
    "Indicator ID": "indicator_id",
    "Area Code": "area_code",
    "Area Name": "area_name",
    "Time period": "time_period",
    "Value": "value",
    "Lower CI 95.0 limit": "lower_95",
    "Upper CI 95.0 limit": "upper_95",
    "Lower CI 99.8 limit": "lower_99_8",
    "Upper CI 99.8 limit": "upper_99_8",
    "Count": "count",
    "Denominator": "denominator",
}
_QUARTER_END = {1: (6, 30), 2: (9, 30), 3: (12, 31), 4: (3, 31)}


def parse_time_period(label: str) -> tuple[str, dt.date, dt.date] | None:
    """Fingertips time period label → (period_type, period_start, period_end), or None if unknown."""
    label = label.strip()
    if match := re.fullmatch(r"(\d{4})/(\d{2})\s+Q([1-4])", label):
        start_year, quarter = int(match.group(1)), int(match.group(3))
        year = start_year + (quarter == 4)
        month, day = _QUARTER_END[quarter]
        end = dt.date(year, month, day)
        start_month = {1: 4, 2: 7, 3: 10, 4: 1}[quarter]
        return "financial_quarter", dt.date(year, start_month, 1), end
    if match := re.fullmatch(r"(\d{4})/(\d{2})", label):
        start_year = int(match.group(1))
        return "financial_year", dt.date(start_year, 4, 1), dt.date(start_year + 1, 3, 31)
    if match := re.fullmatch(r"(\d{4})\s*-\s*(\d{2})", label):
        first, last = int(match.group(1)), int(match.group(1)[:2] + match.group(2))
        months = (last - first + 1) * 12
        return f"rolling_{months}_months", dt.date(first, 1, 1), dt.date(last, 12, 31)
    if match := re.fullmatch(r"(\d{4})", label):
        year = int(match.group(1))
        return "calendar_year", dt.date(year, 1, 1), dt.date(year, 12, 31)
    return None


def read_fingertips(folder: str | Path, catalogue: Catalogue, *, area: str = ENGLAND,
                    benchmark_name: str = "England") -> pl.DataFrame:
    """Benchmarks for the catalogue's metrics: metric_id, period_type, period_end, benchmark, value,
    lower_95, upper_95 (empty when the folder has no files or no matching rows)."""
    schema = {"metric_id": pl.String, "period_type": pl.String, "period_end": pl.Date, "benchmark": pl.String,
              "value": pl.Float64, "lower_95": pl.Float64, "upper_95": pl.Float64}
    folder = Path(folder)
    files = sorted(folder.glob("*.csv")) if folder.is_dir() else []
    by_indicator = {m.fingertips_id: m for m in catalogue.metrics.values() if m.fingertips_id}
    rows = []
    for path in files:
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy")
        frame = frame.rename({c: c.lstrip("\ufeff").strip() for c in frame.columns})
        missing = [c for c in ("Indicator ID", "Area Code", "Time period", "Value") if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: not a Fingertips data export (missing column(s) {', '.join(missing)})")
        present = {k: v for k, v in FINGERTIPS_COLUMNS.items() if k in frame.columns}
        frame = frame.select(list(present)).rename(present).filter(pl.col("area_code") == area)
        for row in frame.iter_rows(named=True):
            metric = by_indicator.get(int(row["indicator_id"])) if row["indicator_id"] else None
            period = parse_time_period(row["time_period"] or "")
            if metric is None or period is None or not row["value"]:
                continue
            period_type, _start, end = period
            if period_type == "financial_year" and "academic_year" in metric.period.grains \
                    and "financial_year" not in metric.period.grains:
                # School measures label academic years the same way ("2023/24"): September to August.
                period_type, end = "academic_year", dt.date(end.year, 8, 31)
            if metric.period.snapshot:
                period_type = "snapshot"  # coverage "as at" the end of the period
            rows.append({"metric_id": metric.id, "period_type": period_type, "period_end": end,
                         "benchmark": benchmark_name, "value": float(row["value"]),
                         "lower_95": _number(row.get("lower_95")), "upper_95": _number(row.get("upper_95"))})
    return pl.DataFrame(rows, schema=schema)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None
