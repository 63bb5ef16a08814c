"""Altair charts (and their labels) drawn from published result frames; nothing here computes a statistic.

Every function takes frames as ``store.read_values`` returns them (``metric_id, place, period_type,
period_start, period_end, breakdown, group, numerator, denominator, value, lower_95, upper_95, ...``)
and only selects, labels and draws what is already there. Colours follow the NHS identity guidelines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import polars as pl

__all__ = [
    "NHS_BLUE",
    "NHS_DARK_BLUE",
    "NHS_WARM_YELLOW",
    "NHS_GREY",
    "NHS_DARK_GREY",
    "PERIOD_TYPES",
    "BREAKDOWNS",
    "POLARITY_LABELS",
    "place_colours",
    "Display",
    "for_display",
    "period_label",
    "format_number",
    "group_label",
    "group_order",
    "trend_chart",
    "breakdown_chart",
    "NHS_ORANGE",
    "NHS_PURPLE",
    "POINT_TYPE_LABELS",
    "RULE_LABELS",
    "VARIATION_ICONS",
    "ASSURANCE_ICONS",
    "COMPARISON_LABELS",
    "icon_badge",
    "scorecard_rows",
    "scorecard_html",
    "scorecard_chart",
    "spc_chart",
    "gradient_chart",
    "gap_chart",
    "need_chart",
    "with_footer",
    "spc_alt_text",
    "inequality_alt_text",
    "scorecard_alt_text",
    "latest_text",
    "icon_meaning",
]

NHS_BLUE = "#005EB8"
NHS_DARK_BLUE = "#003087"
NHS_WARM_YELLOW = "#FFB81C"
NHS_GREY = "#768692"
NHS_DARK_GREY = "#425563"
NHS_AQUA_GREEN = "#00A499"
NHS_DARK_PINK = "#AE2573"
NHS_PURPLE = "#330072"
NHS_ORANGE = "#ED8B00"
NHS_BLACK = "#231F20"
NHS_PALE_GREY = "#E8EDEE"

# Fixed colours for the partnership's places (and England as a benchmark) so a place keeps its
# colour whichever places are selected; any other place takes the next free colour in order.
_KNOWN_PLACES = {"Dudley": NHS_BLUE, "Walsall": NHS_WARM_YELLOW, "England": NHS_GREY}
_PALETTE = [NHS_DARK_BLUE, NHS_AQUA_GREEN, NHS_DARK_PINK, NHS_PURPLE, NHS_DARK_GREY]

PERIOD_TYPES = {
    "month": "Month",
    "financial_quarter": "Financial quarter",
    "financial_year": "Financial year",
    "rolling_12_months": "Rolling 12 months",
    "snapshot": "Snapshot",
}
BREAKDOWNS = {
    "overall": "Overall (place)",
    "neighbourhood": "Neighbourhood",
    "imd_quintile": "IMD quintile",
    "age_band": "Age band",
    "sex": "Sex",
    "ethnicity": "Ethnicity",
}
POLARITY_LABELS = {
    "higher_is_better": "↑ higher is better",
    "lower_is_better": "↓ lower is better",
}


class Display:
    """A chart as an app shows it: its Vega-Lite spec, serialised once and without re-validating it
    (the notebooks' display protocol, ``_mime_``). Drawing a chart directly makes marimo serialise
    it twice, once with a full schema validation; this keeps a filter change quick."""

    MIMETYPE = f"application/vnd.vegalite.v{alt.VEGALITE_VERSION.split('.')[0]}+json"

    def __init__(self, chart: alt.TopLevelMixin, embed_options: dict | None = None) -> None:
        self.chart = chart
        self.embed_options = embed_options or {"renderer": "svg", "actions": {"export": True, "source": False,
                                                                             "compiled": False, "editor": False}}

    def _mime_(self) -> tuple[str, str]:
        import json

        spec = self.chart.to_dict(validate=False)
        spec["usermeta"] = {**spec.get("usermeta", {}), "embedOptions": self.embed_options}
        return self.MIMETYPE, json.dumps(spec)


def for_display(chart: alt.TopLevelMixin) -> Display:
    """``chart`` ready for an app to show (SVG, so sharp at any zoom and every mark labelled)."""
    return Display(chart)


def place_colours(places: list[str]) -> alt.Scale:
    """A colour scale giving each place its NHS identity colour (Dudley blue, Walsall warm yellow)."""
    domain = sorted(set(places))
    spare = iter(_PALETTE * (len(domain) // len(_PALETTE) + 1))
    return alt.Scale(domain=domain, range=[_KNOWN_PLACES.get(p) or next(spare) for p in domain])


def format_number(expr: pl.Expr | str, decimals: int = 1) -> pl.Expr:
    """A number as text with thousands separators and fixed decimals, halves rounded away from zero
    (``1234.25`` → ``"1,234.3"``); null stays null."""
    expr = pl.col(expr) if isinstance(expr, str) else expr
    name = expr.meta.output_name(raise_if_undetermined=False)
    rounded = expr.round(decimals, mode="half_away_from_zero").abs()
    whole = rounded.floor()
    digits = whole.cast(pl.Int64).cast(pl.String)
    grouped = digits.str.reverse().str.replace_all(r"(\d{3})", "${1},").str.reverse().str.strip_chars_start(",")
    sign = pl.when(expr.round(decimals, mode="half_away_from_zero") < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    if decimals <= 0:
        text = pl.concat_str(sign, grouped)
    else:
        fraction = ((rounded - whole) * 10**decimals).round(0).cast(pl.Int64).cast(pl.String).str.zfill(decimals)
        text = pl.concat_str(sign, grouped, pl.lit("."), fraction)
    return text.alias(name) if name else text


def period_label() -> pl.Expr:
    """Readable period from ``period_type``/``period_start``/``period_end``: "Apr 2024", "2024/25 Q1",
    "2024/25", "12 months to Mar 2025", "31 Mar 2024" (named ``period``)."""
    start, end = pl.col("period_start"), pl.col("period_end")
    fy = pl.when(start.dt.month() >= 4).then(start.dt.year()).otherwise(start.dt.year() - 1)
    fy_label = pl.concat_str(fy.cast(pl.String), pl.lit("/"), ((fy + 1) % 100).cast(pl.String).str.zfill(2))
    quarter = ((start.dt.month() + 8) % 12) // 3 + 1
    return (
        pl.when(pl.col("period_type") == "month").then(start.dt.strftime("%b %Y"))
        .when(pl.col("period_type") == "financial_quarter").then(pl.concat_str(fy_label, pl.lit(" Q"), quarter.cast(pl.String)))
        .when(pl.col("period_type") == "financial_year").then(fy_label)
        .when(pl.col("period_type") == "rolling_12_months").then(pl.concat_str(pl.lit("12 months to "), end.dt.strftime("%b %Y")))
        .when(pl.col("period_type") == "snapshot").then(end.dt.strftime("%-d %b %Y"))
        .otherwise(pl.concat_str(start.dt.strftime("%Y-%m-%d"), pl.lit(" to "), end.dt.strftime("%Y-%m-%d")))
        .alias("period")
    )


def group_label(breakdown: str | None = None) -> pl.Expr:
    """The ``group`` as shown: IMD quintiles as "1 (most deprived)" … "5 (least deprived)"."""
    group = pl.col("group")
    if breakdown != "imd_quintile":
        return group
    return (pl.when(group == "1").then(pl.lit("1 (most deprived)"))
            .when(group == "5").then(pl.lit("5 (least deprived)"))
            .otherwise(group).alias("group"))


def group_order(values: pl.DataFrame, breakdown: str | None = None) -> list[str]:
    """Groups in reading order: numerically by leading number (IMD quintiles 1..5, age bands), then by
    name, with unknowns last."""
    groups = (values.select("group", group_label(breakdown).alias("label")).unique()
              .with_columns(pl.col("group").str.extract(r"^(\d+)").cast(pl.Int64).alias("_number"),
                            pl.col("group").str.to_lowercase().str.contains("unknown|not stated").alias("_unknown"))
              .sort("_unknown", "_number", "group", nulls_last=True))
    return groups["label"].to_list()


def _finite(frame: pl.DataFrame) -> pl.DataFrame:
    """NaN and infinities as nulls: JSON has no such numbers (a ratio to a zero gives one)."""
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    return frame.with_columns(pl.when(pl.col(c).is_finite()).then(pl.col(c)).otherwise(None).alias(c) for c in floats)


def _tidy(values: pl.DataFrame, breakdown: str | None = None) -> pl.DataFrame:
    """Just the columns a chart needs, labelled, with any Duration columns dropped (Vega can't take them)."""
    frame = _finite(values.select(pl.exclude(pl.Duration)))
    optional = {"numerator": pl.Float64, "denominator": pl.Float64, "lower_95": pl.Float64,
                "upper_95": pl.Float64, "period_type": pl.String, "period_end": pl.Date}
    frame = frame.with_columns(pl.lit(None, dtype=t).alias(c) for c, t in optional.items() if c not in frame.columns)
    if "place" not in frame.columns:
        frame = frame.with_columns(pl.lit("").alias("place"))
    if "group" not in frame.columns:
        frame = frame.with_columns(pl.col("place").alias("group"))
    ci = pl.concat_str(format_number("lower_95"), pl.lit(" to "), format_number("upper_95"))
    return frame.select(
        "place", "period_start", period_label().alias("period"), group_label(breakdown).alias("group"),
        pl.col("value", "lower_95", "upper_95", "numerator", "denominator").cast(pl.Float64),
        ci.alias("ci_95"),
    )


def _tooltip(unit: str, extra: list[alt.Tooltip] | None = None) -> list[alt.Tooltip]:
    return [
        *(extra or []),
        alt.Tooltip("place:N", title="Place"),
        alt.Tooltip("period:N", title="Period"),
        alt.Tooltip("value:Q", title=f"Value ({unit})" if unit else "Value", format=",.1f"),
        alt.Tooltip("ci_95:N", title="95% CI"),
        alt.Tooltip("numerator:Q", title="Numerator", format=",.4~f"),
        alt.Tooltip("denominator:Q", title="Denominator", format=",.4~f"),
    ]


# Encodings are given as channel objects (``alt.Y2("upper_95:Q")``, ``alt.XValue(0)``), never as
# shorthand strings, ``alt.value`` or ``alt.condition``: Altair turns those into channels through a
# ``from_dict`` that hashes its whole schema again, about 5 ms each, for the same object.


class _LayerChart(alt.LayerChart):
    """``alt.LayerChart`` without its bookkeeping when there is nothing to do: to lift selection
    parameters, shared data and sizes out of the layers, Altair deep-copies every layer (each
    encoding, scale and axis) twice when a layered chart is built and again each time it is drawn,
    which was most of the time an app took to redraw a chart. Layers that carry any of those still
    go through Altair's own ``__init__``; the spec is the same either way (``tests/test_charts.py``)."""

    def __init__(self, data: Any = alt.Undefined, layer: Sequence = (), **kwargs: Any) -> None:
        layer = list(layer)
        plain = kwargs.get("params", alt.Undefined) is alt.Undefined and all(
            isinstance(c, alt.Chart)
            and all(c[p] is alt.Undefined for p in ("params", "width", "height", "view"))
            and (c.data is alt.Undefined or (data is not alt.Undefined and c.data is not data))
            for c in layer)
        if plain:
            super(alt.LayerChart, self).__init__(data=data, layer=layer, **kwargs)
        else:
            super().__init__(data=data, layer=layer, **kwargs)


class _FacetChart(alt.FacetChart):
    """``alt.FacetChart`` without copying its spec when neither has selection parameters to lift
    (see ``_LayerChart``)."""

    def __init__(self, data: Any = alt.Undefined, spec: Any = alt.Undefined, facet: Any = alt.Undefined,
                 params: Any = alt.Undefined, **kwargs: Any) -> None:
        if params is alt.Undefined and isinstance(spec, (alt.Chart, alt.LayerChart)) and spec.params is alt.Undefined:
            super(alt.FacetChart, self).__init__(data=data, spec=spec, facet=facet, params=params, **kwargs)
        else:
            super().__init__(data=data, spec=spec, facet=facet, params=params, **kwargs)


def _layer(layers: list, **properties) -> alt.LayerChart:
    """``alt.layer(...).properties(...)`` in one step: Altair deep-copies a chart on every call, and a
    chain of them costs more than drawing does."""
    return _LayerChart(layer=list(layers), **{k: v for k, v in properties.items() if v is not None})


def _vconcat(charts: list, **properties) -> alt.VConcatChart:
    return alt.VConcatChart(vconcat=list(charts), **{k: v for k, v in properties.items() if v is not None})


def _subtitle(polarity: str | None, extra: str) -> list[str]:
    parts = [POLARITY_LABELS.get(polarity or "", ""), extra]
    return [" · ".join(p for p in parts if p)]


def trend_chart(values: pl.DataFrame, *, title: str, unit: str, target: float | None = None,
                polarity: str | None = None, width: int = 640, height: int = 280) -> alt.LayerChart:
    """Value over ``period_start``, one line per place, with the 95% CI as a band.

    Points carry tooltips (period, value, CI, numerator, denominator); ``target`` adds a dashed rule;
    ``polarity`` is written under the title. ``values`` should hold one metric, period type and group
    per place (e.g. the ``overall`` breakdown): the chart draws what it is given.
    """
    data = _tidy(values).sort("place", "period_start")
    colour = alt.Color("place:N", title="Place", scale=place_colours(data["place"].to_list()),
                       legend=alt.Legend(symbolType="circle", symbolOpacity=1))
    period_type = values["period_type"].drop_nulls().first() if "period_type" in values.columns and values.height else None
    base = alt.Chart().encode(x=alt.X("period_start:T", title=None, axis=_date_axis(period_type, grid=True)))
    y = alt.Y("value:Q", title=unit or "Value", scale=alt.Scale(zero=False))
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("lower_95:Q", title=unit or "Value", scale=alt.Scale(zero=False)), y2=alt.Y2("upper_95:Q"),
        color=colour,
    )
    line = base.mark_line(strokeWidth=2.5).encode(y=y, color=colour)
    points = base.mark_point(filled=True, size=55, opacity=1).encode(
        y=y, color=colour, tooltip=_tooltip(unit),
    )
    layers: list[alt.Chart] = [band, line, points]
    if target is not None:
        target_data = pl.DataFrame({"target": [float(target)], "label": [f"Target {target:g}{unit if unit == '%' else ''}"]})
        rule = alt.Chart(target_data).mark_rule(color=NHS_DARK_GREY, strokeDash=[6, 4], strokeWidth=1.5).encode(
            y=alt.Y("target:Q"), tooltip=[alt.Tooltip("label:N", title="Target")])
        text = alt.Chart(target_data).mark_text(align="left", dx=4, dy=-7, color=NHS_DARK_GREY).encode(
            y=alt.Y("target:Q"), x=alt.XValue(0), text=alt.Text("label:N"))
        layers += [rule, text]
    return _layer(
        layers, data=data,
        title=alt.TitleParams(title, subtitle=_subtitle(polarity, "shaded: 95% confidence interval"), anchor="start"),
        width=width, height=height,
    )


def breakdown_chart(values: pl.DataFrame, *, title: str, unit: str, target: float | None = None,
                    polarity: str | None = None, width: int = 560) -> alt.LayerChart:
    """Each group's value as a point with its 95% CI as an error bar, for one period.

    If ``values`` spans several periods only the latest ``period_start`` is drawn. IMD quintiles are
    ordered 1..5 and labelled "1 (most deprived)" … "5 (least deprived)"; with several places each
    group has one row per place, in the place's colour. ``target`` adds a dashed rule.
    """
    breakdowns = values["breakdown"].unique().to_list() if "breakdown" in values.columns else []
    breakdown = breakdowns[0] if len(breakdowns) == 1 else None
    if values.height and "period_start" in values.columns:
        values = values.filter(pl.col("period_start") == pl.col("period_start").max())
    data = _tidy(values, breakdown).sort("place", "group")
    order = group_order(values, breakdown)
    places = sorted(set(data["place"].to_list()))
    y = alt.Y("group:N", title=BREAKDOWNS.get(breakdown or "", "Group"), sort=order,
              axis=alt.Axis(labelLimit=260))
    encoding = {"y": y, "color": alt.Color("place:N", title="Place", scale=place_colours(places))}
    if len(places) > 1:
        encoding["yOffset"] = alt.YOffset("place:N", sort=places)
    base = alt.Chart().encode(**encoding)
    x_title = unit or "Value"
    bars = base.mark_errorbar(ticks=True, thickness=1.5).encode(
        x=alt.X("lower_95:Q", title=x_title, scale=alt.Scale(zero=False)), x2=alt.X2("upper_95:Q"))
    points = base.mark_point(filled=True, size=70, opacity=1).encode(
        x=alt.X("value:Q", title=x_title, scale=alt.Scale(zero=False)),
        tooltip=_tooltip(unit, [alt.Tooltip("group:N", title=BREAKDOWNS.get(breakdown or "", "Group"))]),
    )
    layers: list[alt.Chart] = [bars, points]
    if target is not None:
        target_data = pl.DataFrame({"target": [float(target)]})
        layers.append(alt.Chart(target_data).mark_rule(color=NHS_DARK_GREY, strokeDash=[6, 4]).encode(
            x=alt.X("target:Q"), tooltip=[alt.Tooltip("target:Q", title="Target")]))
    period = data["period"].drop_nulls().first() if data.height else None
    row_height = 16 * max(len(places), 1) + 8
    return _layer(
        layers, data=data,
        title=alt.TitleParams(title, subtitle=_subtitle(polarity, f"{period or ''} · bars: 95% confidence interval"),
                                      anchor="start"),
        width=width, height=max(row_height * max(len(order), 1), 60),
    )


# ----------------------------------------------------------------------------- Making Data Count
#
# Colours follow Making Data Count's conventions in NHS identity colours: improvement blue, concern
# orange, neither purple, common cause grey. Every category also has its own point shape (and every
# line its own dash pattern) so the charts still read when printed in greyscale.

#: How each SPC point type is labelled in legends and tooltips.
POINT_TYPE_LABELS = {
    "special_cause_improvement": "Special cause: improvement",
    "special_cause_concern": "Special cause: concern",
    "special_cause_neutral_high": "Special cause: high",
    "special_cause_neutral_low": "Special cause: low",
    "common_cause": "Common cause",
}
_POINT_STYLE = {  # point type → (colour, shape)
    "special_cause_improvement": (NHS_BLUE, "square"),
    "special_cause_concern": (NHS_ORANGE, "diamond"),
    "special_cause_neutral_high": (NHS_PURPLE, "triangle-up"),
    "special_cause_neutral_low": (NHS_PURPLE, "triangle-down"),
    "common_cause": (NHS_GREY, "circle"),
}
#: The special-cause rule that flagged a point, for tooltips.
RULE_LABELS = {
    "outside_limits": "point outside the process limits",
    "trend": "run of 7 points rising or falling",
    "two_in_three": "2 of 3 points close to a limit",
    "shift": "run of 7 points on one side of the mean",
}
#: Variation icons: icon → (glyph, short label, meaning, colour).
VARIATION_ICONS = {
    "improvement_high": ("H", "Improvement (high)",
                         "special cause variation of an improving nature: unusually high values", NHS_BLUE),
    "improvement_low": ("L", "Improvement (low)",
                        "special cause variation of an improving nature: unusually low values", NHS_BLUE),
    "concern_high": ("H", "Concern (high)",
                     "special cause variation of a concerning nature: unusually high values", NHS_ORANGE),
    "concern_low": ("L", "Concern (low)",
                    "special cause variation of a concerning nature: unusually low values", NHS_ORANGE),
    "neutral_high": ("H", "Special cause (high)", "unusually high values, neither better nor worse", NHS_PURPLE),
    "neutral_low": ("L", "Special cause (low)", "unusually low values, neither better nor worse", NHS_PURPLE),
    "common_cause": ("~", "Common cause", "common cause variation only: no significant change", NHS_DARK_GREY),
}
#: Assurance icons: icon → (glyph, short label, meaning, colour).
ASSURANCE_ICONS = {
    "consistent_pass": ("P", "Consistently passes",
                        "the target lies outside the process limits on the passing side: it will be met "
                        "consistently", NHS_BLUE),
    "consistent_fail": ("F", "Consistently fails",
                        "the target lies outside the process limits on the failing side: it will not be met "
                        "unless the process changes", NHS_ORANGE),
    "inconsistent": ("?", "Hit and miss",
                     "the target lies within the process limits: it will be met in some periods and missed "
                     "in others", NHS_DARK_GREY),
}
_NO_VARIATION = ("–", "Not judged", "no SPC judgement for this series", NHS_GREY)
_NO_ASSURANCE = ("–", "No assurance", "no target, or no process limits, so no assurance icon", NHS_GREY)
#: Comparison outcomes (metrics.judge) as shown.
COMPARISON_LABELS = {
    "better": "Better", "similar": "Similar", "worse": "Worse", "higher": "Higher", "lower": "Lower",
    "not_compared": "Not compared",
}
_LINE_STYLE = {  # line → (colour, dash)
    "Mean": (NHS_DARK_GREY, [1, 0]),
    "Process limits": (NHS_GREY, [5, 3]),
    "Target": (NHS_DARK_PINK, [9, 3, 2, 3]),
}


def _icon(kind: str, icon: str | None) -> tuple[str, str, str, str]:
    table, missing = (VARIATION_ICONS, _NO_VARIATION) if kind == "variation" else (ASSURANCE_ICONS, _NO_ASSURANCE)
    return table.get(icon or "", missing)


def icon_meaning(variation: str | None, assurance: str | None = None) -> str:
    """One sentence saying what a series' icons mean, for subtitles and alt text."""
    _, v_label, v_meaning, _ = _icon("variation", variation)
    text = f"Variation: {v_label.lower()} ({v_meaning})."
    if assurance:
        _, a_label, a_meaning, _ = _icon("assurance", assurance)
        text += f" Assurance: {a_label.lower()} ({a_meaning})."
    return text


def icon_badge(kind: str, icon: str | None) -> str:
    """A small Making Data Count style badge (HTML): a coloured disc with the icon's letter and its
    name in words, so the meaning never rests on colour alone. ``kind`` is "variation" or "assurance"."""
    import html

    glyph, label, meaning, colour = _icon(kind, icon)
    ink = NHS_BLACK if colour in (NHS_ORANGE, NHS_WARM_YELLOW) else "#FFFFFF"
    title = html.escape(f"{kind.capitalize()}: {label} — {meaning}")
    return (
        f'<span class="oe-badge oe-{kind}" title="{title}" style="display:inline-flex;align-items:center;'
        f'gap:0.35em;white-space:nowrap;font-size:0.85em;line-height:1.4;padding:0.05em 0.55em 0.05em 0.1em;'
        f'border:1.5px solid {colour};border-radius:1em;color:{NHS_BLACK};background:#FFFFFF">'
        f'<span aria-hidden="true" style="display:inline-block;width:1.45em;height:1.45em;border-radius:50%;'
        f'background:{colour};color:{ink};font-weight:700;text-align:center;line-height:1.45em">{glyph}</span>'
        f'<span class="oe-visually-hidden" style="position:absolute;left:-9999px">{kind.capitalize()}: </span>'
        f"{html.escape(label)}</span>"
    )


def _number(value: float | None, decimals: int = 1, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{abs(value):,.{decimals}f}"
    if value < 0 and text.strip("0.,") != "":
        return "−" + text
    return ("+" if signed and text.strip("0.,") != "" else "") + text


def _decimals(value_type: str | None) -> int:
    return 0 if value_type == "count" else 1


def _with_unit(text: str, unit: str | None) -> str:
    return f"{text}%" if unit == "%" and text != "—" else text


def latest_text(row: dict, *, show_unit: bool = True) -> str:
    """"85.7% (95% CI 78.2 to 91.0), Mar 2026" from a scorecard-like row (value, lower_95, upper_95,
    unit, value_type, period or period_type/period_start/period_end, suppressed)."""
    decimals = _decimals(row.get("value_type"))
    unit = row.get("unit")
    period = row.get("period") or ""
    if row.get("value") is None:
        return ("withheld (small numbers)" if row.get("suppressed") else "no value") + (f", {period}" if period else "")
    text = _with_unit(_number(row["value"], decimals), unit)
    if row.get("lower_95") is not None and row.get("upper_95") is not None:
        text += f" (95% CI {_number(row['lower_95'], decimals)} to {_number(row['upper_95'], decimals)})"
    if show_unit and unit and unit != "%":
        text += f" {unit}"
    return text + (f", {period}" if period else "")


def scorecard_rows(scorecard: pl.DataFrame) -> pl.DataFrame:
    """The scorecard as display text, one row per metric and place, in reading order (outcome group,
    outcome, metric, place). Reads the published ``scorecard`` frame (optionally with ``group``,
    ``value_type``, ``suppressed`` and ``suppression_note`` joined on); computes nothing."""
    if scorecard.is_empty():
        return pl.DataFrame(schema={c: pl.String for c in (
            "metric_id", "group", "outcome", "title", "unit", "place", "period", "value_text", "target_text",
            "variation_icon", "assurance_icon", "england_text", "other_text", "gap_text", "note")})
    frame = scorecard.with_columns(period_label())
    for column, dtype in (("group", pl.String), ("value_type", pl.String), ("suppressed", pl.Boolean),
                          ("suppression_note", pl.String), ("priority", pl.Boolean)):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
    rows = []
    for r in frame.sort("group", "outcome", "title", "place", nulls_last=True).iter_rows(named=True):
        decimals, unit = _decimals(r["value_type"]), r["unit"]
        target = "—"
        if r.get("target") is not None:
            met = {True: " (met)", False: " (not met)"}.get(r.get("target_met"), "")
            target = _with_unit(_number(r["target"], decimals), unit) + met
        england = "—"
        if r.get("vs_england") and r.get("england_value") is not None:
            england = (f"{COMPARISON_LABELS.get(r['vs_england'], r['vs_england'])}: England "
                       f"{_with_unit(_number(r['england_value'], decimals), unit)}")
            if r.get("england_period_end") is not None and r["england_period_end"] != r["period_end"]:
                england += f" ({r['england_period_end']:%-d %b %Y})"
        other = "—"
        if r.get("other_place") and r.get("vs_other_place"):
            other = (f"{COMPARISON_LABELS.get(r['vs_other_place'], r['vs_other_place'])}: {r['other_place']} "
                     f"{_with_unit(_number(r.get('other_place_value'), decimals), unit)}")
        gap = "—"
        if r.get("inequality_gap") is not None:
            points = " pts" if unit == "%" else ""
            gap = f"{_number(r['inequality_gap'], decimals, signed=True)}{points}, {r.get('gap_direction') or 'not judged'}"
        elif r.get("gap_direction") == "withheld":
            gap = "withheld (small numbers)"
        rows.append({
            "metric_id": r["metric_id"], "group": r["group"], "outcome": r["outcome"], "title": r["title"],
            "unit": unit, "priority": bool(r["priority"]), "place": r["place"], "period": r["period"],
            "value_text": latest_text({**r, "period": None}, show_unit=False), "target_text": target,
            "variation_icon": r.get("variation_icon"), "assurance_icon": r.get("assurance_icon"),
            "england_text": england, "other_text": other, "gap_text": gap, "note": r["suppression_note"],
        })
    return pl.DataFrame(rows, schema_overrides={"note": pl.String, "variation_icon": pl.String,
                                                "assurance_icon": pl.String, "group": pl.String})


_SCORECARD_HEADINGS = [
    ("place", "Place"), ("period", "Latest period"), ("value_text", "Latest value"), ("target_text", "Target"),
    ("variation_icon", "Variation"), ("assurance_icon", "Assurance"), ("england_text", "vs England"),
    ("other_text", "vs other place"), ("gap_text", "Deprivation gap (Q1 − Q5)"),
]


def scorecard_html(rows: pl.DataFrame, *, caption: str = "") -> str:
    """An accessible HTML table of ``scorecard_rows`` with Making Data Count badges (for the apps)."""
    import html

    esc = html.escape
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in ["Metric", *[h for _, h in _SCORECARD_HEADINGS]])
    body, previous = [], None
    spans = rows.group_by("metric_id", maintain_order=True).len()
    span = dict(spans.iter_rows())
    for r in rows.iter_rows(named=True):
        cells = []
        if r["metric_id"] != previous:
            star = ' <span title="Priority outcome" class="oe-priority">★ priority</span>' if r["priority"] else ""
            unit = f'<br><span class="oe-muted">{esc(r["unit"] or "")}</span>' if r["unit"] and r["unit"] != "%" else ""
            cells.append(f'<th scope="rowgroup" rowspan="{span[r["metric_id"]]}" data-metric="{esc(r["metric_id"])}">'
                         f'<span class="oe-muted">{esc(r["group"] or r["outcome"] or "")}</span><br>'
                         f'{esc(r["title"] or r["metric_id"])}{star}{unit}</th>')
            previous = r["metric_id"]
        for key, _ in _SCORECARD_HEADINGS:
            if key == "variation_icon":
                cells.append(f"<td>{icon_badge('variation', r[key])}</td>")
            elif key == "assurance_icon":
                cells.append(f"<td>{icon_badge('assurance', r[key])}</td>")
            else:
                text = esc(str(r[key]))
                if key == "value_text" and r.get("note"):
                    text += f' <abbr title="{esc(r["note"])}" class="oe-muted">(disclosure control)</abbr>'
                cells.append(f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    style = (
        "<style>.oe-scorecard{border-collapse:collapse;font-size:0.9em;width:100%}"
        ".oe-scorecard th,.oe-scorecard td{border-bottom:1px solid #D8DDE0;padding:0.35em 0.5em;text-align:left;"
        "vertical-align:top}.oe-scorecard thead th{background:#F0F4F5;position:sticky;top:0}"
        ".oe-scorecard tbody th{font-weight:600;max-width:22em}.oe-muted{color:#425563;font-weight:400;"
        "font-size:0.85em}.oe-priority{color:#003087;font-size:0.8em;white-space:nowrap}"
        ".oe-scorecard caption{text-align:left;caption-side:top;padding:0.3em 0;color:#425563}</style>"
    )
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'{style}<table class="oe-scorecard" aria-label="Outcomes scorecard">{cap}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _wrap(text: str | None, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text or "", width)) or ""


def scorecard_chart(rows: pl.DataFrame, *, title: str, subtitle: list[str] | None = None) -> alt.HConcatChart:
    """The scorecard as one printable chart (for the governance pack's one-page summary): a column of
    text per field and Making Data Count discs with letters for the icons. Reads ``scorecard_rows``."""
    data = rows.with_row_index("row").with_columns(
        pl.col("row").cast(pl.Int64),
        pl.struct("title", "priority", "unit").map_elements(
            lambda r: _wrap((r["title"] or "") + (" (priority)" if r["priority"] else ""), 50)
            + (f"\n({r['unit']})" if r["unit"] and r["unit"] != "%" else ""), return_dtype=pl.String,
        ).alias("metric_text"),
        *[pl.col(c).map_elements(lambda v: _wrap(v, 24), return_dtype=pl.String).alias(c)
          for c in ("england_text", "other_text", "gap_text", "value_text")],
        (pl.col("row") % 2 == 1).alias("stripe"),
    )
    for kind in ("variation", "assurance"):
        icons = [_icon(kind, v) for v in data[f"{kind}_icon"].to_list()]
        data = data.with_columns(pl.Series(f"{kind}_glyph", [i[0] for i in icons], dtype=pl.String),
                                 pl.Series(f"{kind}_label", [_wrap(i[1], 14) for i in icons], dtype=pl.String),
                                 pl.Series(f"{kind}_colour", [i[3] for i in icons], dtype=pl.String),
                                 pl.Series(f"{kind}_ink", [NHS_BLACK if i[3] == NHS_ORANGE else "#FFFFFF" for i in icons],
                                           dtype=pl.String))
    data = data.select(pl.exclude(pl.Boolean), pl.col("stripe"))
    height = 44 * max(data.height, 1)
    y = alt.Y("row:O", axis=None, scale=alt.Scale(paddingInner=0, paddingOuter=0))

    def column(field: str, heading: str, width: int) -> alt.LayerChart:
        base = alt.Chart(data).encode(y=y)
        stripe = base.mark_rect(color=NHS_PALE_GREY, opacity=0.6).encode(
            x=alt.XValue(0), x2=alt.X2Value(width), opacity=alt.OpacityValue(0, condition={"test": "datum.stripe", "value": 0.6}))
        text = base.mark_text(align="left", baseline="middle", fontSize=10, lineBreak="\n", color=NHS_BLACK).encode(
            x=alt.XValue(4), text=alt.Text(f"{field}:N"))
        return _layer([stripe, text], width=width, height=height,
                      title=alt.TitleParams(heading, anchor="start", fontSize=11))

    def icon(kind: str, heading: str, width: int) -> alt.LayerChart:
        base = alt.Chart(data).encode(y=y)
        stripe = base.mark_rect(color=NHS_PALE_GREY).encode(
            x=alt.XValue(0), x2=alt.X2Value(width), opacity=alt.OpacityValue(0, condition={"test": "datum.stripe", "value": 0.6}))
        disc = base.mark_point(shape="circle", filled=True, size=260, opacity=1).encode(
            x=alt.XValue(14), color=alt.Color(f"{kind}_colour:N", scale=None))
        glyph = base.mark_text(align="center", baseline="middle", fontSize=11, fontWeight="bold").encode(
            x=alt.XValue(14), text=alt.Text(f"{kind}_glyph:N"), color=alt.Color(f"{kind}_ink:N", scale=None))
        label = base.mark_text(align="left", baseline="middle", fontSize=10, lineBreak="\n", color=NHS_BLACK).encode(
            x=alt.XValue(28), text=alt.Text(f"{kind}_label:N"))
        return _layer([stripe, disc, glyph, label], width=width, height=height,
                      title=alt.TitleParams(heading, anchor="start", fontSize=11))

    columns = [
        column("metric_text", "Metric", 280), column("place", "Place", 62), column("period", "Latest period", 92),
        column("value_text", "Latest value (95% CI)", 138), column("target_text", "Target", 78),
        icon("variation", "Variation", 112), icon("assurance", "Assurance", 112),
        column("england_text", "vs England", 132), column("other_text", "vs other place", 132),
        column("gap_text", "Deprivation gap", 128),
    ]
    return alt.HConcatChart(hconcat=columns, spacing=2,
                            title=alt.TitleParams(title, subtitle=subtitle or [], anchor="start", fontSize=16))


def with_footer(chart: alt.TopLevelMixin, lines: list[str], *, width: int = 640, wrap: int = 120) -> alt.VConcatChart:
    """``chart`` with a block of small grey text under it (source, period, run, version, disclosure)."""
    import textwrap

    wrapped = [piece for line in lines for piece in (textwrap.wrap(line, wrap) or [""])]
    data = pl.DataFrame({"i": list(range(len(wrapped))), "line": wrapped})
    footer = alt.Chart(data).mark_text(align="left", baseline="top", fontSize=10, color=NHS_DARK_GREY).encode(
        y=alt.Y("i:O", axis=None), x=alt.XValue(0), text=alt.Text("line:N"),
    ).properties(width=width, height=13 * max(len(wrapped), 1), view=alt.ViewConfig(stroke=None))
    if isinstance(chart, alt.VConcatChart):  # one flat column: deep nesting defeats SVG-to-PDF converters
        return _vconcat([*chart.vconcat, footer], spacing=12,
                        title=None if chart.title is alt.Undefined else chart.title)
    return _vconcat([chart, footer], spacing=12)


def _date_axis(period_type: str | None, *, grid: bool = False) -> alt.Axis:
    """Ticks on whole months (years for yearly series), so a short series never repeats a label."""
    yearly = period_type in ("financial_year", "calendar_year", "academic_year")
    return alt.Axis(format="%Y" if yearly else "%b %Y", labelAngle=0, labelOverlap="greedy", labelSeparation=8,
                    grid=grid, tickCount={"interval": "year" if yearly else "month", "step": 1})


def _spc_layers(data: pl.DataFrame, *, y_field: str, unit: str, labels: dict[str, str], target: bool = True,
                extra_tooltip: list[alt.Tooltip] | None = None) -> tuple[pl.DataFrame, list[alt.Chart]]:
    """One frame and the layers drawing it: mean, process limits, target, the series and its points
    by type, and rebase markers, for the series of one or more places (``place``, ``period_start``,
    ``segment``, ``mean``, ``lower_limit``, ``upper_limit``, ``point_type``, optional ``target`` and
    ``special_cause_rule``). Each layer picks its rows by ``kind``, so all share one dataset (and a
    facet by place can draw several places from one spec: Altair's cost grows with every chart)."""
    period_type = data["period_type"].drop_nulls().first() if "period_type" in data.columns else None
    x = alt.X("period_start:T", title=None, axis=_date_axis(period_type))
    keys = ["place", "period_start", "segment"]
    parts = [
        data.select(*keys, pl.lit("Mean").alias("line"), pl.lit("mean").alias("part"), pl.col("mean").alias("y")),
        data.select(*keys, pl.lit("Process limits").alias("line"), pl.lit("upper").alias("part"),
                    pl.col("upper_limit").alias("y")),
        data.select(*keys, pl.lit("Process limits").alias("line"), pl.lit("lower").alias("part"),
                    pl.col("lower_limit").alias("y")),
    ]
    if target and "target" in data.columns and data["target"].drop_nulls().len():
        parts.append(data.select(*keys, pl.lit("Target").alias("line"), pl.lit("target").alias("part"),
                                 pl.col("target").alias("y")).with_columns(pl.lit(0, dtype=data.schema["segment"]).alias("segment")))
    lines = (pl.concat(parts).drop_nulls("y")
             .select("place", "period_start", "line", "y",
                     pl.concat_str(pl.col("part"), pl.col("segment").cast(pl.String)).alias("key"),
                     pl.lit("line").alias("kind")))
    present = [name for name in _LINE_STYLE if name in set(lines["line"].to_list())]
    points = data.with_columns(
        pl.col("point_type").cast(pl.String).replace_strict(labels, default="Common cause", return_dtype=pl.String)
        .alias("type"),
        pl.col("special_cause_rule").cast(pl.String).replace_strict(RULE_LABELS, default="", return_dtype=pl.String)
        .alias("rule")
        if "special_cause_rule" in data.columns else pl.lit("").alias("rule"),
    ).drop_nulls(y_field)
    wanted = ["place", "period_start", "period", y_field, "type", "rule", "mean", "lower_limit", "upper_limit",
              *[t.field for t in extra_tooltip or [] if isinstance(t.field, str)]]
    points = points.select([c for c in dict.fromkeys(wanted) if c in points.columns]).with_columns(
        pl.lit("point").alias("kind"))
    first_segment = pl.col("segment").min().over("place")
    rebase = (data.filter(pl.col("segment") > first_segment).group_by("place", "segment")
              .agg(pl.col("period_start").min()).sort("place", "segment")
              .select("place", "period_start", pl.lit("Rebased").alias("label"), pl.lit("rebase").alias("kind")))
    frame = pl.concat([lines, points, rebase], how="diagonal_relaxed")

    def kind(name: str) -> alt.Chart:
        return alt.Chart().transform_filter(f"datum.kind === '{name}'")

    domain = [labels[k] for k in labels if labels[k] in set(points["type"].to_list()) or k == "common_cause"]
    types = {label: key for key, label in labels.items()}
    series_y = alt.Y(f"{y_field}:Q", title=unit or "Value", scale=alt.Scale(zero=False))
    layers: list[alt.Chart] = []
    if present:
        layers.append(kind("line").mark_line(strokeWidth=1.6).encode(
            x=x, y=alt.Y("y:Q", title=unit or "Value", scale=alt.Scale(zero=False)), detail=alt.Detail("key:N"),
            color=alt.Color("line:N", title=None, scale=alt.Scale(domain=present, range=[_LINE_STYLE[n][0] for n in present]),
                            legend=alt.Legend(orient="bottom", symbolType="stroke", symbolStrokeWidth=2)),
            strokeDash=alt.StrokeDash("line:N", title=None, scale=alt.Scale(domain=present,
                                      range=[_LINE_STYLE[n][1] for n in present])),
        ))
    layers.append(kind("point").mark_line(color=NHS_GREY, strokeWidth=1.2, opacity=0.8).encode(x=x, y=series_y))
    layers.append(kind("point").mark_point(filled=True, size=58, opacity=1, stroke="#FFFFFF", strokeWidth=0.6).encode(
        x=x, y=series_y,
        color=alt.Color("type:N", title="Variation", scale=alt.Scale(
            domain=domain, range=[_POINT_STYLE[types[d]][0] for d in domain]),
            legend=alt.Legend(orient="bottom", symbolStrokeWidth=0)),
        shape=alt.Shape("type:N", title="Variation", scale=alt.Scale(
            domain=domain, range=[_POINT_STYLE[types[d]][1] for d in domain])),
        tooltip=[alt.Tooltip("period:N", title="Period"),
                 alt.Tooltip(f"{y_field}:Q", title=f"Value ({unit})" if unit else "Value", format=",.2~f"),
                 alt.Tooltip("type:N", title="Variation"), alt.Tooltip("rule:N", title="Rule"),
                 alt.Tooltip("mean:Q", title="Mean", format=",.2~f"),
                 alt.Tooltip("lower_limit:Q", title="Lower limit", format=",.2~f"),
                 alt.Tooltip("upper_limit:Q", title="Upper limit", format=",.2~f"), *(extra_tooltip or [])],
    ))
    if rebase.height:
        layers.append(kind("rebase").mark_rule(color=NHS_BLACK, strokeDash=[2, 2]).encode(
            x=alt.X("period_start:T"), tooltip=[alt.Tooltip("period_start:T", title="Limits rebased from", format="%b %Y")]))
        layers.append(kind("rebase").mark_text(align="left", baseline="top", dx=3, y=2, fontSize=10,
                                               color=NHS_BLACK).encode(x=alt.X("period_start:T"), text=alt.Text("label:N")))
    return frame, layers


def _independent() -> alt.Resolve:
    return alt.Resolve(scale=alt.ScaleResolveMap(color="independent", shape="independent", strokeDash="independent"))


def _spc_frame(spc: pl.DataFrame) -> pl.DataFrame:
    frame = _finite(spc.select(pl.exclude(pl.Duration)))
    if "target" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias("target"))
    return frame.with_columns(period_label()).sort("place", "period_start")


def _point_labels(polarity: str | None) -> dict[str, str]:
    keys = (["special_cause_neutral_high", "special_cause_neutral_low", "common_cause"] if polarity == "neutral"
            else ["special_cause_improvement", "special_cause_concern", "common_cause"])
    return {k: POINT_TYPE_LABELS[k] for k in keys}


def spc_chart(spc: pl.DataFrame, *, title: str, unit: str, polarity: str | None = None,
              subtitle: list[str] | None = None, width: int = 640, height: int = 240) -> alt.TopLevelMixin:
    """A Making Data Count XmR chart from the published ``spc`` frame (one metric's ``overall`` rows):
    the mean, the process limits (per rebased segment, with the rebase marked), the target, and each
    point coloured and shaped by its type (improvement blue square, concern orange diamond, common
    cause grey circle). With several places, one panel per place. Fewer than 13 points: the subtitle
    warns that the limits are trial limits. Points whose value is withheld are not drawn."""
    data = _spc_frame(spc)
    labels = _point_labels(polarity)
    places = sorted(set(data["place"].to_list())) if data.height else []
    trial = bool(data["trial_limits"].fill_null(False).any()) if "trial_limits" in data.columns and data.height else False
    notes = [POLARITY_LABELS.get(polarity or "", ""), "dashed: process limits", "dash-dot: target"]
    sub = list(subtitle or [" · ".join(n for n in notes if n)])
    if trial:
        sub.append("Trial limits: fewer than 13 points, so the limits may move as data arrive; read signals with care.")
    if data.is_empty():
        return alt.Chart(pl.DataFrame({"text": ["No SPC series published for this metric"]})).mark_text().encode(
            text=alt.Text("text:N")).properties(title=alt.TitleParams(title, subtitle=sub, anchor="start"), width=width, height=60)
    top = alt.TitleParams(title, subtitle=sub, anchor="start", fontSize=15)
    frame, layers = _spc_layers(data, y_field="value", unit=unit, labels=labels)
    if len(places) == 1:
        return _layer(layers, data=frame, resolve=_independent(), width=width, height=height, title=top)
    # Several places: one panel each, as a facet of one layered spec (limits scaled per place).
    return _FacetChart(
        data=frame, spec=_layer(layers, resolve=_independent(), width=width, height=height),
        facet=alt.Facet("place:N", title=None, sort=places, header=alt.Header(
            labelAngle=0, labelAlign="left", labelAnchor="start", labelOrient="top", labelFontSize=13,
            labelFontWeight="bold", labelPadding=4)),
        columns=1, spacing=18, resolve=alt.Resolve(scale=alt.ScaleResolveMap(y="independent")), title=top)


def gradient_chart(values: pl.DataFrame, *, title: str, unit: str, polarity: str | None = None,
                   subtitle: list[str] | None = None, width: int = 420, height: int = 240) -> alt.LayerChart:
    """Value by IMD quintile (1 most deprived … 5 least) with 95% CIs, for each place's latest period
    in ``values`` (``imd_quintile`` rows); places differ by colour, point shape and line dash."""
    frame = values.filter(pl.col("breakdown") == "imd_quintile") if "breakdown" in values.columns else values
    if frame.height:
        frame = frame.filter(pl.col("period_start") == pl.col("period_start").max().over("place"))
    data = _tidy(frame).sort("place", "group")
    places = sorted(set(data["place"].to_list()))
    # Places side by side within each quintile: a small offset on a numeric axis labelled 1..5, so
    # the line, the interval and the point of a place share one x.
    step = 0.14
    offsets = {p: (i - (len(places) - 1) / 2) * step for i, p in enumerate(places)}
    data = data.with_columns(
        (pl.col("group").cast(pl.Float64, strict=False) + pl.col("place").replace_strict(offsets, return_dtype=pl.Float64))
        .alias("x"), group_label("imd_quintile").alias("quintile")).drop_nulls("x")
    shapes = ["circle", "square", "triangle-up", "diamond", "cross"]
    dashes = [[1, 0], [6, 3], [2, 2], [8, 3, 2, 3], [4, 4]]
    colour = alt.Color("place:N", title="Place", scale=place_colours(places))
    shape = alt.Shape("place:N", title="Place", scale=alt.Scale(domain=places, range=shapes[:len(places)]))
    dash = alt.StrokeDash("place:N", title="Place", scale=alt.Scale(domain=places, range=dashes[:len(places)]))
    x = alt.X("x:Q", title="IMD 2019 quintile", scale=alt.Scale(domain=[0.6, 5.4], nice=False),
              axis=alt.Axis(values=[1, 2, 3, 4, 5], grid=False, labelLimit=140,
                            labelExpr="datum.value == 1 ? '1 (most deprived)' : datum.value == 5 ? "
                                      "'5 (least deprived)' : datum.label"))
    y_title = unit or "Value"
    base = alt.Chart(data)
    layers = [
        base.mark_line(strokeWidth=1.5, opacity=0.8).encode(x=x, y=alt.Y("value:Q", title=y_title), color=colour,
                                                             strokeDash=dash),
        base.mark_errorbar(ticks=True, thickness=1.5).encode(
            x=x, y=alt.Y("lower_95:Q", title=y_title, scale=alt.Scale(zero=False)), y2=alt.Y2("upper_95:Q"), color=colour),
        base.mark_point(filled=True, size=70, opacity=1).encode(
            x=x, y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)), color=colour,
            shape=shape, tooltip=_tooltip(unit, [alt.Tooltip("quintile:N", title="IMD quintile")])),
    ]
    period = ", ".join(sorted(set(data["period"].drop_nulls().to_list())))
    sub = subtitle or [" · ".join(p for p in [POLARITY_LABELS.get(polarity or "", ""), period,
                                               "bars: 95% confidence interval"] if p)]
    return _layer(layers, title=alt.TitleParams(title, subtitle=sub, anchor="start", fontSize=15),
                  width=width, height=height)


