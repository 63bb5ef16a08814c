"""Exactly one refresh at a time: a lease row in the store, and the run bookkeeping the service needs.

The lease is one row of ``refresh_lease`` per name (the engine uses ``"refresh"``). It is taken
atomically, correct on SQLite and PostgreSQL alike, by either

- a conditional ``UPDATE`` of the row where it has expired (or is already ours), or
- an ``INSERT`` of the row when there is none (a primary-key conflict means someone else won),

each a single statement in its own transaction, so two processes racing for it can't both win: on
PostgreSQL the second ``UPDATE`` waits for the first and re-checks the expiry against the new row;
on SQLite writes are serialised. The holder (``host:pid:uuid``) renews it with a heartbeat while it
works and deletes it when done. A holder that crashes stops renewing, so its lease expires and another
process takes over; a holder on this host whose process has gone is taken over at once.

Times come from the caller's clock (UTC, injectable for tests): hosts sharing a store should keep
their clocks in sync (NTP), and the lease's time to live should be well above any skew.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import polars as pl
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from store.models import RefreshLease, RefreshRun

__all__ = [
    "DEFAULT_LEASE",
    "Lease",
    "LeaseHeld",
    "LeaseInfo",
    "LeaseLost",
    "last_runs",
    "make_holder",
    "previous_published_run",
    "read_lease",
    "record_skipped_run",
    "release_lease",
    "renew_lease",
    "try_acquire_lease",
]

DEFAULT_LEASE = "refresh"
Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LeaseInfo:
    name: str
    holder: str
    purpose: str
    acquired_at: dt.datetime
    expires_at: dt.datetime
    heartbeat: dt.datetime

    def describe(self) -> str:
        what = f" ({self.purpose})" if self.purpose else ""
        return (f"held by {self.holder}{what} since {self.acquired_at:%Y-%m-%d %H:%M:%S} UTC, "
                f"last heartbeat {self.heartbeat:%H:%M:%S}, expires {self.expires_at:%Y-%m-%d %H:%M:%S} UTC")


class LeaseHeld(RuntimeError):
    """Another process holds the lease (another refresh is running)."""

    def __init__(self, info: LeaseInfo | None, name: str = DEFAULT_LEASE):
        self.info = info
        detail = info.describe() if info else "held by another process"
        super().__init__(f"another refresh is running: the '{name}' lease is {detail}; "
                         "try again when it has finished (`outcomes status` shows it)")


class LeaseLost(RuntimeError):
    """The lease expired and was taken over while we worked: our result must not be published."""


def make_holder() -> str:
    """``host:pid:uuid``: which process holds a lease, unique even for two holders in one process."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _alive_here(holder: str) -> bool | None:
    """Whether a holder's process is alive: None when it is on another host (we can't tell)."""
    host, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _info(row: Any) -> LeaseInfo:
    return LeaseInfo(row.name, row.holder, row.purpose, row.acquired_at, row.expires_at, row.heartbeat)


def read_lease(engine: Engine, name: str = DEFAULT_LEASE) -> LeaseInfo | None:
    """The lease row as it stands (it may have expired), or None when nobody holds it."""
    with engine.connect() as conn:
        row = conn.execute(select(RefreshLease.name, RefreshLease.holder, RefreshLease.purpose,
                                  RefreshLease.acquired_at, RefreshLease.expires_at, RefreshLease.heartbeat)
                           .where(RefreshLease.name == name)).first()
    return _info(row) if row is not None else None


