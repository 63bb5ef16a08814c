import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full", app_title="Outcomes explorer")


@app.cell
def _():
    import json
    import os

    import marimo as mo
    import polars as pl

    import store
    from metrics import charts, export

    return charts, export, json, mo, os, pl, store


@app.cell
def _(mo):
    mo.md("""
    # Outcomes framework explorer

    Published metrics for the Dudley and Walsall place partnerships, read from the store exactly as
    the last refresh published them: nothing here is recomputed.
    """)
    return


@app.cell
def _(store):
    engine = store.get_engine()
    published_runs = store.list_runs(engine).filter(status="published")
    return engine, published_runs


@app.cell
def _(mo, published_runs):
    _labels = {
        f"Run {r['run_id']}, published {r['published_at']:%d %b %Y %H:%M} UTC": r["run_id"]
        for r in published_runs.iter_rows(named=True)
    }
    run_picker = mo.ui.dropdown(_labels, value=next(iter(_labels), None), label="Published run")
    return (run_picker,)


@app.cell
def _(engine, run_picker, store):
    run = store.read_run(engine, run_picker.value) if run_picker.value is not None else None
    return (run,)


@app.cell
def _(mo, os):
    # Publication mode is forced on for a deployment with OUTCOMES_PUBLICATION=1, or by the address
    # (?publication=1). Neither the address nor the switch can turn a forced mode off: the address
    # is only ever read to switch it on.
    _on = {"1", "true", "yes", "on"}
    _asked = [str(v).strip().lower() for v in mo.query_params().get_all("publication")]
    publication_forced = (os.environ.get("OUTCOMES_PUBLICATION", "").strip().lower() in _on
                          or any(v in _on for v in _asked))
    return (publication_forced,)


@app.cell
def _(mo, publication_forced):
    publication_switch = mo.ui.switch(
        value=publication_forced, disabled=publication_forced,
        label="Publication mode (small numbers suppressed, counts rounded)")
    return (publication_switch,)


@app.cell
def _(publication_forced, publication_switch):
    publication = bool(publication_forced or publication_switch.value)
    return (publication,)


@app.cell
def _(engine, mo, publication, publication_forced, publication_switch, run, run_picker):
    if run is None:
        _header = mo.md(f"""
        **No published run yet** in `{engine.url.render_as_string(hide_password=True)}`.

        Publish one with `outcomes refresh --data DIR` (for a demo:
        `outcomes demo-data --out var/demo` then `outcomes refresh --data var/demo`), then reload this page.
        """).callout(kind="warn")
    else:
        _header = mo.vstack([
            mo.hstack([
                mo.stat(str(run["id"]), label="Run", caption=f"{run['trigger']} · {run['status']}", bordered=True),
                mo.stat(f"{run['published_at']:%d %b %Y}", label="Published",
                        caption=f"{run['published_at']:%H:%M} UTC", bordered=True),
                mo.stat(f"{run['as_of']:%d %b %Y}" if run["as_of"] else "—", label="Data as of", bordered=True),
                mo.stat(f"{run['values_count']:,}", label="Values", bordered=True),
                mo.stat(f"{run['quarantined_count']:,}", label="Rows quarantined", bordered=True),
            ], justify="start", wrap=True),
            mo.md(f"Code version `{run['code_version'] or 'unknown'}` · extracts from `{run['data_dir']}`"),
            mo.hstack([run_picker, publication_switch], justify="start", gap=2, wrap=True),
            mo.md("**Publication mode is on**" + (" (set for this deployment or by the address; it can't be "
                                                   "turned off here)" if publication_forced else "")
                  + ": every figure below is shown as it may be published — counts of 1 to 7 and anything "
                  "that would reveal them are withheld, other counts rounded to the nearest 5, under each "
                  "metric's own disclosure policy.").callout(kind="info") if publication else mo.md(""),
        ])
    _header
    return


@app.cell
def _(mo, pl, run):
    mo.stop(run is None)
    source_summary = pl.DataFrame(
        [
            {
                "Source": name,
                "Status": info.get("status", ""),
                "Files": len(info.get("files", [])),
                "Rows read": info.get("rows_read"),
                "Valid": info.get("rows_valid"),
                "Quarantined": info.get("rows_quarantined"),
                "Superseded": info.get("rows_superseded"),
                "Quarantined by rule": ", ".join(f"{k}: {v}" for k, v in info.get("quarantined_by_rule", {}).items()),
                "Error": info.get("error") or "",
            }
            for name, info in run["sources"].items()
        ],
        schema={"Source": pl.String, "Status": pl.String, "Files": pl.Int64, "Rows read": pl.Int64,
                "Valid": pl.Int64, "Quarantined": pl.Int64, "Superseded": pl.Int64,
                "Quarantined by rule": pl.String, "Error": pl.String},
    )
    return (source_summary,)


