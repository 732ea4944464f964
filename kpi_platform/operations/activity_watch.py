"""Watching the platform activity snapshots: which due days are missing, how long since the last snapshot, which
alerts that makes, and which missed days the healing sensor requests.

Plain functions over facts read from the warehouse (stored snapshots) and from Dagster's run history (the
snapshot job's failures in a row, gathered by `defs/`), so the decisions are tested with a fixed clock.

Due days: the snapshot of day D (UTC) is due from 02:00 UTC on D + 1 (`activity.snapshot.SNAPSHOT_DUE_AFTER`:
the schedule takes it at 00:30). A due day is missing while any metric collected (`activity.metrics
.collection_plan`: the active definitions with a collector; the five built-in ones by default) is not stored. Days are
judged over the last `HORIZON_DAYS` due days; the healer requests missing ones within that horizon, older ones are
left to a person (the further back, the more rows deleted since, see README › Late snapshots).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.activity.metrics import COUNT, collection_plan
from kpi_platform.activity.snapshot import last_due_day, missing_metrics
from kpi_platform.keys import contiguous
from kpi_platform.operations.alerts import RUNBOOK, Alert, Severity
from kpi_platform.warehouse import Warehouse, as_utc, schema

#: Scope of every activity alert (`Notifier.sync`), and the keys within it.
ACTIVITY_PREFIX = "activity:"
MISSING_PREFIX = "activity:missing:"
FAILING_KEY = "activity:snapshot_failing"
STALE_KEY = "activity:no_recent_snapshot"
#: Due days judged (alerts, health, healing): the last 30.
HORIZON_DAYS = 30
#: Failed snapshot runs in a row from which the failure alert is CRITICAL (MEDIUM before).
FAILURES_CRITICAL = 3
#: Hours since the newest stored snapshot after which the platform counts as not snapshotting: CRITICAL alert,
#: unhealthy health check. The schedule stores one day every 24 h, so 48 h is two nightly snapshots missed.
STALE_AFTER_H = 48.0
#: Missing days listed in an alert body or health details at most; the counts cover every day.
LISTED_DAYS_MAX = 20
#: The healer waits this long after a failed run before requesting its days again, doubling with each failure
#: in a row up to `HEAL_MAX_COOLDOWN_S`. It never gives up within the horizon: the alerts stay open meanwhile.
HEAL_BASE_COOLDOWN_S = 1800.0
HEAL_MAX_COOLDOWN_S = 8 * 3600.0
#: Runs the healer requests per tick at most (one per contiguous range of missing days, newest first).
HEAL_MAX_RUNS_PER_TICK = 5


# --- Facts ------------------------------------------------------------------------------------------------------


def due_window(now_utc: datetime, horizon_days: int = HORIZON_DAYS) -> tuple[date, date]:
    """The last `horizon_days` due days at `now_utc`, not before the first partition (empty when start > end)."""
    end = last_due_day(now_utc)
    start = max(date.fromisoformat(settings.PARTITIONS_START_DATE), end - timedelta(days=horizon_days - 1))
    return start, end


@dataclass(frozen=True)
class ActivityFacts:
    """The stored snapshots as judged at `now_utc`: the due window, its missing days (day → missing metrics),
    how many of its days were stored late, when the newest snapshot was taken (None: nothing stored), and the
    metrics each day must have (the collected ones)."""

    now_utc: datetime
    start: date
    end: date
    missing: Mapping[date, Sequence[str]]
    newest_collected_at: datetime | None
    late_days: int = 0
    expected_days: int = 0
    expected_metrics: tuple[str, ...] = settings.ACTIVITY_METRICS

    @property
    def hours_since_snapshot(self) -> float | None:
        if self.newest_collected_at is None:
            return None
        return round((self.now_utc - self.newest_collected_at).total_seconds() / 3600.0, 2)

    @property
    def stale(self) -> bool:
        """No snapshot stored, or the newest one older than `STALE_AFTER_H`."""
        hours = self.hours_since_snapshot
        return hours is None or hours > STALE_AFTER_H

    @property
    def missing_in_window(self) -> list[date]:
        return sorted(d for d in self.missing if self.start <= d <= self.end)


def newest_snapshot_at(warehouse: Warehouse) -> datetime | None:
    """When the newest stored activity snapshot was taken: max(collection_timestamp) of the `count` rows.

    A snapshot run writes every day it stores with the moment it read the application database, so this is the
    latest successful snapshot that stored anything (a late one for an old day included)."""
    table = schema.daily_metrics
    query = sa.select(sa.func.max(table.c.collection_timestamp)).where(table.c.metric_type == COUNT)
    with warehouse.engine.connect() as conn:
        return as_utc(conn.execute(query).scalar())


def read_activity_facts(
    warehouse: Warehouse,
    *,
    now_utc: datetime,
    horizon_days: int = HORIZON_DAYS,
    also_days: Iterable[date] = (),
) -> ActivityFacts:
    """The facts at `now_utc` (aware). `also_days` are judged too even before the window (days whose missing
    alert is still open: it resolves only once the day is stored, not when it ages out of the horizon)."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    now_utc = now_utc.astimezone(UTC)
    start, end = due_window(now_utc, horizon_days)
    expected_metrics = collection_plan(warehouse.metric_definitions()).collected
    missing: dict[date, list[str]] = {}
    late: set[date] = set()
    expected = 0
    if start <= end:
        expected = (end - start).days + 1
        stored = warehouse.read_daily_metrics(start=start, end=end, types=[COUNT])
        missing.update(missing_metrics(stored, start=start, end=end, metrics=expected_metrics))
        for day, meta in zip(stored["metric_date"], stored["metadata"], strict=True):
            if isinstance(meta, Mapping) and meta.get("late") is True:
                late.add(day)
    for day in sorted({d for d in also_days if d < start}):
        stored = warehouse.read_daily_metrics(start=day, end=day, types=[COUNT])
        missing.update(missing_metrics(stored, start=day, end=day, metrics=expected_metrics))
    return ActivityFacts(
        now_utc=now_utc,
        start=start,
        end=end,
        missing=missing,
        newest_collected_at=newest_snapshot_at(warehouse),
        late_days=len(late),
        expected_days=expected,
        expected_metrics=expected_metrics,
    )