def try_acquire_lease(engine: Engine, holder: str, *, name: str = DEFAULT_LEASE, ttl: float = 120.0,
                      purpose: str = "", now: dt.datetime | None = None,
                      take_over_dead: bool = True) -> tuple[bool, LeaseInfo | None]:
    """Take the lease if it is free, expired or ours: ``(True, lease)``; else ``(False, current lease)``.

    ``take_over_dead``: a holder on this host whose process has ended is taken over at once
    (compare-and-swap on its holder string), rather than after its lease expires.
    """
    now = now or _utc_now()
    values = {"holder": holder, "purpose": purpose, "acquired_at": now, "heartbeat": now,
              "expires_at": now + dt.timedelta(seconds=ttl)}
    with engine.begin() as conn:
        taken = conn.execute(update(RefreshLease)
                             .where(RefreshLease.name == name,
                                    (RefreshLease.expires_at < now) | (RefreshLease.holder == holder))
                             .values(**values)).rowcount
    if taken == 1:
        return True, read_lease(engine, name)
    try:
        with engine.begin() as conn:
            conn.execute(insert(RefreshLease).values(name=name, **values))
        return True, read_lease(engine, name)
    except IntegrityError:
        pass  # a row is there: someone holds it (or took it between our two statements)
    current = read_lease(engine, name)
    if current is None:
        return False, None  # released between our statements: the caller tries again
    if take_over_dead and _alive_here(current.holder) is False:
        with engine.begin() as conn:
            taken = conn.execute(update(RefreshLease)
                                 .where(RefreshLease.name == name, RefreshLease.holder == current.holder)
                                 .values(**values)).rowcount
        if taken == 1:
            return True, read_lease(engine, name)
        current = read_lease(engine, name)
    return False, current


def renew_lease(engine: Engine, holder: str, *, name: str = DEFAULT_LEASE, ttl: float = 120.0,
                now: dt.datetime | None = None) -> bool:
    """Extend our lease by ``ttl`` from now; False when it is no longer ours (it expired and was taken)."""
    now = now or _utc_now()
    with engine.begin() as conn:
        return conn.execute(update(RefreshLease).where(RefreshLease.name == name, RefreshLease.holder == holder)
                            .values(heartbeat=now, expires_at=now + dt.timedelta(seconds=ttl))).rowcount == 1


def release_lease(engine: Engine, holder: str, *, name: str = DEFAULT_LEASE) -> bool:
    """Give the lease up (only if it is still ours)."""
    with engine.begin() as conn:
        return conn.execute(delete(RefreshLease).where(RefreshLease.name == name,
                                                       RefreshLease.holder == holder)).rowcount == 1