_GAP_LABELS = {"special_cause_improvement": "Gap closing (special cause)",
               "special_cause_concern": "Gap widening (special cause)",
               "common_cause": "Common cause"}


def gap_chart(inequalities: pl.DataFrame, *, title: str, unit: str, subtitle: list[str] | None = None,
              width: int = 640, height: int = 200) -> alt.VConcatChart:
    """From the published ``inequalities`` frame: the size of the gap between the most and least
    deprived quintiles over time as an SPC chart (closing blue, widening orange), and the slope index
    of inequality with its 95% CI; one pair of panels per place."""
    frame = _finite(inequalities.select(pl.exclude(pl.Duration)))
    for column in ("sii", "sii_lower_95", "sii_upper_95", "absolute_gap_lower_95", "absolute_gap_upper_95"):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    frame = frame.with_columns(period_label(), pl.lit(1).alias("segment"), pl.lit(None, dtype=pl.String).alias("special_cause_rule"),
                               pl.concat_str(format_number("absolute_gap_lower_95", 1), pl.lit(" to "),
                                             format_number("absolute_gap_upper_95", 1)).alias("gap_ci"),
                               pl.concat_str(format_number("sii_lower_95", 1), pl.lit(" to "),
                                             format_number("sii_upper_95", 1)).alias("sii_ci")).sort("place", "period_start")
    places = sorted(set(frame["place"].to_list()))
    points = " (percentage points)" if unit == "%" else (f" ({unit})" if unit else "")
    panels = []
    for place in places:
        one = frame.filter(pl.col("place") == place)
        gap_frame, gap_layers = _spc_layers(
            one, y_field="gap_size", unit=f"Gap{points}", labels=_GAP_LABELS, target=False,
            extra_tooltip=[alt.Tooltip("absolute_gap:Q", title="Gap Q1 − Q5", format=",.2~f"),
                           alt.Tooltip("gap_ci:N", title="Gap 95% CI")])
        gap = _layer(
            gap_layers, data=gap_frame, resolve=_independent(), width=width, height=height,
            title=alt.TitleParams(f"{place}: size of the gap, most vs least deprived quintile", anchor="start",
                                  fontSize=13))
        sii_x = alt.X("period_start:T", title=None, axis=_date_axis(one["period_type"].drop_nulls().first()))
        sii_base = alt.Chart(one.drop_nulls("sii"))
        sii = _layer([
            sii_base.mark_area(opacity=0.2, color=NHS_DARK_BLUE).encode(
                x=sii_x, y=alt.Y("sii_lower_95:Q", title=f"SII{points}"), y2=alt.Y2("sii_upper_95:Q")),
            sii_base.mark_line(color=NHS_DARK_BLUE, strokeWidth=2).encode(x=sii_x, y=alt.Y("sii:Q")),
            sii_base.mark_point(color=NHS_DARK_BLUE, filled=True, size=40, shape="square").encode(
                x=sii_x, y=alt.Y("sii:Q"), tooltip=[alt.Tooltip("period:N", title="Period"),
                                             alt.Tooltip("sii:Q", title="SII", format=",.2~f"),
                                             alt.Tooltip("sii_ci:N", title="SII 95% CI"),
                                             alt.Tooltip("rii:Q", title="RII", format=",.3~f")]),
            alt.Chart(pl.DataFrame({"zero": [0.0]})).mark_rule(color=NHS_GREY, strokeDash=[2, 2]).encode(y=alt.Y("zero:Q")),
        ], width=width, height=int(height * 0.7),
            title=alt.TitleParams(f"{place}: slope index of inequality (shaded: 95% CI)", anchor="start", fontSize=13))
        panels += [gap, sii]
    sub = subtitle or ["Gap: most deprived minus least deprived quintile; its SPC asks whether it is closing. "
                       "SII: the modelled difference between the most and least deprived ends of the population."]
    if not panels:
        panels = [alt.Chart(pl.DataFrame({"text": ["No inequality series published"]})).mark_text().encode(text=alt.Text("text:N"))]
    return _vconcat(panels, spacing=16, title=alt.TitleParams(title, subtitle=sub, anchor="start", fontSize=15))


