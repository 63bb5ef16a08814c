"""When the refresh service refreshes what: ``definitions/schedule.yaml`` → a validated ``Schedule``.

A schedule names the extracts folder, a cron expression per source (the job watches that source's
folder under the extracts folder and refreshes its metrics when its files change), an optional
nightly full refresh, and how the service retries, waits and stops. Like every definition it is
data, validated on load: an error names the file, the line and the field.

Cron expressions are standard five-field crontab (minute hour day-of-month month day-of-week), in
the schedule's time zone; day-of-week counts from Sunday = 0 (or 7) as in crontab, or uses names
(``mon-fri``). ``every_minute=True`` (``outcomes serve --every-minute`` or
``OUTCOMES_SCHEDULE_EVERY_MINUTE=1``) replaces every cron with ``* * * * *`` for trying the service out.
"""

from __future__ import annotations

import os
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator

from metrics.definitions import Catalogue, _Frozen, _read_yaml, _validate
from metrics.errors import DefinitionError, Issue

__all__ = [
    "EVERY_MINUTE",
    "FULL_REFRESH_JOB",
    "FullRefreshSchedule",
    "RetryPolicy",
    "Schedule",
    "ScheduledJob",
    "SourceSchedule",
    "check_schedule",
    "cron_trigger",
    "default_schedule_path",
    "load_schedule",
]

EVERY_MINUTE = "* * * * *"
FULL_REFRESH_JOB = "full_refresh"
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_day_of_week(field: str) -> str:
    """Crontab's day-of-week (0 or 7 = Sunday, 1 = Monday) as APScheduler day names.

    APScheduler 3 counts 0 = Monday, so ``from_crontab("0 6 * * 1")`` would fire on Tuesdays;
    naming the days removes the ambiguity.
    """
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.lower().split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day-of-week step must be at least 1, got {part!r}")

        def number(text: str) -> int:
            if text in _DAYS:
                return _DAYS.index(text)
            if not text.isdigit() or int(text) > 7:
                raise ValueError(f"day-of-week {text!r} is not 0-7 or a day name (sun, mon, ...)")
            return int(text)

        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            first_text, last_text = body.split("-", 1)
            first, last = number(first_text), number(last_text)
            if last < first:
                raise ValueError(f"day-of-week range {body!r} runs backwards")
        else:
            first = number(body)
            last = first if not step_text else 6
        days |= {day % 7 for day in range(first, last + 1, step)}
    return ",".join(_DAYS[day] for day in sorted(days))


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """A five-field crontab expression as an APScheduler trigger (ValueError if it isn't valid)."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}")
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_day_of_week(day_of_week),
                       timezone=timezone)


def _valid_cron(expression: str) -> str:
    try:
        cron_trigger(expression)
    except ValueError as exc:
        raise ValueError(f"not a valid cron expression {expression!r}: {exc}") from None
    return expression


class SourceSchedule(_Frozen):
    cron: str
    description: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _valid_cron(value)


class FullRefreshSchedule(_Frozen):
    cron: str
    force: bool = Field(False, description="recompute every metric even when nothing changed")
    description: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _valid_cron(value)


class RetryPolicy(_Frozen):
    attempts: Annotated[int, Field(ge=1, le=20)] = 5
    first_delay_seconds: Annotated[float, Field(gt=0)] = 30
    max_delay_seconds: Annotated[float, Field(gt=0)] = 900

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based): doubling, capped."""
        return min(self.first_delay_seconds * 2 ** (attempt - 1), self.max_delay_seconds)


