"""Snapshot rows and the due rule: a day is due from 02:00 UTC the next day, and a snapshot taken later is late."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from kpi_platform.activity.snapshot import due_at, is_late, last_due_day, snapshot_rows
from kpi_platform.activity.source import ActivityCounts, DayActivity

NOV_9 = date(2026, 11, 9)


def counts(taken_at: datetime, *days: date) -> ActivityCounts:
    values = {
        "users_total": 3,
        "posts_total": 5,
        "comments_total": 7,
        "posts_created": 1,
        "comments_created": 2,
    }
    return ActivityCounts(
        start=min(days),
        end=max(days),
        taken_at=taken_at,
        source="sqlite:///app.sqlite",
        days=tuple(DayActivity(day=d, values=dict(values)) for d in days),
    )


def test_a_day_is_due_at_two_utc_the_next_day():
    assert due_at(NOV_9) == datetime(2026, 11, 10, 2, 0, tzinfo=UTC)
    assert last_due_day(datetime(2026, 11, 10, 1, 59, tzinfo=UTC)) == date(2026, 11, 8)
    assert last_due_day(datetime(2026, 11, 10, 2, 0, tzinfo=UTC)) == NOV_9
    assert last_due_day(datetime(2026, 11, 10, 23, 59, tzinfo=UTC)) == NOV_9
    # Judged in UTC whatever the clock's zone: 03:30 in UTC+3 is 00:30 UTC.
    assert last_due_day(datetime(2026, 11, 10, 3, 30, tzinfo=timezone(timedelta(hours=3)))) == date(
        2026, 11, 8
    )


def test_a_snapshot_taken_after_the_day_was_due_is_late():
    assert not is_late(NOV_9, datetime(2026, 11, 10, 0, 30, tzinfo=UTC))
    assert not is_late(NOV_9, due_at(NOV_9))
    assert is_late(NOV_9, due_at(NOV_9) + timedelta(seconds=1))


def test_rows_carry_the_late_label_and_the_hours_after_the_day_end_per_day():
    taken = datetime(2026, 11, 10, 0, 30, tzinfo=UTC)
    rows = snapshot_rows(counts(taken, date(2026, 11, 7), NOV_9), run_id="r1")
    assert len(rows) == 10
    by_day = {row["metric_date"]: row["metadata"] for row in rows}
    assert by_day[NOV_9] == {
        "source": "sqlite:///app.sqlite",
        "taken_at": taken.isoformat(),
        "run_id": "r1",
        "late": False,
        "hours_after_day_end": 0.5,
    }
    assert by_day[date(2026, 11, 7)]["late"] is True
    assert by_day[date(2026, 11, 7)]["hours_after_day_end"] == 48.5
    assert all(row["collection_timestamp"] == taken for row in rows)
    # The designed layout: the kind of figure in metric_type, the metric in metric_category.
    assert {row["metric_type"] for row in rows} == {"count"}
    assert [row["metric_category"] for row in rows[:5]] == list(counts(taken, NOV_9).days[0].values)
    # Each row has its own metadata object.
    rows[0]["metadata"]["late"] = "changed"
    assert rows[1]["metadata"]["late"] != "changed"