@dataclass(frozen=True)
class FailureStreak:
    """The snapshot job's latest finished runs that failed in a row (0: the latest one succeeded, or none ran),
    and the newest of them: run id, when it ended, its error class and message."""

    count: int = 0
    run_id: str | None = None
    failed_at: datetime | None = None
    error: str = ""
    message: str = ""


# --- Alerts -----------------------------------------------------------------------------------------------------


def missing_key(day: date) -> str:
    return f"{MISSING_PREFIX}{day.isoformat()}"


def day_of_missing_key(key: str) -> date | None:
    """The day of an `activity:missing:<day>` key; None for any other key."""
    if not key.startswith(MISSING_PREFIX):
        return None
    try:
        return date.fromisoformat(key.removeprefix(MISSING_PREFIX))
    except ValueError:
        return None


def activity_alerts(facts: ActivityFacts, streak: FailureStreak) -> list[Alert]:
    """The activity problems at `facts.now_utc`; sync them with scope `ACTIVITY_PREFIX`, so each resolves once fixed.

    * `activity:missing:<day>` MEDIUM (a warning): a due day without all its metrics stored. Resolves when the
      day is stored (by the healer, the schedule or a person).
    * `activity:snapshot_failing` MEDIUM from the first failed snapshot run, CRITICAL from `FAILURES_CRITICAL`
      failures in a row (the notifier sends it again when it becomes CRITICAL). Resolves with the next success.
    * `activity:no_recent_snapshot` CRITICAL: the newest snapshot is older than `STALE_AFTER_H`, or there is none.
    """
    alerts: list[Alert] = []
    for day in sorted(facts.missing):
        metrics = list(facts.missing[day])
        which = (
            f"all {len(metrics)} metrics"
            if len(metrics) == len(facts.expected_metrics)
            else ", ".join(metrics)
        )
        alerts.append(
            Alert(
                missing_key(day),
                Severity.MEDIUM,
                f"Activity snapshot missing for {day}",
                f"The platform activity snapshot of {day} (UTC) was due at 02:00 UTC the next day and lacks "
                f"{which} (expected: {', '.join(facts.expected_metrics)}).\n"
                "What to do: activity_gap_healing_sensor requests missing days of the last "
                f"{HORIZON_DAYS} days by itself (a late snapshot cannot count rows deleted since that day, and "
                "is labelled `late`); if the day stays missing, read the failed runs of activity_snapshot_job and "
                "re-run the day (Assets › platform/daily_activity_snapshot, its partition). "
                f"See {RUNBOOK} › Alerts.",
            )
        )
    if streak.count:
        severity = Severity.CRITICAL if streak.count >= FAILURES_CRITICAL else Severity.MEDIUM
        when = f" at {streak.failed_at:%Y-%m-%d %H:%M} UTC" if streak.failed_at is not None else ""
        alerts.append(
            Alert(
                FAILING_KEY,
                severity,
                f"Activity snapshot failed {streak.count} time{'s' if streak.count != 1 else ''} in a row",
                f"The latest {streak.count} finished run(s) of activity_snapshot_job failed (CRITICAL from "
                f"{FAILURES_CRITICAL} in a row). Newest: run {streak.run_id}{when}, {streak.error}: "
                f"{streak.message[:1500]}\n"
                "What to do: read that run in the UI (Runs, job activity_snapshot_job). Database connection "
                "errors were already retried 3 times in the run; check KPI_APP_DB_URL and that the application "
                "database and the warehouse answer. Missed days are requested again by "
                f"activity_gap_healing_sensor after a cool-down. See {RUNBOOK} › Alerts.",
            )
        )
    if facts.stale:
        if facts.newest_collected_at is None:
            title = "No platform activity snapshot stored"
            since = "No activity snapshot has been stored in the warehouse yet"
        else:
            title = f"No platform activity snapshot for {facts.hours_since_snapshot:.0f} h"
            since = (
                f"The newest activity snapshot was taken {facts.newest_collected_at:%Y-%m-%d %H:%M} UTC, "
                f"{facts.hours_since_snapshot:.0f} h ago (expected: within {STALE_AFTER_H:.0f} h)"
            )
        alerts.append(
            Alert(
                STALE_KEY,
                Severity.CRITICAL,
                title,
                f"{since}: the platform's own activity is not being recorded, and every day not snapshotted "
                "loses the rows deleted since.\n"
                "What to do: check that activity_snapshot_schedule and the daemon run (`kpi-platform health`), "
                "read the failed runs of activity_snapshot_job and fix their cause (KPI_APP_DB_URL, the "
                f"databases). See {RUNBOOK} › Alerts.",
            )
        )
    return alerts


