import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="Outcomes explorer")


@app.cell
def _():
    import json

    import marimo as mo
    import polars as pl

    import store
    from metrics import charts

    return charts, json, mo, pl, store


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
def _(engine, mo, run, run_picker):
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
            run_picker,
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
        mo.accordion({"Sources and data quality": mo.ui.table(source_summary, selection=None, show_download=False)}),
    ])
    return


@app.cell
def _(engine, mo, run, store):
    mo.stop(run is None)
    run_id = run["id"]
    definitions = store.read_definitions(engine, run=run_id)
    overall = store.read_values(engine, breakdown="overall", run=run_id)
    return definitions, overall, run_id


@app.cell
def _(overall, pl):
    # A metric's headline period: month for monthly metrics, snapshot for snapshot ones.
    _preference = ["month", "snapshot", "financial_quarter", "rolling_12_months", "financial_year"]
    default_period = dict(
        overall.select("metric_id", "period_type").unique()
        .sort("metric_id", pl.col("period_type").replace_strict(_preference, list(range(5)), default=99))
        .group_by("metric_id", maintain_order=True).first()
        .iter_rows()
    )
    return (default_period,)


@app.cell
def _(charts, default_period, definitions, overall, pl):
    overview = (
        overall.join(pl.DataFrame({"metric_id": list(default_period), "period_type": list(default_period.values())}),
                     on=["metric_id", "period_type"])
        .filter(pl.col("period_start") == pl.col("period_start").max().over("metric_id", "place"))
        .join(definitions.select(
            "metric_id", "title", "outcome", "unit", "polarity", "value_type",
            pl.col("body_json").str.json_path_match("$.target.value").cast(pl.Float64).alias("target"),
        ), on="metric_id", how="left")
        .with_columns(charts.period_label().alias("period"),
                      (pl.col("period_start") == pl.col("period_start").max().over("metric_id")).alias("is_latest"))
        .sort("outcome", "title", "place")
    )
    return (overview,)


@app.cell
def _(charts, mo, overview, pl):
    def _fmt(column: str) -> pl.Expr:
        return (pl.when(pl.col("value_type") == "count").then(charts.format_number(column, 0))
                .otherwise(charts.format_number(column, 1)))

    _cells = overview.with_columns(
        pl.when(pl.col("value").is_null()).then(pl.lit("—"))
        .when(pl.col("lower_95").is_null()).then(_fmt("value"))
        .otherwise(pl.concat_str(_fmt("value"), pl.lit(" ("), _fmt("lower_95"), pl.lit(" to "), _fmt("upper_95"), pl.lit(")")))
        .alias("cell"),
        pl.col("period").filter(pl.col("is_latest")).first().over("metric_id").alias("latest"),
        pl.col("polarity").replace(charts.POLARITY_LABELS).alias("Polarity"),
        pl.col("target").round(1).cast(pl.String).str.strip_suffix(".0").fill_null("—").alias("Target"),
    )
    # A place whose latest value is for an earlier period says so beside the value.
    _cells = _cells.with_columns(
        pl.when(pl.col("is_latest")).then(pl.col("cell"))
        .otherwise(pl.concat_str(pl.col("cell"), pl.lit(" in "), pl.col("period"))).alias("cell"))
    _wide = _cells.pivot(on="place", index=["outcome", "title", "latest", "unit", "Target", "Polarity"], values="cell")
    _wide = _wide.rename({"outcome": "Outcome", "title": "Metric", "latest": "Latest period", "unit": "Unit"})
    _places = sorted(overview["place"].unique())
    _wide = _wide.select("Outcome", "Metric", *_places, "Latest period", "Unit", "Target", "Polarity")
    mo.vstack([
        mo.md("## Overview\nLatest value for each metric and place, with its 95% confidence interval in brackets."),
        mo.ui.table(_wide, selection=None, pagination=False, show_download=False, show_search=False,
                    show_data_types=False, wrapped_columns=["Outcome", "Metric"]),
    ])
    return


@app.cell
def _(definitions, mo, overall):
    _metrics = definitions.sort("outcome", "title")
    metric_picker = mo.ui.dropdown(dict(zip(_metrics["title"], _metrics["metric_id"])),
                                   value=_metrics["title"].first(), label="Metric", searchable=True)
    _places = sorted(overall["place"].unique())
    place_picker = mo.ui.multiselect(_places, value=_places, label="Places")
    return metric_picker, place_picker


@app.cell
def _(engine, metric_picker, run_id, store):
    metric_values = store.read_values(engine, metric=metric_picker.value, run=run_id)
    return (metric_values,)


