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


# ------------------------------------------------------------------ Making Data Count and the pack


def _spc(points=15, place="Dudley", segments=(1,), target=90.0, trial=False, types=None) -> pl.DataFrame:
    rows = []
    for i in range(points):
        start = dt.date(2023 + (3 + i) // 12, (3 + i) % 12 + 1, 1)
        segment = segments[min(i * len(segments) // points, len(segments) - 1)]
        rows.append({
            "metric_id": "discharged_on_ready_date", "place": place, "period_type": "month", "breakdown": "overall",
            "group": place, "period_start": start, "period_end": start.replace(day=28), "value": 80.0 + i % 5,
            "segment": segment, "mean": 82.0 + segment, "lower_limit": 75.0, "upper_limit": 89.0 + segment,
            "near_lower": 77.0, "near_upper": 87.0,
            "special_cause_rule": "outside_limits" if (types or {}).get(i, "").endswith("improvement") else None,
            "point_type": (types or {}).get(i, "common_cause"), "variation_icon": "improvement_high",
            "assurance_icon": "inconsistent", "trial_limits": trial, "target": target,
        })
    return pl.DataFrame(rows)


def _rows(chart) -> list[dict]:
    return [row for rows in chart.to_dict()["datasets"].values() for row in rows]


def test_spc_chart_draws_mean_limits_target_and_point_types_by_colour_and_shape():
    chart = charts.spc_chart(_spc(types={3: "special_cause_improvement", 7: "special_cause_concern"}),
                             title="On ready date", unit="%", polarity="higher_is_better")
    spec = chart.to_dict()
    assert spec["title"]["text"] == "On ready date"
    lines, series, points = spec["layer"][:3]
    assert [layer["transform"][0]["filter"] for layer in (lines, series, points)] == [
        "datum.kind === 'line'", "datum.kind === 'point'", "datum.kind === 'point'"]
    assert lines["mark"]["type"] == "line" and lines["encoding"]["strokeDash"]["field"] == "line"
    assert {r["line"] for r in _rows(chart) if r.get("line")} == {"Mean", "Process limits", "Target"}
    colour, shape = points["encoding"]["color"]["scale"], points["encoding"]["shape"]["scale"]
    assert colour["domain"] == ["Special cause: improvement", "Special cause: concern", "Common cause"]
    assert colour["range"] == [charts.NHS_BLUE, charts.NHS_ORANGE, charts.NHS_GREY]
    assert len(set(shape["range"])) == 3  # each type its own shape: readable in greyscale
    assert spec["resolve"]["scale"]["color"] == "independent"
    assert not any("Trial limits" in s for s in spec["title"]["subtitle"])


def test_spc_chart_warns_of_trial_limits_marks_rebases_and_splits_places():
    trial = charts.spc_chart(_spc(points=8, trial=True), title="t", unit="%").to_dict()
    assert any("Trial limits" in s for s in trial["title"]["subtitle"])
    rebased = charts.spc_chart(_spc(points=20, segments=(1, 2)), title="t", unit="%")
    marks = [layer["mark"]["type"] for layer in rebased.to_dict()["layer"]]
    assert "rule" in marks and any(r.get("label") == "Rebased" for r in _rows(rebased))
    keys = {r["key"] for r in _rows(rebased) if r.get("key")}
    assert {"mean1", "mean2", "upper1", "upper2"} <= keys  # limits drawn per segment
    two = charts.spc_chart(pl.concat([_spc(), _spc(place="Walsall")]), title="t", unit="%").to_dict()
    assert two["facet"]["field"] == "place" and two["facet"]["sort"] == ["Dudley", "Walsall"]
    assert two["resolve"]["scale"]["y"] == "independent"  # each place's own limits
    neutral = charts.spc_chart(_spc(types={1: "special_cause_neutral_high"}), title="t", unit="", polarity="neutral")
    assert "Special cause: high" in neutral.to_dict()["layer"][2]["encoding"]["color"]["scale"]["domain"]


def test_spc_chart_skips_withheld_points_and_non_finite_numbers():
    frame = _spc().with_columns(pl.when(pl.col("value") > 83).then(None).otherwise(pl.col("value")).alias("value"),
                                pl.lit(float("nan")).alias("near_upper"))
    chart = charts.spc_chart(frame, title="t", unit="%")
    points = [r for r in _rows(chart) if r.get("kind") == "point"]
    assert points and all(r["value"] is not None for r in points)
    assert "NaN" not in chart.to_json()


def test_icon_badges_say_what_they_mean_in_words():
    badge = charts.icon_badge("variation", "concern_low")
    assert "Concern (low)" in badge and 'aria-hidden="true"' in badge and charts.NHS_ORANGE in badge
    assert "Hit and miss" in charts.icon_badge("assurance", "inconsistent")
    assert "No assurance" in charts.icon_badge("assurance", None)
    assert "<script" not in charts.icon_badge("variation", "<script>")
    assert charts.icon_meaning("common_cause", "consistent_fail").startswith("Variation: common cause")


def _card() -> pl.DataFrame:
    base = {"metric_id": "m", "title": "Screening <coverage>", "outcome": "Screening", "group": "Cancer",
            "unit": "%", "value_type": "proportion", "priority": True, "period_type": "snapshot",
            "period_start": dt.date(2025, 3, 31), "period_end": dt.date(2025, 3, 31), "numerator": 10.0,
            "denominator": 20.0, "polarity": "higher_is_better", "target": 80.0, "target_met": False,
            "variation_icon": "improvement_high", "assurance_icon": "consistent_fail", "other_place": "Walsall",
            "other_place_value": 66.6, "vs_other_place": "better", "england_value": 71.8, "vs_england": "similar",
            "england_period_end": dt.date(2024, 3, 31), "inequality_gap": -8.92, "gap_direction": "closing",
            "suppressed": False, "suppression_note": None}
    return pl.DataFrame([{**base, "place": "Dudley", "value": 69.76, "lower_95": 67.7, "upper_95": 71.7},
                         {**base, "place": "Walsall", "value": None, "lower_95": None, "upper_95": None,
                          "suppressed": True, "suppression_note": "numerator: count below 8 suppressed",
                          "inequality_gap": None, "gap_direction": "withheld"}])


def test_scorecard_rows_html_and_chart():
    rows = charts.scorecard_rows(_card())
    dudley, walsall = rows.row(0, named=True), rows.row(1, named=True)
    assert dudley["value_text"] == "69.8% (95% CI 67.7 to 71.7)" and dudley["period"] == "31 Mar 2025"
    assert dudley["target_text"] == "80.0% (not met)" and dudley["other_text"] == "Better: Walsall 66.6%"
    assert dudley["england_text"] == "Similar: England 71.8% (31 Mar 2024)" and dudley["gap_text"] == "−8.9 pts, closing"
    assert walsall["value_text"] == "withheld (small numbers)" and walsall["gap_text"] == "withheld (small numbers)"
    html = charts.scorecard_html(rows, caption="Two places")
    assert html.count("<tr>") == 3 and 'rowspan="2"' in html and "Screening &lt;coverage&gt;" in html
    assert "<caption>Two places</caption>" in html and "disclosure control" in html
    chart = charts.scorecard_chart(rows, title="Board", subtitle=["x"])
    assert len(chart.to_dict()["hconcat"]) == 10
    assert "consistently passes" in charts.scorecard_alt_text(rows).lower() or "Consistently failing" in charts.scorecard_alt_text(rows)


def _quintiles() -> pl.DataFrame:
    return _values(breakdown="imd_quintile", groups=["1", "2", "3", "4", "5"])


def _gaps() -> pl.DataFrame:
    rows = []
    for place in ("Dudley", "Walsall"):
        for i in range(14):
            start = dt.date(2023 + (3 + i) // 12, (3 + i) % 12 + 1, 1)
            rows.append({"metric_id": "m", "place": place, "period_type": "month", "period_start": start,
                         "period_end": start, "most_deprived": 60.0, "least_deprived": 70.0 + i % 3,
                         "absolute_gap": -10.0 - i % 3, "absolute_gap_lower_95": -15.0, "absolute_gap_upper_95": -5.0,
                         "relative_gap": float("inf") if i == 0 else 0.85, "sii": 12.0, "sii_lower_95": 5.0,
                         "sii_upper_95": 19.0, "rii": 1.2, "gap_size": 10.0 + i % 3, "mean": 11.0,
                         "lower_limit": 8.0, "upper_limit": 14.0,
                         "point_type": "special_cause_improvement" if i == 13 else "common_cause",
                         "gap_direction": "closing" if i == 13 else "no significant change"})
    return pl.DataFrame(rows)


def test_gradient_gap_and_need_charts():
    gradient = charts.gradient_chart(_quintiles(), title="By IMD", unit="%")
    rows = _rows(gradient)
    assert {r["quintile"] for r in rows} == {"1 (most deprived)", "2", "3", "4", "5 (least deprived)"}
    assert len({r["x"] for r in rows}) == 10  # the two places side by side in each quintile
    layers = gradient.to_dict()["layer"]
    assert [layer["mark"]["type"] for layer in layers] == ["line", "errorbar", "point"]
    assert layers[0]["encoding"]["strokeDash"]["field"] == "place" and layers[2]["encoding"]["shape"]["field"] == "place"
    gap = charts.gap_chart(_gaps(), title="Gap", unit="%")
    spec = gap.to_dict()
    assert len(spec["vconcat"]) == 4 and "Dudley: slope index of inequality" in spec["vconcat"][1]["title"]["text"]
    assert "Gap closing (special cause)" in gap.to_json() and "Infinity" not in gap.to_json()
    hoods = _values(places=("Dudley",), breakdown="neighbourhood", groups=["A", "B", "C"]).filter(
        pl.col("period_start") == dt.date(2024, 6, 1)).with_columns(
        pl.Series("need", ["Worse than the place", "Similar to the place", "Better than the place"]),
        pl.lit(85.0).alias("place_value"), pl.Series("rank", [1, 2, 3]))
    need = charts.need_chart(hoods, title="Need", unit="%")
    assert need.to_dict()["layer"][1]["encoding"]["y"]["sort"] == ["A", "B", "C"]


def test_footer_alt_text_and_rendering():
    chart = charts.with_footer(charts.spc_chart(_spc(), title="t", unit="%"), ["Source: x", "Run 1 " * 40], width=400)
    spec = chart.to_dict()
    assert len(spec["vconcat"]) == 2 and len(_rows(chart)) > 0
    flat = charts.with_footer(charts.gap_chart(_gaps(), title="Gap", unit="%"), ["Source: x"])
    assert len(flat.to_dict()["vconcat"]) == 5  # the footer joins the panels in one flat column
    text = charts.spc_alt_text(_spc(types={3: "special_cause_improvement"}), title="On ready date", unit="%",
                               place="Dudley")
    assert text.startswith("SPC chart of On ready date in Dudley, 15 points from Apr 2023 to Jun 2024")
    assert "Special cause points: 1 improvement" in text and "Target 90.0%" in text
    vl_convert = pytest.importorskip("vl_convert")
    for drawn in (chart, flat, charts.gradient_chart(_quintiles(), title="g", unit="%"),
                  charts.scorecard_chart(charts.scorecard_rows(_card()), title="s")):
        svg = vl_convert.vegalite_to_svg(drawn.to_json())
        assert svg.lstrip().startswith("<svg") and "</svg>" in svg


def test_charts_without_altairs_layer_copies_give_the_same_spec(monkeypatch):
    # charts._LayerChart and _FacetChart skip Altair's deep copies when the layers carry no
    # parameters, data of the chart's own or sizes to lift: the spec must be exactly Altair's.
    def every_chart() -> list[alt.TopLevelMixin]:
        hoods = _values(places=("Dudley",), breakdown="neighbourhood", groups=["A", "B"]).filter(
            pl.col("period_start") == dt.date(2024, 6, 1)).with_columns(
            pl.Series("need", ["Worse than the place", "Better than the place"]), pl.lit(85.0).alias("place_value"),
            pl.Series("rank", [1, 2]))
        return [
            charts.trend_chart(_values(), title="t", unit="%", target=90, polarity="higher_is_better"),
            charts.breakdown_chart(_values(breakdown="imd_quintile", groups=["1", "5"]), title="b", unit="%", target=90),
            charts.spc_chart(_spc(points=20, segments=(1, 2), types={3: "special_cause_improvement"}), title="s", unit="%"),
            charts.spc_chart(pl.concat([_spc(), _spc(place="Walsall")]), title="two places", unit="%"),
            charts.gradient_chart(_quintiles(), title="g", unit="%"),
            charts.with_footer(charts.gap_chart(_gaps(), title="Gap", unit="%"), ["Source: x"]),
            charts.need_chart(hoods, title="Need", unit="%"),
            charts.scorecard_chart(charts.scorecard_rows(_card()), title="s"),
        ]

    ours = [chart.to_dict() for chart in every_chart()]
    assert isinstance(every_chart()[0], charts._LayerChart) and isinstance(every_chart()[3], charts._FacetChart)
    monkeypatch.setattr(charts, "_LayerChart", alt.LayerChart)
    monkeypatch.setattr(charts, "_FacetChart", alt.FacetChart)
    assert [chart.to_dict() for chart in every_chart()] == ours