@app.cell
def _(mo, pl, source_summary):
    _failed = source_summary.filter(pl.col("Status") != "ok")
    mo.vstack([
        *[mo.md(f"**{r['Source']}** could not be refreshed in this run: {r['Error']} "
                "Its metrics show the values of the last run that computed them.").callout(kind="danger")
          for r in _failed.iter_rows(named=True)],
        mo.accordion({"Sources and data quality (see the data quality app for more)":
                      mo.ui.table(source_summary, selection=None, show_download=False)}),
    ])
    return


@app.cell
def _(engine, export, mo, run, store):
    mo.stop(run is None)
    run_id = run["id"]
    definitions = store.read_definitions(engine, run=run_id)
    metric_info = export.metric_info(definitions)
    return definitions, metric_info, run_id


@app.cell
def _(definitions, engine, export, pl, run_id, store):
    # The scorecard as it may be published, worked out once per run whether or not publication
    # mode is on, so switching it on has nothing to read or compute. The values of the periods it
    # shows (every breakdown, so secondary suppression sees whole tables) go through each metric's
    # disclosure policy; nothing unprotected is kept.
    _card = store.read_frame(engine, "scorecard", run=run_id)
    if _card.height:
        _gaps = store.read_frame(engine, "inequalities", run=run_id)
        # Only the periods the scorecard shows: its latest values and latest gaps.
        _keys = ["metric_id", "period_type", "period_start"]
        _shown = pl.concat([_card.select(_keys), _gaps.sort("period_start").group_by("metric_id", "place")
                            .last().select(_keys) if _gaps.height else _card.select(_keys)]).unique()
        _values = store.read_values(engine, run=run_id, period_type=_card["period_type"].unique().to_list())
        _published = export.published_values(_values.join(_shown, on=_keys), definitions)
        protected_scorecard = export.published_scorecard(
            _card, _published, export.published_inequalities(_gaps, _published))
        protected_scorecard_note = export.disclosure_note(_published)
    else:
        protected_scorecard = export.unpublished(_card)
        protected_scorecard_note = ""
    return protected_scorecard, protected_scorecard_note


@app.cell
def _(engine, export, metric_info, protected_scorecard, protected_scorecard_note, publication, run_id, store):
    # The scorecard as the run published it, or in publication mode as it may be published.
    if publication:
        scorecard, scorecard_note = protected_scorecard, protected_scorecard_note
    else:
        scorecard = export.unpublished(store.read_frame(engine, "scorecard", run=run_id))
        scorecard_note = ""
    if scorecard.height:
        scorecard = scorecard.drop([c for c in ("group", "value_type") if c in scorecard.columns]).join(
            metric_info.select("metric_id", "group", "value_type"), on="metric_id", how="left")
    return scorecard, scorecard_note


@app.cell
def _(mo, protected_scorecard):
    # Disclosure control withholds a scorecard's values, never its rows: the places are the same in
    # either mode, and switching publication mode keeps the places chosen.
    _places = sorted(set(protected_scorecard["place"].to_list())) if protected_scorecard.height else []
    place_picker = mo.ui.multiselect(_places, value=_places, label="Places")
    return (place_picker,)


@app.cell
def _(metric_info, mo):
    _groups = sorted(set(metric_info["group"].drop_nulls().to_list()))
    group_picker = mo.ui.multiselect(_groups, value=_groups, label="Outcome groups")
    return (group_picker,)


@app.cell
def _(mo):
    priority_switch = mo.ui.switch(value=False, label="Priority outcomes only")
    return (priority_switch,)


@app.cell
def _(charts, group_picker, pl, place_picker, priority_switch, scorecard):
    scorecard_view = scorecard.filter(
        pl.col("place").is_in(place_picker.value),
        pl.col("group").is_in(group_picker.value) | pl.col("group").is_null(),
        pl.col("priority").fill_null(False) | (not priority_switch.value),
    ) if scorecard.height else scorecard
    scorecard_display = charts.scorecard_rows(scorecard_view)
    return scorecard_display, scorecard_view


