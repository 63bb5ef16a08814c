"""The governance pack, and the publication view of the judgement frames that the apps share.

``export_pack`` writes, for one published run, everything a partnership board receives:

- one Making Data Count SPC chart per selected metric and place, and an inequality chart (gradient
  by deprivation quintile, the gap's SPC and the slope index of inequality) where the metric is
  broken down by IMD quintile — each with a title, a subtitle giving the latest value and what its
  icons mean, and a footer naming the source, period, run, definition version and disclosure control;
- a one-page summary scorecard (PDF and PNG, and SVG when asked);
- ``published_figures.csv``: the figures behind the charts;
- ``manifest.json``: every file with its alt text and SHA-256, the run and the meeting.

Everything is disclosure-controlled with each metric's declared policy (``metrics.publication``),
drawn by ``metrics.charts`` from the frames the run published, and deterministic: the same run
gives byte-identical SVG (no export timestamp; the run's own dates are used).

The ``published_*`` functions apply disclosure control to the judgement frames (``spc``,
``inequalities``, ``scorecard``) given the published values, so the explorer's publication mode
and the pack withhold exactly the same things.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import altair as alt
import click
import polars as pl
from sqlalchemy import Engine

import store
from metrics import charts
from metrics.disclosure import suppression_summary
from metrics.publication import publication_view

__all__ = [
    "FORMATS",
    "metric_info",
    "unpublished",
    "published_values",
    "published_spc",
    "published_inequalities",
    "published_scorecard",
    "disclosure_note",
    "export_pack",
    "export_command",
]

FORMATS = ("png", "svg", "pdf")
PNG_SCALE = 2.0
_PERIOD_KEYS = ["metric_id", "place", "period_type", "period_start"]
_INEQUALITY_NUMBERS = ("most_deprived", "least_deprived", "absolute_gap", "absolute_gap_lower_95",
                       "absolute_gap_upper_95", "relative_gap", "sii", "sii_lower_95", "sii_upper_95", "rii",
                       "rii_lower_95", "rii_upper_95", "gap_size")
_QUINTILE_WITHHELD = "withheld: a deprivation quintile's count is suppressed"


def metric_info(definitions: pl.DataFrame) -> pl.DataFrame:
    """One row per metric from a run's published definitions: what the apps and the pack print
    (title, outcome, group, unit, value type, polarity, priority, target, source, owner, version,
    content hash and disclosure policy)."""
    rows = []
    for row in definitions.iter_rows(named=True):
        body = json.loads(row["body_json"] or "{}")
        disclosure = body.get("disclosure") or {}
        rows.append({
            "metric_id": row["metric_id"], "title": row["title"], "outcome": row["outcome"],
            "group": body.get("group") or row["outcome"], "unit": row["unit"], "value_type": row["value_type"],
            "polarity": row["polarity"], "priority": bool(body.get("priority")),
            "target_value": (body.get("target") or {}).get("value"), "source": body.get("source"),
            "owner": body.get("owner"), "version": row["version"], "content_hash": row["content_hash"],
            "suppress_below": int(disclosure.get("suppress_below", 8)), "round_to": int(disclosure.get("round_to", 5)),
        })
    schema = {"metric_id": pl.String, "title": pl.String, "outcome": pl.String, "group": pl.String,
              "unit": pl.String, "value_type": pl.String, "polarity": pl.String, "priority": pl.Boolean,
              "target_value": pl.Float64, "source": pl.String, "owner": pl.String, "version": pl.Int64,
              "content_hash": pl.String, "suppress_below": pl.Int64, "round_to": pl.Int64}
    return pl.DataFrame(rows, schema=schema).sort("group", "outcome", "title")


def unpublished(values: pl.DataFrame) -> pl.DataFrame:
    """``values`` as the team sees them: nothing withheld (``suppressed`` false, no note)."""
    return values.with_columns(pl.lit(False).alias("suppressed"), pl.lit(None, dtype=pl.String).alias("suppression_note"))


def published_values(values: pl.DataFrame, definitions: pl.DataFrame) -> pl.DataFrame:
    """``values`` under each metric's disclosure policy (``metrics.publication.publication_view``)."""
    return publication_view(values, definitions)


