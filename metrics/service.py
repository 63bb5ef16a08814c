"""The scheduled refresh service: unattended, incremental, one refresh at a time, observable.

``RefreshService(schedule).serve()`` (``outcomes serve`` / ``python scheduler.py``) runs APScheduler 3
in the foreground with its jobs persisted in the store (``apscheduler_jobs``, through the store's own
engine), one job per scheduled source plus the optional full refresh, ``coalesce=True`` (runs missed
while the service was down become one run), ``max_instances=1`` and a misfire grace time. A job
(``run_scheduled_job``, importable, its only argument the job id):

1. waits for the store's refresh lease (``store.Lease``): exactly one refresh at a time, even with
   two services on one store; a crashed holder's lease expires (or, on this host, is taken over);
2. checks the extracts have settled: a file modified in the last ``settle_seconds`` or changing
   between two looks is still being written, so the attempt is retried later;
3. runs an incremental ``metrics.refresh.refresh`` scoped to its source (skipped when nothing changed);
4. retries transient failures (files still being written or changing mid-read, the database busy
   or unreachable, the lease lost) with exponential backoff; a definition or schema error is not
   retried but reported;
5. logs one line per event to stdout (``2026-11-22T20:00:00Z level=info event=refresh_published
   job=community_contacts run_id=12 ...``) and notifies (``OUTCOMES_NOTIFY_COMMAND`` with the event
   as JSON on stdin, no shell; ``OUTCOMES_NOTIFY_WEBHOOK`` POSTed as JSON) on failure and when a run
   brings a new special-cause signal on a metric's overall series.

SIGTERM or SIGINT: stop taking jobs, let a running refresh finish within ``stop_timeout_seconds``
(a second signal, or the timeout, rolls it back instead), release the lease, exit 0.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy import Engine

import store
from metrics.definitions import load_catalogue
from metrics.errors import DefinitionError
from metrics.refresh import ExtractChanged, RefreshCancelled, RefreshResult, default_definitions_dir, refresh
from metrics.schedule import Schedule, ScheduledJob

__all__ = [
    "JOB_FUNCTION",
    "EventLog",
    "ExtractNotReady",
    "JobOutcome",
    "Notifier",
    "RefreshService",
    "is_transient",
    "new_special_causes",
    "run_scheduled_job",
    "schedule_status",
]

JOB_FUNCTION = "metrics.service:run_scheduled_job"
Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- events: one grep-able line each -----------------------------------------------------------


def _field(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple, set)):
        value = ",".join(str(v) for v in value)
    if isinstance(value, dt.datetime):
        value = _timestamp(value)
    text = str(value)
    if text == "" or any(c in text for c in ' ="\\\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventLog:
    """Writes ``<UTC time> level=<level> event=<event> key=value ...`` lines (logfmt; values with
    spaces or quotes are JSON-quoted, so every event is one line). Also keeps them, for tests."""

    def __init__(self, stream: IO[str] | None = None, clock: Clock | None = None, keep: bool = False):
        self.stream = stream
        self.clock = clock or _utc_now
        self.keep = keep
        self.events: list[dict] = []
        self._lock = threading.Lock()

    def __call__(self, level: str, event: str, **fields: Any) -> None:
        moment = self.clock()
        parts = [_timestamp(moment), f"level={level}", f"event={event}"]
        parts += [f"{key}={_field(value)}" for key, value in fields.items() if value is not None]
        line = " ".join(parts)
        with self._lock:
            if self.keep:
                self.events.append({"time": moment, "level": level, "event": event, **fields})
            stream = self.stream if self.stream is not None else sys.stdout
            stream.write(line + "\n")
            stream.flush()

    def named(self, event: str) -> list[dict]:
        return [e for e in self.events if e["event"] == event]


# --- notifications -------------------------------------------------------------------------------


class Notifier:
    """Sends an event (a dict) to ``command`` (argv, the event as JSON on stdin, no shell) and/or
    POSTs it as JSON to ``webhook`` (http or https only). Failures are logged, never raised."""

    def __init__(self, command: str | None = None, webhook: str | None = None, *, log: EventLog | None = None,
                 timeout: float = 10.0):
        self.command = shlex.split(command) if command else None
        if webhook and urllib.parse.urlsplit(webhook).scheme not in ("http", "https"):
            raise ValueError("OUTCOMES_NOTIFY_WEBHOOK must be an http:// or https:// URL")
        self.webhook = webhook or None
        self.log = log or EventLog()
        self.timeout = timeout

    @classmethod
    def from_environment(cls, log: EventLog | None = None) -> Notifier:
        return cls(os.environ.get("OUTCOMES_NOTIFY_COMMAND"), os.environ.get("OUTCOMES_NOTIFY_WEBHOOK"), log=log)

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.webhook)

    def send(self, event: dict) -> None:
        body = json.dumps(event, default=str)
        if self.command:
            try:
                done = subprocess.run(self.command, input=body, text=True, capture_output=True, timeout=self.timeout,
                                      check=False)
                if done.returncode != 0:
                    self.log("warning", "notify_failed", via="command", exit_code=done.returncode,
                             error=(done.stderr or "").strip()[-300:])
                else:
                    self.log("info", "notified", via="command", about=event.get("event"))
            except (OSError, subprocess.SubprocessError) as exc:
                self.log("warning", "notify_failed", via="command", error=f"{type(exc).__name__}: {exc}")
        if self.webhook:
            host = urllib.parse.urlsplit(self.webhook).hostname  # never log the URL: it may carry a token
            request = urllib.request.Request(self.webhook, data=body.encode(), method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "User-Agent": "outcomes-engine"})
            try:
                with urllib.request.urlopen(request, timeout=min(self.timeout, 5.0)) as response:
                    response.read(1024)
                self.log("info", "notified", via="webhook", host=host, about=event.get("event"))
            except Exception as exc:  # noqa: BLE001  (a notification never breaks a refresh)
                self.log("warning", "notify_failed", via="webhook", host=host, error=f"{type(exc).__name__}: {exc}")


# --- special-cause signals ----------------------------------------------------------------------

_SERIES = ["metric_id", "place", "period_type"]


def _latest_points(spc: pl.DataFrame) -> pl.DataFrame:
    columns = [*_SERIES, "period_start", "point_type", "special_cause_rule", "value"]
    if spc.is_empty() or not set(columns) <= set(spc.columns):
        return pl.DataFrame(schema={c: pl.String for c in _SERIES} | {"period_start": pl.Date, "point_type": pl.String,
                                                                      "special_cause_rule": pl.String,
                                                                      "value": pl.Float64})
    return (spc.filter(pl.col("breakdown") == "overall").sort("period_start")
            .group_by(_SERIES, maintain_order=True).last().select(columns))


def new_special_causes(current: pl.DataFrame, previous: pl.DataFrame) -> list[dict]:
    """Overall series whose latest point is special cause in ``current`` (a run's ``spc`` frame) but
    was not of that type at the latest point of ``previous`` (the run readers saw before)."""
    now, before = _latest_points(current), _latest_points(previous)
    before = before.select(*_SERIES, pl.col("period_start").alias("previous_period_start"),
                           pl.col("point_type").alias("previous_point_type"))
    joined = now.join(before, on=_SERIES, how="left")
    signals = joined.filter(pl.col("point_type").str.starts_with("special_cause")
                            & (pl.col("previous_point_type").is_null()
                               | (pl.col("previous_point_type") != pl.col("point_type"))))
    return [{**row, "period_start": str(row["period_start"]),
             "previous_period_start": str(row["previous_period_start"]) if row["previous_period_start"] else None}
            for row in signals.sort(_SERIES).iter_rows(named=True)]


# --- failures: transient or not ------------------------------------------------------------------


class ExtractNotReady(RuntimeError):
    """Extract files are still being written (recently modified, or changing between two looks)."""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying after a pause: files still being written or changing mid-read, the lease lost,
    the database busy, locked or unreachable. Not: definition, schema or data errors."""
    if isinstance(exc, (ExtractNotReady, ExtractChanged, store.LeaseLost)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and getattr(exc, "connection_invalidated", False):
        return True
    return isinstance(exc, (sa.exc.OperationalError, sa.exc.TimeoutError))


# --- jobs ----------------------------------------------------------------------------------------


@dataclass
class JobOutcome:
    job: str
    status: str  # published | skipped | failed | lease_busy | stopped
    attempts: int = 0
    run_id: int | None = None
    error: str | None = None
    retryable: bool | None = None
    signals: list[dict] = field(default_factory=list)
    result: RefreshResult | None = None

    def as_dict(self) -> dict:
        record = asdict(self)
        record.pop("result")
        return record


_ACTIVE: RefreshService | None = None


def run_scheduled_job(job_id: str) -> dict:
    """What APScheduler runs (and persists by reference): one scheduled job of the running service."""
    service = _ACTIVE or RefreshService.from_environment()
    return service.run_job(job_id).as_dict()


class RefreshService:
    """Runs scheduled refresh jobs; ``serve()`` runs them under APScheduler until SIGTERM/SIGINT.

    ``clock`` (aware UTC datetimes) and ``sleep`` (seconds → False if interrupted by a stop) are
    injectable so tests drive time; they govern settle checks, backoff, lease waits and lease times.
    """

    def __init__(self, schedule: Schedule, *, engine: Engine | None = None, definitions_dir: str | Path | None = None,
                 clock: Clock | None = None, sleep: Callable[[float], bool] | None = None,
                 log: EventLog | None = None, notifier: Notifier | None = None, as_of: dt.date | None = None,
                 take_over_dead: bool = True):
        self.schedule = schedule
        self.engine = engine or store.get_engine()
        self.definitions_dir = Path(definitions_dir or default_definitions_dir())
        self.clock = clock or _utc_now
        self.log = log or EventLog(clock=self.clock)
        self.notifier = notifier if notifier is not None else Notifier.from_environment(self.log)
        self.as_of = as_of
        self.take_over_dead = take_over_dead
        self.stop = threading.Event()    # stop taking jobs, stop waiting
        self.cancel = threading.Event()  # roll the running refresh back at its next checkpoint
        self._sleep = sleep or (lambda seconds: not self.stop.wait(seconds))
        self._jobs = {job.id: job for job in schedule.jobs()}
        self._busy = threading.Condition()
        self._running: dict[int, str] = {}
        self.scheduler = None
        self.lease_poll_seconds = 1.0  # first pause while another refresh holds the lease (then doubling)

    @classmethod
    def from_environment(cls) -> RefreshService:
        from metrics.schedule import load_schedule

        definitions_dir = default_definitions_dir()
        return cls(load_schedule(catalogue=load_catalogue(definitions_dir)), definitions_dir=definitions_dir)

    @property
    def data_dir(self) -> Path:
        return self.schedule.extracts_dir()

    # -- one job --------------------------------------------------------------------------------

    def run_job(self, job_id: str) -> JobOutcome:
        """Run a scheduled job now: wait for the lease, check the extracts settled, refresh
        incrementally (retrying transient failures), log and notify. Never raises."""
        job = self._jobs.get(job_id)
        if job is None:
            self.log("error", "job_unknown", job=job_id, known=sorted(self._jobs))
            return JobOutcome(job_id, "failed", error=f"no job '{job_id}' in {self.schedule.file}")
        if self.stop.is_set():  # queued before the service was asked to stop
            self.log("info", "job_abandoned", job=job_id, reason="the service is stopping")
            return JobOutcome(job_id, "stopped")
        with self._busy:
            self._running[threading.get_ident()] = job_id
        try:
            return self._run(job)
        except Exception as exc:  # noqa: BLE001  (a job must never take the scheduler down)
            message = f"{type(exc).__name__}: {exc}"
            self.log("error", "job_error", job=job_id, error=message)
            return JobOutcome(job_id, "failed", error=message)
        finally:
            with self._busy:
                self._running.pop(threading.get_ident(), None)
                self._busy.notify_all()

    def _run(self, job: ScheduledJob) -> JobOutcome:
        trigger = f"schedule:{job.id}"
        policy = self.schedule.retry
        self.log("info", "job_started", job=job.id, sources=job.sources or "all", force=job.force or None)
        attempt = 0
        while True:
            attempt += 1
            if self.stop.is_set():
                self.log("info", "job_abandoned", job=job.id, reason="the service is stopping")
                return JobOutcome(job.id, "stopped", attempts=attempt - 1)
            lease = store.Lease(self.engine, ttl=self.schedule.lease_ttl_seconds, purpose=trigger, clock=self.clock,
                                take_over_dead=self.take_over_dead,
                                on_heartbeat_error=lambda exc: self.log("warning", "lease_heartbeat_failed",
                                                                        job=job.id, error=str(exc)[:300]))
            try:
                if not self._wait_for_lease(lease, job):
                    return JobOutcome(job.id, "stopped" if self.stop.is_set() else "lease_busy", attempts=attempt)
                self._check_settled()
                self.log("info", "refresh_started", job=job.id, attempt=attempt, holder=lease.holder,
                         incremental=not job.force)
                result = refresh(self.data_dir, definitions_dir=self.definitions_dir, engine=self.engine,
                                 as_of=self.as_of, trigger=trigger, incremental=not job.force,
                                 scope=job.sources, lease=lease, cancel=self.cancel)
            except Exception as exc:  # noqa: BLE001  (classified below)
                message = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, RefreshCancelled):
                    self.log("warning", "refresh_cancelled", job=job.id, error=message)
                    return JobOutcome(job.id, "stopped", attempts=attempt, error=message)
                transient = is_transient(exc)
                if transient and attempt < policy.attempts and not self.stop.is_set():
                    delay = policy.delay(attempt)
                    self.log("warning", "refresh_retry", job=job.id, attempt=attempt, of=policy.attempts,
                             retry_in_s=delay, error=message[:500])
                    lease.release()
                    if not self._sleep(delay):
                        return JobOutcome(job.id, "stopped", attempts=attempt, error=message, retryable=True)
                    continue
                return self._failed(job, attempt, message, transient, exc)
            finally:
                lease.release()
            return self._succeeded(job, attempt, result)

    def _failed(self, job: ScheduledJob, attempts: int, message: str, transient: bool,
                exc: BaseException) -> JobOutcome:
        kind = ("definitions" if isinstance(exc, DefinitionError) else
                "schema" if isinstance(exc, store.SchemaError) else "transient" if transient else "error")
        self.log("error", "refresh_failed", job=job.id, attempts=attempts, kind=kind,
                 retried=attempts > 1 or None, error=message[:2000])
        self._notify({"event": "refresh_failed", "job": job.id, "attempts": attempts, "kind": kind, "error": message})
        return JobOutcome(job.id, "failed", attempts=attempts, error=message, retryable=transient)

    def _succeeded(self, job: ScheduledJob, attempts: int, result: RefreshResult) -> JobOutcome:
        if result.status == "skipped":
            self.log("info", "refresh_skipped", job=job.id, run_id=result.run_id, based_on=result.based_on,
                     duration_s=result.timings.get("total"), reason=result.reason)
            return JobOutcome(job.id, "skipped", attempts=attempts, run_id=result.run_id, result=result)
        self.log("info", "refresh_published", job=job.id, run_id=result.run_id,
                 duration_s=result.timings.get("total"), values=result.values, quarantined=result.quarantined,
                 recomputed=result.recomputed or None, failed_sources=result.failed_sources or None,
                 attempts=attempts if attempts > 1 else None)
        if result.failed_sources:
            self.log("warning", "sources_failed", job=job.id, run_id=result.run_id, sources=result.failed_sources,
                     carried_forward=len(result.carried_forward))
        signals = self._signals(job, result.run_id)
        return JobOutcome(job.id, "published", attempts=attempts, run_id=result.run_id, signals=signals, result=result)

    def _signals(self, job: ScheduledJob, run_id: int) -> list[dict]:
        try:
            previous = store.previous_published_run(self.engine, run_id)
            if previous is None:
                return []
            signals = new_special_causes(store.read_frame(self.engine, "spc", run_id),
                                         store.read_frame(self.engine, "spc", previous))
        except Exception as exc:  # noqa: BLE001  (the run is published; this is only a notification)
            self.log("warning", "signals_unavailable", job=job.id, run_id=run_id, error=str(exc)[:300])
            return []
        if signals:
            self.log("info", "new_special_cause", job=job.id, run_id=run_id, previous_run_id=previous,
                     count=len(signals), series=[f"{s['metric_id']}/{s['place']}:{s['point_type']}" for s in signals])
            self._notify({"event": "new_special_cause", "job": job.id, "run_id": run_id,
                          "previous_run_id": previous, "signals": signals})
        return signals

    def _notify(self, event: dict) -> None:
        if self.notifier.enabled:
            self.notifier.send({"time": _timestamp(self.clock()), "host": os.uname().nodename, **event})

    def _wait_for_lease(self, lease: store.Lease, job: ScheduledJob) -> bool:
        """Take the lease, waiting (with backoff) while another refresh holds it; False if it stays busy
        for ``lease_wait_seconds`` or the service stops."""
        waited, delay = 0.0, self.lease_poll_seconds
        while True:
            if lease.acquire():
                if waited:
                    self.log("info", "lease_acquired", job=job.id, waited_s=waited)
                return True
            if waited == 0:
                holder = lease.last_seen
                self.log("info", "lease_busy", job=job.id, holder=holder.holder if holder else None,
                         purpose=holder.purpose if holder else None,
                         expires=holder.expires_at if holder else None)
            if waited >= self.schedule.lease_wait_seconds:
                holder = lease.last_seen
                self.log("warning", "lease_wait_timeout", job=job.id, waited_s=waited,
                         holder=holder.holder if holder else None)
                self._notify({"event": "refresh_failed", "job": job.id, "kind": "lease_busy",
                              "error": f"another refresh held the lease for over {waited:g} s"
                                       + (f" ({holder.describe()})" if holder else "")})
                return False
            pause = min(delay, max(self.schedule.lease_wait_seconds - waited, 0.01))
            if not self._sleep(pause):
                return False
            waited += pause
            delay = min(delay * 2, 30.0)

    def _check_settled(self) -> None:
        """Raise ``ExtractNotReady`` while any extract file is still being written: modified less
        than ``settle_seconds`` ago, or different (size, time, set of files) between two looks."""
        settle = self.schedule.settle_seconds
        if settle <= 0:
            return
        catalogue = load_catalogue(self.definitions_dir)
        folders = [self.data_dir / s.folder for s in catalogue.sources.values()] + [self.data_dir / "benchmarks"]

        def look() -> dict[str, tuple[int, int]]:
            seen = {}
            for folder in folders:
                if folder.is_dir():
                    for path in folder.iterdir():
                        try:
                            info = path.stat()
                        except FileNotFoundError:
                            continue
                        if path.is_file():
                            seen[f"{folder.name}/{path.name}"] = (info.st_size, info.st_mtime_ns)
            return seen

        first = look()
        now = self.clock().timestamp()
        recent = sorted(name for name, (_size, mtime) in first.items() if now - mtime / 1e9 < settle)
        if recent:
            raise ExtractNotReady(f"{', '.join(recent[:5])}{' ...' if len(recent) > 5 else ''} modified less than "
                                  f"{settle:g} s ago: still being written?")
        self._sleep(min(2.0, settle))
        second = look()
        if second != first:
            changed = sorted(set(first.items()) ^ set(second.items()))
            raise ExtractNotReady(f"{', '.join(sorted({name for name, _ in changed})[:5])} changed between two looks: "
                                  "still being written?")

    # -- the scheduler --------------------------------------------------------------------------

    def build_scheduler(self):
        """A BackgroundScheduler whose jobs live in the store (through the store's engine)."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.schedulers.base import STATE_STOPPED

        class Scheduler(BackgroundScheduler):
            def _process_jobs(self):
                # APScheduler 3.11's loop wakes once more on shutdown and would still look for due
                # jobs, fail to submit them to the stopped executor and move their next run time on:
                # a run due at that moment would be lost instead of running (late) at the next start.
                return None if self.state == STATE_STOPPED else super()._process_jobs()

        return Scheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.engine, tablename=store.models.SCHEDULER_JOBS.name)},
            executors={"default": ThreadPoolExecutor(max_workers=1)},  # one refresh at a time in this process
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": self.schedule.misfire_grace_seconds},
            timezone=self.schedule.timezone,
        )

    def sync_jobs(self, scheduler, *, run_now: bool = False) -> None:
        """Make the persisted jobs match the schedule. A job whose trigger and settings are unchanged
        is kept as stored, so a run missed while the service was down still runs (once) on start."""
        wanted = {job.id: job for job in self.schedule.jobs()}
        for stored in scheduler.get_jobs():
            if stored.id not in wanted:
                scheduler.remove_job(stored.id)
                self.log("info", "job_removed", job=stored.id)
        for job in wanted.values():
            trigger = job.trigger(self.schedule.timezone)
            stored = scheduler.get_job(job.id)
            same = stored is not None and (
                repr(stored.trigger), stored.func_ref, tuple(stored.args), stored.coalesce, stored.max_instances,
                stored.misfire_grace_time) == (repr(trigger), JOB_FUNCTION, (job.id,), True, 1,
                                               self.schedule.misfire_grace_seconds)
            if not same:
                scheduler.add_job(JOB_FUNCTION, trigger=trigger, args=[job.id], id=job.id, name=job.description,
                                  replace_existing=True, coalesce=True, max_instances=1,
                                  misfire_grace_time=self.schedule.misfire_grace_seconds)
            if run_now:
                scheduler.modify_job(job.id, next_run_time=dt.datetime.now(dt.UTC))

    def _on_scheduler_event(self, event) -> None:
        from apscheduler.events import (
            EVENT_JOB_ERROR,
            EVENT_JOB_MAX_INSTANCES,
            EVENT_JOB_MISSED,
        )

        if event.code == EVENT_JOB_MISSED:
            self.log("warning", "job_missed", job=event.job_id, scheduled=event.scheduled_run_time,
                     grace_s=self.schedule.misfire_grace_seconds)
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            self.log("info", "job_still_running", job=event.job_id)
        elif event.code == EVENT_JOB_ERROR:
            self.log("error", "job_error", job=event.job_id, error=repr(event.exception)[:500])

    def start(self, *, run_now: bool = False):
        """Start the scheduler in the background (jobs synced from the schedule); returns it."""
        import logging

        from apscheduler.events import (
            EVENT_JOB_ERROR,
            EVENT_JOB_MAX_INSTANCES,
            EVENT_JOB_MISSED,
        )

        global _ACTIVE
        logging.getLogger("apscheduler").setLevel(logging.ERROR)  # its news is logged as our events
        _ACTIVE = self
        scheduler = self.scheduler = self.build_scheduler()
        scheduler.add_listener(self._on_scheduler_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
        scheduler.start(paused=True)
        self.sync_jobs(scheduler, run_now=run_now)
        self.log("info", "service_started", pid=os.getpid(), store=store.safe_url(self.engine),
                 extracts=str(self.data_dir), schedule=self.schedule.file, timezone=self.schedule.timezone,
                 jobs=len(self._jobs), notify=("command" if self.notifier.command else None,
                                               "webhook" if self.notifier.webhook else None) if self.notifier.enabled
                 else None)
        for stored in sorted(scheduler.get_jobs(), key=lambda j: j.id):
            spec = self._jobs[stored.id]
            self.log("info", "job_scheduled", job=stored.id, cron=spec.cron, next_run=stored.next_run_time,
                     watches=[str(self.data_dir / self._folder(s)) for s in spec.sources] if spec.sources else "all")
        scheduler.resume()
        return scheduler

    def _folder(self, source_id: str) -> str:
        try:
            return load_catalogue(self.definitions_dir).sources[source_id].folder
        except Exception:  # noqa: BLE001  (only for the log line)
            return source_id

    def busy(self) -> list[str]:
        with self._busy:
            return list(self._running.values())

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds (real time) for running jobs to finish; True if none runs."""
        with self._busy:
            return self._busy.wait_for(lambda: not self._running, timeout=timeout)

    def request_stop(self, signum: int | None = None, _frame=None) -> None:
        """First call: stop taking jobs and let a running refresh finish. Second: roll it back."""
        name = signal.Signals(signum).name if signum else "request"
        if self.stop.is_set():
            self.cancel.set()
            self.log("warning", "stop_now", signal=name, running=self.busy() or None)
        else:
            self.stop.set()
            self.log("info", "service_stopping", signal=name, running=self.busy() or None,
                     timeout_s=self.schedule.stop_timeout_seconds)

    def shutdown(self) -> bool:
        """Stop taking jobs, let the running refresh finish (or roll it back after the stop timeout),
        shut the scheduler down. True when nothing was left running."""
        global _ACTIVE
        self.stop.set()
        scheduler = self.scheduler
        if scheduler is not None and scheduler.running:
            scheduler.pause()
        finished = self.wait_idle(self.schedule.stop_timeout_seconds)
        if not finished:
            self.cancel.set()
            self.log("warning", "refresh_rollback", running=self.busy(), reason="stop timeout reached")
            finished = self.wait_idle(30)
        if scheduler is not None and scheduler.running:
            # Jobs queued behind the one that ran return at once (the service is stopping): let them.
            scheduler.shutdown(wait=finished)
        self.log("info", "service_stopped", clean=finished)
        _ACTIVE = None
        return finished

    def serve(self, *, run_now: bool = False, install_signals: bool = True) -> int:
        """Run in the foreground until SIGTERM/SIGINT (or ``request_stop``); returns the exit code (0)."""
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        try:
            self.start(run_now=run_now)
            while not self.stop.wait(0.5):
                pass
        finally:
            clean = self.shutdown()
        if not clean:
            # A refresh stuck in one computation: leave now. Its transaction rolls back with the
            # connection; its run is marked abandoned and its lease taken over by the next refresh.
            sys.stdout.flush()
            os._exit(0)
        return 0


# --- status --------------------------------------------------------------------------------------


def schedule_status(schedule: Schedule, engine: Engine, *, definitions_dir: str | Path | None = None,
                    now: dt.datetime | None = None) -> dict:
    """Every scheduled job with its last run and next run time, and who holds the lease."""
    now = now or _utc_now()
    jobs = schedule.jobs()
    catalogue = load_catalogue(definitions_dir or default_definitions_dir())
    last = {row["trigger"]: row for row in store.last_runs(engine, [f"schedule:{j.id}" for j in jobs])
            .iter_rows(named=True)}
    published = {row["trigger"]: row for row in store.last_runs(engine, [f"schedule:{j.id}" for j in jobs],
                                                                status="published").iter_rows(named=True)}
    table = store.models.SCHEDULER_JOBS
    with engine.connect() as conn:
        stored = {row.id: row.next_run_time for row in conn.execute(sa.select(table.c.id, table.c.next_run_time))}
    rows = []
    for job in jobs:
        trigger = job.trigger(schedule.timezone)
        if job.id in stored:
            next_run = (dt.datetime.fromtimestamp(stored[job.id], dt.UTC) if stored[job.id] is not None else None)
            next_source = "service"
        else:
            next_run = trigger.get_next_fire_time(None, now)
            next_source = "schedule (not yet registered by a running service)"
        run = last.get(f"schedule:{job.id}")
        rows.append({
            "job": job.id, "description": job.description, "cron": job.cron, "timezone": schedule.timezone,
            "watches": ([str(schedule.extracts_dir() / catalogue.sources[s].folder) for s in job.sources
                         if s in catalogue.sources] if job.sources else [str(schedule.extracts_dir())]),
            "force": job.force,
            "last_run": _run_summary(run),
            "last_published": _run_summary(published.get(f"schedule:{job.id}")),
            "next_run": next_run, "next_run_from": next_source,
            "overdue": bool(next_run and next_run < now),
        })
    lease = store.read_lease(engine)
    return {"extracts": str(schedule.extracts_dir()), "schedule": schedule.file, "jobs": rows,
            "lease": None if lease is None else {**asdict(lease), "expired": lease.expires_at < now}}


def _run_summary(row: dict | None) -> dict | None:
    if row is None:
        return None
    timings = json.loads(row["timings_json"] or "{}")
    return {"run_id": row["run_id"], "status": row["status"], "started_at": row["started_at"],
            "finished_at": row["finished_at"], "duration_s": timings.get("total"), "values": row["values_count"],
            "quarantined": row["quarantined_count"], "error": row["error"]}