@app.cell
def _(charts, group_picker, mo, place_picker, priority_switch, publication, scorecard_display, scorecard_note):
    mo.vstack([
        mo.md("## Scorecard\nThe latest value of every outcome metric for each place, with its 95% confidence "
              "interval, its Making Data Count icons (variation: is anything unusual happening? assurance: "
              "will the target be met?), and how it compares with England, the other place and between the "
              "most and least deprived areas."),
        mo.hstack([place_picker, group_picker, priority_switch], justify="start", gap=2, wrap=True),
        mo.Html(charts.scorecard_html(
            scorecard_display,
            caption=f"{scorecard_display['metric_id'].n_unique()} metrics · latest period of each metric"
                    + (" · publication mode" if publication else ""))) if scorecard_display.height
        else mo.md("No metrics match these filters.").callout(kind="info"),
        mo.md(f"*Disclosure control:* {scorecard_note}") if scorecard_note else mo.md(""),
    ])
    return


@app.cell
def _(metric_info, mo):
    _options = dict(zip(metric_info["title"], metric_info["metric_id"]))
    metric_picker = mo.ui.dropdown(_options, value=next(iter(_options), None), label="Metric")
    return (metric_picker,)




@app.cell
def _(definitions, json, metric_picker, pl):
    _row = definitions.filter(pl.col("metric_id") == metric_picker.value)
    metric = {
        **json.loads(_row["body_json"].first() or "{}"),
        **(_row.drop("body_json", "run_id").row(0, named=True) if _row.height else {"metric_id": metric_picker.value}),
    }
    return (metric,)


@app.cell
def _(definitions, engine, export, metric_info, metric_picker, run_id, store):
    # The chosen metric's values as they may be published, worked out when the metric is chosen
    # (see protected_scorecard).
    protected_values = export.published_values(
        store.read_values(engine, metric=metric_picker.value, run=run_id, provenance=True), definitions)
    protected_values_note = export.disclosure_note(protected_values, metric_info)
    return protected_values, protected_values_note


@app.cell
def _(engine, export, metric_picker, protected_values, protected_values_note, publication, run_id, store):
    # Everything shown about the chosen metric comes from these values: as published in
    # publication mode (nothing unprotected is kept), as computed otherwise.
    if publication:
        shown_values, metric_note = protected_values, protected_values_note
    else:
        shown_values = export.unpublished(
            store.read_values(engine, metric=metric_picker.value, run=run_id, provenance=True))
        metric_note = ""
    return metric_note, shown_values


@app.cell
def _(protected_scorecard):
    # A metric's headline period type: the one its SPC chart and scorecard use.
    default_period = (dict(protected_scorecard.select("metric_id", "period_type").unique().iter_rows())
                      if protected_scorecard.height else {})
    return (default_period,)


@app.cell
def _(charts, default_period, metric_picker, mo, protected_values):
    # The metric's periods and breakdowns are the same in either mode: it has a published definition,
    # so disclosure control withholds its values, never its rows (see place_picker).
    _periods = {charts.PERIOD_TYPES.get(p, p): p
                for p in [*charts.PERIOD_TYPES, *protected_values["period_type"].unique().sort()]
                if p in set(protected_values["period_type"])}
    period_picker = mo.ui.dropdown(_periods, label="Period", value=next(
        (k for k, v in _periods.items() if v == default_period.get(metric_picker.value)), next(iter(_periods), None)))
    return (period_picker,)


@app.cell
def _(charts, mo, protected_values):
    _breakdowns = {charts.BREAKDOWNS.get(b, b): b
                   for b in [*charts.BREAKDOWNS, *protected_values["breakdown"].unique().sort()]
                   if b in set(protected_values["breakdown"]) and b != "overall"}
    breakdown_picker = mo.ui.dropdown(_breakdowns, label="Breakdown", value=next(
        (k for k, v in _breakdowns.items() if v == "imd_quintile"), next(iter(_breakdowns), None)))
    return (breakdown_picker,)


@app.cell
def _(metric_picker, mo):
    mo.vstack([
        mo.md("## Explore a metric"),
        mo.hstack([metric_picker], justify="start"),
    ])
    return