class Schedule(_Frozen):
    extracts: str = Field(description="the extracts folder, one sub-folder per source (OUTCOMES_DATA_DIR overrides)")
    timezone: str = "Europe/London"
    sources: dict[str, SourceSchedule] = Field(default_factory=dict)
    full_refresh: FullRefreshSchedule | None = None
    misfire_grace_seconds: Annotated[int, Field(ge=1)] | None = Field(
        3600 * 24, description="how late a missed run may still start (after downtime); null: however late")
    settle_seconds: Annotated[float, Field(ge=0)] = Field(
        60, description="a file modified more recently than this is still being written: wait for it")
    retry: RetryPolicy = RetryPolicy()
    lease_ttl_seconds: Annotated[float, Field(ge=1)] = 120
    lease_wait_seconds: Annotated[float, Field(ge=0)] = Field(
        1800, description="how long a job waits for another refresh to finish before giving up")
    stop_timeout_seconds: Annotated[float, Field(ge=0)] = Field(
        60, description="on SIGTERM, how long a running refresh may take to finish before it is rolled back")
    # Filled in by the loader.
    file: str = ""
    content_hash: str = ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; expected an IANA name such as Europe/London") from None
        return value

    @model_validator(mode="after")
    def _something_scheduled(self) -> Schedule:
        if not self.sources and self.full_refresh is None:
            raise ValueError("nothing is scheduled: give 'sources' (a cron per source) and/or 'full_refresh'")
        return self

    def extracts_dir(self) -> Path:
        """``OUTCOMES_DATA_DIR`` if set, else ``extracts`` (relative to the working directory)."""
        return Path(os.environ.get("OUTCOMES_DATA_DIR") or self.extracts)

    def jobs(self) -> list[ScheduledJob]:
        """One job per scheduled source, then the full refresh."""
        jobs = [ScheduledJob(id=source_id, cron=spec.cron, sources=(source_id,), force=False,
                             description=spec.description or f"refresh {source_id} when its extracts change")
                for source_id, spec in self.sources.items()]
        if self.full_refresh is not None:
            jobs.append(ScheduledJob(id=FULL_REFRESH_JOB, cron=self.full_refresh.cron, sources=None,
                                     force=self.full_refresh.force,
                                     description=self.full_refresh.description or
                                     ("recompute every metric" if self.full_refresh.force
                                      else "refresh every source whose extracts changed")))
        return jobs

    def every_minute(self) -> Schedule:
        """The same schedule with every cron replaced by ``* * * * *`` (for trying the service out)."""
        return self.model_copy(update={
            "sources": {k: v.model_copy(update={"cron": EVERY_MINUTE}) for k, v in self.sources.items()},
            "full_refresh": self.full_refresh.model_copy(update={"cron": EVERY_MINUTE}) if self.full_refresh else None,
        })


@dataclass(frozen=True)
class ScheduledJob:
    id: str
    cron: str
    sources: tuple[str, ...] | None  # None: every source
    force: bool
    description: str

    def trigger(self, timezone: str) -> CronTrigger:
        return cron_trigger(self.cron, timezone)


def default_schedule_path(definitions_dir: str | Path | None = None) -> Path:
    """``OUTCOMES_SCHEDULE``, else ``schedule.yaml`` in the definitions folder."""
    if os.environ.get("OUTCOMES_SCHEDULE"):
        return Path(os.environ["OUTCOMES_SCHEDULE"])
    if definitions_dir is None:
        from metrics.refresh import (
            default_definitions_dir,  # the orchestrator owns the default folder
        )

        definitions_dir = default_definitions_dir()
    return Path(definitions_dir) / "schedule.yaml"


def check_schedule(schedule: Schedule, catalogue: Catalogue, lines: dict | None = None) -> list[Issue]:
    """Cross-checks against the definitions: every scheduled source exists."""
    issues = []
    for source_id in schedule.sources:
        if source_id not in catalogue.sources:
            known = ", ".join(sorted(catalogue.sources))
            issues.append(Issue("error", schedule.file, f"unknown source '{source_id}'; expected one of: {known}",
                                line=(lines or {}).get(("sources", source_id)), field=f"sources.{source_id}",
                                code="unknown_source"))
    return issues


def load_schedule(path: str | Path | None = None, *, catalogue: Catalogue | None = None,
                  every_minute: bool | None = None) -> Schedule:
    """Load and validate a schedule; raise ``DefinitionError`` naming file, line and field on any error.

    ``every_minute`` (default: ``OUTCOMES_SCHEDULE_EVERY_MINUTE`` is set to 1/true/yes) replaces
    every cron expression with ``* * * * *``.
    """
    path = Path(path) if path is not None else default_schedule_path()
    issues: list[Issue] = []
    if not path.is_file():
        raise DefinitionError([Issue("error", str(path), "schedule file not found", code="missing")])
    data, lines, _ = _read_yaml(path, issues)
    schedule = _validate(Schedule, path, data, lines, issues) if data is not None else None
    if schedule is not None and catalogue is not None:
        issues.extend(check_schedule(schedule, catalogue, lines))
    errors = [i for i in issues if i.level == "error"]
    if errors or schedule is None:
        raise DefinitionError(errors)
    if every_minute is None:
        every_minute = os.environ.get("OUTCOMES_SCHEDULE_EVERY_MINUTE", "").strip().lower() in ("1", "true", "yes")
    return schedule.every_minute() if every_minute else schedule

