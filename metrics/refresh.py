"""The one orchestrator: load → validate → compute → publish. Used by the CLI, the scheduler and tests.

A refresh never publishes half a run. Structural problems in one source stop that source only: its
metrics are carried forward from the last published run (and the run says so), while every other
source refreshes. Anything unexpected fails the run, which is recorded as failed; the previous run
stays published.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from sqlalchemy import Engine

import store
from metrics.compute import OUTPUT_COLUMNS, compute_source
from metrics.definitions import Catalogue, MetricDefinition, load_catalogue
from metrics.errors import SourceError
from metrics.plan import build_plan
from metrics.benchmarks import read_fingertips
from metrics.judge import judge
from metrics.sources import LoadedSource, fingerprint_files, load_source

__all__ = ["refresh", "RefreshResult", "default_definitions_dir", "code_version", "definition_record"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_definitions_dir() -> Path:
    """``OUTCOMES_DEFINITIONS``, else ``definitions/`` in the checkout, else in the working directory."""
    if os.environ.get("OUTCOMES_DEFINITIONS"):
        return Path(os.environ["OUTCOMES_DEFINITIONS"])
    bundled = PROJECT_ROOT / "definitions"
    return bundled if bundled.is_dir() else Path.cwd() / "definitions"


_CODE_VERSION: str | None = None


def code_version() -> str:
    """Package version plus the git commit (and '-dirty' for uncommitted changes) when in a checkout."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        from metrics import __version__

        version = __version__
        try:
            sha = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            version += f"+g{sha}" + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = version
    return _CODE_VERSION


@dataclass
class RefreshResult:
    run_id: int
    status: str
    values: int
    quarantined: int
    sources: dict
    timings: dict
    failed_sources: list[str] = field(default_factory=list)
    carried_forward: list[str] = field(default_factory=list)


def definition_record(metric: MetricDefinition, root: str | Path | None = None) -> dict:
    """What the store keeps of a definition: the searchable fields plus every field as JSON."""
    body = metric.model_dump(mode="json", exclude={"file"})
    body["file"] = str(Path(metric.file).relative_to(root)) if root and metric.file.startswith(str(root)) else metric.file
    body["ci_method"] = metric.method
    return {"metric_id": metric.id, "version": metric.version, "content_hash": metric.content_hash,
            "title": metric.title, "outcome": metric.outcome, "value_type": metric.value_type,
            "unit": metric.unit, "polarity": metric.polarity, "body_json": json.dumps(body, sort_keys=True)}


def _source_summary(loaded: LoadedSource, seconds: float) -> dict:
    by_rule = (loaded.quarantine.group_by("rule").len().sort("rule").rows() if loaded.quarantine.height else [])
    return {"status": "ok", "files": loaded.files, "rows_read": loaded.rows_read, "rows_valid": loaded.rows_valid,
            "rows_quarantined": loaded.rows_quarantined, "rows_superseded": loaded.rows_superseded,
            "quarantined_by_rule": dict(by_rule), "seconds": round(seconds, 3)}


def refresh(data_dir: str | Path, *, definitions_dir: str | Path | None = None, engine: Engine | None = None,
            metrics: list[str] | None = None, as_of: dt.date | None = None, trigger: str = "cli",
            progress: Callable[[str], None] | None = None) -> RefreshResult:
    """Refresh every (or the named) metric from the extracts in ``data_dir`` and publish atomically."""
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    data_dir = Path(data_dir)
    definitions_dir = Path(definitions_dir or default_definitions_dir())
    catalogue = load_catalogue(definitions_dir)
    unknown = sorted(set(metrics or []) - set(catalogue.metrics))
    if unknown:
        raise ValueError(f"unknown metric(s): {', '.join(unknown)}; see `outcomes list`")
    engine = engine or store.get_engine()
    store.abandon_stale_runs(engine)
    as_of = as_of or dt.date.today()
    run_id = store.start_run(engine, trigger=trigger, data_dir=str(data_dir), code_version=code_version(),
                             as_of=as_of)
    say(f"run {run_id}: refreshing from {data_dir}")
    sources: dict[str, dict] = {}
    timings: dict[str, float] = {}
    try:
        result = _refresh(catalogue, definitions_dir, data_dir, engine, run_id, metrics, as_of, sources, timings, say)
        timings["total"] = round(time.perf_counter() - started, 3)
        store.record_timings(engine, run_id, timings)  # the write and total times are known only now
        return result
    except BaseException as exc:  # includes KeyboardInterrupt: record the failure, keep the last run
        timings["total"] = round(time.perf_counter() - started, 3)
        message = f"{type(exc).__name__}: {exc}"
        try:
            store.fail_run(engine, run_id, message, sources=sources, timings=timings)
        finally:
            say(f"run {run_id} failed: {message}")
        raise


def _benchmarks(data_dir: Path, catalogue: Catalogue, sources: dict, say: Callable[[str], None]) -> pl.DataFrame:
    """Benchmark values from Fingertips exports in ``benchmarks/`` (optional; a bad file is reported
    and skipped, as benchmarks only add comparisons)."""
    folder = data_dir / "benchmarks"
    if not folder.is_dir():
        return read_fingertips(folder, catalogue)
    files = sorted(folder.glob("*.csv"))
    try:
        frame = read_fingertips(folder, catalogue)
    except (ValueError, OSError) as exc:
        sources["benchmarks"] = {"status": "failed", "error": str(exc)}
        say(f"  benchmarks: FAILED — {exc}")
        return read_fingertips(folder / "-none-", catalogue)
    sources["benchmarks"] = {"status": "ok", "files": fingerprint_files(files), "rows_valid": frame.height}
    say(f"  benchmarks: {frame.height:,} benchmark values from {len(files)} Fingertips export(s)")
    return frame


