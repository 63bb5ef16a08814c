"""The scheduled refresh service, driven with a controlled clock (nothing sleeps in real time except
where processes and threads must really race): schedules, files landing and still being written,
retries, the lease under crashes and contention, misfires after downtime, notifications, SIGTERM."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import io
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import store
from conftest import AS_OF, PROJECT
from metrics.cli import main as cli
from metrics.definitions import load_catalogue
from metrics.errors import DefinitionError
from metrics.refresh import RefreshResult
from metrics.schedule import EVERY_MINUTE, cron_trigger, load_schedule
from metrics.service import EventLog, Notifier, RefreshService, new_special_causes
from test_incremental import CONTACTS_JULY, handbuilt_definitions

SHIPPED = PROJECT / "definitions" / "schedule.yaml"
UTC = dt.UTC


@functools.cache
def project_catalogue():
    return load_catalogue(PROJECT / "definitions")


class FakeTime:
    """A clock that only moves when the service sleeps (or the test says so)."""

    def __init__(self, start: dt.datetime):
        self.now = start
        self.slept: list[float] = []
        self.on_sleep = None  # called with the seconds before time moves on

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.slept.append(seconds)
        if self.on_sleep:
            self.on_sleep(seconds)
        self.now += dt.timedelta(seconds=seconds)
        return True


def write_schedule(path: Path, data_dir: Path, **settings) -> Path:
    document = {"extracts": str(data_dir), "timezone": "UTC",
                "sources": {"inpatient_spells": {"cron": "0 6 * * 1"}, "community_contacts": {"cron": "0 6 3 * *"}},
                "full_refresh": {"cron": "0 2 * * *"}, "settle_seconds": 60,
                "retry": {"attempts": 5, "first_delay_seconds": 30, "max_delay_seconds": 900}, **settings}
    path.write_text(json.dumps(document, indent=1))  # JSON is YAML
    return path


@pytest.fixture
def definitions(tmp_path: Path) -> Path:
    return handbuilt_definitions(tmp_path / "definitions")


@pytest.fixture
def world(tmp_path, handbuilt_dir, definitions):
    """Extracts that landed an hour ago, a schedule for them, and a clock that starts now."""
    clock = FakeTime(dt.datetime.now(UTC).replace(microsecond=0))
    for path in handbuilt_dir.rglob("*.csv"):
        age(path, clock, 3600)
    schedule = write_schedule(tmp_path / "schedule.yaml", handbuilt_dir)
    return {"clock": clock, "data": handbuilt_dir, "definitions": definitions, "schedule": schedule}


def age(path: Path, clock: FakeTime, seconds: float) -> None:
    moment = clock.now.timestamp() - seconds
    os.utime(path, (moment, moment))


def make_service(engine, world, *, notifier: Notifier | None = None, real_time: bool = False, **settings):
    if settings:
        write_schedule(world["schedule"], world["data"], **settings)
    schedule = load_schedule(world["schedule"], catalogue=load_catalogue(world["definitions"]))
    clock = None if real_time else world["clock"]
    log = EventLog(stream=io.StringIO(), clock=clock, keep=True)
    return RefreshService(schedule, engine=engine, definitions_dir=world["definitions"], clock=clock,
                          sleep=None if real_time else world["clock"].sleep, log=log,
                          notifier=notifier or Notifier(log=log), as_of=AS_OF)


def lines(service: RefreshService) -> list[str]:
    return service.log.stream.getvalue().splitlines()


# --- schedules -----------------------------------------------------------------------------------


def test_the_shipped_schedule_is_sensible_and_every_minute_is_a_switch(monkeypatch):
    schedule = load_schedule(SHIPPED, catalogue=project_catalogue(), every_minute=False)
    jobs = {job.id: job for job in schedule.jobs()}
    assert set(jobs) == {"inpatient_spells", "community_contacts", "breast_screening", "full_refresh"}
    assert EVERY_MINUTE not in {job.cron for job in jobs.values()}
    assert jobs["full_refresh"].sources is None and jobs["inpatient_spells"].sources == ("inpatient_spells",)
    # Fire times from a fixed moment (Sunday 22 November 2026, 20:00 UTC): crontab's day-of-week 1 is Monday.
    now = dt.datetime(2026, 11, 22, 20, 0, tzinfo=UTC)
    fires = {job_id: job.trigger(schedule.timezone).get_next_fire_time(None, now) for job_id, job in jobs.items()}
    assert fires["inpatient_spells"] == dt.datetime(2026, 11, 23, 6, 0, tzinfo=UTC)  # Monday, GMT
    assert fires["community_contacts"] == dt.datetime(2026, 12, 3, 6, 0, tzinfo=UTC)
    assert fires["breast_screening"] == dt.datetime(2027, 1, 5, 6, 0, tzinfo=UTC)
    assert fires["full_refresh"] == dt.datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    summer = dt.datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # British Summer Time: 02:00 local is 01:00 UTC
    assert jobs["full_refresh"].trigger(schedule.timezone).get_next_fire_time(None, summer).astimezone(UTC) \
        == dt.datetime(2026, 6, 2, 1, 0, tzinfo=UTC)
    assert str(cron_trigger("0 6 * * 0,7")).count("sun") == 1
    assert "mon,tue,wed,thu,fri" in str(cron_trigger("0 6 * * 1-5"))
    assert {job.cron for job in load_schedule(SHIPPED, every_minute=True).jobs()} == {EVERY_MINUTE}
    monkeypatch.setenv("OUTCOMES_SCHEDULE_EVERY_MINUTE", "1")
    assert {job.cron for job in load_schedule(SHIPPED).jobs()} == {EVERY_MINUTE}


@pytest.mark.parametrize("text, field, message", [
    ("sources:\n  inpatient_spells:\n    cron: '0 25 * * *'\n", "sources.inpatient_spells.cron",
     "not a valid cron expression '0 25 * * *'"),
    ("sources:\n  inpatient_spells:\n    cron: '0 6 * *'\n", "sources.inpatient_spells.cron", "expected 5 fields"),
    ("sources:\n  inpatient_spels:\n    cron: '0 6 * * 1'\n", "sources.inpatient_spels",
     "unknown source 'inpatient_spels'"),
    ("timezone: Europe/Dudley\nsources:\n  inpatient_spells: {cron: '0 6 * * 1'}\n", "timezone", "unknown time zone"),
    ("sources:\n  inpatient_spells: {cron: '0 6 * * 1', when: weekly}\n", "sources.inpatient_spells.when",
     "unknown field"),
    ("sources: {}\n", None, "nothing is scheduled"),
])
def test_schedule_errors_name_the_file_line_and_field(tmp_path, text, field, message):
    path = tmp_path / "schedule.yaml"
    path.write_text("extracts: var/demo\n" + text)
    with pytest.raises(DefinitionError) as error:
        load_schedule(path, catalogue=project_catalogue())
    issue = error.value.issues[0]
    assert issue.file == str(path) and message in issue.message and issue.field == field
    assert field is None or issue.line is not None
    assert str(path) in str(error.value)


# --- jobs, driven with a controlled clock --------------------------------------------------------


def test_files_landing_drive_what_each_job_publishes(engine, world, monkeypatch):
    service = make_service(engine, world)
    first = service.run_job("community_contacts")
    assert first.status == "published" and first.attempts == 1  # no run yet: everything is computed
    assert service.run_job("community_contacts").status == "skipped"

    # Next month's contacts land; the spells job doesn't refresh them, the contacts job does.
    july = world["data"] / "community_contacts" / "contacts_2024-07.csv"
    july.write_text(CONTACTS_JULY)
    age(july, world["clock"], 600)
    spells = service.run_job("inpatient_spells")
    assert spells.status == "skipped"
    assert "community_contacts changed: left for its own schedule" in spells.result.reason
    contacts = service.run_job("community_contacts")
    assert contacts.status == "published" and contacts.result.recomputed == ["community_contacts"]
    assert store.latest_run_id(engine) == contacts.run_id
    values = store.read_values(engine, provenance=True)
    assert set(values.filter(pl.col("metric_id") == "delayed_bed_days")["computed_run_id"]) == {first.run_id}
    assert values.filter(pl.col("period_start") == dt.date(2024, 7, 1)).height > 0
    runs = store.list_runs(engine)
    assert runs.select("status", "trigger").rows() == [
        ("published", "schedule:community_contacts"), ("skipped", "schedule:inpatient_spells"),
        ("skipped", "schedule:community_contacts"), ("published", "schedule:community_contacts")]

    # One grep-able line per event.
    logged = lines(service)
    assert [line.split(" event=")[1].split()[0] for line in logged] == [e["event"] for e in service.log.events]
    published = [line for line in logged if "event=refresh_published" in line]
    assert len(published) == 2 and all(line.startswith(world["clock"].now.strftime("%Y-%m-%dT")) for line in logged)
    assert f"job=community_contacts run_id={contacts.run_id} duration_s=" in published[1]
    assert f" values={contacts.result.values} quarantined={contacts.result.quarantined} " \
           "recomputed=community_contacts" in published[1]
    assert 'reason="nothing changed since run' in next(line for line in logged if "event=refresh_skipped" in line)

    # `outcomes status`: every schedule with its last run and next run time.
    monkeypatch.setenv("OUTCOMES_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    result = CliRunner().invoke(cli, ["status", "--schedule", str(world["schedule"]),
                                      "--definitions", str(world["definitions"])], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "lease     free" in text
    assert f"last run   run {contacts.run_id} published at" in text and "rows quarantined" in text
    assert f"last run   run {spells.run_id} skipped" in text and "reason: nothing changed since run" in text
    assert "full_refresh" in text and "last run   never" in text
    assert "next run   " in text and "(the service has not registered this job yet)" in text
    report = json.loads(CliRunner().invoke(cli, ["status", "--json", "--schedule", str(world["schedule"]),
                                                 "--definitions", str(world["definitions"])]).output)
    jobs = {job["job"]: job for job in report["jobs"]}
    assert jobs["community_contacts"]["last_run"]["run_id"] == contacts.run_id
    assert jobs["community_contacts"]["watches"] == [str(world["data"] / "community_contacts")]


def test_a_file_still_being_written_is_waited_for(engine, world):
    clock = world["clock"]
    service = make_service(engine, world)
    july = world["data"] / "community_contacts" / "contacts_2024-07.csv"
    july.write_text(CONTACTS_JULY)
    age(july, clock, 0)  # modified just now
    looks = []

    def writer_still_appending(seconds: float) -> None:
        # The second settle check's pause between its two looks: the file grows (keeping its old time).
        if seconds == 2 and not looks:
            looks.append(seconds)
            with july.open("a") as handle:
                handle.write("c13,P7,R7,2024-07-20,5,10,01,A10,50,F,A,E01000001,M87001,4\n")
            age(july, clock, 95)

    clock.on_sleep = writer_still_appending
    outcome = service.run_job("community_contacts")
    assert outcome.status == "published" and outcome.attempts == 4
    assert clock.slept == [30, 60, 2, 120, 2]  # backoff 30, 60, (a look), 120, (a look)
    retries = service.log.named("refresh_retry")
    assert [r["retry_in_s"] for r in retries] == [30, 60, 120]
    assert "modified less than 60 s ago" in retries[0]["error"] and "changed between two looks" in retries[2]["error"]
    assert store.list_runs(engine)["status"].to_list() == ["published"]  # nothing was attempted on a moving file
    assert store.read_run(engine)["sources"]["community_contacts"]["rows_read"] == 9 + 5 + 1  # + July + the late row


def test_a_file_changing_mid_read_fails_the_attempt_and_the_retry_publishes(engine, world, monkeypatch):
    import metrics.refresh as refresh_module

    clock = world["clock"]
    service = make_service(engine, world)
    original = refresh_module.load_source
    june = world["data"] / "community_contacts" / "contacts_2024-06.csv"

    def load_while_written(source, *args, **kwargs):
        loaded = original(source, *args, **kwargs)
        if source.id == "community_contacts" and not clock.slept[2:]:
            with june.open("a") as handle:  # a late row lands while the folder is being read
                handle.write("c14,P8,R8,2024-06-21,5,10,01,A10,50,F,A,E01000003,M91001,3\n")
            age(june, clock, 3000)
        return loaded

    monkeypatch.setattr(refresh_module, "load_source", load_while_written)
    outcome = service.run_job("community_contacts")
    assert outcome.status == "published" and outcome.attempts == 2
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["published", "failed"]
    assert "ExtractChanged" in runs["error"][1] and "contacts_2024-06.csv changed while being read" in runs["error"][1]
    assert store.read_run(engine)["sources"]["community_contacts"]["rows_read"] == 10  # the late row is in
    assert store.read_lease(engine) is None


class Webhook:
    def __init__(self):
        self.bodies: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?token=secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_definition_error_is_reported_at_once_and_notified(engine, world, tmp_path):
    received = tmp_path / "event.json"
    hook = Webhook()
    command = f"{shlex.quote(sys.executable)} -c 'import sys, pathlib; " \
              f"pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())' {shlex.quote(str(received))}"
    service = make_service(engine, world)
    broken = world["definitions"] / "metrics" / "delayed_bed_days.yaml"  # an analyst's edit, while it runs
    broken.write_text(broken.read_text().replace("value_type: count", "value_type: tally"))
    log = service.log
    service.notifier = Notifier(command, hook.url, log=log)
    outcome = service.run_job("inpatient_spells")
    hook.server.shutdown()
    assert outcome.status == "failed" and outcome.attempts == 1 and outcome.retryable is False
    assert world["clock"].slept == []  # not retried
    event = json.loads(received.read_text())
    assert event["event"] == "refresh_failed" and event["job"] == "inpatient_spells" and event["kind"] == "definitions"
    assert "delayed_bed_days.yaml" in event["error"] and "value_type" in event["error"]
    assert hook.bodies == [event]
    failed = log.named("refresh_failed")[0]
    assert failed["kind"] == "definitions" and failed["level"] == "error"
    assert {e["via"] for e in log.named("notified")} == {"command", "webhook"}
    assert "secret" not in log.stream.getvalue()  # the webhook's URL may carry a token: never logged
    assert store.list_runs(engine).is_empty()
    with pytest.raises(ValueError, match="http"):
        Notifier(webhook="file:///etc/passwd")


def test_a_busy_database_is_retried_with_backoff_then_reported(engine, world, monkeypatch):
    import metrics.service as service_module

    calls = []

    def locked(*_args, **_kwargs):
        calls.append(world["clock"]())
        raise sa.exc.OperationalError("UPDATE refresh_lease", {}, Exception("database is locked"))

    monkeypatch.setattr(service_module, "refresh", locked)
    service = make_service(engine, world, retry={"attempts": 3, "first_delay_seconds": 10, "max_delay_seconds": 15},
                           settle_seconds=0)
    outcome = service.run_job("community_contacts")
    assert outcome.status == "failed" and outcome.attempts == 3 and outcome.retryable is True
    assert world["clock"].slept == [10, 15] and len(calls) == 3
    assert service.log.named("refresh_failed")[0]["kind"] == "transient"
    assert store.read_lease(engine) is None


def test_a_new_special_cause_signal_is_notified(engine, world, tmp_path):
    def spc(points: list[str]) -> pl.DataFrame:
        months = [dt.date(2024, m, 1) for m in range(1, len(points) + 1)]
        return pl.DataFrame({"metric_id": "m", "place": "Dudley", "period_type": "month", "breakdown": "overall",
                             "group": "Dudley", "period_start": months,
                             "value": [float(i) for i in range(len(points))], "point_type": points,
                             "special_cause_rule": [None if p == "common_cause" else "outside_limits" for p in points]})

    values = pl.DataFrame(schema={**store.repository.VALUE_SCHEMA})
    runs = []
    for points in (["common_cause"] * 3, ["common_cause"] * 3 + ["special_cause_concern"]):
        run_id = store.start_run(engine)
        store.publish_run(engine, run_id, values=values, definitions=[], frames={"spc": spc(points)})
        runs.append(run_id)
    received = tmp_path / "event.json"
    command = f"{shlex.quote(sys.executable)} -c 'import sys, pathlib; " \
              f"pathlib.Path(sys.argv[1]).write_text(sys.stdin.read())' {shlex.quote(str(received))}"
    service = make_service(engine, world)
    service.notifier = Notifier(command, log=service.log)
    signals = service._signals(service._jobs["full_refresh"], runs[1])
    assert [(s["metric_id"], s["point_type"], s["period_start"], s["previous_point_type"]) for s in signals] == [
        ("m", "special_cause_concern", "2024-04-01", "common_cause")]
    event = json.loads(received.read_text())
    assert event["event"] == "new_special_cause" and event["run_id"] == runs[1] and event["previous_run_id"] == runs[0]
    # The same signal in the next run is not new; a change of type is.
    assert new_special_causes(spc(["common_cause"] * 3 + ["special_cause_concern"] * 2),
                              spc(["common_cause"] * 3 + ["special_cause_concern"])) == []
    assert len(new_special_causes(spc(["special_cause_improvement"]), spc(["special_cause_concern"]))) == 1


# --- one refresh at a time -----------------------------------------------------------------------


def test_refresh_and_the_cli_fail_fast_while_another_holds_the_lease(engine, world, monkeypatch):
    from metrics.refresh import refresh

    store.try_acquire_lease(engine, "elsewhere:4242:abc", ttl=600, purpose="schedule:full_refresh")
    with pytest.raises(store.LeaseHeld, match="another refresh is running.*elsewhere:4242:abc"):
        refresh(world["data"], definitions_dir=world["definitions"], engine=engine, as_of=AS_OF)
    monkeypatch.setenv("OUTCOMES_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    result = CliRunner().invoke(cli, ["refresh", "--data", str(world["data"]), "--definitions",
                                      str(world["definitions"]), "--as-of", "2026-01-01"])
    assert result.exit_code == 4  # not a failure: another refresh holds the lease
    assert "another refresh is running" in result.output and "schedule:full_refresh" in result.output
    assert store.list_runs(engine).is_empty()


def test_two_services_never_refresh_at_the_same_time(engine, world, monkeypatch):
    import metrics.service as service_module

    intervals = []

    def slow_refresh(data_dir, *, lease, trigger, **_kwargs):
        started = time.perf_counter()
        time.sleep(0.05)
        lease.check()  # still ours, renewed
        intervals.append((started, time.perf_counter(), lease.holder))
        return RefreshResult(run_id=0, status="skipped", values=0, quarantined=0, sources={},
                             timings={"total": 0.05}, reason="nothing changed")

    monkeypatch.setattr(service_module, "refresh", slow_refresh)
    services = [make_service(engine, world, real_time=True, settle_seconds=0) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcomes = []

    def run(service):
        service.lease_poll_seconds = 0.01
        for job in ("community_contacts", "inpatient_spells", "full_refresh"):
            barrier.wait()  # both services fire the same job at the same moment
            outcomes.append(service.run_job(job).status)

    threads = [threading.Thread(target=run, args=(s,)) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert outcomes == ["skipped"] * 6 and len(intervals) == 6 and len({h for *_, h in intervals}) == 6
    ordered = sorted(intervals)
    assert all(end <= next_start for (_, end, _), (next_start, _, _) in itertools.pairwise(ordered))
    assert any(s.log.named("lease_busy") for s in services)  # they did contend
    assert store.read_lease(engine) is None


CRASHER = textwrap.dedent("""
    import os, signal
    import store

    engine = store.get_engine()  # OUTCOMES_DATABASE_URL
    lease = store.Lease(engine, ttl=300, purpose="schedule:community_contacts")
    lease.acquire_or_raise()
    store.start_run(engine, trigger="schedule:community_contacts")
    os.kill(os.getpid(), signal.SIGKILL)  # a crash in the middle of the run, lease held
