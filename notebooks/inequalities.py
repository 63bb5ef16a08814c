import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="Inequalities")


@app.cell
def _():
    import os

    import marimo as mo
    import polars as pl

    import store
    from metrics import charts, export
    from metrics.judge import compare_with_benchmark

    return charts, compare_with_benchmark, export, mo, os, pl, store


@app.cell
def _(mo):
    mo.md("""
    # Inequalities: a focus on the neighbourhoods with the greatest need

    How each outcome differs by deprivation (English Indices of Deprivation 2019 quintiles of the
    areas people live in), whether the gap between the most and least deprived is closing, and which
    neighbourhoods fare worst. Everything is read from the published store; nothing is recomputed.
    """)
    return


@app.cell
def _(store):
    engine = store.get_engine()
    run = store.read_run(engine, "latest")
    return engine, run


@app.cell
def _(mo, os):
    # As in the explorer: forced on by OUTCOMES_PUBLICATION=1 or ?publication=1, never off by the address.
    _on = {"1", "true", "yes", "on"}
    _asked = [str(v).strip().lower() for v in mo.query_params().get_all("publication")]
    publication_forced = (os.environ.get("OUTCOMES_PUBLICATION", "").strip().lower() in _on
                          or any(v in _on for v in _asked))
    return (publication_forced,)


@app.cell
def _(mo, publication_forced):
    publication_switch = mo.ui.switch(value=publication_forced, disabled=publication_forced,
                                      label="Publication mode (small numbers suppressed, counts rounded)")
    return (publication_switch,)


@app.cell
def _(publication_forced, publication_switch):
    publication = bool(publication_forced or publication_switch.value)
    return (publication,)


@app.cell
def _(engine, mo, run):
    mo.stop(run is None, mo.md(
        f"**No published run yet** in `{engine.url.render_as_string(hide_password=True)}`: publish one with "
        "`outcomes refresh --data DIR`, then reload this page.").callout(kind="warn"))
    return


@app.cell
def _(engine, export, mo, run, store):
    mo.stop(run is None)
    definitions = store.read_definitions(engine, run=run["id"])
    metric_info = export.metric_info(definitions)
    inequality_frame = store.read_frame(engine, "inequalities", run=run["id"])
    return definitions, inequality_frame, metric_info


@app.cell
def _(inequality_frame, metric_info, mo, pl):
    _with_gaps = set(inequality_frame["metric_id"].to_list()) if inequality_frame.height else set()
    _metrics = metric_info.filter(pl.col("metric_id").is_in(list(_with_gaps)))
    metric_picker = mo.ui.dropdown(dict(zip(_metrics["title"], _metrics["metric_id"])),
                                   value=_metrics["title"].first(), label="Metric")
    _places = sorted(set(inequality_frame["place"].to_list())) if inequality_frame.height else []
    place_picker = mo.ui.multiselect(_places, value=_places, label="Places")
    return metric_picker, place_picker


@app.cell
def _(metric_picker, mo, place_picker, publication, publication_switch, run):
    mo.vstack([
        mo.md(f"Run {run['id']}, published {run['published_at']:%d %b %Y %H:%M} UTC"
              + (f", data as of {run['as_of']:%d %b %Y}" if run["as_of"] else "") + "."),
        mo.hstack([metric_picker, place_picker, publication_switch], justify="start", gap=2, wrap=True),
        mo.md("**Publication mode is on**: small numbers are withheld under each metric's disclosure policy, "
              "and a period's gap and slope index are withheld when any of its quintiles is.").callout(kind="info")
        if publication else mo.md(""),
    ])
    return


@app.cell
def _(metric_info, metric_picker, mo, pl):
    mo.stop(metric_picker.value is None, mo.md("No metric in this run is broken down by deprivation.").callout(kind="info"))
    metric = metric_info.filter(pl.col("metric_id") == metric_picker.value).row(0, named=True)
    return (metric,)


