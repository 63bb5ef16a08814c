"""metrics.charts draws published frames: the layers, encodings and labels it promises, and it renders."""

from __future__ import annotations

import datetime as dt
import json

import altair as alt
import polars as pl
import pytest

from metrics import charts


def _values(places=("Dudley", "Walsall"), months=(4, 5, 6), breakdown="overall", groups=None) -> pl.DataFrame:
    rows = []
    for place in places:
        for month in months:
            for group in groups or [place]:
                start = dt.date(2024, month, 1)
                rows.append({
                    "metric_id": "discharged_on_ready_date", "metric_version": 1, "place": place,
                    "period_type": "month", "period_start": start, "period_end": start.replace(day=28),
                    "breakdown": breakdown, "group": group, "numerator": 40.0 + month, "denominator": 50.0,
                    "value": 80.0 + month, "lower_95": 70.0 + month, "upper_95": 88.0 + month,
                    "lower_99_8": 65.0, "upper_99_8": 95.0, "run_id": 1,
                })
    return pl.DataFrame(rows)


def _layers(chart: alt.LayerChart) -> list[dict]:
    return chart.to_dict()["layer"]


def _marks(chart: alt.LayerChart) -> list[str]:
    return [layer["mark"]["type"] if isinstance(layer["mark"], dict) else layer["mark"] for layer in _layers(chart)]


def test_trend_chart_has_ci_band_line_and_points_with_tooltips():
    chart = charts.trend_chart(_values(), title="On ready date", unit="%", polarity="higher_is_better")
    spec = chart.to_dict()
    assert _marks(chart) == ["area", "line", "point"]
    band, line, points = spec["layer"]
    assert band["encoding"]["y"]["field"] == "lower_95" and band["encoding"]["y2"]["field"] == "upper_95"
    assert band["encoding"]["x"]["field"] == "period_start" and band["encoding"]["x"]["type"] == "temporal"
    assert line["encoding"]["y"]["field"] == "value"
    tooltip_fields = {t["field"] for t in points["encoding"]["tooltip"]}
    assert {"period", "value", "ci_95", "numerator", "denominator"} <= tooltip_fields
    assert spec["title"]["text"] == "On ready date"
    assert "higher is better" in spec["title"]["subtitle"][0]


def test_trend_chart_colours_places_with_nhs_identity_colours():
    scale = charts.trend_chart(_values(), title="t", unit="%").to_dict()["layer"][1]["encoding"]["color"]["scale"]
    assert scale["domain"] == ["Dudley", "Walsall"]
    assert scale["range"] == [charts.NHS_BLUE, charts.NHS_WARM_YELLOW]
    # A place keeps its colour when drawn alone.
    alone = charts.trend_chart(_values(places=("Walsall",)), title="t", unit="%").to_dict()
    assert alone["layer"][1]["encoding"]["color"]["scale"]["range"] == [charts.NHS_WARM_YELLOW]


def test_trend_chart_target_line_only_when_given():
    assert "rule" not in _marks(charts.trend_chart(_values(), title="t", unit="%"))
    chart = charts.trend_chart(_values(), title="t", unit="%", target=90)
    rules = [layer for layer in _layers(chart) if layer["mark"]["type"] == "rule"]
    assert len(rules) == 1
    assert rules[0]["mark"]["strokeDash"] and rules[0]["encoding"]["y"]["field"] == "target"
    assert "Target 90%" in json.dumps(chart.to_dict()["datasets"])


def test_trend_chart_data_is_small_and_labelled():
    values = _values().with_columns(pl.duration(days=1).alias("lag"))  # Duration columns are dropped
    spec = charts.trend_chart(values, title="t", unit="%").to_dict()
    (rows,) = spec["datasets"].values()
    assert len(rows) == 6
    assert set(rows[0]) == {"place", "period_start", "period", "group", "value", "lower_95", "upper_95",
                            "numerator", "denominator", "ci_95"}
    assert {r["period"] for r in rows} == {"Apr 2024", "May 2024", "Jun 2024"}
    assert rows[0]["ci_95"] == "74.0 to 92.0"


def test_breakdown_chart_orders_and_labels_imd_quintiles_for_the_latest_period():
    values = _values(breakdown="imd_quintile", groups=["5", "3", "1", "2", "4"])
    chart = charts.breakdown_chart(values, title="By IMD", unit="%", target=90)
    spec = chart.to_dict()
    assert _marks(chart) == ["errorbar", "point", "rule"]
    bars, points, _ = spec["layer"]
    assert bars["encoding"]["x"]["field"] == "lower_95" and bars["encoding"]["x2"]["field"] == "upper_95"
    assert points["encoding"]["x"]["field"] == "value"
    assert points["encoding"]["y"]["sort"] == ["1 (most deprived)", "2", "3", "4", "5 (least deprived)"]
    assert points["encoding"]["yOffset"]["field"] == "place"  # one row per place within each quintile
    rows = next(r for r in spec["datasets"].values() if len(r) > 1)
    assert len(rows) == 10 and {r["period"] for r in rows} == {"Jun 2024"}
    assert "Jun 2024" in spec["title"]["subtitle"][0]


def test_breakdown_chart_orders_age_bands_numerically_with_unknown_last():
    values = _values(places=("Dudley",), breakdown="age_band", groups=["Unknown", "85+", "5-17", "18-44", "0-4"])
    y = charts.breakdown_chart(values, title="t", unit="%").to_dict()["layer"][1]["encoding"]["y"]
    assert y["sort"] == ["0-4", "5-17", "18-44", "85+", "Unknown"]
    assert "yOffset" not in charts.breakdown_chart(values, title="t", unit="%").to_dict()["layer"][1]["encoding"]


def test_format_number_and_period_label():
    frame = pl.DataFrame({"x": [1234567.25, -0.04, 66.666, None]})
    assert frame.select(charts.format_number("x", 1))["x"].to_list() == ["1,234,567.3", "0.0", "66.7", None]
    assert frame.select(charts.format_number("x", 0))["x"].to_list() == ["1,234,567", "0", "67", None]
    periods = pl.DataFrame({
        "period_type": ["month", "financial_quarter", "financial_quarter", "financial_year", "rolling_12_months", "snapshot"],
        "period_start": [dt.date(2024, 4, 1), dt.date(2024, 4, 1), dt.date(2025, 1, 1), dt.date(2024, 4, 1),
                         dt.date(2024, 4, 1), dt.date(2025, 3, 31)],
        "period_end": [dt.date(2024, 4, 30), dt.date(2024, 6, 30), dt.date(2025, 3, 31), dt.date(2025, 3, 31),
                       dt.date(2025, 3, 31), dt.date(2025, 3, 31)],
    })
    assert periods.select(charts.period_label())["period"].to_list() == [
        "Apr 2024", "2024/25 Q1", "2024/25 Q4", "2024/25", "12 months to Mar 2025", "31 Mar 2025"]


def test_charts_render_to_svg_including_missing_cis():
    vl_convert = pytest.importorskip("vl_convert")
    counts = _values().with_columns(pl.lit(None, dtype=pl.Float64).alias(c) for c in ("lower_95", "upper_95", "denominator"))
    for chart in (charts.trend_chart(_values(), title="t", unit="%", target=90, polarity="higher_is_better"),
                  charts.trend_chart(counts, title="count", unit="bed days"),
                  charts.breakdown_chart(_values(breakdown="imd_quintile", groups=["1", "5"]), title="b", unit="%")):
        svg = vl_convert.vegalite_to_svg(chart.to_json())
        assert svg.lstrip().startswith("<svg") and "</svg>" in svg