@app.cell
def _(charts, default_period, metric_picker, metric_values, mo):
    _periods = {charts.PERIOD_TYPES.get(p, p): p for p in [*charts.PERIOD_TYPES, *metric_values["period_type"].unique().sort()]
                if p in set(metric_values["period_type"])}
    period_picker = mo.ui.dropdown(_periods, label="Period", value=next(
        (k for k, v in _periods.items() if v == default_period.get(metric_picker.value)), next(iter(_periods), None)))
    _breakdowns = {charts.BREAKDOWNS.get(b, b): b for b in [*charts.BREAKDOWNS, *metric_values["breakdown"].unique().sort()]
                   if b in set(metric_values["breakdown"])}
    breakdown_picker = mo.ui.dropdown(_breakdowns, label="Breakdown", value=next(
        (k for k, v in _breakdowns.items() if v == "imd_quintile"), next(iter(_breakdowns), None)))
    return breakdown_picker, period_picker


@app.cell
def _(breakdown_picker, metric_picker, mo, period_picker, place_picker):
    mo.vstack([
        mo.md("## Explore a metric"),
        mo.hstack([metric_picker, place_picker, period_picker, breakdown_picker], justify="start", wrap=True, gap=1),
    ])
    return


@app.cell
def _(breakdown_picker, metric_values, mo, period_picker, pl, place_picker):
    mo.stop(not place_picker.value, mo.md("Choose at least one place.").callout(kind="info"))
    _chosen = metric_values.filter(pl.col("place").is_in(place_picker.value),
                                   pl.col("period_type") == period_picker.value)
    trend_values = _chosen.filter(pl.col("breakdown") == "overall")
    selected = _chosen.filter(pl.col("breakdown") == breakdown_picker.value)
    return selected, trend_values


@app.cell
def _(definitions, json, metric_picker, pl):
    _row = definitions.filter(pl.col("metric_id") == metric_picker.value)
    metric = {
        **json.loads(_row["body_json"].first() or "{}"),
        **(_row.drop("body_json", "run_id").row(0, named=True) if _row.height else {"metric_id": metric_picker.value}),
    }
    return (metric,)


@app.cell
def _(charts, metric, trend_values):
    trend_plot = charts.trend_chart(
        trend_values, title=metric.get("title", metric["metric_id"]), unit=metric.get("unit") or "",
        target=(metric.get("target") or {}).get("value"), polarity=metric.get("polarity"),
    )
    trend_plot
    return (trend_plot,)


@app.cell
def _(breakdown_picker, charts, metric, mo, selected):
    mo.stop(selected.is_empty(), mo.md("No values for this breakdown and period.").callout(kind="info"))
    breakdown_plot = charts.breakdown_chart(
        selected, title=f"{charts.BREAKDOWNS.get(breakdown_picker.value, breakdown_picker.value)}, latest period",
        unit=metric.get("unit") or "", target=(metric.get("target") or {}).get("value"), polarity=metric.get("polarity"),
    )
    breakdown_plot
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
    )
    return (selected_table,)


@app.cell
def _(metric, mo, selected_table):
    _number = "{:,.1f}"
    mo.vstack([
        mo.md(f"### Values: {metric.get('title', metric['metric_id'])}"),
        mo.ui.table(
            selected_table, selection=None, page_size=12, show_data_types=False, show_column_summaries=False,
            format_mapping={"Numerator": "{:,.0f}", "Denominator": "{:,.0f}", "Value": _number,
                            "95% lower": _number, "95% upper": _number, "99.8% lower": _number, "99.8% upper": _number},
        ),
    ])
    return


@app.cell
def _(charts, metric, mo):
    def _text(value) -> str:
        return " ".join(str(value).split()).replace("|", "\\|") if value not in (None, "", [], {}) else "—"

    _target = metric.get("target") or {}
    _numerator, _denominator = metric.get("numerator") or {}, metric.get("denominator") or {}
    _measure = metric.get("measure") or {}
    _disclosure = metric.get("disclosure") or {}
    _rows = {
        "Outcome": _text(metric.get("outcome")),
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
        "Caveats": _text(metric.get("caveats")),
        "Owner": _text(metric.get("owner")),
        "Source": _text(metric.get("source")),
        "Disclosure": _text(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in _disclosure.items() if v is not None)),
        "Version": _text(f"{metric.get('version')} ({metric.get('status', 'status unknown')})"),
        "Content hash": f"`{metric.get('content_hash', '—')}`",
        "Definition file": f"`{metric.get('file', '—')}`",
    }
    mo.md("\n".join([
        f"## About this metric\n**{metric.get('title', metric['metric_id'])}** (`{metric['metric_id']}`)\n",
        "| | |", "|:---|:---|", *[f"| **{k}** | {v} |" for k, v in _rows.items()],
    ]))
    return


if __name__ == "__main__":
    app.run()
