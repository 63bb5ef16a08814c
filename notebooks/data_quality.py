import marimo

__generated_with = "0.25.2"
app = marimo.App(width="medium", app_title="Data quality")


@app.cell
def _():
    import datetime as dt
    import json

    import marimo as mo
    import polars as pl

    import store
    from metrics import charts, export
    from metrics.definitions import load_definitions
    from metrics.refresh import default_definitions_dir

    return charts, default_definitions_dir, dt, export, json, load_definitions, mo, pl, store


@app.cell
def _(mo):
    mo.md("""
    # Data quality

    What each refresh read, how fresh every source is, which rows were quarantined and why, and how
    completely the extracts record what the metrics need. For the performance team: the counts
    here describe the data, are not disclosure-controlled, and are not for publication. No patient
    identifier is ever shown.
    """)
    return


@app.cell
def _(store):
    engine = store.get_engine()
    runs = store.list_runs(engine, limit=50)
    run = store.read_run(engine, "latest")
    return engine, run, runs


@app.cell
def _(mo, pl, runs):
    runs_table = runs.select(
        pl.col("run_id").alias("Run"),
        pl.col("status").alias("Status"),
        pl.col("trigger").alias("Trigger"),
        pl.col("started_at").dt.strftime("%d %b %Y %H:%M").alias("Started (UTC)"),
        (pl.col("finished_at") - pl.col("started_at")).dt.total_milliseconds().truediv(1000).round(1).alias("Seconds"),
        pl.col("as_of").alias("Data as of"),
        pl.col("values_count").alias("Values"),
        pl.col("quarantined_count").alias("Rows quarantined"),
        pl.col("code_version").alias("Code version"),
        pl.col("error").fill_null("").str.slice(0, 160).alias("Error"),
    )
    _failed = runs.filter(pl.col("status") == "failed").height
    mo.vstack([
        mo.md(f"## Runs\nThe last {runs.height} refresh runs, newest first: {_failed} failed (a failed run "
              "publishes nothing; readers keep the last published run)."),
        mo.ui.table(runs_table, selection=None, page_size=10, show_column_summaries=False, show_download=False)
        if runs.height else mo.md("No runs yet: `outcomes refresh --data DIR` makes one.").callout(kind="warn"),
    ])
    return (runs_table,)


@app.cell
def _(mo, run):
    mo.stop(run is None, mo.md("No published run yet.").callout(kind="warn"))
    return


@app.cell
def _(default_definitions_dir, load_definitions):
    # Which columns of each source identify a person or a record: never shown. The store does not
    # keep source definitions, so they come from the definitions folder.
    _catalogue, _issues = load_definitions(default_definitions_dir())
    identifiers = {sid: set(src.identifiers) for sid, src in (_catalogue.sources.items() if _catalogue else [])}
    source_frequency = {}
    for _metric in (_catalogue.metrics.values() if _catalogue else []):
        source_frequency.setdefault(_metric.source, _metric.frequency or "monthly")
    return identifiers, source_frequency


@app.cell
def _(engine, export, mo, run, store):
    mo.stop(run is None)
    definitions = store.read_definitions(engine, run=run["id"])
    metric_info = export.metric_info(definitions)
    overall = store.read_values(engine, breakdown="overall", run=run["id"])
    return definitions, metric_info, overall


@app.cell
def _(dt, metric_info, overall, pl, run, source_frequency):
    _allowed = {"monthly": 62, "quarterly": 155, "annual": 430}
    _covered = (overall.join(metric_info.select("metric_id", "source"), on="metric_id", how="left")
                .group_by("source").agg(pl.col("period_start").min().alias("from"), pl.col("period_end").max().alias("to"),
                                        pl.col("metric_id").n_unique().alias("metrics")))
    _covered = {r["source"]: r for r in _covered.iter_rows(named=True)}
    today = dt.date.today()
    _rows = []
    for _source, _info in sorted(run["sources"].items()):
        _files = sorted(_info.get("files") or [], key=lambda f: f["file"])
        _period = _covered.get(_source) or {}
        _lag = (today - _period["to"]).days if _period.get("to") else None
        _limit = _allowed.get(str(source_frequency.get(_source, "")).split(" ")[0], 62)
        _rows.append({
            "Source": _source, "Status": _info.get("status", ""), "Files": len(_files),
            "Latest file": _files[-1]["file"] if _files else "—",
            "Rows read": _info.get("rows_read"), "Metrics": _period.get("metrics", 0),
            "Data from": _period.get("from"), "Data to": _period.get("to"),
            "Days since data end": _lag,
            "Fresh?": ("—" if _lag is None else "yes" if _lag <= _limit else f"stale (over {_limit} days)"),
        })
    freshness = pl.DataFrame(_rows, schema={"Source": pl.String, "Status": pl.String, "Files": pl.Int64,
                                            "Latest file": pl.String, "Rows read": pl.Int64, "Metrics": pl.Int64,
                                            "Data from": pl.Date, "Data to": pl.Date, "Days since data end": pl.Int64,
                                            "Fresh?": pl.String})
    return freshness, today