_NEED_STYLE = {  # need label → (colour, shape)
    "Worse than the place": (NHS_ORANGE, "diamond"),
    "Similar to the place": (NHS_GREY, "circle"),
    "Better than the place": (NHS_BLUE, "square"),
    "Not compared": (NHS_PALE_GREY, "circle"),
}


def need_chart(values: pl.DataFrame, *, title: str, unit: str, subtitle: list[str] | None = None,
               width: int = 520) -> alt.LayerChart:
    """Neighbourhood values with 95% CIs against their place's value (dashed), ordered worst first;
    ``values`` carries ``need`` (a key of the legend: worse / similar / better than the place, judged
    by the caller), ``place_value`` and ``rank`` (1 = greatest need)."""
    data = _tidy(values).with_columns(values["need"], values["place_value"], values["rank"])
    order = data.sort("rank")["group"].to_list()
    present = [k for k in _NEED_STYLE if k in set(data["need"].to_list())]
    y = alt.Y("group:N", title=None, sort=order, axis=alt.Axis(labelLimit=240))
    base = alt.Chart(data)
    layers = [
        base.mark_errorbar(ticks=True, thickness=1.5, color=NHS_DARK_GREY).encode(
            y=y, x=alt.X("lower_95:Q", title=unit or "Value", scale=alt.Scale(zero=False)), x2=alt.X2("upper_95:Q")),
        base.mark_point(filled=True, size=90, opacity=1).encode(
            y=y, x=alt.X("value:Q", title=unit or "Value", scale=alt.Scale(zero=False)),
            color=alt.Color("need:N", title=None, scale=alt.Scale(domain=present, range=[_NEED_STYLE[k][0] for k in present]),
                            legend=alt.Legend(orient="bottom")),
            shape=alt.Shape("need:N", title=None, scale=alt.Scale(domain=present, range=[_NEED_STYLE[k][1] for k in present])),
            tooltip=_tooltip(unit, [alt.Tooltip("group:N", title="Neighbourhood"),
                                    alt.Tooltip("need:N", title="Compared with the place"),
                                    alt.Tooltip("rank:Q", title="Need rank")])),
        base.mark_rule(color=NHS_DARK_GREY, strokeDash=[6, 4]).encode(
            x=alt.X("place_value:Q"), tooltip=[alt.Tooltip("place_value:Q", title="Place value", format=",.2~f")]),
    ]
    return _layer(layers, title=alt.TitleParams(title, subtitle=subtitle or [], anchor="start", fontSize=15),
                  width=width, height=max(22 * len(order), 80))