@app.cell
def _(engine, export, metric_picker, pl, place_picker, run_id, shown_values, store):
    # The metric's SPC series (place totals), each point's value as shown_values has it.
    _spc = store.read_frame(engine, "spc", run=run_id)
    metric_spc = export.published_spc(
        _spc.filter(pl.col("metric_id") == metric_picker.value, pl.col("breakdown") == "overall",
                    pl.col("place").is_in(place_picker.value)) if _spc.height else _spc,
        shown_values)
    return (metric_spc,)




@app.cell
def _(charts, metric, metric_note, metric_spc, mo, pl, place_picker, scorecard):
    mo.stop(not place_picker.value, mo.md("Choose at least one place above.").callout(kind="info"))
    _card = scorecard.filter(pl.col("metric_id") == metric["metric_id"], pl.col("place").is_in(place_picker.value))
    _badges = [
        mo.Html(f"<p><strong>{r['place']}</strong> · {charts.latest_text({**r, 'period': None})} · "
                f"{charts.icon_badge('variation', r['variation_icon'])} "
                f"{charts.icon_badge('assurance', r['assurance_icon'])}</p>")
        for r in _card.sort("place").iter_rows(named=True)
    ]
    _trial = bool(metric_spc["trial_limits"].fill_null(False).any()) if metric_spc.height else False
    mo.vstack([
        mo.md("### Statistical process control (Making Data Count)"),
        *_badges,
        mo.md("**Trial limits**: fewer than 13 points, so the process limits may move as more data arrive. "
              "Read any signal with care.").callout(kind="warn") if _trial else mo.md(""),
        mo.md("Points: grey circle common cause; blue square special cause improvement; orange diamond "
              "special cause concern (purple triangles when neither direction is better). Solid line: mean; "
              "dashed: process limits; dash-dot: target; dotted vertical line: limits rebased."),
        mo.md(f"*Disclosure control:* {metric_note}") if metric_note else mo.md(""),
    ])
    return


@app.cell
def _(charts, metric, metric_spc, mo, place_picker):
    mo.stop(not place_picker.value)
    spc_plot = charts.spc_chart(
        metric_spc, title=f"{metric.get('title', metric['metric_id'])}: statistical process control",
        unit=metric.get("unit") or "", polarity=metric.get("polarity"))
    charts.for_display(spc_plot)
    return (spc_plot,)


@app.cell
def _(breakdown_picker, mo, period_picker):
    mo.vstack([
        mo.md("### Trend and breakdowns, with 95% confidence intervals"),
        mo.hstack([period_picker, breakdown_picker], justify="start", wrap=True, gap=1),
    ])
    return


@app.cell
def _(breakdown_picker, mo, period_picker, pl, place_picker, shown_values):
    mo.stop(not place_picker.value)
    _chosen = shown_values.filter(pl.col("place").is_in(place_picker.value),
                                  pl.col("period_type") == period_picker.value)
    trend_values = _chosen.filter(pl.col("breakdown") == "overall")
    selected = _chosen.filter(pl.col("breakdown") == breakdown_picker.value)
    return selected, trend_values


@app.cell
def _(charts, metric, trend_values):
    trend_plot = charts.trend_chart(
        trend_values, title=metric.get("title", metric["metric_id"]), unit=metric.get("unit") or "",
        target=(metric.get("target") or {}).get("value"), polarity=metric.get("polarity"),
    )
    charts.for_display(trend_plot)
    return (trend_plot,)


@app.cell
def _(breakdown_picker, charts, metric, mo, selected):
    mo.stop(selected.is_empty(), mo.md("No values for this breakdown and period.").callout(kind="info"))
    breakdown_plot = charts.breakdown_chart(
        selected, title=f"{charts.BREAKDOWNS.get(breakdown_picker.value, breakdown_picker.value)}, latest period",
        unit=metric.get("unit") or "", target=(metric.get("target") or {}).get("value"), polarity=metric.get("polarity"),
    )
    charts.for_display(breakdown_plot)
    return (breakdown_plot,)


@app.cell
def _(breakdown_picker, charts, pl, selected):
    selected_table = selected.sort("place", "group", "period_start").select(
        pl.col("metric_id").alias("Metric"),
        pl.col("place").alias("Place"),
        charts.period_label().alias("Period"),
        pl.col("breakdown").replace(charts.BREAKDOWNS).alias("Breakdown"),
        charts.group_label(breakdown_picker.value).alias("Group"),
        pl.col("numerator").alias("Numerator"),
        pl.col("denominator").alias("Denominator"),
        pl.col("value").alias("Value"),
        pl.col("lower_95").alias("95% lower"),
        pl.col("upper_95").alias("95% upper"),
        pl.col("lower_99_8").alias("99.8% lower"),
        pl.col("upper_99_8").alias("99.8% upper"),
        pl.col("suppression_note").fill_null("").alias("Disclosure"),
    )
    return (selected_table,)