""")


def test_a_crashed_refresh_s_lease_expires_and_another_service_takes_over(engine, world, tmp_path):
    script = tmp_path / "crasher.py"
    script.write_text(CRASHER)
    env = {**os.environ, "OUTCOMES_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    process = subprocess.Popen([sys.executable, str(script)], cwd=PROJECT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, out + err
    held = store.read_lease(engine)
    assert held is not None and held.purpose == "schedule:community_contacts"
    assert held.holder.split(":")[1] == str(process.pid)
    assert store.list_runs(engine)["status"].to_list() == ["running"]

    # Another host can't tell the holder is dead: it waits for the lease to expire, then takes it.
    elsewhere = "another-host:1:0123456789ab"
    acquired, current = store.try_acquire_lease(engine, elsewhere, ttl=60, take_over_dead=False)
    assert not acquired and current.holder == held.holder
    acquired, _ = store.try_acquire_lease(engine, elsewhere, ttl=60, take_over_dead=False,
                                          now=held.expires_at + dt.timedelta(seconds=1))
    assert acquired and store.release_lease(engine, elsewhere)

    # On this host a dead holder is taken over at once: the next job doesn't wait, marks the killed
    # run abandoned and publishes.
    store.try_acquire_lease(engine, held.holder, ttl=300, purpose=held.purpose)  # as the crash left it
    service = make_service(engine, world, real_time=True, settle_seconds=0, lease_ttl_seconds=300)
    outcome = service.run_job("community_contacts")
    assert outcome.status == "published" and not service.log.named("lease_busy")
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["published", "failed"] and "abandoned" in runs["error"][1]
    assert store.read_lease(engine) is None


# --- the scheduler: misfires, shutdown -----------------------------------------------------------


def test_runs_missed_during_downtime_are_coalesced_into_one(engine, world):
    settings = {"sources": {"community_contacts": {"cron": "* * * * *"}}, "full_refresh": {"cron": "0 2 * * *"},
                "settle_seconds": 0, "misfire_grace_seconds": 300}
    before = make_service(engine, world, real_time=True, **settings)
    scheduler = before.build_scheduler()
    scheduler.start(paused=True)
    before.sync_jobs(scheduler)
    now = dt.datetime.now(UTC)
    # The service went down ten minutes ago, before either job's next run.
    scheduler.modify_job("community_contacts", next_run_time=now - dt.timedelta(minutes=10))
    scheduler.modify_job("full_refresh", next_run_time=now - dt.timedelta(minutes=10))
    job = scheduler.get_job("community_contacts")
    assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 300)
    scheduler.shutdown(wait=False)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(store.models.SCHEDULER_JOBS)).scalar() == 2

    after = make_service(engine, world, real_time=True, **settings)
    after.start()  # the stored jobs are kept as they are (same schedule), so the missed runs are due
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (after.log.named("refresh_published") and after.log.named("job_missed")):
        time.sleep(0.05)
    assert after.wait_idle(60)
    after.shutdown()
    runs = store.list_runs(engine).sort("run_id")
    # Ten missed runs became one (a minute boundary passing meanwhile may add its own, skipped, run).
    assert runs.select("status", "trigger").rows()[0] == ("published", "schedule:community_contacts")
    assert runs["status"].to_list()[1:] in ([], ["skipped"])
    missed = after.log.named("job_missed")
    assert [m["job"] for m in missed] == ["full_refresh"]  # ten minutes late is beyond its 300 s grace
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(store.models.SCHEDULER_JOBS.c.id,
                                             store.models.SCHEDULER_JOBS.c.next_run_time)).all())
    assert stored["community_contacts"] > now.timestamp() and stored["full_refresh"] > now.timestamp()


def test_sigterm_lets_the_running_refresh_finish_releases_the_lease_and_exits_0(world, tmp_path):
    url = f"sqlite:///{tmp_path / 'service.db'}"
    write_schedule(world["schedule"], world["data"], settle_seconds=0)
    env = {**os.environ, "OUTCOMES_DATABASE_URL": url, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "scheduler.py", "--schedule", str(world["schedule"]),
                                "--definitions", str(world["definitions"]), "--run-now"],
                               cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if "event=refresh_started" in line:
                process.send_signal(signal.SIGTERM)  # mid-refresh
                break
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    seen += out.splitlines()
    events = [line.split(" event=")[1].split()[0] for line in seen]
    assert process.returncode == 0, err
    assert events[0] == "service_started" and events[-1] == "service_stopped" and "clean=true" in seen[-1]
    after_signal = events[events.index("service_stopping"):]
    # The refresh under way finished and published; the jobs queued behind it were not started.
    assert after_signal == ["service_stopping", "refresh_published", "job_abandoned", "job_abandoned",
                            "service_stopped"], events
    assert events.count("refresh_started") == 1
    engine = store.get_engine(url)
    try:
        assert store.list_runs(engine)["status"].to_list() == ["published"]
        assert store.read_lease(engine) is None
    finally:
        store.dispose_engine(url)


def test_a_refresh_told_to_stop_rolls_back_and_releases_the_lease(engine, world):
    service = make_service(engine, world)
    service.cancel.set()  # what a second SIGTERM, or the stop timeout, does to a running refresh
    outcome = service.run_job("community_contacts")
    assert outcome.status == "stopped" and "RefreshCancelled" in outcome.error
    runs = store.list_runs(engine)
    assert runs["status"].to_list() == ["failed"] and "stopped before it published" in runs["error"][0]
    assert store.latest_run_id(engine) is None and store.read_lease(engine) is None
    assert service.log.named("refresh_cancelled") and not service.log.named("refresh_failed")