# ------------------------------------------------------------------------------------ alt text


def spc_alt_text(spc: pl.DataFrame, *, title: str, unit: str, place: str, value_type: str | None = None) -> str:
    """A sentence or three describing an SPC chart of one place's series, for screen readers."""
    data = _spc_frame(spc).filter(pl.col("place") == place)
    shown = data.drop_nulls("value")
    if shown.is_empty():
        return f"SPC chart of {title} in {place}: no values to show."
    first, last = shown.row(0, named=True), shown.row(-1, named=True)
    decimals = _decimals(value_type)
    text = (f"SPC chart of {title} in {place}, {shown.height} points from {first['period']} to {last['period']}. "
            f"Latest value {_with_unit(_number(last['value'], decimals), unit)}{'' if unit == '%' else ' ' + unit} "
            f"in {last['period']}.")
    if last.get("mean") is not None:
        text += f" Mean {_with_unit(_number(last['mean'], decimals), unit)}"
        if last.get("lower_limit") is not None:
            text += (f", process limits {_with_unit(_number(last['lower_limit'], decimals), unit)} to "
                     f"{_with_unit(_number(last['upper_limit'], decimals), unit)}")
        text += "."
    if last.get("target") is not None:
        text += f" Target {_with_unit(_number(last['target'], decimals), unit)}."
    counts = {k: shown.filter(pl.col("point_type") == k).height for k in POINT_TYPE_LABELS}
    special = [f"{n} {POINT_TYPE_LABELS[k].split(': ')[-1]}" for k, n in counts.items() if n and k != "common_cause"]
    text += (f" Special cause points: {', '.join(special)}." if special else " No special cause points.")
    if data["segment"].drop_nulls().n_unique() > 1:
        text += " The limits are rebased where the process changed."
    if bool(data["trial_limits"].fill_null(False).any()):
        text += " Trial limits (fewer than 13 points)."
    return text + " " + icon_meaning(last.get("variation_icon"), last.get("assurance_icon"))