@app.cell
def _(definitions, engine, export, metric, publication, run, store):
    _values = store.read_values(engine, metric=metric["metric_id"], run=run["id"])
    shown_values = (export.published_values(_values, definitions) if publication else export.unpublished(_values))
    metric_note = export.disclosure_note(shown_values, None) if publication else ""
    return metric_note, shown_values


@app.cell
def _(export, inequality_frame, metric, pl, place_picker, publication, shown_values):
    _gaps = inequality_frame.filter(pl.col("metric_id") == metric["metric_id"], pl.col("place").is_in(place_picker.value))
    gaps = (export.published_inequalities(_gaps, shown_values) if publication
            else _gaps.with_columns(pl.lit(False).alias("suppressed"), pl.lit(None, dtype=pl.String).alias("suppression_note")))
    gap_period_type = gaps["period_type"].first() if gaps.height else None
    quintiles = shown_values.filter(pl.col("breakdown") == "imd_quintile", pl.col("period_type") == gap_period_type,
                                    pl.col("place").is_in(place_picker.value))
    return gap_period_type, gaps, quintiles


@app.cell
def _(charts, gaps, metric, mo, quintiles):
    mo.stop(quintiles.is_empty(), mo.md("No values by deprivation quintile for these places.").callout(kind="info"))
    _last = {r["place"]: r for r in gaps.sort("period_start").group_by("place", maintain_order=True).last().iter_rows(named=True)}
    _sii = "; ".join(f"{p}: SII {r['sii']:.1f} (95% CI {r['sii_lower_95']:.1f} to {r['sii_upper_95']:.1f})"
                     for p, r in sorted(_last.items()) if r.get("sii") is not None)
    gradient_plot = charts.gradient_chart(
        quintiles, title=f"{metric['title']}: by deprivation quintile, latest period", unit=metric["unit"] or "",
        polarity=metric["polarity"], subtitle=[s for s in ["Bars: 95% confidence interval. 1 = the fifth of areas "
                                                          "most deprived nationally.", _sii] if s])
    charts.for_display(gradient_plot)
    return (gradient_plot,)


@app.cell
def _(gaps, metric, mo, pl):
    mo.stop(gaps.is_empty())
    _unit = " pts" if metric["unit"] == "%" else ""
    gap_table = gaps.sort("place", "period_start").group_by("place", maintain_order=True).last().select(
        pl.col("place").alias("Place"),
        pl.col("period_end").dt.strftime("%-d %b %Y").alias("Period ending"),
        pl.col("most_deprived").round(1).alias("Most deprived (Q1)"),
        pl.col("least_deprived").round(1).alias("Least deprived (Q5)"),
        pl.concat_str(pl.col("absolute_gap").round(1).cast(pl.String), pl.lit(f"{_unit} ("),
                      pl.col("absolute_gap_lower_95").round(1).cast(pl.String), pl.lit(" to "),
                      pl.col("absolute_gap_upper_95").round(1).cast(pl.String), pl.lit(")")).alias("Gap Q1 − Q5 (95% CI)"),
        pl.col("relative_gap").round(2).alias("Ratio Q1 / Q5"),
        pl.col("sii").round(1).alias("SII"),
        pl.col("rii").round(2).alias("RII"),
        pl.col("gap_direction").alias("Gap over time"),
        pl.col("suppression_note").fill_null("").alias("Disclosure"),
    )
    mo.vstack([
        mo.md("### The gap now\nThe gap is the most deprived quintile's value minus the least deprived's (its "
              "interval treats the two as independent). The slope index of inequality (SII) is the modelled "
              "difference across the whole deprivation range, the relative index (RII) the ratio."),
        mo.ui.table(gap_table, selection=None, show_download=False, show_column_summaries=False),
    ])
    return (gap_table,)


@app.cell
def _(charts, gaps, metric, mo):
    mo.stop(gaps.is_empty())
    gap_plot = charts.gap_chart(gaps, title=f"{metric['title']}: is the gap closing?", unit=metric["unit"] or "")
    charts.for_display(gap_plot)
    return (gap_plot,)