@app.cell
def _(metric, metric_note, mo, selected_table):
    _number = "{:,.1f}"
    mo.vstack([
        mo.md(f"### Values: {metric.get('title', metric['metric_id'])}"),
        mo.ui.table(
            selected_table, selection=None, page_size=12, show_data_types=False, show_column_summaries=False,
            format_mapping={"Numerator": "{:,.0f}", "Denominator": "{:,.0f}", "Value": _number,
                            "95% lower": _number, "95% upper": _number, "99.8% lower": _number, "99.8% upper": _number},
        ),
        mo.md(f"*Disclosure control:* {metric_note}") if metric_note else mo.md(""),
    ])
    return


@app.cell
def _(metric, protected_values, run):
    # Where each number comes from: the run, its data, and the definition as it was published.
    _computed = sorted(set(protected_values["computed_run_id"].drop_nulls().to_list())) if protected_values.height else []
    provenance = {
        "Run": run["id"],
        "Published": f"{run['published_at']:%d %b %Y %H:%M} UTC" if run["published_at"] else "—",
        "Data as of": f"{run['as_of']:%d %b %Y}" if run["as_of"] else "—",
        "Values computed in run": ", ".join(str(r) for r in _computed) or "—",
        "Definition version": metric.get("version"),
        "Definition content hash": metric.get("content_hash"),
        "Code version": run["code_version"] or "unknown",
        "Extracts": run["data_dir"],
    }
    return (provenance,)


@app.cell
def _(charts, metric, mo, provenance, run):
    def _text(value) -> str:
        return " ".join(str(value).split()).replace("|", "\\|") if value not in (None, "", [], {}) else "—"

    _target = metric.get("target") or {}
    _numerator, _denominator = metric.get("numerator") or {}, metric.get("denominator") or {}
    _measure = metric.get("measure") or {}
    _disclosure = metric.get("disclosure") or {}
    _rows = {
        "Outcome": _text(metric.get("outcome")),
        "Outcome group": _text(metric.get("group")),
        "Definition": _text(metric.get("definition")),
        "Rationale": _text(metric.get("rationale")),
        "Numerator": _text(_numerator.get("description") or _measure.get("description")),
        "Denominator": _text(_denominator.get("description")),
        "Method": _text(", ".join(str(p) for p in [
            metric.get("value_type"), metric.get("ci_method"),
            f"× {metric['multiplier']:g}" if metric.get("multiplier") not in (None, 1) else None] if p)),
        "Unit": _text(metric.get("unit")),
        "Polarity": _text(charts.POLARITY_LABELS.get(metric.get("polarity") or "", metric.get("polarity"))),
        "Target": _text(f"{_target['value']:g} ({_target.get('source') or 'source not stated'})"
                        if _target.get("value") is not None else None),
        "Priority": "yes" if metric.get("priority") else "no",
        "Caveats": _text(metric.get("caveats")),
        "Owner": _text(metric.get("owner")),
        "Source": _text(metric.get("source")),
        "Disclosure": _text(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in _disclosure.items() if v is not None)),
        "Version": _text(f"{metric.get('version')} ({metric.get('status', 'status unknown')})"),
        "Content hash": f"`{metric.get('content_hash', '—')}`",
        "Definition file": f"`{metric.get('file', '—')}`",
    }
    mo.vstack([
        mo.md("\n".join([
            f"## About this metric\n**{metric.get('title', metric['metric_id'])}** (`{metric['metric_id']}`)\n",
            "| | |", "|:---|:---|", *[f"| **{k}** | {v} |" for k, v in _rows.items()],
        ])),
        mo.md("\n".join([
            "### Provenance", "| | |", "|:---|:---|", *[f"| **{k}** | {_text(v)} |" for k, v in provenance.items()],
            "", f"Export these charts for a meeting with `outcomes export --meeting NAME --run {run['id']} "
                f"--metrics {metric['metric_id']} --out DIR`.",
        ])),
    ])
    return


if __name__ == "__main__":
    app.run()