def _value_flags(published: pl.DataFrame) -> pl.DataFrame:
    return published.select(*_PERIOD_KEYS, "breakdown", "group", pl.col("value").alias("_published_value"),
                            "suppressed", "suppression_note", pl.lit(True).alias("_matched"))


def published_spc(spc: pl.DataFrame, published: pl.DataFrame) -> pl.DataFrame:
    """The ``spc`` frame with each point's value as published: withheld points lose their value (the
    process limits, computed from every point, stay). Adds ``suppressed`` and ``suppression_note``."""
    if spc.is_empty():
        return spc.with_columns(pl.lit(False).alias("suppressed"), pl.lit(None, dtype=pl.String).alias("suppression_note"))
    joined = spc.join(_value_flags(published), on=[*_PERIOD_KEYS, "breakdown", "group"], how="left")
    return joined.with_columns(
        pl.when(pl.col("_matched")).then(pl.col("_published_value")).otherwise(pl.col("value")).alias("value"),
        pl.col("suppressed").fill_null(False),
    ).drop("_published_value", "_matched")


def published_inequalities(inequalities: pl.DataFrame, published: pl.DataFrame) -> pl.DataFrame:
    """The ``inequalities`` frame with a period's gap, SII and RII withheld when any of its quintiles
    has a withheld count (they would narrow it down). Adds ``suppressed`` and ``suppression_note``."""
    if inequalities.is_empty():
        return inequalities.with_columns(pl.lit(False).alias("suppressed"),
                                         pl.lit(None, dtype=pl.String).alias("suppression_note"))
    withheld = (published.filter(pl.col("breakdown") == "imd_quintile").group_by(_PERIOD_KEYS)
                .agg(pl.col("suppressed").any().alias("_withheld")))
    joined = inequalities.join(withheld, on=_PERIOD_KEYS, how="left").with_columns(pl.col("_withheld").fill_null(False))
    hide = pl.col("_withheld")
    return joined.with_columns(
        *[pl.when(hide).then(None).otherwise(pl.col(c)).alias(c) for c in _INEQUALITY_NUMBERS if c in joined.columns],
        hide.alias("suppressed"),
        pl.when(hide).then(pl.lit(_QUINTILE_WITHHELD)).otherwise(None).alias("suppression_note"),
    ).drop("_withheld")


def published_scorecard(scorecard: pl.DataFrame, published: pl.DataFrame,
                        inequalities: pl.DataFrame | None = None) -> pl.DataFrame:
    """The ``scorecard`` with its latest value, CI and counts as published; comparisons made with a
    withheld value are withheld with it, and the inequality gap is taken from ``inequalities`` as
    published (``published_inequalities``). Adds ``suppressed`` and ``suppression_note``."""
    if scorecard.is_empty():
        return scorecard.with_columns(pl.lit(False).alias("suppressed"), pl.lit(None, dtype=pl.String).alias("suppression_note"))
    overall = published.filter(pl.col("breakdown") == "overall").select(
        *_PERIOD_KEYS, *[pl.col(c).alias(f"_{c}") for c in ("value", "lower_95", "upper_95", "numerator", "denominator")],
        "suppressed", "suppression_note", pl.lit(True).alias("_matched"))
    card = scorecard.join(overall, on=_PERIOD_KEYS, how="left")
    matched = pl.col("_matched").fill_null(False)
    card = card.with_columns(
        *[pl.when(matched).then(pl.col(f"_{c}")).otherwise(pl.col(c)).alias(c)
          for c in ("value", "lower_95", "upper_95", "numerator", "denominator")],
        pl.col("suppressed").fill_null(False),
    ).drop("_value", "_lower_95", "_upper_95", "_numerator", "_denominator", "_matched")
    other = overall.select(pl.col("metric_id"), pl.col("place").alias("other_place"), "period_type", "period_start",
                           pl.col("_value").alias("_other_value"), pl.col("suppressed").alias("_other_withheld"))
    card = card.join(other, on=["metric_id", "other_place", "period_type", "period_start"], how="left")
    own, theirs = pl.col("suppressed"), pl.col("_other_withheld").fill_null(False)
    card = card.with_columns(
        *[pl.when(own).then(None).otherwise(pl.col(c)).alias(c)
          for c in ("target_met", "target_comparison_95", "vs_england") if c in card.columns],
        pl.when(own | theirs).then(None).otherwise(pl.col("vs_other_place")).alias("vs_other_place"),
        pl.when(theirs).then(None).otherwise(
            pl.when(pl.col("_other_value").is_not_null()).then(pl.col("_other_value"))
            .otherwise(pl.col("other_place_value"))).alias("other_place_value"),
    ).drop("_other_value", "_other_withheld")
    if inequalities is not None and not inequalities.is_empty() and "inequality_period_end" in card.columns:
        gaps = inequalities.select("metric_id", "place", pl.col("period_end").alias("inequality_period_end"),
                                   pl.col("absolute_gap").alias("_gap"), pl.col("suppressed").alias("_gap_withheld"))
        card = card.join(gaps, on=["metric_id", "place", "inequality_period_end"], how="left").with_columns(
            pl.when(pl.col("_gap_withheld").fill_null(False)).then(None).otherwise(pl.col("inequality_gap"))
            .alias("inequality_gap"),
            pl.when(pl.col("_gap_withheld").fill_null(False)).then(pl.lit("withheld")).otherwise(pl.col("gap_direction"))
            .alias("gap_direction"),
        ).drop("_gap", "_gap_withheld")
    return card