@app.cell
def _(freshness, mo, pl, run, today):
    _stale = freshness.filter(pl.col("Fresh?").str.starts_with("stale"))
    mo.vstack([
        mo.md(f"## Freshness of each source\nRun {run['id']} (data as of "
              f"{run['as_of']:%d %b %Y}) against today, {today:%d %b %Y}. *Data to* is the end of the latest period "
              "any metric on the source covers; a source is stale when that is longer ago than its metrics' "
              "frequency allows (62 days for monthly, 155 for quarterly, 430 for annual)."
              if run["as_of"] else "## Freshness of each source"),
        mo.md(f"**{_stale.height} source(s) stale:** {', '.join(_stale['Source'].to_list())}.").callout(kind="warn")
        if _stale.height else mo.md("Every source is within its expected refresh interval.").callout(kind="success"),
        mo.ui.table(freshness, selection=None, show_column_summaries=False, show_download=False),
    ])
    return


@app.cell
def _(engine, identifiers, json, mo, pl, run, store):
    mo.stop(run is None)
    _rows = store.read_quarantine(engine, run=run["id"])

    def _safe_row(source: str, row_json: str | None) -> str:
        # Identifier columns are dropped; without the source's definition nothing of the row is shown.
        if source not in identifiers or not row_json:
            return "(row not shown: no source definition lists its identifiers)"
        row = json.loads(row_json)
        return ", ".join(f"{k}={v}" for k, v in row.items() if k not in identifiers[source])

    quarantine_summary = (
        _rows.group_by("source_id", "rule").agg(
            pl.len().alias("rows"), pl.col("column").first(), pl.col("message").first(),
            pl.col("file").n_unique().alias("files"),
            pl.struct("source_id", "column", "value", "file", "row_number", "row_json").head(3).alias("examples"))
        .sort("source_id", pl.col("rows"), descending=[False, True])
    )
    _examples = []
    for _r in quarantine_summary.iter_rows(named=True):
        for _e in _r["examples"]:
            _hidden = _e["column"] in identifiers.get(_e["source_id"], set()) or _e["source_id"] not in identifiers
            _examples.append({
                "Source": _r["source_id"], "Rule": _r["rule"], "File": _e["file"], "Row": _e["row_number"],
                "Column": _e["column"], "Value": "(identifier hidden)" if _hidden else _e["value"],
                "Row values (identifiers removed)": _safe_row(_e["source_id"], _e["row_json"]),
            })
    quarantine_examples = pl.DataFrame(_examples, schema={
        "Source": pl.String, "Rule": pl.String, "File": pl.String, "Row": pl.Int64, "Column": pl.String,
        "Value": pl.String, "Row values (identifiers removed)": pl.String})
    quarantine_summary = quarantine_summary.drop("examples")
    return quarantine_examples, quarantine_summary


@app.cell
def _(charts, mo, pl, quarantine_examples, quarantine_summary, run):
    import altair as _alt

    _by_source = quarantine_summary.group_by("source_id").agg(pl.col("rows").sum()).sort("source_id")
    _chart = _alt.Chart(quarantine_summary).mark_bar(color="#005EB8").encode(
        x=_alt.X("rows:Q", title="Rows quarantined"), y=_alt.Y("rule:N", title=None, sort="-x"),
        row=_alt.Row("source_id:N", title=None, header=_alt.Header(labelAngle=0, labelAlign="left")),
        tooltip=["source_id", "rule", "rows", "column", "message"],
    ).properties(width=420) if quarantine_summary.height else None
    mo.vstack([
        mo.md(f"## Quarantined rows\n{run['quarantined_count']:,} rows of run {run['id']} broke a rule and were set "
              "aside (never silently dropped): " + (", ".join(f"{r['source_id']} {r['rows']:,}"
                                                               for r in _by_source.iter_rows(named=True)) or "none") + "."),
        charts.for_display(_chart) if _chart is not None else mo.md("Nothing quarantined.").callout(kind="success"),
        mo.ui.table(quarantine_summary.rename({"source_id": "Source", "rule": "Rule", "rows": "Rows", "column": "Column",
                                               "message": "Expected", "files": "Files"}),
                    selection=None, show_column_summaries=False, show_download=False),
        mo.md("### Examples (up to three per rule; identifier columns removed)"),
        mo.ui.table(quarantine_examples, selection=None, page_size=10, show_column_summaries=False,
                    show_download=False),
    ])
    return


