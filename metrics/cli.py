"""`outcomes`: thin commands over the library. Each command's help is its documentation."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import time
from pathlib import Path

import click
import polars as pl

__all__ = ["main"]


def _echo(message: str) -> None:
    click.echo(message, err=True)


def _engine():
    import store

    return store.get_engine()


def _definitions_option(function):
    return click.option("--definitions", "definitions_dir", type=click.Path(path_type=Path), default=None,
                        help="Definitions folder (default: OUTCOMES_DEFINITIONS or the project's definitions/).")(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="outcomes-engine")
def main() -> None:
    """Outcomes framework metrics engine: definitions in, published metrics out.

    \b
    Typical use:
      outcomes demo-data --out var/demo          # realistic extracts for Dudley and Walsall
      outcomes validate                           # check every definition
      outcomes refresh --data var/demo           # compute and publish a run
      outcomes values --metric discharged_on_ready_date --breakdown imd_quintile

    The store is OUTCOMES_DATABASE_URL (default: SQLite at var/outcomes.db).
    """


@main.command("demo-data")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write one sub-folder per source.")
@click.option("--scale", type=float, default=1.0, show_default=True,
              help="1 = Dudley and Walsall's real population (~630,000); 0.05 for a quick look; >1 adds places.")
@click.option("--seed", type=int, default=20240401, show_default=True, help="Same seed, same files.")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--months", type=int, default=36, show_default=True, help="Months of activity from --start-month.")
@click.option("--start-month", default="2023-04", show_default=True)
@click.option("--defect-rate", type=float, default=0.005, show_default=True,
              help="Share of activity rows with realistic defects for quarantine to catch.")
def demo_data(out: Path, scale: float, seed: int, fmt: str, months: int, start_month: str, defect_rate: float) -> None:
    """Generate realistic, deterministic demo extracts (real LSOAs and IMD 2019).

    Example: outcomes demo-data --out var/demo --scale 0.05
    """
    from metrics.demo import generate_demo_data

    started = time.perf_counter()
    summary = generate_demo_data(out, scale=scale, seed=seed, fmt=fmt, start_month=start_month, months=months,
                                 defect_rate=defect_rate, progress=_echo)
    _echo(f"demo data written to {out} in {time.perf_counter() - started:.1f} s")
    click.echo(json.dumps(summary, indent=2, default=str))


@main.command()
@_definitions_option
def validate(definitions_dir: Path | None) -> None:
    """Check every definition (fields, types, filters, columns, breakdowns) and the refresh
    schedule (schedule.yaml, or OUTCOMES_SCHEDULE). Exit 1 on any error.

    Example: outcomes validate --definitions definitions/
    """
    from metrics.definitions import load_definitions
    from metrics.refresh import default_definitions_dir

    from metrics.errors import DefinitionError
    from metrics.schedule import default_schedule_path, load_schedule

    root = definitions_dir or default_definitions_dir()
    catalogue, issues = load_definitions(root)
    schedule_path = default_schedule_path(root)
    checked = ""
    if schedule_path.is_file():  # the refresh service's schedule is a definition too
        checked = f" and {schedule_path.name}"
        try:
            load_schedule(schedule_path, catalogue=catalogue, every_minute=False)
        except DefinitionError as exc:
            issues = [*issues, *exc.issues]
    for issue in issues:
        click.echo(str(issue))
    errors = [i for i in issues if i.level == "error"]
    click.echo(f"{len(catalogue.sources)} sources, {len(catalogue.metrics)} metrics{checked} checked in {root}: "
               f"{len(errors)} error(s), {len(issues) - len(errors)} warning(s)")
    sys.exit(1 if errors else 0)


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="Folder of extracts, one sub-folder per source.")
@_definitions_option
@click.option("--metrics", "metric_ids", default=None, help="Comma-separated metric ids (default: all).")
@click.option("--as-of", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Date for 'not in the future' checks (default: today).")
def refresh(data_dir: Path, definitions_dir: Path | None, metric_ids: str | None, as_of) -> None:
    """Load and validate the extracts, compute every metric and publish a run atomically.

    Exit status: 0 published; 1 failed (the last published run is unchanged); 2 bad definitions or
    arguments; 3 published but a source failed (its metrics carried forward); 4 another refresh
    holds the lease.

    Example: outcomes refresh --data var/demo
    """
    from metrics.errors import DefinitionError
    from metrics.refresh import refresh as run_refresh

    try:
        result = run_refresh(data_dir, definitions_dir=definitions_dir, engine=_engine(),
                             metrics=metric_ids.split(",") if metric_ids else None,
                             as_of=as_of.date() if as_of else None, progress=_echo)
    except DefinitionError as exc:
        _echo("definitions have errors; nothing was refreshed:\n" + str(exc))
        sys.exit(2)
    except ValueError as exc:
        _echo(str(exc))
        sys.exit(2)
    except Exception as exc:
        import store

        if isinstance(exc, store.LeaseHeld):  # not a failure: someone else is refreshing
            _echo(f"nothing refreshed: {exc}")
            sys.exit(4)
        _echo(f"refresh failed; the previously published run is unchanged: {exc}")
        sys.exit(1)
    click.echo(json.dumps({"run_id": result.run_id, "status": result.status, "values": result.values,
                           "quarantined": result.quarantined, "failed_sources": result.failed_sources,
                           "carried_forward": result.carried_forward, "timings": result.timings}, indent=2))
    if result.failed_sources:
        sys.exit(3)


@main.command("list")
@_definitions_option
def list_metrics(definitions_dir: Path | None) -> None:
    """List the metrics in the definitions, grouped by the outcome they measure.

    Example: outcomes list
    """
    from metrics.definitions import load_catalogue
    from metrics.refresh import default_definitions_dir

    catalogue = load_catalogue(definitions_dir or default_definitions_dir())
    by_outcome: dict[str, list] = {}
    for metric in sorted(catalogue.metrics.values(), key=lambda m: (m.outcome, m.id)):
        by_outcome.setdefault(metric.outcome, []).append(metric)
    for outcome, metrics in by_outcome.items():
        click.echo(outcome)
        for m in metrics:
            click.echo(f"  {m.id:<45} {m.value_type:<10} {m.unit:<22} v{m.version} {m.status:<8} {m.title}")


@main.command()
@click.option("--limit", type=int, default=20, show_default=True)
def runs(limit: int) -> None:
    """Recent refresh runs, newest first: status, timings, values, quarantined rows, errors.

    Example: outcomes runs --limit 5
    """
    import store

    frame = store.list_runs(_engine(), limit=limit)
    if frame.is_empty():
        click.echo("no runs yet: try `outcomes refresh --data DIR`")
        return
    for row in frame.iter_rows(named=True):
        timings = json.loads(row["timings_json"] or "{}")
        line = (f"run {row['run_id']:>4}  {row['status']:<9} started {row['started_at']:%Y-%m-%d %H:%M:%S}  "
                f"{timings.get('total', 0):>7.1f} s  {row['values_count']:>8,} values  "
                f"{row['quarantined_count']:>7,} quarantined  code {row['code_version']}")
        click.echo(line)
        if row["error"]:
            click.echo(f"           {row['error']}")


@main.command("values")
@click.option("--metric", "metric_ids", multiple=True, help="Metric id (repeatable; default all).")
@click.option("--breakdown", multiple=True, help="overall, neighbourhood, imd_quintile, age_band, sex, ethnicity.")
@click.option("--place", multiple=True, help="Place name, e.g. Dudley.")
@click.option("--period-type", multiple=True, help="month, financial_quarter, financial_year, snapshot, ...")
@click.option("--run", default="latest", show_default=True, help="'latest' or a run id.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "json"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="File to write (default: stdout).")
@click.option("--publish", is_flag=True,
              help="Apply each metric's disclosure policy (small counts withheld, counts rounded) for publication.")
def values(metric_ids, breakdown, place, period_type, run, fmt, out, publish) -> None:
    """Published values in long form (one row per metric, place, period, breakdown group).

    Columns: metric_id, place, period_type, period_start, period_end, breakdown, group, numerator,
    denominator, value, lower_95, upper_95, lower_99_8, upper_99_8, run_id (with --publish also
    suppressed and suppression_note; the note on what was withheld is printed to stderr).

    Example: outcomes values --metric breast_screening_coverage --breakdown imd_quintile --format csv
    """
    import store

    try:
        frame = store.read_values(_engine(), metric=list(metric_ids) or None, breakdown=list(breakdown) or None,
                                  place=list(place) or None, period_type=list(period_type) or None, run=run)
    except (LookupError, ValueError) as exc:
        _echo(str(exc))
        sys.exit(2)
    if publish:
        from metrics.publication import publication_note, publication_view

        frame = publication_view(frame, store.read_definitions(_engine(), run=run))
        _echo(publication_note(frame))
        frame = frame.select(*store.VALUE_COLUMNS, "suppressed", "suppression_note").drop("metric_version")
    else:
        frame = frame.select(store.VALUE_COLUMNS).drop("metric_version")
    if frame.is_empty():
        _echo("no published values match (has a refresh been run? see `outcomes runs`)")
    if fmt == "parquet":
        if out is None:
            _echo("--format parquet needs --out FILE")
            sys.exit(2)
        frame.write_parquet(out)
    else:
        buffer = io.StringIO()
        if fmt == "csv":
            frame.write_csv(buffer)
        else:
            buffer.write(json.dumps(frame.to_dicts(), default=str, indent=1))
            buffer.write("\n")
        if out:
            Path(out).write_text(buffer.getvalue(), encoding="utf-8")
        else:
            click.echo(buffer.getvalue(), nl=False)
    if out:
        _echo(f"{frame.height:,} rows written to {out}")


@main.command()
@_definitions_option
@click.option("--metrics", "metric_ids", default=None, help="Comma-separated metric ids (default: all).")
def explain(definitions_dir: Path | None, metric_ids: str | None) -> None:
    """Show what a refresh would compute, source by source, without running it.

    Example: outcomes explain --metrics discharged_on_ready_date
    """
    from metrics.definitions import load_catalogue
    from metrics.plan import build_plan, explain as explain_plan
    from metrics.refresh import default_definitions_dir

    catalogue = load_catalogue(definitions_dir or default_definitions_dir())
    click.echo(explain_plan(build_plan(catalogue, metric_ids.split(",") if metric_ids else None)))


@main.command()
@click.option("--run", default="latest", show_default=True)
@click.option("--source", default=None, help="Only this source.")
@click.option("--examples", type=int, default=3, show_default=True, help="Example rows per rule (no identifiers).")
def quarantine(run: str, source: str | None, examples: int) -> None:
    """Rows quarantined by a run, counted by source and rule, with example values.

    Example: outcomes quarantine --source inpatient_spells
    """
    import store

    frame = store.read_quarantine(_engine(), run=run, source=source)
    if frame.is_empty():
        click.echo("no quarantined rows")
        return
    summary = frame.group_by("source_id", "rule").agg(pl.len().alias("rows"), pl.col("column").first(),
                                                       pl.col("message").first(),
                                                       pl.col("file").head(examples), pl.col("row_number").head(examples),
                                                       pl.col("value").head(examples)).sort("source_id", "rule")
    for row in summary.iter_rows(named=True):
        click.echo(f"{row['source_id']:<20} {row['rule']:<32} {row['rows']:>7,} rows  column {row['column']}: "
                   f"{row['message']}")
        for file, number, value in zip(row["file"], row["row_number"], row["value"], strict=True):
            click.echo(f"    {file} row {number}: {value!r}")


@main.command()
@click.option("--place", multiple=True, help="Only this place (repeatable).")
@click.option("--run", default="latest", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def scorecard(place, run, fmt) -> None:
    """Per metric and place: latest value and CI, SPC variation and assurance, target, comparison
    with England and the other place, and the deprivation gap with its direction.

    Example: outcomes scorecard --place Dudley
    """
    import store

    try:
        card = store.read_frame(_engine(), "scorecard", run=run)
    except (LookupError, ValueError) as exc:
        _echo(str(exc))
        sys.exit(2)
    if card.is_empty():
        _echo("no scorecard: has a refresh been published? see `outcomes runs`")
        return
    if place:
        card = card.filter(pl.col("place").is_in(list(place)))
    columns = ["outcome", "metric_id", "place", "period_end", "value", "lower_95", "upper_95", "unit",
               "variation_icon", "assurance_icon", "target", "target_met", "vs_england", "other_place",
               "vs_other_place", "inequality_gap", "gap_direction"]
    card = card.select([c for c in columns if c in card.columns])
    if fmt == "csv":
        click.echo(card.write_csv(), nl=False)
        return
    if fmt == "json":
        click.echo(json.dumps(card.to_dicts(), default=str, indent=1))
        return
    for outcome, rows in card.group_by("outcome", maintain_order=True):
        click.echo(outcome[0])
        for r in rows.iter_rows(named=True):
            ci = (f"({r['lower_95']:.1f} to {r['upper_95']:.1f})" if r["lower_95"] is not None
                  and r["upper_95"] is not None else "")
            value = f"{r['value']:,.1f}" if r["value"] is not None else "—"
            target = "" if r["target"] is None else (" target met" if r["target_met"] else " target not met")
            click.echo(f"  {r['metric_id']:<44} {r['place']:<8} {r['period_end']}  {value:>9} {ci:<20} "
                       f"{r['variation_icon'] or '':<16} {r['assurance_icon'] or '':<15}{target}  "
                       f"vs England: {r['vs_england'] or '—'}; vs {r['other_place'] or 'other'}: "
                       f"{r['vs_other_place'] or '—'}; gap {r['gap_direction'] or '—'}")


@main.command()
@_definitions_option
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="html", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the pages.")
@click.option("--run", default="latest", show_default=True,
              help="Published run whose latest values the pages show (publication view).")
def catalogue(definitions_dir: Path | None, fmt: str, out: Path, run: str) -> None:
    """Render the metric catalogue: one page per metric (every field, the exact filters, the method,
    latest published values with disclosure control) and an index by outcome and group.

    Example: outcomes catalogue --format html --out var/catalogue
    """
    import store
    from metrics.catalogue import render_catalogue
    from metrics.definitions import load_catalogue
    from metrics.publication import publication_view
    from metrics.refresh import default_definitions_dir

    definitions = load_catalogue(definitions_dir or default_definitions_dir())
    engine = _engine()
    values, run_info = None, None
    if store.latest_run_id(engine) is not None:
        raw = store.read_values(engine, breakdown="overall", run=run)
        values = publication_view(raw, store.read_definitions(engine, run=run))
        info = store.read_run(engine, run)
        run_info = {k: info[k] for k in ("id", "as_of", "finished_at", "code_version")} | {"run_id": info["id"]}
    pages = render_catalogue(definitions, out, fmt=fmt, values=values, run=run_info)
    _echo(f"{len(pages)} pages written to {out}")


@main.group("db")
def db() -> None:
    """The store's schema: which revision it is at, and migrating it forward (OUTCOMES_DATABASE_URL).

    Every command migrates the store on first use; these are for deployments that do it as a step.

    Example: outcomes db upgrade
    """


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Revision to migrate to.")
def db_upgrade(revision: str) -> None:
    """Migrate the store's schema forward; a store made before migrations existed is adopted.

    Example: outcomes db upgrade
    """
    import store

    engine = store.get_engine(migrate=False)
    try:
        before, after = store.migrate(engine, revision)
    except store.SchemaError as exc:
        _echo(str(exc))
        sys.exit(2)
    where = store.safe_url(engine)
    click.echo(f"{where}: already at revision {after}" if before == after
               else f"{where}: upgraded from {before or 'no schema'} to revision {after}")


@db.command("current")
def db_current() -> None:
    """Show the store's schema revision and whether it is the newest this code knows.

    Example: outcomes db current
    """
    import store

    status = store.schema_status(store.get_engine(migrate=False))
    click.echo(f"store:    {status.url}")
    click.echo(f"revision: {status.current or 'none'}" + (" (head)" if status.up_to_date else
                                                           f" (head is {status.head}: run `outcomes db upgrade`)"))
    if status.unversioned_tables:
        click.echo(f"          tables made before migrations: {', '.join(status.unversioned_tables)} "
                   "(`outcomes db upgrade` adopts them)")


# --- the scheduled refresh service ---------------------------------------------------------------


def _schedule_option(function):
    return click.option("--schedule", "schedule_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
                        help="Schedule file (default: OUTCOMES_SCHEDULE, else schedule.yaml in the definitions "
                             "folder).")(function)


def _load_schedule(schedule_path: Path | None, definitions_dir: Path | None, every_minute: bool | None = None):
    from metrics.definitions import load_catalogue
    from metrics.errors import DefinitionError
    from metrics.refresh import default_definitions_dir
    from metrics.schedule import default_schedule_path, load_schedule

    root = definitions_dir or default_definitions_dir()
    try:
        return root, load_schedule(schedule_path or default_schedule_path(root), catalogue=load_catalogue(root),
                                   every_minute=every_minute)
    except DefinitionError as exc:
        _echo("the schedule or the definitions have errors:\n" + str(exc))
        sys.exit(2)


@main.command()
@_schedule_option
@_definitions_option
@click.option("--every-minute", is_flag=True, default=False,
              help="Run every job every minute, to try the service out (also OUTCOMES_SCHEDULE_EVERY_MINUTE=1).")
@click.option("--run-now", is_flag=True, default=False, help="Also run every job once as the service starts.")
def serve(schedule_path: Path | None, definitions_dir: Path | None, every_minute: bool, run_now: bool) -> None:
    """Run the scheduled refresh service in the foreground until SIGTERM or Ctrl+C (exit 0).

    Each source is refreshed on its cron schedule in definitions/schedule.yaml when its extracts
    change (otherwise the run is recorded as skipped); one refresh at a time, even with several
    services on one store; transient failures are retried with backoff. One line per event on
    stdout. Failures and new special-cause signals go to OUTCOMES_NOTIFY_COMMAND (event as JSON on
    stdin) and/or OUTCOMES_NOTIFY_WEBHOOK (POSTed as JSON). `python scheduler.py` is the same.

    Example: outcomes serve --every-minute
    """
    from metrics.service import EventLog, Notifier, RefreshService

    root, schedule = _load_schedule(schedule_path, definitions_dir, every_minute or None)
    log = EventLog()
    try:
        notifier = Notifier.from_environment(log)
    except ValueError as exc:
        _echo(str(exc))
        sys.exit(2)
    sys.exit(RefreshService(schedule, engine=_engine(), definitions_dir=root, log=log, notifier=notifier)
             .serve(run_now=run_now))


def _when(moment, zone: str | None = None) -> str:
    if moment is None:
        return "-"
    if zone:
        import zoneinfo

        return moment.astimezone(zoneinfo.ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@main.command()
@_schedule_option
@_definitions_option
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the status as JSON.")
def status(schedule_path: Path | None, definitions_dir: Path | None, as_json: bool) -> None:
    """Every scheduled job with its last run (time, outcome, duration, values, quarantined rows,
    error) and next run time, and which refresh holds the lease now.

    Example: outcomes status
    """
    import store
    from metrics.service import schedule_status

    root, schedule = _load_schedule(schedule_path, definitions_dir)
    engine = _engine()
    report = schedule_status(schedule, engine, definitions_dir=root)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo(f"store     {store.safe_url(engine)}")
    click.echo(f"extracts  {report['extracts']}   (schedule {report['schedule']}, {schedule.timezone})")
    lease = report["lease"]
    click.echo("lease     free" if lease is None else
               f"lease     {'EXPIRED, ' if lease['expired'] else ''}held by {lease['holder']} ({lease['purpose']}) "
               f"since {_when(lease['acquired_at'])}, heartbeat {_when(lease['heartbeat'])}, "
               f"expires {_when(lease['expires_at'])}")
    for job in report["jobs"]:
        click.echo("")
        click.echo(f"{job['job']:<22} {job['cron']:<18} {job['description']}")
        click.echo(f"  watches    {', '.join(job['watches'])}")
        for label, run in (("last run", job["last_run"]), ("published", job["last_published"])):
            if run is None:
                click.echo(f"  {label:<10} never")
                continue
            if label == "published" and job["last_run"] and run["run_id"] == job["last_run"]["run_id"]:
                continue
            duration = f", {run['duration_s']:.1f} s" if run["duration_s"] is not None else ""
            counts = (f", {run['values']:,} values, {run['quarantined']:,} rows quarantined"
                      if run["status"] == "published" else "")
            when = _when(run["finished_at"] or run["started_at"])
            click.echo(f"  {label:<10} run {run['run_id']} {run['status']} at {when}{duration}{counts}")
            if run["error"]:
                click.echo(f"  {'':<10} {'reason' if run['status'] == 'skipped' else 'error'}: {run['error']}")
        overdue = " (overdue: is the service running?)" if job["overdue"] else ""
        registered = "" if job["next_run_from"] == "service" else " (the service has not registered this job yet)"
        click.echo(f"  next run   {_when(job['next_run'], schedule.timezone)}{overdue}{registered}")


def _register_export() -> None:
    # The governance pack lives with its charts in metrics.export; the command is registered here.
    from metrics.export import export_command

    main.add_command(export_command)


_register_export()


if __name__ == "__main__":
    main()
