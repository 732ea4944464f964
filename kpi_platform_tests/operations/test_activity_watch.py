"""Watching activity snapshots at a fixed clock: due days, missing days, alerts raised and resolved, healing plans."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from kpi_platform.operations.activity_watch import (
    ACTIVITY_PREFIX,
    FAILING_KEY,
    HEAL_BASE_COOLDOWN_S,
    HEAL_MAX_COOLDOWN_S,
    STALE_KEY,
    ActivityFacts,
    DayFailure,
    FailureStreak,
    activity_alerts,
    day_of_missing_key,
    due_window,
    missing_key,
    plan_activity_healing,
    prune_day_failures,
    read_activity_facts,
    record_day_failures,
)
from kpi_platform.operations.alerts import Notifier, Severity
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.activity import snapshot_days, store_snapshots

#: 12:00 UTC on the 20th: the 19th is due (from 02:00), the window is the 20th of October .. the 19th.
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
YESTERDAY = date(2026, 11, 19)
WINDOW_START = date(2026, 10, 21)


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    wh.migrate()
    yield wh
    wh.dispose()


def facts(*, missing=(), newest: datetime | None = NOW - timedelta(hours=10)) -> ActivityFacts:
    return ActivityFacts(
        now_utc=NOW,
        start=WINDOW_START,
        end=YESTERDAY,
        missing={day: ["users_total"] for day in missing},
        newest_collected_at=newest,
        expected_days=30,
    )


# --- facts --------------------------------------------------------------------------------------------------------


def test_the_due_window_is_the_last_30_due_days():
    assert due_window(NOW) == (WINDOW_START, YESTERDAY)
    # Before 02:00 UTC yesterday is not due yet.
    assert due_window(datetime(2026, 11, 20, 1, 0, tzinfo=UTC)) == (date(2026, 10, 20), date(2026, 11, 18))
    assert due_window(NOW, horizon_days=3) == (date(2026, 11, 17), YESTERDAY)


def test_facts_name_missing_and_incomplete_days_late_ones_and_the_newest_snapshot(warehouse):
    taken = NOW - timedelta(hours=6)
    store_snapshots(
        warehouse, snapshot_days(WINDOW_START, date(2026, 11, 10)), collected_at=taken - timedelta(days=3)
    )
    store_snapshots(warehouse, [date(2026, 11, 12), date(2026, 11, 13)], collected_at=taken, late=True)
    store_snapshots(warehouse, [YESTERDAY], collected_at=taken, metrics=["users_total", "posts_total"])
    # Before the window and after the last due day: not judged.
    store_snapshots(warehouse, [NOW.date()], collected_at=NOW, metrics=["users_total"])

    found = read_activity_facts(warehouse, now_utc=NOW)
    assert (found.start, found.end, found.expected_days) == (WINDOW_START, YESTERDAY, 30)
    assert found.missing_in_window == [
        date(2026, 11, 11),
        *snapshot_days(date(2026, 11, 14), date(2026, 11, 19)),
    ]
    assert list(found.missing[YESTERDAY]) == ["comments_total", "posts_created", "comments_created"]
    assert len(found.missing[date(2026, 11, 11)]) == 5
    assert found.late_days == 2
    assert found.newest_collected_at == NOW  # the (not yet due) today row is the newest snapshot taken
    assert found.hours_since_snapshot == 0.0


def test_an_inactive_metric_is_not_expected_and_the_alert_names_the_expected_ones(warehouse):
    table = schema.metric_definitions
    with warehouse.engine.begin() as conn:
        conn.execute(
            table.update().where(table.c.metric_category == "comments_created").values(is_active=False)
        )
    four = ["users_total", "posts_total", "comments_total", "posts_created"]
    store_snapshots(warehouse, snapshot_days(WINDOW_START, YESTERDAY), collected_at=NOW, metrics=four)
    found = read_activity_facts(warehouse, now_utc=NOW)
    assert found.missing_in_window == []
    assert found.expected_metrics == tuple(four)

    store_snapshots(warehouse, [date(2026, 11, 20)], collected_at=NOW, metrics=["users_total"])
    later = read_activity_facts(warehouse, now_utc=NOW + timedelta(days=1))
    assert dict(later.missing) == {date(2026, 11, 20): ["posts_total", "comments_total", "posts_created"]}
    (alert,) = [
        a for a in activity_alerts(later, FailureStreak()) if a.key == missing_key(date(2026, 11, 20))
    ]
    assert "(expected: users_total, posts_total, comments_total, posts_created)" in alert.body


def test_facts_of_an_empty_warehouse_miss_every_day_and_are_stale(warehouse):
    found = read_activity_facts(warehouse, now_utc=NOW)
    assert len(found.missing_in_window) == 30
    assert found.newest_collected_at is None and found.hours_since_snapshot is None
    assert found.stale


def test_open_days_before_the_window_are_judged_too(warehouse):
    old, stored_old = date(2026, 9, 1), date(2026, 9, 2)
    store_snapshots(warehouse, [stored_old], collected_at=NOW - timedelta(hours=1))
    found = read_activity_facts(warehouse, now_utc=NOW, also_days=[old, stored_old, NOW.date()])
    assert old in found.missing and stored_old not in found.missing
    assert NOW.date() not in found.missing  # not due yet: never judged
    assert old not in found.missing_in_window


def test_naive_clock_is_refused(warehouse):
    with pytest.raises(ValueError, match="timezone-aware"):
        read_activity_facts(warehouse, now_utc=datetime(2026, 11, 20, 12))


# --- alerts -------------------------------------------------------------------------------------------------------


def test_nothing_wrong_raises_nothing():
    assert activity_alerts(facts(), FailureStreak()) == []


def test_a_missing_day_is_a_warning_naming_the_day_and_its_metrics():
    (alert,) = activity_alerts(facts(missing=[date(2026, 11, 18)]), FailureStreak())
    assert alert.key == "activity:missing:2026-11-18" == missing_key(date(2026, 11, 18))
    assert alert.severity == Severity.MEDIUM
    assert alert.title == "Activity snapshot missing for 2026-11-18"
    assert "lacks users_total" in alert.body and "activity_gap_healing_sensor" in alert.body
    assert day_of_missing_key(alert.key) == date(2026, 11, 18)
    assert day_of_missing_key(FAILING_KEY) is None


def test_failures_in_a_row_are_medium_then_critical_from_three():
    def failing(count: int):
        streak = FailureStreak(
            count, "run-1", NOW - timedelta(minutes=5), "DatabaseUnavailableError", "gave up"
        )
        (alert,) = activity_alerts(facts(), streak)
        return alert

    assert failing(1).severity == Severity.MEDIUM and failing(1).key == FAILING_KEY
    assert failing(1).title == "Activity snapshot failed 1 time in a row"
    assert failing(2).severity == Severity.MEDIUM
    critical = failing(3)
    assert critical.severity == Severity.CRITICAL
    assert critical.title == "Activity snapshot failed 3 times in a row"
    assert "run run-1 at 2026-11-20 11:55 UTC, DatabaseUnavailableError: gave up" in critical.body


def test_no_snapshot_for_48_hours_or_none_at_all_is_critical():
    assert activity_alerts(facts(newest=NOW - timedelta(hours=48)), FailureStreak()) == []
    (stale,) = activity_alerts(facts(newest=NOW - timedelta(hours=49)), FailureStreak())
    assert (stale.key, stale.severity) == (STALE_KEY, Severity.CRITICAL)
    assert stale.title == "No platform activity snapshot for 49 h"
    assert "2026-11-18 11:00 UTC, 49 h ago (expected: within 48 h)" in stale.body
    (never,) = activity_alerts(facts(newest=None), FailureStreak())
    assert never.title == "No platform activity snapshot stored"


def test_alerts_sync_once_and_resolve_when_fixed(warehouse):
    clock = [NOW]
    notifier = Notifier(warehouse, channels=(), clock=lambda: clock[0])
    broken = activity_alerts(
        facts(missing=[date(2026, 11, 18), YESTERDAY], newest=NOW - timedelta(hours=50)),
        FailureStreak(3, "run-3", NOW, "AppDatabaseError", "application database not found"),
    )
    first = notifier.sync(broken, ACTIVITY_PREFIX)
    assert set(first.open) == {
        "activity:missing:2026-11-18",
        "activity:missing:2026-11-19",
        FAILING_KEY,
        STALE_KEY,
    }
    assert notifier.sync(broken, ACTIVITY_PREFIX).resolved == ()

    healed = activity_alerts(facts(missing=[date(2026, 11, 18)]), FailureStreak())
    second = notifier.sync(healed, ACTIVITY_PREFIX)
    assert set(second.resolved) == {"activity:missing:2026-11-19", FAILING_KEY, STALE_KEY}
    assert [p.key for p in notifier.open_problems(scope_prefix=ACTIVITY_PREFIX)] == [
        "activity:missing:2026-11-18"
    ]


# --- healing ------------------------------------------------------------------------------------------------------


def test_missing_days_are_requested_as_contiguous_ranges_newest_first():
    missing = [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 5), YESTERDAY]
    plan = plan_activity_healing(missing=missing, in_progress=[], failures={}, now_ts=NOW.timestamp())
    assert plan.ranges == (
        (YESTERDAY, YESTERDAY),
        (date(2026, 11, 5), date(2026, 11, 5)),
        (date(2026, 11, 1), date(2026, 11, 2)),
    )
    assert (plan.missing, plan.in_progress, plan.deferred_ranges) == (4, 0, 0)

    limited = plan_activity_healing(
        missing=missing, in_progress=[], failures={}, now_ts=NOW.timestamp(), max_runs=1
    )
    assert limited.ranges == ((YESTERDAY, YESTERDAY),) and limited.deferred_ranges == 2


def test_days_in_progress_are_not_requested_and_split_a_range():
    missing = snapshot_days(date(2026, 11, 10), date(2026, 11, 14))
    plan = plan_activity_healing(
        missing=missing, in_progress=[date(2026, 11, 12)], failures={}, now_ts=NOW.timestamp()
    )
    assert plan.ranges == (
        (date(2026, 11, 13), date(2026, 11, 14)),
        (date(2026, 11, 10), date(2026, 11, 11)),
    )
    assert plan.in_progress == 1


def test_a_failed_day_cools_down_doubling_up_to_eight_hours():
    failed_ts = NOW.timestamp()
    failures = record_day_failures(
        {}, first=date(2026, 11, 17), last=YESTERDAY, failed_ts=failed_ts, reason="boom"
    )
    assert sorted(failures) == ["2026-11-17", "2026-11-18", "2026-11-19"]
    assert failures["2026-11-18"] == DayFailure(1, failed_ts, "boom")

    def requested(after_s: float, memory) -> bool:
        plan = plan_activity_healing(
            missing=[YESTERDAY], in_progress=[], failures=memory, now_ts=failed_ts + after_s
        )
        return bool(plan.ranges)

    assert not requested(HEAL_BASE_COOLDOWN_S - 1, failures)
    assert requested(HEAL_BASE_COOLDOWN_S, failures)
    twice = record_day_failures(
        failures, first=YESTERDAY, last=YESTERDAY, failed_ts=failed_ts, reason="again"
    )
    assert twice["2026-11-19"].count == 2
    assert not requested(2 * HEAL_BASE_COOLDOWN_S - 1, twice)
    assert requested(2 * HEAL_BASE_COOLDOWN_S, twice)
    many = {"2026-11-19": DayFailure(10, failed_ts, "still")}
    assert many["2026-11-19"].cooldown_s() == HEAL_MAX_COOLDOWN_S
    assert not requested(HEAL_MAX_COOLDOWN_S - 1, many) and requested(HEAL_MAX_COOLDOWN_S, many)
    # Cooling days are reported, and the memory round-trips through the cursor's JSON.
    plan = plan_activity_healing(missing=[YESTERDAY], in_progress=[], failures=many, now_ts=failed_ts)
    assert plan.cooling == (YESTERDAY,)
    assert DayFailure.from_json(many["2026-11-19"].to_json()) == many["2026-11-19"]


def test_the_failure_memory_forgets_days_no_longer_missing():
    failures = record_day_failures({}, first=date(2026, 11, 17), last=YESTERDAY, failed_ts=0.0, reason="x")
    assert sorted(prune_day_failures(failures, missing=[YESTERDAY])) == ["2026-11-19"]