@app.cell
def _(gap_period_type, shown_values):
    # The neighbourhood view pools as much time as the published values allow: small areas have
    # small numbers, and a year is steadier than a month.
    _available = set(shown_values.filter(shown_values["breakdown"] == "neighbourhood")["period_type"].to_list())
    need_period_type = next((p for p in ("financial_year", "rolling_12_months", "snapshot", gap_period_type)
                             if p in _available), None)
    return (need_period_type,)


@app.cell
def _(compare_with_benchmark, metric, need_period_type, pl, place_picker, shown_values):
    _chosen = shown_values.filter(pl.col("period_type") == need_period_type, pl.col("place").is_in(place_picker.value))
    _chosen = _chosen.filter(pl.col("period_start") == pl.col("period_start").max().over("place"))
    _place = _chosen.filter(pl.col("breakdown") == "overall").select("place", pl.col("value").alias("place_value"))
    _labels = {"worse": "Worse than the place", "similar": "Similar to the place", "better": "Better than the place",
               "higher": "Similar to the place", "lower": "Similar to the place", "not_compared": "Not compared"}
    _direction = pl.col("value") if metric["polarity"] == "higher_is_better" else -pl.col("value")
    neighbourhoods = (
        _chosen.filter(pl.col("breakdown") == "neighbourhood").join(_place, on="place", how="left")
        .with_columns(compare_with_benchmark(pl.col("lower_95"), pl.col("upper_95"), pl.col("place_value"),
                                             pl.lit(metric["polarity"])).alias("comparison"))
        .with_columns(pl.col("comparison").replace_strict(_labels, default="Not compared").alias("need"),
                      (pl.col("comparison") == "worse").alias("greatest_need"))
        # Greatest need first: significantly worse than the place, then the worst values.
        .sort("place", pl.col("greatest_need").not_(), _direction, nulls_last=True)
        .with_columns(pl.int_range(1, pl.len() + 1).over("place").alias("rank"))
    )
    return (neighbourhoods,)


@app.cell
def _(charts, metric, mo, need_period_type, neighbourhoods, pl):
    mo.stop(neighbourhoods.is_empty(), mo.md("No neighbourhood values for this metric.").callout(kind="info"))
    need_plots = [
        charts.need_chart(neighbourhoods.filter(pl.col("place") == _p),
                          title=f"{_p}: neighbourhoods, {charts.PERIOD_TYPES.get(need_period_type, need_period_type).lower()}",
                          unit=metric["unit"] or "", subtitle=["Bars: 95% confidence interval; dashed line: the place's own value."])
        for _p in sorted(set(neighbourhoods["place"].to_list()))
    ]
    _need = neighbourhoods.filter(pl.col("greatest_need"))
    _named = ", ".join(f"{r['group']} ({r['place']})" for r in _need.iter_rows(named=True))
    mo.vstack([
        mo.md(f"""
    ### The neighbourhoods with the greatest need

    **How they are chosen.** A neighbourhood is highlighted when its value is *significantly worse
    than its own place's*: its 95% confidence interval lies wholly on the wrong side of the place
    value (read through the metric's polarity, {charts.POLARITY_LABELS.get(metric['polarity'], 'no preferred direction')}).
    Neighbourhoods are then ranked from the worst value. We judge need by the outcome itself rather
    than by deprivation alone, because the store holds the outcome for every neighbourhood but not the
    deprivation profile of each one, and because a neighbourhood can fare badly on one outcome and
    well on another. The latest {charts.PERIOD_TYPES.get(need_period_type, need_period_type).lower()}
    is used, pooling months so that small areas have enough people for a stable figure.
    Where nothing is significantly worse, no neighbourhood is singled out: differences within the
    intervals may be chance.

    **Greatest need now:** {_named or "no neighbourhood is significantly worse than its place"}.
    """),
        *[charts.for_display(_plot) for _plot in need_plots],
    ])
    return (need_plots,)


@app.cell
def _(metric_note, mo):
    mo.md(f"*Disclosure control:* {metric_note}") if metric_note else mo.md("")
    return


if __name__ == "__main__":
    app.run()