def disclosure_note(published: pl.DataFrame, info: pl.DataFrame | None = None) -> str:
    """One line on what disclosure control did to ``published`` (rows of ``published_values``), in the
    words of the metric's own policy when the rows are of one metric."""
    if "suppression_note" not in published.columns:
        return ""
    policy = {"suppress_below": 8, "round_to": 5}
    if info is not None and published["metric_id"].n_unique() == 1:
        row = info.filter(pl.col("metric_id") == published["metric_id"].first())
        if row.height:
            policy = {"suppress_below": row["suppress_below"].item(), "round_to": row["round_to"].item()}
    return suppression_summary(published, **policy)


# ------------------------------------------------------------------------------------ the pack


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _wrap_lines(lines: Sequence[str], width: int = 110) -> list[str]:
    return [piece for line in lines if line for piece in textwrap.wrap(line, width)]


def _configure(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    return (chart.configure(background="#FFFFFF", padding=16)
            .configure_view(stroke=None)
            .configure_axis(labelFontSize=11, titleFontSize=11, labelColor=charts.NHS_BLACK, titleColor=charts.NHS_BLACK)
            .configure_legend(labelFontSize=11, titleFontSize=11)
            .configure_title(color=charts.NHS_BLACK, subtitleColor=charts.NHS_DARK_GREY, subtitleFontSize=12))


def _write(chart: alt.TopLevelMixin, out: Path, stem: str, formats: Sequence[str]) -> list[tuple[str, Path]]:
    import vl_convert as vlc

    spec = _configure(chart).to_json(sort_keys=True)
    written = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        if fmt == "svg":
            path.write_text(vlc.vegalite_to_svg(spec), encoding="utf-8")
        elif fmt == "png":
            path.write_bytes(vlc.vegalite_to_png(spec, scale=PNG_SCALE))
        elif fmt == "pdf":
            path.write_bytes(vlc.vegalite_to_pdf(spec))
        written.append((fmt, path))
    return written


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _footer(*, meeting: str, run: dict, metric: dict, period: str, note: str) -> list[str]:
    published = f"{run['published_at']:%-d %b %Y}" if run.get("published_at") else "unknown date"
    as_of = f"; data as of {run['as_of']:%-d %b %Y}" if run.get("as_of") else ""
    return [line for line in [
        f"Source: {metric['source']} extract · period: {period} · owner: {metric['owner'] or 'not stated'}",
        f"Run {run['id']}, published {published}{as_of} · definition {metric['metric_id']} version "
        f"{metric['version']} (content hash {metric['content_hash']}) · code {run.get('code_version') or 'unknown'}",
        f"Disclosure control: {note}" if note else "",
        f"Prepared for {meeting}.",
    ] if line]


def export_pack(engine: Engine, *, meeting: str, out: Path, places: Sequence[str] | None = None,
                metrics: Sequence[str] | None = None, formats: Sequence[str] = FORMATS,
                run: int | str = "latest") -> dict[str, Any]:
    """Write the governance pack for ``meeting`` from a published run into ``out``; return the manifest.

    ``places`` and ``metrics`` narrow the pack (default: every place and metric of the run);
    ``formats`` are any of png, svg and pdf (the summary scorecard is always written as PDF and PNG).
    Raises LookupError when there is no such published run and ValueError for an unknown metric,
    place or format.
    """
    formats = [f.lower() for f in formats]
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        raise ValueError(f"unknown format(s): {', '.join(bad) or 'none given'}; choose from {', '.join(FORMATS)}")
    run_id = store.resolve_run(engine, run)
    if run_id is None:
        raise LookupError("no published run: publish one with `outcomes refresh --data DIR` first")
    run_info = store.read_run(engine, run_id)
    definitions = store.read_definitions(engine, run=run_id)
    info = metric_info(definitions)
    wanted = list(metrics) if metrics else info["metric_id"].to_list()
    unknown = sorted(set(wanted) - set(info["metric_id"]))
    if unknown:
        raise ValueError(f"metric(s) not in run {run_id}: {', '.join(unknown)}")
    info = info.filter(pl.col("metric_id").is_in(wanted))
    order = info["metric_id"].to_list()

    # Every place is read (a comparison with the other place must see its published value too).
    values = store.read_values(engine, metric=order, run=run_id)
    published = published_values(values, definitions)
    spc = published_spc(store.read_frame(engine, "spc", run=run_id).filter(
        pl.col("metric_id").is_in(order), pl.col("breakdown") == "overall"), published)
    inequalities = published_inequalities(
        store.read_frame(engine, "inequalities", run=run_id).filter(pl.col("metric_id").is_in(order)), published)
    scorecard = published_scorecard(
        store.read_frame(engine, "scorecard", run=run_id).filter(pl.col("metric_id").is_in(order)), published, inequalities)
    all_places = sorted(set(scorecard["place"].to_list()) | set(values["place"].unique().to_list()))
    chosen_places = list(places) if places else all_places
    missing = sorted(set(chosen_places) - set(all_places))
    if missing:
        raise ValueError(f"place(s) not in run {run_id}: {', '.join(missing)} (known: {', '.join(all_places)})")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []

    def record(written, *, kind: str, title: str, alt_text: str, metric_id: str | None = None,
               place: str | None = None) -> None:
        for fmt, path in written:
            files.append({"file": path.name, "kind": kind, "format": fmt, "metric_id": metric_id, "place": place,
                          "title": title, "alt_text": alt_text, "sha256": _sha256(path)})

    # The one-page summary scorecard.
    card = scorecard.filter(pl.col("place").is_in(chosen_places)).drop("title", "outcome", "unit", "priority").join(
        info.select("metric_id", "title", "outcome", "unit", "priority", "group", "value_type"), on="metric_id")
    rows = charts.scorecard_rows(card)
    run_line = (f"Run {run_id}, published {run_info['published_at']:%-d %b %Y}" if run_info.get("published_at")
                else f"Run {run_id}")
    summary_title = f"{meeting}: outcomes scorecard"
    summary = charts.with_footer(
        charts.scorecard_chart(rows, title=summary_title, subtitle=[
            f"{', '.join(chosen_places)} · latest period of each metric · {run_line}",
            "Icons (Making Data Count): H/L special cause high/low (blue improvement, orange concern), "
            "~ common cause; P consistently passes, F consistently fails, ? hit and miss.",
        ]),
        _wrap_lines([
            f"Disclosure control: {disclosure_note(published.filter(pl.col('place').is_in(chosen_places)))}",
            "Comparisons: better / similar / worse by whether the 95% confidence interval excludes the "
            "comparator. Deprivation gap: most minus least deprived IMD quintile, with the direction from its SPC.",
            f"Definitions: {', '.join(f'{r[0]} v{r[1]}' for r in info.select('metric_id', 'version').iter_rows())} · "
            f"code {run_info.get('code_version') or 'unknown'}. Prepared for {meeting}.",
        ], 190), width=1240, wrap=190)
    summary_formats = sorted({"pdf", "png"} | ({"svg"} if "svg" in formats else set()), key=FORMATS.index)
    record(_write(summary, out, "00_summary_scorecard", summary_formats), kind="scorecard", title=summary_title,
           alt_text=charts.scorecard_alt_text(rows))

    number = 0
    for metric in info.iter_rows(named=True):
        metric_id, unit = metric["metric_id"], metric["unit"] or ""
        for place in chosen_places:
            series = spc.filter(pl.col("metric_id") == metric_id, pl.col("place") == place)
            if series.is_empty():
                continue
            number += 1
            latest = card.filter(pl.col("metric_id") == metric_id, pl.col("place") == place)
            latest_row = latest.with_columns(charts.period_label()).row(0, named=True) if latest.height else {}
            target = ""
            if latest_row.get("target") is not None:
                met = {True: ", met", False: ", not met"}.get(latest_row.get("target_met"), "")
                target = f" · target {latest_row['target']:g}{'%' if unit == '%' else ''}{met}"
            subtitle = _wrap_lines([
                f"{place} · latest: {charts.latest_text({**latest_row, 'value_type': metric['value_type']})}{target}"
                if latest_row else place,
                charts.icon_meaning(latest_row.get("variation_icon"), latest_row.get("assurance_icon")),
                "Points: grey circle common cause, blue square improvement, orange diamond concern. "
                "Lines: solid mean, dashed process limits, dash-dot target."
                + (" Trial limits: fewer than 13 points." if bool(series["trial_limits"].fill_null(False).any()) else ""),
            ])
            plotted = published.filter(pl.col("metric_id") == metric_id, pl.col("place") == place,
                                       pl.col("breakdown") == "overall",
                                       pl.col("period_type") == series["period_type"].first())
            periods = series.sort("period_start").with_columns(charts.period_label())["period"]
            footer = _footer(meeting=meeting, run=run_info, metric=metric, note=disclosure_note(plotted, info),
                             period=f"{periods.first()} to {periods.last()} ({series['period_type'].first().replace('_', ' ')})")
            chart = charts.with_footer(
                charts.spc_chart(series, title=metric["title"], unit=unit, polarity=metric["polarity"], subtitle=subtitle),
                footer, width=720, wrap=130)
            stem = f"{number:02d}_{metric_id}_{_slug(place)}_spc"
            record(_write(chart, out, stem, formats), kind="spc", metric_id=metric_id, place=place,
                   title=f"{metric['title']}: {place}",
                   alt_text=charts.spc_alt_text(series, title=metric["title"], unit=unit, place=place,
                                                value_type=metric["value_type"]))

            gaps = inequalities.filter(pl.col("metric_id") == metric_id, pl.col("place") == place)
            quintiles = published.filter(pl.col("metric_id") == metric_id, pl.col("place") == place,
                                         pl.col("breakdown") == "imd_quintile",
                                         pl.col("period_type") == series["period_type"].first())
            if gaps.is_empty() or quintiles.is_empty():
                continue
            last_gap = gaps.sort("period_start").row(-1, named=True)
            sii = (f"; slope index of inequality {last_gap['sii']:.1f}" if last_gap.get("sii") is not None else "")
            gap_text = ("withheld (small numbers)" if last_gap.get("absolute_gap") is None
                        else f"{last_gap['absolute_gap']:+.1f}{' percentage points' if unit == '%' else ''}")
            gap = charts.gap_chart(gaps, title="", unit=unit, width=520, height=170)  # panels only: one flat column
            inequality = alt.vconcat(
                charts.gradient_chart(quintiles, title=f"{metric['title']}: by deprivation", unit=unit,
                                      polarity=metric["polarity"], width=520, height=220, subtitle=_wrap_lines([
                                          f"{place} · latest period · bars: 95% confidence interval · "
                                          f"gap most minus least deprived: {gap_text} ({last_gap['gap_direction']}){sii}",
                                      ])),
                *gap.vconcat, spacing=24)
            chart = charts.with_footer(inequality, _footer(
                meeting=meeting, run=run_info, metric=metric, note=disclosure_note(quintiles, info),
                period=f"{periods.first()} to {periods.last()}"), width=640, wrap=115)
            stem = f"{number:02d}_{metric_id}_{_slug(place)}_inequality"
            record(_write(chart, out, stem, formats), kind="inequality", metric_id=metric_id, place=place,
                   title=f"{metric['title']}: {place}, by deprivation",
                   alt_text=charts.inequality_alt_text(quintiles, gaps, title=metric["title"], unit=unit, place=place))

    # The figures behind the charts: every published value of the chosen metrics and places.
    figures = (published.filter(pl.col("place").is_in(chosen_places))
               .join(info.select("metric_id", "title", "unit", "content_hash"), on="metric_id", how="left")
               .with_columns(charts.period_label())
               .select("metric_id", "title", "metric_version", "content_hash", "place", "period_type", "period",
                       "period_start", "period_end", "breakdown", "group", "numerator", "denominator", "value",
                       "lower_95", "upper_95", "lower_99_8", "upper_99_8", "unit", "suppressed", "suppression_note",
                       "run_id")
               .sort("metric_id", "place", "period_type", "breakdown", "group", "period_start"))
    csv_path = out / "published_figures.csv"
    figures.write_csv(csv_path)
    files.append({"file": csv_path.name, "kind": "figures", "format": "csv", "metric_id": None, "place": None,
                  "title": "Published figures (disclosure-controlled)",
                  "alt_text": f"Table of {figures.height:,} published values: {', '.join(order)} for "
                              f"{', '.join(chosen_places)}, every period type and breakdown.",
                  "sha256": _sha256(csv_path)})

    manifest = {
        "meeting": meeting,
        "run": {"id": run_id, "published_at": str(run_info.get("published_at")), "as_of": str(run_info.get("as_of")),
                "code_version": run_info.get("code_version")},
        "places": chosen_places,
        "metrics": [{"metric_id": r["metric_id"], "title": r["title"], "version": r["version"],
                     "content_hash": r["content_hash"], "disclosure": {"suppress_below": r["suppress_below"],
                                                                        "round_to": r["round_to"]}}
                    for r in info.iter_rows(named=True)],
        "formats": formats,
        "disclosure": disclosure_note(published.filter(pl.col("place").is_in(chosen_places))),
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str) + "\n", encoding="utf-8")
    return manifest