@app.cell
def _(engine, mo, pl, run, store):
    mo.stop(run is None)
    coverage_metric = "spells_with_discharge_ready_date"
    coverage = store.read_values(engine, metric=coverage_metric, run=run["id"])
    coverage_trend = coverage.filter(pl.col("breakdown") == "overall", pl.col("period_type") == "month")
    return coverage, coverage_metric, coverage_trend


@app.cell
def _(charts, coverage, coverage_metric, coverage_trend, metric_info, mo, pl):
    mo.stop(coverage.is_empty(), mo.md(f"`{coverage_metric}` is not in this run.").callout(kind="info"))
    _info = metric_info.filter(pl.col("metric_id") == coverage_metric).row(0, named=True)
    coverage_plot = charts.trend_chart(coverage_trend, title=_info["title"], unit=_info["unit"] or "",
                                       target=_info["target_value"], polarity=_info["polarity"])
    _latest = coverage.filter(pl.col("breakdown") == "neighbourhood", pl.col("period_type") == "financial_year")
    coverage_breakdown_plot = charts.breakdown_chart(_latest, title="By neighbourhood, latest financial year",
                                                     unit=_info["unit"] or "", target=_info["target_value"],
                                                     polarity=_info["polarity"]) if _latest.height else None
    mo.vstack([
        mo.md("## Coverage: Discharge Ready Dates\nSince April 2023 ward teams record a Discharge Ready Date for "
              "every adult staying a night or more; a spell without one is left out of the timely-discharge "
              "metrics, so this share says how far to trust them."),
        charts.for_display(coverage_plot),
        charts.for_display(coverage_breakdown_plot) if coverage_breakdown_plot is not None else mo.md(""),
    ])
    return (coverage_plot,)


@app.cell
def _(engine, mo, pl, run, store):
    mo.stop(run is None)
    # How often ethnicity is not recorded, metric by metric (share of the latest period's denominator).
    _values = store.read_values(engine, breakdown=["overall", "ethnicity"], run=run["id"])
    _latest = _values.filter(pl.col("period_start") == pl.col("period_start").max().over("metric_id", "period_type"))
    _base = pl.coalesce("denominator", "numerator")  # a count metric has no denominator: its count is the base
    _total = _latest.filter(pl.col("breakdown") == "overall").group_by("metric_id", "period_type", "period_start").agg(
        _base.sum().alias("total"))
    _unknown = _latest.filter(pl.col("breakdown") == "ethnicity",
                              pl.col("group").str.to_lowercase().str.contains("unknown|not stated")).group_by(
        "metric_id", "period_type", "period_start").agg(_base.sum().alias("unknown"))
    _preference = ["month", "snapshot", "financial_quarter", "rolling_12_months", "financial_year"]
    _rank = pl.col("period_type").replace_strict(_preference, list(range(len(_preference))), default=99)
    ethnicity_recording = (_total.join(_unknown, on=["metric_id", "period_type", "period_start"])
                           .filter(pl.col("total") > 0, _rank == _rank.min().over("metric_id"))
                           .select(pl.col("metric_id").alias("Metric"), pl.col("period_type").alias("Period type"),
                                   pl.col("period_start").alias("Period from"),
                                   (100 * pl.col("unknown") / pl.col("total")).round(1).alias("% ethnicity not stated"))
                           .sort("Metric"))
    mo.vstack([
        mo.md("## Coverage: ethnicity recording\nThe share of each metric's latest denominator whose ethnicity is "
              "not stated or unknown: the higher it is, the less the ethnicity breakdowns can be trusted."),
        mo.ui.table(ethnicity_recording, selection=None, show_column_summaries=False, show_download=False)
        if ethnicity_recording.height else mo.md("No metric in this run is broken down by ethnicity."),
    ])
    return (ethnicity_recording,)


if __name__ == "__main__":
    app.run()