def inequality_alt_text(quintiles: pl.DataFrame, inequalities: pl.DataFrame, *, title: str, unit: str,
                        place: str) -> str:
    """Describes the inequality chart (gradient by quintile, gap SPC and SII) of one place."""
    latest = quintiles.filter(pl.col("place") == place)
    parts = [f"Inequality chart of {title} in {place}."]
    if latest.height:
        latest = latest.filter(pl.col("period_start") == pl.col("period_start").max()).with_columns(period_label())
        by = dict(zip(latest["group"].to_list(), latest["value"].to_list()))
        shown = ", ".join(f"quintile {g} {_with_unit(_number(by.get(g)), unit)}" for g in ["1", "2", "3", "4", "5"] if g in by)
        parts.append(f"Values by deprivation quintile (1 most deprived) in {latest['period'][0]}: {shown}.")
    series = inequalities.filter(pl.col("place") == place).sort("period_start").with_columns(period_label())
    if series.height:
        last = series.row(-1, named=True)
        parts.append(f"The gap between the most and least deprived quintiles was "
                     f"{_number(last['absolute_gap'], signed=True)}{' percentage points' if unit == '%' else ''} in "
                     f"{last['period']} ({last['gap_direction']} over {series.height} periods)"
                     + (f"; slope index of inequality {_number(last.get('sii'))}." if last.get("sii") is not None else "."))
    return " ".join(parts)


def scorecard_alt_text(rows: pl.DataFrame) -> str:
    """Describes the summary scorecard: how many metrics and places, and the icons that call for attention."""
    if rows.is_empty():
        return "Summary scorecard: no metrics."
    concern = rows.filter(pl.col("variation_icon").str.starts_with("concern"))
    improving = rows.filter(pl.col("variation_icon").str.starts_with("improvement"))
    failing = rows.filter(pl.col("assurance_icon") == "consistent_fail")
    def names(frame: pl.DataFrame) -> str:
        return "; ".join(f"{r['title']} ({r['place']})" for r in frame.iter_rows(named=True)) or "none"
    return (f"Summary scorecard of {rows['metric_id'].n_unique()} metrics for {', '.join(sorted(set(rows['place'])))}: "
            f"latest value with 95% confidence interval, target, Making Data Count variation and assurance icons, "
            f"comparison with England and the other place, and the deprivation gap. "
            f"Special cause concern: {names(concern)}. Special cause improvement: {names(improving)}. "
            f"Consistently failing the target: {names(failing)}.")