@click.command("export")
@click.option("--meeting", required=True, help="The meeting the pack is for, e.g. 'Dudley Place Board, March 2026'.")
@click.option("--place", "places", multiple=True, help="Only this place (repeatable; default every place).")
@click.option("--metrics", "metric_ids", default=None, help="Comma-separated metric ids (default: all).")
@click.option("--formats", default="png,svg,pdf", show_default=True, help="Comma-separated: png, svg, pdf.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder to write.")
@click.option("--run", default="latest", show_default=True, help="'latest' or a published run id.")
def export_command(meeting: str, places: tuple[str, ...], metric_ids: str | None, formats: str, out: Path,
                   run: str) -> None:
    """Export the governance pack: an SPC chart (and an inequality chart) per metric and place, a
    one-page summary scorecard, the published figures as CSV and a manifest with alt text — all
    under each metric's disclosure policy.

    Example: outcomes export --meeting "Dudley Place Board, March 2026" --place Dudley --out var/pack
    """
    try:
        manifest = export_pack(store.get_engine(), meeting=meeting, out=out, places=list(places) or None,
                               metrics=[m.strip() for m in metric_ids.split(",") if m.strip()] if metric_ids else None,
                               formats=[f.strip() for f in formats.split(",") if f.strip()], run=run)
    except (LookupError, ValueError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    click.echo(f"run {manifest['run']['id']}: {len(manifest['files'])} files written to {out} "
               f"(manifest.json lists them with alt text)", err=True)
