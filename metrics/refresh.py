"""The one orchestrator: load → validate → compute → publish. Used by the CLI, the scheduler and tests.

A refresh never publishes half a run. Structural problems in one source stop that source only: its
metrics are carried forward from the last published run (and the run says so), while every other
source refreshes. Anything unexpected fails the run, which is recorded as failed; the previous run
stays published.

Exactly one refresh runs at a time: ``refresh`` takes the store's lease (``store.Lease``) for the
duration, or uses one its caller (the scheduler) already holds, and checks it is still held right
before publishing.

An incremental refresh (``incremental=True``, what the scheduler runs) compares the extracts and
definitions with what the last published run recorded (file hashes and sizes, definition content
hashes, the dimensions, the code version, the refresh date where it matters) and

- records a ``skipped`` run and publishes nothing when nothing it is responsible for changed;
- otherwise recomputes only the sources whose inputs changed (a changed geography lookup or
  population recomputes every metric that uses it), carries every other metric's values, quarantined
  rows and source record forward from the last published run (each value keeps the id of the run
  that computed it), judges the combined values afresh and publishes atomically.

The result is exactly what a full refresh of the same extracts would publish (tests/test_incremental.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from sqlalchemy import Engine

import store
import store.repository
from metrics.compute import (OUTPUT_COLUMNS, combine_partials, compute_source, finish_source, periods_changed,
                             source_partials)
from metrics.definitions import Catalogue, MetricDefinition, load_catalogue
from metrics.errors import SourceError
from metrics.plan import build_plan
from metrics import source_cache
from metrics.benchmarks import read_fingertips
from metrics.judge import inequality_indices, judge
from metrics.sources import (LoadedSource, estimated_rows, fingerprint_files, load_source, load_source_in_parts,
                             partition_key, source_files)

__all__ = ["refresh", "RefreshResult", "ExtractChanged", "RefreshCancelled", "default_definitions_dir", "code_version",
           "definition_record"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Keep each activity source's validated rows for the next incremental refresh (metrics.source_cache).
_CACHE_SOURCES = os.environ.get("OUTCOMES_SOURCE_CACHE", "on").lower() not in ("off", "0", "false", "no")


def _held_cache_budget() -> int:
    """Bytes of loaded sources a refresh may hold back to write their cache once each is computed,
    and within which the next source loads while one computes (``_refresh``): a tenth of the
    machine's memory (by Polars' estimate of a frame's size); 0 (neither) if unknown."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 10
    except (AttributeError, ValueError, OSError):
        return 0


#: Bytes a loaded row is taken to hold when sizing a source before it is read (the foundation's
#: sources hold 50-90: community contacts at scale 1, 3.4M rows in 271 MB).
_LOADED_ROW_BYTES = 200


def _load_second_early(catalogue: Catalogue, order: list, data_dir: Path, streamed: Collection[str],
                       budget: int) -> bool:
    """Whether the second source to compute should load beside the first (``_refresh``): only when
    neither is streamed and both, sized by their files (``estimated_rows``), fit the budget within
    which a source loads beside another's compute — so no two big sources are held at once."""
    if len(order) < 2 or {p.source_id for p in order[:2]} & set(streamed):
        return False
    try:
        rows = sum(estimated_rows(catalogue.sources[p.source_id], data_dir) for p in order[:2])
    except (SourceError, OSError):
        return False  # (the load reports it)
    return rows * _LOADED_ROW_BYTES <= budget


def _part_rows() -> tuple[int, int]:
    """(The most rows of one source a refresh holds at once, the rows of each part when it has
    more): a source with more is streamed through in parts (``metrics.sources.load_source_in_parts``).
    ``OUTCOMES_PART_ROWS`` sets both; else one row per 500 bytes of the machine's memory (47
    million on 24 GB: a whole load peaks near 200 bytes a row of its source, so it takes under half
    the memory), in parts of one row per 1,500 bytes (16 million: a part peaks near 350 bytes a
    row, as its rows are read back, validated and reduced, beside what the refresh holds already)."""
    if os.environ.get("OUTCOMES_PART_ROWS"):
        rows = max(1, int(os.environ["OUTCOMES_PART_ROWS"]))
        return rows, rows
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        memory = 24 * 2**30
    return memory // 500, memory // 1500


