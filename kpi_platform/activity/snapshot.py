"""Turning activity counts into `daily_metrics` rows, and the rules stored snapshots must satisfy."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from kpi_platform import settings
from kpi_platform.activity.metrics import COUNT, totals_pairs
from kpi_platform.activity.source import ActivityCounts, end_of_day

#: A day's snapshot is due this long after the day ends (UTC): the schedule takes it at 00:30, and the rest
#: leaves room for a run waiting in the queue. Healing, the activity alerts and the health report judge a day
#: from then on, and a snapshot taken later is labelled late.
SNAPSHOT_DUE_AFTER = timedelta(hours=2)


def due_at(day: date) -> datetime:
    """When the snapshot of `day` is due (UTC): `SNAPSHOT_DUE_AFTER` after the day ended."""
    return end_of_day(day) + SNAPSHOT_DUE_AFTER


def last_due_day(now_utc: datetime) -> date:
    """The latest day whose snapshot is due at `now_utc` (yesterday UTC from 02:00 on, else the day before)."""
    return (now_utc.astimezone(UTC) - SNAPSHOT_DUE_AFTER).date() - timedelta(days=1)


def is_late(day: date, taken_at: datetime) -> bool:
    """A snapshot of `day` taken after it was due: rows deleted between the day's end and `taken_at` are missing
    from its counts (see `source.AppDatabase.count_days`)."""
    return taken_at > due_at(day)


def snapshot_rows(counts: ActivityCounts, *, run_id: str | None = None) -> list[dict[str, Any]]:
    """One `daily_metrics` row per day × metric (metric_type `count`, metric_category the metric); metadata
    records the source (no password), when it was read, how long after the day's end (`hours_after_day_end`) and
    whether that was after the day was due (`late`)."""
    common = {"source": counts.source, "taken_at": counts.taken_at.isoformat()}
    if run_id:
        common["run_id"] = run_id
    rows: list[dict[str, Any]] = []
    for day in counts.days:
        hours = (counts.taken_at - end_of_day(day.day)).total_seconds() / 3600.0
        metadata = {
            **common,
            "late": is_late(day.day, counts.taken_at),
            "hours_after_day_end": round(hours, 1),
        }
        rows += [
            {
                "metric_date": day.day,
                "metric_type": COUNT,
                "metric_category": metric,
                "value": value,
                "metadata": dict(metadata),
                "collection_timestamp": counts.taken_at,
            }
            for metric, value in day.values.items()
        ]
    return rows


def day_ranges(days: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted days as contiguous inclusive ranges, e.g. for log lines naming many days."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def describe_days(days: Iterable[date]) -> str:
    """'2026-01-01..2026-01-31, 2026-03-02' for a set of days; 'none' when empty."""
    parts = [f"{a}..{b}" if a != b else f"{a}" for a, b in day_ranges(days)]
    return ", ".join(parts) or "none"


# --- Rules over stored rows -------------------------------------------------------------------------------------


def _values(stored: pd.DataFrame) -> dict[tuple[date, str], float]:
    """Stored counts by (day, metric)."""
    rows = stored[stored["metric_type"] == COUNT]
    return {
        (d, m): float(v)
        for d, m, v in zip(rows["metric_date"], rows["metric_category"], rows["value"], strict=True)
    }


def missing_metrics(
    stored: pd.DataFrame, *, start: date, end: date, metrics: Iterable[str] = settings.ACTIVITY_METRICS
) -> dict[date, list[str]]:
    """Days in [start, end] lacking one or more of `metrics` (day → missing metrics); empty when complete."""
    values = _values(stored)
    wanted = list(metrics)
    missing: dict[date, list[str]] = {}
    day = start
    while day <= end:
        absent = [m for m in wanted if (day, m) not in values]
        if absent:
            missing[day] = absent
        day += timedelta(days=1)
    return missing


@dataclass(frozen=True)
class TotalsMismatch:
    """total(d) − total(d−1) ≠ created(d) for one table's metrics.

    `removed` = total(d−1) + created(d) − total(d): rows with created_at before d that existed when day d−1 was
    snapshotted but not when day d was, i.e. the deletions between the two snapshots (negative if rows appeared
    with a backdated created_at).
    """

    day: date
    total_metric: str
    created_metric: str
    previous_total: int
    total: int
    created: int

    @property
    def removed(self) -> int:
        return self.previous_total + self.created - self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "metric": self.total_metric,
            "previous_total": self.previous_total,
            "total": self.total,
            "created": self.created,
            "removed": self.removed,
        }


def totals_mismatches(stored: pd.DataFrame, *, start: date, end: date) -> list[TotalsMismatch]:
    """Days in [start, end] whose totals do not follow from the previous day's plus the day's creations.

    Every stored (`<subject>_total`, `<subject>_created`) pair is compared; only pairs of stored days are, a
    missing day is the other check's business.
    """
    values = _values(stored)
    pairs = totals_pairs({metric for _, metric in values})
    found: list[TotalsMismatch] = []
    day = start
    while day <= end:
        for total_metric, created_metric in pairs:
            keys = ((day - timedelta(days=1), total_metric), (day, total_metric), (day, created_metric))
            if not all(k in values for k in keys):
                continue
            previous, total, created = (int(values[k]) for k in keys)
            if total - previous != created:
                found.append(TotalsMismatch(day, total_metric, created_metric, previous, total, created))
        day += timedelta(days=1)
    return found
