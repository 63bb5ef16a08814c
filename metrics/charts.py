"""Altair charts (and their labels) drawn from published result frames; nothing here computes a statistic.

Every function takes frames as ``store.read_values`` returns them (``metric_id, place, period_type,
period_start, period_end, breakdown, group, numerator, denominator, value, lower_95, upper_95, ...``)
and only selects, labels and draws what is already there. Colours follow the NHS identity guidelines.
"""

from __future__ import annotations

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
    "period_label",
    "format_number",
    "group_label",
    "group_order",
    "trend_chart",
    "breakdown_chart",
]

NHS_BLUE = "#005EB8"
NHS_DARK_BLUE = "#003087"
NHS_WARM_YELLOW = "#FFB81C"
NHS_GREY = "#768692"
NHS_DARK_GREY = "#425563"
NHS_AQUA_GREEN = "#00A499"
NHS_DARK_PINK = "#AE2573"
NHS_PURPLE = "#330072"

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


def _tidy(values: pl.DataFrame, breakdown: str | None = None) -> pl.DataFrame:
    """Just the columns a chart needs, labelled, with any Duration columns dropped (Vega can't take them)."""
    frame = values.select(pl.exclude(pl.Duration))
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
    base = alt.Chart(data).encode(x=alt.X("period_start:T", title=None, axis=alt.Axis(format="%b %Y", labelAngle=0)))
    y = alt.Y("value:Q", title=unit or "Value", scale=alt.Scale(zero=False))
    band = base.mark_area(opacity=0.18).encode(
        y=alt.Y("lower_95:Q", title=unit or "Value", scale=alt.Scale(zero=False)), y2="upper_95:Q",
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
            y="target:Q", tooltip=[alt.Tooltip("label:N", title="Target")])
        text = alt.Chart(target_data).mark_text(align="left", dx=4, dy=-7, color=NHS_DARK_GREY).encode(
            y="target:Q", x=alt.value(0), text="label:N")
        layers += [rule, text]
    return alt.layer(*layers).properties(
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
    base = alt.Chart(data).encode(**encoding)
    x_title = unit or "Value"
    bars = base.mark_errorbar(ticks=True, thickness=1.5).encode(
        x=alt.X("lower_95:Q", title=x_title, scale=alt.Scale(zero=False)), x2="upper_95:Q")
    points = base.mark_point(filled=True, size=70, opacity=1).encode(
        x=alt.X("value:Q", title=x_title, scale=alt.Scale(zero=False)),
        tooltip=_tooltip(unit, [alt.Tooltip("group:N", title=BREAKDOWNS.get(breakdown or "", "Group"))]),
    )
    layers: list[alt.Chart] = [bars, points]
    if target is not None:
        target_data = pl.DataFrame({"target": [float(target)]})
        layers.append(alt.Chart(target_data).mark_rule(color=NHS_DARK_GREY, strokeDash=[6, 4]).encode(
            x="target:Q", tooltip=[alt.Tooltip("target:Q", title="Target")]))
    period = data["period"].drop_nulls().first() if data.height else None
    row_height = 16 * max(len(places), 1) + 8
    return alt.layer(*layers).properties(
        title=alt.TitleParams(title, subtitle=_subtitle(polarity, f"{period or ''} · bars: 95% confidence interval"),
                              anchor="start"),
        width=width, height=max(row_height * max(len(order), 1), 60),
    )