def _streamed(catalogue: Catalogue, plans: list, data_dir: Path, limits: tuple[int, int],
              populations: Collection[str]) -> dict[str, tuple[list[str], int]]:
    """The sources too big to hold, each with the column to split it by and how many parts."""
    held, part_rows = limits
    streamed = {}
    for source_plan in plans:
        source = catalogue.sources[source_plan.source_id]
        by = partition_key(source, {s.count_distinct for s in source_plan.steps if s.distinct})
        if by is None or source.id in populations:  # (a population is needed whole, by every source using it)
            continue
        try:
            rows = estimated_rows(source, data_dir)
        except (SourceError, OSError):
            continue  # (the load reports it)
        if rows > held:
            streamed[source.id] = (by, -(-rows // part_rows))
    return streamed


def default_definitions_dir() -> Path:
    """``OUTCOMES_DEFINITIONS``, else ``definitions/`` in the checkout, else in the working directory."""
    if os.environ.get("OUTCOMES_DEFINITIONS"):
        return Path(os.environ["OUTCOMES_DEFINITIONS"])
    bundled = PROJECT_ROOT / "definitions"
    return bundled if bundled.is_dir() else Path.cwd() / "definitions"


def cache_dir(engine: Engine) -> Path:
    """Where refreshes keep each source's validated rows (``metrics.source_cache``): next to a
    SQLite store's file, else ``OUTCOMES_CACHE_DIR``, else ``var/cache/<hash of the store's URL>``."""
    if os.environ.get("OUTCOMES_CACHE_DIR"):
        return Path(os.environ["OUTCOMES_CACHE_DIR"])
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        database = Path(url.database)
        return database.with_name(database.name + ".cache")
    digest = hashlib.sha256(store.safe_url(engine).encode()).hexdigest()[:12]
    return store.default_sqlite_path().parent / "cache" / digest


def spill_dir(engine: Engine) -> Path:
    """Where a streamed source's files are split into parts while it loads (``load_source_in_parts``):
    ``OUTCOMES_SPILL_DIR``, else a folder beside the source cache (``cache_dir``), on the store's
    disk rather than in a temporary folder that may be held in memory."""
    if os.environ.get("OUTCOMES_SPILL_DIR"):
        return Path(os.environ["OUTCOMES_SPILL_DIR"])
    folder = cache_dir(engine)
    return folder.with_name(folder.name + ".spill")


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


class ExtractChanged(RuntimeError):
    """An extract file changed while it was being read (still being written): nothing is published;
    try again once it has settled."""


class RefreshCancelled(RuntimeError):
    """The refresh was asked to stop (the service is shutting down) before it published."""


@dataclass
class RefreshResult:
    run_id: int
    status: str                 # published | skipped
    values: int
    quarantined: int
    sources: dict
    timings: dict
    failed_sources: list[str] = field(default_factory=list)
    carried_forward: list[str] = field(default_factory=list)  # metrics of failed sources, from the last run
    recomputed: list[str] = field(default_factory=list)       # sources computed afresh in this run
    reused: list[str] = field(default_factory=list)           # metrics whose inputs were unchanged (incremental)
    based_on: int | None = None                               # incremental: the published run compared with
    reason: str = ""                                          # what changed, or why nothing was published


def definition_record(metric: MetricDefinition, root: str | Path | None = None) -> dict:
    """What the store keeps of a definition: the searchable fields plus every field as JSON."""
    body = metric.model_dump(mode="json", exclude={"file"})
    body["file"] = str(Path(metric.file).relative_to(root)) if root and metric.file.startswith(str(root)) else metric.file
    body["ci_method"] = metric.method
    return {"metric_id": metric.id, "version": metric.version, "content_hash": metric.content_hash,
            "title": metric.title, "outcome": metric.outcome, "value_type": metric.value_type,
            "unit": metric.unit, "polarity": metric.polarity, "body_json": json.dumps(body, sort_keys=True)}


def _identity(catalogue: Catalogue, source_id: str, as_of: dt.date) -> dict:
    """What a source's result depends on besides its files: recorded so an incremental refresh can compare."""
    return {"definition_hash": catalogue.sources[source_id].content_hash,
            "dimensions_hash": catalogue.dimensions.content_hash, "as_of": as_of.isoformat()}


def _source_summary(loaded: LoadedSource, seconds: float, identity: dict) -> dict:
    return {"status": "ok", "files": loaded.files, "files_read": loaded.files_read,
            "rows_read": loaded.rows_read, "rows_valid": loaded.rows_valid,
            "rows_quarantined": loaded.rows_quarantined, "rows_superseded": loaded.rows_superseded,
            "quarantined_by_rule": loaded.quarantined_by_rule(), "seconds": round(seconds, 3), **identity}


def _recorded_quarantine(summary: dict | None) -> dict[str, int] | None:
    """A source's quarantine records per rule as a run recorded them, if they add up to its count."""
    by_rule = (summary or {}).get("quarantined_by_rule")
    if not isinstance(by_rule, dict) or sum(by_rule.values()) != (summary or {}).get("rows_quarantined"):
        return None
    return {str(rule): int(n) for rule, n in by_rule.items()}


def _current_files(catalogue: Catalogue, source_id: str, data_dir: Path,
                   known: list[dict] | None = None) -> list[dict] | None:
    """Content hash and size of a source's files now; None when they can't be listed (missing folder).
    ``known``: earlier fingerprints, reused for files whose size and modification time are unchanged."""
    try:
        return fingerprint_files(source_files(catalogue.sources[source_id], data_dir), known)
    except (SourceError, OSError):
        return None


def _stat(catalogue: Catalogue, source_id: str, data_dir: Path) -> list[tuple] | None:
    """Name, size and modification time of a source's files: compared before and after reading them."""
    try:
        return [(p.name, p.stat().st_size, p.stat().st_mtime_ns)
                for p in source_files(catalogue.sources[source_id], data_dir)]
    except (SourceError, OSError):
        return None


def _same_files(previous: list[dict] | None, current: list[dict] | None) -> bool:
    def key(files):
        return None if files is None else sorted((f["file"], f["bytes"], f["sha256"]) for f in files)
    return key(previous) == key(current)


def refresh(data_dir: str | Path, *, definitions_dir: str | Path | None = None, engine: Engine | None = None,
            metrics: list[str] | None = None, as_of: dt.date | None = None, trigger: str = "cli",
            progress: Callable[[str], None] | None = None, incremental: bool = False,
            scope: Collection[str] | None = None, lease: store.Lease | bool = True,
            cancel: threading.Event | None = None) -> RefreshResult:
    """Refresh every (or the named) metric from the extracts in ``data_dir`` and publish atomically.

    ``incremental``: compare with the last published run; recompute only what changed (or record a
    ``skipped`` run when nothing did). ``scope``: the sources an incremental refresh is responsible
    for (default all): changed files of other sources wait for their own refresh, while changed
    definitions, geography or populations are always picked up. ``lease``: True takes the store's
    refresh lease for the duration (raising ``store.LeaseHeld`` at once if another refresh holds it);
    a ``store.Lease`` the caller holds is used as it is. ``cancel``: an event that, once set, stops the
    refresh at its next checkpoint before publishing (``RefreshCancelled``).
    """
    say = progress or (lambda _message: None)
    started = time.perf_counter()
    data_dir = Path(data_dir)
    definitions_dir = Path(definitions_dir or default_definitions_dir())
    catalogue = load_catalogue(definitions_dir)
    unknown = sorted(set(metrics or []) - set(catalogue.metrics))
    if unknown:
        raise ValueError(f"unknown metric(s): {', '.join(unknown)}; see `outcomes list`")
    if incremental and metrics:
        raise ValueError("an incremental refresh covers every metric: don't name metrics")
    unknown = sorted(set(scope or []) - set(catalogue.sources))
    if unknown:
        raise ValueError(f"unknown source(s) in scope: {', '.join(unknown)}")
    engine = engine or store.get_engine()
    own_lease = None
    if lease is True:
        own_lease = lease = store.Lease(engine, purpose=trigger)
        lease.acquire_or_raise()
    try:
        return _refresh_holding_lease(catalogue, definitions_dir, data_dir, engine, metrics, as_of, trigger, say,
                                      incremental, scope, lease or None, cancel, started)
    finally:
        if own_lease is not None:
            own_lease.release()


def _refresh_holding_lease(catalogue: Catalogue, definitions_dir: Path, data_dir: Path, engine: Engine,
                           metrics: list[str] | None, as_of: dt.date | None, trigger: str, say: Callable[[str], None],
                           incremental: bool, scope: Collection[str] | None, lease: store.Lease | None,
                           cancel: threading.Event | None, started: float) -> RefreshResult:
    # The last run's pages go from the write-ahead log into the store's file now (commits don't:
    # ``store.checkpoint``), on a thread that isn't waited for: it mostly waits for the disk (if the
    # last run wrote its source cache just before, that too) while this one reads and computes, and
    # a checkpoint cut short by the process ending is safe (the rest is copied next time).
    threading.Thread(target=_checkpoint, args=(engine,), name="checkpoint", daemon=True).start()
    store.abandon_stale_runs(engine, lease_held=lease is not None)
    as_of = as_of or dt.date.today()
    decision = _decide(catalogue, build_plan(catalogue, metrics), data_dir, engine, as_of, scope) if incremental \
        else None
    if decision is not None and not decision.publish:
        seconds = time.perf_counter() - started
        run_id = store.record_skipped_run(engine, trigger=trigger, data_dir=str(data_dir), code_version=code_version(),
                                          as_of=as_of, sources=decision.checked, reason=decision.reason,
                                          seconds=seconds)
        say(f"run {run_id} skipped: {decision.reason}")
        return RefreshResult(run_id=run_id, status="skipped", values=0, quarantined=0, sources=decision.checked,
                             timings={"total": round(seconds, 3)}, based_on=decision.previous_id,
                             reason=decision.reason)
    run_id = store.start_run(engine, trigger=trigger, data_dir=str(data_dir), code_version=code_version(),
                             as_of=as_of)
    say(f"run {run_id}: refreshing from {data_dir}" + (f" ({decision.reason})" if decision else ""))
    sources: dict[str, dict] = {}
    timings: dict[str, float] = {}
    try:
        result = _refresh(catalogue, definitions_dir, data_dir, engine, run_id, metrics, as_of, sources, timings, say,
                          decision=decision, lease=lease, cancel=cancel)
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


def _checkpoint(engine: Engine) -> None:
    """``store.checkpoint``, best effort: what isn't copied now is copied next time."""
    try:
        store.checkpoint(engine)
    except Exception:  # noqa: BLE001 (e.g. the database busy for longer than its timeout)
        pass


@dataclass
class _Decision:
    """What an incremental refresh found: which sources to recompute, against which published run."""

    previous_id: int | None
    previous_sources: dict
    recompute: set[str] | None  # activity sources to compute afresh; None: all of them
    publish: bool
    reason: str
    checked: dict = field(default_factory=dict)  # the fingerprints looked at (recorded on a skipped run)
    # Sources whose own files are all that changed: only the periods their changed rows fall in
    # need computing (when the files were appended to, so the changed rows are known).
    files_only: set[str] = field(default_factory=set)


def _input_change(catalogue: Catalogue, source_id: str, summary: dict | None, current: list[dict] | None,
                  as_of: dt.date) -> tuple[str, str] | None:
    """How a source's inputs differ from what a published run recorded: (kind, why), or None if the
    same. Kinds: ``definition`` (its definition or the dimensions), ``files``, ``as_of``."""
    if summary is None:
        return "definition", "not in the last run"
    if summary.get("definition_hash") != catalogue.sources[source_id].content_hash:
        return "definition", "its definition changed"
    if summary.get("dimensions_hash") != catalogue.dimensions.content_hash:
        return "definition", "dimensions.yaml changed"
    if not _same_files(summary.get("files"), current):
        before = {f["file"]: f["sha256"] for f in summary.get("files") or []}
        now = {f["file"]: f["sha256"] for f in current or []}
        new = sorted(set(now) - set(before))
        changed = sorted(f for f in set(now) & set(before) if now[f] != before[f])
        gone = sorted(set(before) - set(now))
        parts = [f"{label} {', '.join(files)}" for label, files in (("new", new), ("changed", changed),
                                                                   ("removed", gone)) if files]
        return "files", "files " + ("; ".join(parts) if parts else "changed")
    if summary.get("status") == "ok" and summary.get("as_of") != as_of.isoformat():
        # The refresh date only matters to 'not in the future' checks: moving it later changes nothing
        # unless the last run quarantined rows as being in the future.
        previous = dt.date.fromisoformat(summary["as_of"]) if summary.get("as_of") else None
        future = any("future_date" in rule.split("; ") for rule in summary.get("quarantined_by_rule", {}))
        if previous is None or as_of < previous or future:
            return "as_of", f"the refresh date moved from {previous} to {as_of}"
    return None


def _decide(catalogue: Catalogue, plan, data_dir: Path, engine: Engine, as_of: dt.date,
            scope: Collection[str] | None) -> _Decision:
    previous = store.read_run(engine, "latest")
    if previous is None:
        return _Decision(None, {}, None, True, "no published run yet: a full refresh")
    if previous["code_version"] != code_version():
        return _Decision(previous["id"], previous["sources"], None, True,
                         f"the code changed ({previous['code_version']} → {code_version()}): a full refresh")
    prev_sources, prev_definitions = previous["sources"], previous["definitions"]
    checked: dict[str, dict] = {}

    def change(source_id: str) -> tuple[str, str] | None:
        current = _current_files(catalogue, source_id, data_dir, (prev_sources.get(source_id) or {}).get("files"))
        checked[source_id] = {"files": current}
        return _input_change(catalogue, source_id, prev_sources.get(source_id), current, as_of)

    reasons: list[str] = []
    recompute: set[str] = set()
    activity = [p.source_id for p in plan.sources]
    lookups = [s.id for s in catalogue.sources.values() if s.kind == "lookup"]
    if lookups and (why := change(lookups[0])):
        reasons.append(f"{lookups[0]}: {why[1]}")
        recompute |= set(activity)
    populations = sorted({s.population_source for p in plan.sources for s in p.steps if s.population_source})
    for population in populations:
        if why := change(population):
            reasons.append(f"{population}: {why[1]}")
            recompute |= {p.source_id for p in plan.sources if any(s.population_source == population for s in p.steps)}
    waiting, files_only = [], set()
    for source_plan in plan.sources:
        source_id = source_plan.source_id
        # A metric whose source has never loaded was not published at all: that is no change.
        never_loaded = (prev_sources.get(source_id) or {}).get("status") == "failed"
        edited = [s.metric_id for s in source_plan.steps
                  if (s.metric_id in prev_definitions or not never_loaded)
                  and (prev_definitions.get(s.metric_id) or {}).get("content_hash")
                  != catalogue.metrics[s.metric_id].content_hash]
        if edited:
            reasons.append(f"{source_id}: definition of {', '.join(edited)} changed or new")
            recompute.add(source_id)
        why = change(source_id)
        if why is None:
            continue
        if why[0] == "definition" or scope is None or source_id in scope:
            reasons.append(f"{source_id}: {why[1]}")
            if why[0] == "files" and source_id not in recompute:
                files_only.add(source_id)
            recompute.add(source_id)
        else:
            waiting.append(source_id)  # changed, but another schedule refreshes it
    benchmarks = _benchmark_files(data_dir)
    checked["benchmarks"] = {"files": benchmarks}
    if not _same_files((prev_sources.get("benchmarks") or {}).get("files"), benchmarks) and (
            benchmarks or prev_sources.get("benchmarks")):
        reasons.append("benchmarks changed")
    dropped = sorted(set(prev_definitions) - set(plan.metric_ids()))
    if dropped:
        reasons.append(f"metric(s) no longer published: {', '.join(dropped)}")
    note = f" ({', '.join(waiting)} changed: left for its own schedule)" if waiting else ""
    if not reasons:
        return _Decision(previous["id"], prev_sources, set(), False,
                         f"nothing changed since run {previous['id']}{note}", checked)
    return _Decision(previous["id"], prev_sources, recompute, True, "; ".join(reasons) + note, checked, files_only)


def _benchmark_files(data_dir: Path) -> list[dict] | None:
    folder = data_dir / "benchmarks"
    return fingerprint_files(sorted(folder.glob("*.csv"))) if folder.is_dir() else None


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
        sources["benchmarks"] = {"status": "failed", "error": str(exc), "files": _benchmark_files(data_dir)}
        say(f"  benchmarks: FAILED — {exc}")
        return read_fingertips(folder / "-none-", catalogue)
    sources["benchmarks"] = {"status": "ok", "files": fingerprint_files(files), "rows_valid": frame.height}
    say(f"  benchmarks: {frame.height:,} benchmark values from {len(files)} Fingertips export(s)")
    return frame


def _inequality_indices(computed: pl.DataFrame, run_id: int, catalogue: Catalogue) -> pl.DataFrame:
    """The SIIs of one source's newly computed values, from the values as they will be judged (only
    the deprivation breakdown's: ``_canonical`` works row by row, so they are the same rows)."""
    quintiles = computed.filter(pl.col("breakdown") == "imd_quintile")
    return inequality_indices(_canonical(quintiles.with_columns(pl.lit(run_id).alias("computed_run_id"))), catalogue)


@contextlib.contextmanager
def _worker(name: str, threads: int = 1) -> Iterator[ThreadPoolExecutor]:
    """Background thread(s). Leaving waits for their work; leaving on an error (a stop, a source
    that changed while read) waits only for the jobs running: queued ones are dropped."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _raise_if_failed(jobs: list[Future]) -> None:
    """Raise the error of the first of ``jobs`` that has finished with one."""
    for job in jobs:
        if job.done() and not job.cancelled() and job.exception() is not None:
            raise job.exception()


def _canonical(values: pl.DataFrame) -> pl.DataFrame:
    """Values as the store keeps them (its column types, NaN as missing), in one order: what is judged
    and published is then the same whether a value was computed now or carried from an earlier run."""
    schema = store.repository.VALUE_SCHEMA
    floats = [c for c, t in schema.items() if t == pl.Float64]
    return (values.select(*[pl.col(c).cast(t) for c, t in schema.items()], pl.col("computed_run_id").cast(pl.Int64))
            .with_columns(pl.col(floats).fill_nan(None))
            .sort("metric_id", "place", "period_type", "breakdown", "group", "period_start", "period_end"))


def _refresh(catalogue: Catalogue, definitions_dir: Path, data_dir: Path, engine: Engine, run_id: int,
             metrics: list[str] | None, as_of: dt.date, sources: dict, timings: dict,
             say: Callable[[str], None], *, decision: _Decision | None = None, lease: store.Lease | None = None,
             cancel: threading.Event | None = None) -> RefreshResult:
    plan = build_plan(catalogue, metrics)
    tick = time.perf_counter()

    def checkpoint() -> None:
        if cancel is not None and cancel.is_set():
            raise RefreshCancelled("the refresh was stopped before it published (the service is shutting down)")

    # An incremental refresh computes only the sources whose inputs changed; every other source's
    # values, quarantined rows and record come from the published run it was compared with.
    recompute = None if decision is None else decision.recompute
    fresh = [p for p in plan.sources if recompute is None or p.source_id in recompute]
    reused = [p for p in plan.sources if recompute is not None and p.source_id not in recompute]
    previous_sources = decision.previous_sources if decision else {}
    columns_needed = {p.source_id: p.columns for p in plan.sources}

    def load(source_id: str, known: list[str] | None, cached: bool = False,
             on_part: Callable[[list[pl.DataFrame]], None] | None = None) -> LoadedSource | None:
        """A source loaded, or None if it failed; with ``on_part``, streamed through in parts
        (``streamed``) that are handed to it."""
        checkpoint()
        started = time.perf_counter()
        identity = _identity(catalogue, source_id, as_of)
        before = _stat(catalogue, source_id, data_dir)
        cached = cached and _CACHE_SOURCES
        depends_on = {**identity, "columns": list(columns_needed.get(source_id) or []), "code": code_version(),
                      "lsoas": lsoa_digest} if cached else {}
        previous_load = None
        if cached and decision is not None and decision.previous_id is not None:
            # The earlier run's quarantined rows of this source stay as they are (a load from the
            # cache only adds records): the store shares them with this run when it is published.
            previous_load = source_cache.load(
                cache_dir(engine), source_id, depends_on, previous_sources.get(source_id),
                lambda: _recorded_quarantine(previous_sources.get(source_id)))
        try:
            known_files = (decision.checked.get(source_id) or {}).get("files") if decision is not None else None
            if on_part is not None:
                by, parts = streamed[source_id]
                loaded = load_source_in_parts(catalogue.sources[source_id], data_dir, by=by, parts=parts,
                                              on_part=on_part, as_of=as_of, known_lsoas=known,
                                              columns=columns_needed.get(source_id), known_files=known_files,
                                              spill_dir=spill_dir(engine))
            else:
                loaded = load_source(catalogue.sources[source_id], data_dir, as_of=as_of, known_lsoas=known,
                                     columns=columns_needed.get(source_id), previous=previous_load,
                                     known_files=known_files)
        except SourceError as exc:
            _unchanged_while_read(catalogue, source_id, data_dir, before)
            sources[source_id] = {"status": "failed", "error": str(exc),
                                  "files": _current_files(catalogue, source_id, data_dir), **identity}
            say(f"  {source_id}: FAILED — {exc}")
            return None
        _unchanged_while_read(catalogue, source_id, data_dir, before)
        if loaded.changed_rows is not None:  # started from the cached load: its quarantine is the last run's
            quarantine_carried.append(source_id)
        if cached:
            # Writing the cache while the source itself computes slowed it: at scale 1, community
            # contacts' 426 MB made the refresh 0.15-0.35 s slower (4-9%, 8 interleaved runs each).
            # It is written once the source is computed, while the next source (or the judge and the
            # store) runs. Holding the rows until then costs memory, so up to a budget only; bigger
            # sources are written at once.
            with holding:  # (two loads may finish at once)
                keep = loaded.frame_bytes + sum(held.frame_bytes for held, _ in held_for_cache.values()) <= held_cache_budget
                if keep:
                    held_for_cache[source_id] = (loaded, depends_on)
            if not keep:
                write_cache(loaded, depends_on)
        sources[source_id] = _source_summary(loaded, time.perf_counter() - started, identity)
        if loaded.parts:
            sources[source_id]["parts"] = loaded.parts
        say(f"  {source_id}: {loaded.rows_valid:,} rows valid, {loaded.rows_quarantined:,} quarantined, "
            f"{loaded.rows_superseded:,} superseded ({time.perf_counter() - started:.1f} s"
            + (f", in {loaded.parts} parts)" if loaded.parts else ")"))
        return loaded

    def reuse(source_id: str) -> None:
        summary = dict(previous_sources.get(source_id) or {"status": "failed", "error": "not in the last run"})
        summary.setdefault("carried_from_run", decision.previous_id)
        sources[source_id] = summary
        if decision.previous_id is not None:
            quarantine_carried.append(source_id)

    def write_cache(loaded: LoadedSource, depends_on: dict) -> None:
        writer = threading.Thread(target=source_cache.save, args=(cache_dir(engine), loaded, depends_on),
                                  name=f"cache-{loaded.source.id}", daemon=True)
        writer.start()
        cache_writers.append(writer)

    values, failed, carried, quarantine = [], [], [], []
    quarantine_carried: list[str] = []  # sources whose quarantined rows include the last run's (shared in the store)
    cache_writers: list[threading.Thread] = []
    held_for_cache: dict[str, tuple[LoadedSource, dict]] = {}  # (loaded, depends_on) by source: written once computed
    held_cache_budget = _held_cache_budget()
    holding = threading.Lock()  # (held_for_cache's budget, checked and taken by one load at a time)
    lookup_ids = [s.id for s in catalogue.sources.values() if s.kind == "lookup"]
    geography = None
    if lookup_ids and fresh:
        geography = load(lookup_ids[0], None)
        if geography is None:
            raise SourceError(lookup_ids[0],
                              f"the geography lookup could not be loaded: {sources[lookup_ids[0]]['error']}")
    elif lookup_ids:
        reuse(lookup_ids[0])
    known = geography.frame["lsoa_code"].to_list() if geography else None
    # What the cached rows' LSOA checks depended on (metrics.source_cache), worked out once.
    lsoa_digest = hashlib.sha256("\n".join(sorted(known or [])).encode()).hexdigest()
    geo_frame = geography.frame if geography else None
    needed_populations = {s.population_source for p in fresh for s in p.steps if s.population_source}
    populations = {pid: load(pid, known) for pid in sorted(needed_populations)}
    for pid in sorted({s.population_source for p in reused for s in p.steps if s.population_source}
                      - needed_populations):
        reuse(pid)
    timings["load_validate"] = round(time.perf_counter() - tick, 3)
    timings["compute"] = 0.0
    # Sources too big to hold are streamed through in parts, each reduced to partial sums as it is
    # loaded (``source_partials``), so memory follows the part, not the source.
    streamed = _streamed(catalogue, fresh, data_dir, _part_rows(), needed_populations)
    if streamed:  # (what a refresh that was killed while streaming left: the lease says none is running)
        for left in spill_dir(engine).glob("spill-*"):
            shutil.rmtree(left, ignore_errors=True)

    # The judge's thread takes work as soon as there is some: each source's SIIs (the slowest part
    # of judging) while the next source loads, then the judgements, while the store writes.
    simulated: list[Future[pl.DataFrame]] = []
    quarantine_of: dict[str, pl.DataFrame] = {}
    # (Leaving waits for the loader and the judge; on an error, not for the SIIs still queued.)
    # (Two loader threads: the second source may load beside the first, ``_load_second_early``.)
    with _worker("judge") as judging, _worker("load", 2) as loading:
        # Benchmarks are read on the judge's thread while the first source loads, not at the end,
        # where everything waits for them (0.05 s at scale 1); the judge needs them last.
        benchmarks_read = judging.submit(_benchmarks, data_dir, catalogue, sources, say)
        # Each source is loaded, validated and computed, then its rows let go, so peak memory is the
        # largest source rather than all of them together. The next source loads while one computes
        # (neither keeps both cores busy on its own) when the one computing is small (as the cache's
        # budget); after a bigger one, it waits, so that no two big sources are held at once.
        # Sources with the most deprivation breakdowns first: their SIIs (the judge's slowest part)
        # are simulated while later sources load, not after the last one, when nothing else is left.
        order = sorted(fresh, key=lambda p: -sum("imd_quintile" in s.breakdowns for s in p.steps))
        upcoming: Future[LoadedSource | None] | None = None
        # Nothing computes while the first source loads: when the first two sources are small,
        # the second starts loading beside it rather than once it is done, so that its load (often
        # the biggest) is not all waited for.
        second = None
        if _load_second_early(catalogue, order, data_dir, streamed, held_cache_budget):
            upcoming = loading.submit(load, order[0].source_id, known, True)
            second = loading.submit(load, order[1].source_id, known, True)
        for position, source_plan in enumerate(order):
            tick = time.perf_counter()
            partials, reducing = [], [0.0]  # a streamed source's parts' partials so far; seconds spent reducing them

            def reduce_part(rows: list[pl.DataFrame], source_plan=source_plan, partials=partials,
                            reducing=reducing) -> None:
                started = time.perf_counter()
                frame = rows.pop()
                reduced = source_partials(source_plan, frame, catalogue, geography=geo_frame)
                del frame  # (the part's rows, GBs at national scale, go as soon as they are reduced)
                # Added into one running total as each part comes (a part's sums are its slices:
                # thousands of rows, however many its cells).
                partials[:] = [combine_partials([*partials, reduced])]
                reducing[0] += time.perf_counter() - started

            if source_plan.source_id in streamed:  # (loaded and reduced part by part, here)
                loaded = load(source_plan.source_id, known, False, on_part=reduce_part)
            else:
                if upcoming is None:
                    upcoming = loading.submit(load, source_plan.source_id, known, True)
                loaded, upcoming = upcoming.result(), None
            # (Only the time waited for a load counts: a load beside a compute isn't counted twice.)
            timings["load_validate"] = round(timings["load_validate"] + time.perf_counter() - tick - reducing[0], 3)
            timings["compute"] = round(timings["compute"] + reducing[0], 3)
            # The next source loads beside this one's compute only if neither is streamed (a streamed
            # source's parts are as big as memory allows).
            if second is not None:  # (the second source is loading already)
                upcoming, second = second, None
            elif (position + 1 < len(order) and not {source_plan.source_id, order[position + 1].source_id} & set(streamed)
                    and (loaded is None or loaded.frame_bytes <= held_cache_budget)):
                upcoming = loading.submit(load, order[position + 1].source_id, known, True)
            pops = {s.population_source for s in source_plan.steps if s.population_source}
            if loaded is None or any(populations.get(p) is None for p in pops):
                failed.append(source_plan.source_id)
                continue
            quarantine_of[source_plan.source_id] = loaded.quarantine
            tick = time.perf_counter()
            only = None
            if (decision is not None and decision.previous_id is not None and loaded.changed_rows is not None
                    and source_plan.source_id in decision.files_only):
                # Files were appended to and nothing else changed: recompute only the periods the added
                # (or replaced) rows fall in; every other period's values stay those of the last run.
                only = periods_changed(source_plan, loaded.changed_rows)
                metric_ids = [s.metric_id for s in source_plan.steps]
                earlier = store.read_values(engine, metric=metric_ids, run=decision.previous_id, provenance=True)
                values.append(earlier.drop("run_id").join(only, on=["metric_id", "period_type", "period_start",
                                                                    "period_end"], how="anti"))
                sources[source_plan.source_id]["periods_recomputed"] = only.height
            if partials:  # (streamed: the parts' partials, finished as one)
                computed = finish_source(source_plan, partials[0], catalogue, geography=geo_frame,
                                         populations={p: populations[p].frame for p in pops})
                partials.clear()
            elif only is None or only.height:
                computed = compute_source(source_plan, loaded.frame, catalogue, geography=geo_frame,
                                          populations={p: populations[p].frame for p in pops}, only=only)
            else:
                computed = None
            if computed is not None:
                values.append(computed)
                _raise_if_failed(simulated)  # (an earlier source's SIIs: fail now, not after every load)
                simulated.append(judging.submit(_inequality_indices, computed, run_id, catalogue))
            del loaded
            if source_plan.source_id in held_for_cache:  # (the next source's load may have added its own)
                write_cache(*held_for_cache.pop(source_plan.source_id))
            timings["compute"] = round(timings["compute"] + time.perf_counter() - tick, 3)
            say(f"  computed {len(source_plan.steps)} metric(s) on {source_plan.source_id} "
                f"({time.perf_counter() - tick:.1f} s)")
        for loaded, depends_on in held_for_cache.values():  # (sources not computed: a population failed)
            write_cache(loaded, depends_on)
        held_for_cache.clear()
        # What is reported and stored keeps the plan's order of sources, whatever order they ran in.
        ran = [p.source_id for p in fresh]
        failed.sort(key=ran.index)
        carried = [s.metric_id for p in fresh if p.source_id in failed for s in p.steps]
        benchmarks = benchmarks_read.result()
        sources.update({source_id: sources.pop(source_id) for source_id in ran if source_id in sources})
        quarantine = [quarantine_of[source_id] for source_id in ran if source_id in quarantine_of]
        reused_metrics = [s.metric_id for p in reused for s in p.steps]
        for source_plan in reused:
            reuse(source_plan.source_id)
        if "benchmarks" in sources:  # (recorded after the sources, as they were read before)
            sources["benchmarks"] = sources.pop("benchmarks")
        if reused:
            say(f"  unchanged since run {decision.previous_id}: {', '.join(p.source_id for p in reused)} "
                f"({len(reused_metrics)} metric(s) carried forward)")

        previous = decision.previous_id if decision else store.latest_run_id(engine)
        if (carried or reused_metrics) and previous is not None:
            # The last good numbers stay visible for sources that failed this time (and, in an incremental
            # refresh, for sources that did not change); each value keeps the id of the run that computed it.
            values.append(store.read_values(engine, metric=carried + reused_metrics, run=previous,
                                            provenance=True).drop("run_id"))
        if not values:
            raise SourceError(", ".join(failed), "no source could be loaded; nothing to publish")
        combined = pl.concat([v if "computed_run_id" in v.columns else v.with_columns(pl.lit(run_id).alias("computed_run_id"))
                              for v in values], how="diagonal_relaxed")
        combined = _canonical(combined.select([*OUTPUT_COLUMNS, "computed_run_id"]))

        checkpoint()
        tick = time.perf_counter()
        earlier, carried_periods = {}, None
        if decision is not None and decision.previous_id is not None:
            # Values carried from the last run keep the judgements they had there: whole unchanged
            # metrics their SPC, and every carried period its SII.
            carried_periods = (combined.filter(pl.col("computed_run_id") != run_id)
                               .select("metric_id", "period_type", "period_start", "period_end").unique())
            needed = (["spc"] if reused_metrics else []) + (["inequalities"] if reused_metrics or carried_periods.height else [])
            earlier = {name: store.read_frame(engine, name, decision.previous_id) for name in needed}

        def judged() -> dict[str, pl.DataFrame]:
            judgements = judge(combined, catalogue, benchmarks=benchmarks, earlier=earlier, unchanged=reused_metrics,
                               unchanged_periods=carried_periods, indices=[done.result() for done in simulated])
            timings["judge"] = round(time.perf_counter() - tick, 3)
            return {**judgements, "benchmarks": benchmarks}

        # The values are final: the store writes them (and the quarantined rows) while they are judged
        # on another thread; the judgements go into the same transaction when they are ready. SQLite
        # writes on one core, the judge's simulations and Polars mostly on the other.
        judgements = judging.submit(judged)

        def judged_then_checkpoint() -> dict[str, pl.DataFrame]:
            frames = judgements.result()
            checkpoint()  # a stop asked for while judging: raising here rolls the transaction back
            return frames

        quarantine += [src.quarantine for src in [geography, *populations.values()] if src is not None]
        used = {m for m in plan.metric_ids() if m not in carried + reused_metrics or previous is not None}
        definitions = [definition_record(catalogue.metrics[m], definitions_dir) for m in sorted(used)]
        versions = {m: {"version": catalogue.metrics[m].version, "content_hash": catalogue.metrics[m].content_hash}
                    for m in sorted(used)}
        quarantine_frame = pl.concat(quarantine, how="vertical_relaxed") if quarantine else None
        write_tick = time.perf_counter()
        checkpoint()
        if lease is not None:
            lease.check()  # renewed just now: nobody else can have started refreshing
        counts = store.publish_run(engine, run_id, values=combined, definitions=definitions,
                                   quarantine=quarantine_frame, sources=sources, timings=timings,
                                   definition_versions=versions, frames=judged_then_checkpoint,
                                   quarantine_from=(decision.previous_id, quarantine_carried) if quarantine_carried else None,
                                   values_from=(previous, carried + reused_metrics) if previous is not None else None)
    # (Includes waiting for the judge to finish: the two stages overlap.)
    timings["write"] = round(time.perf_counter() - write_tick, 3)
    for writer in cache_writers:  # before the lease goes: the next refresh may read what they write
        writer.join()
    quarantined = counts["quarantined"]
    say(f"run {run_id} published: {combined.height:,} values, {quarantined:,} rows quarantined"
        + (f"; carried forward {', '.join(carried)} (source failed: {', '.join(failed)})" if carried else ""))
    return RefreshResult(run_id=run_id, status="published", values=combined.height, quarantined=quarantined,
                         sources=sources, timings=timings, failed_sources=failed, carried_forward=carried,
                         recomputed=[p.source_id for p in fresh], reused=reused_metrics,
                         based_on=decision.previous_id if decision else None,
                         reason=decision.reason if decision else "full refresh")


def _unchanged_while_read(catalogue: Catalogue, source_id: str, data_dir: Path, before: list[tuple] | None) -> None:
    """Raise ``ExtractChanged`` if a source's files changed (size, time or set of files) while read."""
    after = _stat(catalogue, source_id, data_dir)
    if after != before:
        changed = sorted({entry[0] for entry in set(before or []) ^ set(after or [])})
        raise ExtractChanged(f"source '{source_id}': {', '.join(changed) or 'its files'} changed while being read "
                             "(still being written?); nothing was published — try again once it has settled")
