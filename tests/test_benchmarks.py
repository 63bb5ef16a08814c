"""Benchmarks from Fingertips' CSV export: time period labels and matching to metrics."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import DEFINITIONS
from metrics.benchmarks import parse_time_period, read_fingertips
from metrics.definitions import load_catalogue
from metrics.demo import write_england_benchmarks


@pytest.mark.parametrize(("label", "expected"), [
    ("2024/25", ("financial_year", dt.date(2024, 4, 1), dt.date(2025, 3, 31))),
    ("2024", ("calendar_year", dt.date(2024, 1, 1), dt.date(2024, 12, 31))),
    ("2022 - 24", ("rolling_36_months", dt.date(2022, 1, 1), dt.date(2024, 12, 31))),
    ("2023/24 Q4", ("financial_quarter", dt.date(2024, 1, 1), dt.date(2024, 3, 31))),
    ("2023/24 Q1", ("financial_quarter", dt.date(2023, 4, 1), dt.date(2023, 6, 30))),
    ("Mar 2025", None),
])
def test_time_period_labels(label, expected):
    assert parse_time_period(label) == expected


def test_demo_export_reads_as_england_benchmark(tmp_path):
    write_england_benchmarks(tmp_path)
    frame = read_fingertips(tmp_path / "benchmarks", load_catalogue(DEFINITIONS))
    row = frame.row(0, named=True)
    assert (row["metric_id"], row["period_type"], row["period_end"], row["benchmark"], row["value"]) == (
        "breast_screening_coverage", "snapshot", dt.date(2025, 3, 31), "England", 71.8)


def test_not_a_fingertips_file_is_named(tmp_path):
    (tmp_path / "b.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"b.csv: not a Fingertips data export \(missing column\(s\) Indicator ID"):
        read_fingertips(tmp_path, load_catalogue(DEFINITIONS))


def test_school_measures_read_fingertips_years_as_academic_years(tmp_path):
    write_england_benchmarks(tmp_path)
    from conftest import PROJECT_DEFINITIONS

    frame = read_fingertips(tmp_path / "benchmarks", load_catalogue(PROJECT_DEFINITIONS))
    gld = frame.filter(frame["metric_id"] == "school_readiness_gld").row(0, named=True)
    assert (gld["period_type"], gld["period_end"], gld["value"]) == ("academic_year", dt.date(2024, 8, 31), 67.7)
    assert set(frame["metric_id"]) >= {"breast_screening_coverage", "reception_obesity", "year6_obesity"}