class Lease:
    """A lease this process may hold, with a heartbeat thread that renews it while held.

    >>> lease = Lease(engine, purpose="cli refresh")
    >>> lease.acquire_or_raise()      # LeaseHeld names the holder if someone else has it
    >>> try: ...; lease.check()       # before publishing: LeaseLost if it was taken over
    ... finally: lease.release()

    The heartbeat renews every ``ttl / 3`` seconds of real time; a renewal that finds the lease gone
    marks it ``lost``, and ``check()`` then raises ``LeaseLost``.
    """

    def __init__(self, engine: Engine, *, name: str = DEFAULT_LEASE, ttl: float = 120.0, purpose: str = "",
                 holder: str | None = None, clock: Clock | None = None, take_over_dead: bool = True,
                 on_heartbeat_error: Callable[[Exception], None] | None = None):
        self.engine = engine
        self.name = name
        self.ttl = float(ttl)
        self.purpose = purpose
        self.holder = holder or make_holder()
        self.clock = clock or _utc_now
        self.take_over_dead = take_over_dead
        self.on_heartbeat_error = on_heartbeat_error
        self.held = False
        self.lost = False
        self.last_seen: LeaseInfo | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Try once; True when we now hold it (and the heartbeat runs)."""
        acquired, current = try_acquire_lease(self.engine, self.holder, name=self.name, ttl=self.ttl,
                                              purpose=self.purpose, now=self.clock(),
                                              take_over_dead=self.take_over_dead)
        self.last_seen = current
        if acquired:
            self.held, self.lost = True, False
            self._start_heartbeat()
        return acquired

    def acquire_or_raise(self) -> None:
        if not self.acquire():
            raise LeaseHeld(self.last_seen, self.name)

    def check(self) -> None:
        """Renew now and make sure it is still ours (call right before publishing)."""
        if not self.held:
            raise LeaseLost(f"the '{self.name}' lease is not held by {self.holder}")
        if self.lost or not renew_lease(self.engine, self.holder, name=self.name, ttl=self.ttl, now=self.clock()):
            self.lost = True
            current = read_lease(self.engine, self.name)
            raise LeaseLost(f"the '{self.name}' lease expired and was taken over"
                            + (f" ({current.describe()})" if current else "") + "; this run is not published")

    def release(self) -> None:
        self._stop_heartbeat()
        if self.held:
            self.held = False
            try:
                release_lease(self.engine, self.holder, name=self.name)
            except Exception as exc:  # noqa: BLE001  (it expires anyway; say so and carry on)
                if self.on_heartbeat_error:
                    self.on_heartbeat_error(exc)

    def __enter__(self) -> Self:
        self.acquire_or_raise()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()

    def _start_heartbeat(self) -> None:
        self._stop_heartbeat()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-heartbeat-{self.name}", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self._thread = None

    def _beat(self) -> None:
        interval = max(self.ttl / 3, 0.05)
        while not self._stop.wait(interval):
            try:
                if not renew_lease(self.engine, self.holder, name=self.name, ttl=self.ttl, now=self.clock()):
                    self.lost = True
                    return
            except Exception as exc:  # noqa: BLE001  (a busy database: try again next beat)
                if self.on_heartbeat_error:
                    self.on_heartbeat_error(exc)


# --- runs, as the refresh service sees them -------------------------------------------------------


def record_skipped_run(engine: Engine, *, trigger: str, data_dir: str = "", code_version: str = "",
                       as_of: dt.date | None = None, sources: dict | None = None, reason: str = "",
                       seconds: float = 0.0) -> int:
    """Record that a refresh found nothing changed: status ``skipped``, nothing published."""
    now = _utc_now()
    with engine.begin() as conn:
        result = conn.execute(insert(RefreshRun).values(
            status="skipped", started_at=now - dt.timedelta(seconds=seconds), finished_at=now, trigger=trigger,
            data_dir=data_dir, code_version=code_version, as_of=as_of, host=socket.gethostname(), pid=os.getpid(),
            definitions_json="{}", sources_json=json.dumps(sources or {}, default=str),
            timings_json=json.dumps({"total": round(seconds, 3)}), values_count=0, quarantined_count=0,
            error=reason or None,
        ))
        return int(result.inserted_primary_key[0])


def previous_published_run(engine: Engine, run_id: int) -> int | None:
    """The published run before ``run_id`` (what readers saw until it was published)."""
    with engine.connect() as conn:
        return conn.execute(select(func.max(RefreshRun.id))
                            .where(RefreshRun.status == "published", RefreshRun.id < run_id)).scalar()


_LAST_RUN_SCHEMA: dict[str, pl.DataType] = {
    "trigger": pl.String(), "run_id": pl.Int64(), "status": pl.String(), "started_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"), "values_count": pl.Int64(), "quarantined_count": pl.Int64(),
    "error": pl.String(), "timings_json": pl.String(), "sources_json": pl.String(),
}


def last_runs(engine: Engine, triggers: list[str] | None = None, *, status: str | None = None) -> pl.DataFrame:
    """The latest run of each trigger (e.g. ``schedule:community_contacts``), whatever its status
    (or only of ``status``): one row per trigger that has run."""
    latest = select(RefreshRun.trigger, func.max(RefreshRun.id).label("run_id"))
    if triggers is not None:
        latest = latest.where(RefreshRun.trigger.in_(triggers))
    if status is not None:
        latest = latest.where(RefreshRun.status == status)
    latest = latest.group_by(RefreshRun.trigger).subquery()
    query = (select(RefreshRun.trigger, RefreshRun.id, RefreshRun.status, RefreshRun.started_at,
                    RefreshRun.finished_at, RefreshRun.values_count, RefreshRun.quarantined_count,
                    RefreshRun.error, RefreshRun.timings_json, RefreshRun.sources_json)
             .join(latest, RefreshRun.id == latest.c.run_id).order_by(RefreshRun.trigger))
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(query)]
    return pl.DataFrame(rows, schema=_LAST_RUN_SCHEMA, orient="row")