def _refresh(catalogue: Catalogue, definitions_dir: Path, data_dir: Path, engine: Engine, run_id: int,
             metrics: list[str] | None, as_of: dt.date, sources: dict, timings: dict,
             say: Callable[[str], None]) -> RefreshResult:
    plan = build_plan(catalogue, metrics)
    tick = time.perf_counter()

    columns_needed = {p.source_id: p.columns for p in plan.sources}

    def load(source_id: str, known: list[str] | None) -> LoadedSource | None:
        started = time.perf_counter()
        try:
            loaded = load_source(catalogue.sources[source_id], data_dir, as_of=as_of, known_lsoas=known,
                                 columns=columns_needed.get(source_id))
        except SourceError as exc:
            sources[source_id] = {"status": "failed", "error": str(exc)}
            say(f"  {source_id}: FAILED — {exc}")
            return None
        sources[source_id] = _source_summary(loaded, time.perf_counter() - started)
        say(f"  {source_id}: {loaded.rows_valid:,} rows valid, {loaded.rows_quarantined:,} quarantined, "
            f"{loaded.rows_superseded:,} superseded ({time.perf_counter() - started:.1f} s)")
        return loaded

    lookup_ids = [s.id for s in catalogue.sources.values() if s.kind == "lookup"]
    geography = load(lookup_ids[0], None) if lookup_ids else None
    if lookup_ids and geography is None:
        raise SourceError(lookup_ids[0], f"the geography lookup could not be loaded: {sources[lookup_ids[0]]['error']}")
    known = geography.frame["lsoa_code"].to_list() if geography else None
    geo_frame = geography.frame if geography else None
    needed_populations = {s.population_source for p in plan.sources for s in p.steps if s.population_source}
    populations = {pid: load(pid, known) for pid in sorted(needed_populations)}
    timings["load_validate"] = round(time.perf_counter() - tick, 3)
    timings["compute"] = 0.0

    # One source at a time: load, validate, compute, then let its rows go, so peak memory is the
    # largest source rather than all of them together.
    values, failed, carried, quarantine = [], [], [], []
    for source_plan in plan.sources:
        tick = time.perf_counter()
        loaded = load(source_plan.source_id, known)
        timings["load_validate"] = round(timings["load_validate"] + time.perf_counter() - tick, 3)
        pops = {s.population_source for s in source_plan.steps if s.population_source}
        if loaded is None or any(populations.get(p) is None for p in pops):
            failed.append(source_plan.source_id)
            carried += [s.metric_id for s in source_plan.steps]
            continue
        quarantine.append(loaded.quarantine)
        tick = time.perf_counter()
        values.append(compute_source(source_plan, loaded.frame, catalogue, geography=geo_frame,
                                     populations={p: populations[p].frame for p in pops}))
        del loaded
        timings["compute"] = round(timings["compute"] + time.perf_counter() - tick, 3)
        say(f"  computed {len(source_plan.steps)} metric(s) on {source_plan.source_id} "
            f"({time.perf_counter() - tick:.1f} s)")

    previous = store.latest_run_id(engine)
    if carried and previous is not None:
        # The last good numbers stay visible for sources that failed this time; each value keeps
        # the id of the run that computed it.
        values.append(store.read_values(engine, metric=carried, run=previous, provenance=True).drop("run_id"))
    if not values:
        raise SourceError(", ".join(failed), "no source could be loaded; nothing to publish")
    combined = pl.concat([v if "computed_run_id" in v.columns else v.with_columns(pl.lit(run_id).alias("computed_run_id"))
                          for v in values], how="diagonal_relaxed")
    combined = combined.select([*OUTPUT_COLUMNS, "computed_run_id"])

    tick = time.perf_counter()
    benchmarks = _benchmarks(data_dir, catalogue, sources, say)
    judgements = judge(combined, catalogue, benchmarks=benchmarks)
    frames = {**judgements, "benchmarks": benchmarks}
    timings["judge"] = round(time.perf_counter() - tick, 3)

    tick = time.perf_counter()
    quarantine += [src.quarantine for src in [geography, *populations.values()] if src is not None]
    used = {m for m in plan.metric_ids() if m not in carried or previous is not None}
    definitions = [definition_record(catalogue.metrics[m], definitions_dir) for m in sorted(used)]
    versions = {m: {"version": catalogue.metrics[m].version, "content_hash": catalogue.metrics[m].content_hash}
                for m in sorted(used)}
    quarantine_frame = pl.concat(quarantine) if quarantine else None
    store.publish_run(engine, run_id, values=combined, definitions=definitions, quarantine=quarantine_frame,
                      sources=sources, timings=timings, definition_versions=versions, frames=frames)
    timings["write"] = round(time.perf_counter() - tick, 3)
    quarantined = quarantine_frame.height if quarantine_frame is not None else 0
    say(f"run {run_id} published: {combined.height:,} values, {quarantined:,} rows quarantined"
        + (f"; carried forward {', '.join(carried)} (source failed: {', '.join(failed)})" if carried else ""))
    return RefreshResult(run_id=run_id, status="published", values=combined.height, quarantined=quarantined,
                         sources=sources, timings=timings, failed_sources=failed, carried_forward=carried)