# --- Healing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayFailure:
    """How often in a row the snapshot of a day failed, when last (epoch seconds) and why."""

    count: int
    last_failed_ts: float
    reason: str

    def cooldown_s(self) -> float:
        return min(HEAL_MAX_COOLDOWN_S, HEAL_BASE_COOLDOWN_S * 2 ** (self.count - 1))

    def retry_at(self) -> float:
        return self.last_failed_ts + self.cooldown_s()

    def to_json(self) -> list:
        return [self.count, self.last_failed_ts, self.reason]

    @classmethod
    def from_json(cls, raw: Sequence) -> DayFailure:
        return cls(int(raw[0]), float(raw[1]), str(raw[2]))


def record_day_failures(
    failures: Mapping[str, DayFailure], *, first: date, last: date, failed_ts: float, reason: str
) -> dict[str, DayFailure]:
    """One more failure for each day of a failed run over `first`..`last` (feed runs oldest first); keys are ISO
    days."""
    updated = dict(failures)
    day = first
    while day <= last:
        previous = updated.get(day.isoformat())
        count = previous.count + 1 if previous is not None else 1
        updated[day.isoformat()] = DayFailure(count, failed_ts, reason[:300])
        day += timedelta(days=1)
    return updated


@dataclass(frozen=True)
class ActivityHealingPlan:
    """What one healer tick requests (contiguous day ranges, newest first) and what it holds back."""

    ranges: tuple[tuple[date, date], ...]
    missing: int
    in_progress: int
    cooling: tuple[date, ...]
    deferred_ranges: int


def plan_activity_healing(
    *,
    missing: Iterable[date],
    in_progress: Iterable[date],
    failures: Mapping[str, DayFailure],
    now_ts: float,
    max_runs: int = HEAL_MAX_RUNS_PER_TICK,
) -> ActivityHealingPlan:
    """Missing due days not queued, running or in a backfill (`in_progress`) and not cooling down after a failure,
    as contiguous ranges (one run each: the asset's backfill policy is a single run per range), newest first, at
    most `max_runs`."""
    busy = set(in_progress)
    todo: list[date] = []
    cooling: list[date] = []
    wanted = sorted(set(missing))
    for day in wanted:
        if day in busy:
            continue
        memory = failures.get(day.isoformat())
        if memory is not None and now_ts < memory.retry_at():
            cooling.append(day)
            continue
        todo.append(day)
    ranges = sorted(contiguous(todo), key=lambda r: r[1], reverse=True)
    return ActivityHealingPlan(
        ranges=tuple(ranges[:max_runs]),
        missing=len(wanted),
        in_progress=len([d for d in wanted if d in busy]),
        cooling=tuple(cooling),
        deferred_ranges=max(0, len(ranges) - max_runs),
    )


def prune_day_failures(
    failures: Mapping[str, DayFailure], *, missing: Iterable[date]
) -> dict[str, DayFailure]:
    """The failure memory worth keeping: days still missing (a stored day, or one out of the horizon, is forgotten)."""
    keep = {d.isoformat() for d in missing}
    return {k: v for k, v in failures.items() if k in keep}


def describe_plan(plan: ActivityHealingPlan) -> str:
    """One log line for a healer tick."""
    requested = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in plan.ranges) or "none"
    return (
        f"missing={plan.missing} in_progress={plan.in_progress} cooling={len(plan.cooling)} "
        f"requested={requested} deferred_ranges={plan.deferred_ranges}"
    )
