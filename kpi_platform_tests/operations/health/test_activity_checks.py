"""The health report's `activity` check: healthy with yesterday complete, degraded with a recent day missing,
unhealthy after 48 h without a snapshot; missing days in the details, the numbers in the metrics."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from kpi_platform.operations.health import HEALTH_CHECKS, HealthCheck, HealthStatus, build_health_report
from kpi_platform.warehouse import Warehouse
from kpi_platform_tests.support.activity import snapshot_days, store_snapshots

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
YESTERDAY = date(2026, 11, 19)
WINDOW = snapshot_days(date(2026, 10, 21), YESTERDAY)


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    wh.migrate()
    yield wh
    wh.dispose()


def activity(warehouse: Warehouse, now: datetime = NOW) -> HealthCheck:
    report = build_health_report(
        warehouse=warehouse,
        instance=None,
        clients=[],
        now_utc=now,
        checks=[spec for spec in HEALTH_CHECKS if spec.name == "activity"],
    )
    return report.check("activity")


def test_the_check_is_in_the_report_with_a_weight():
    (spec,) = [spec for spec in HEALTH_CHECKS if spec.name == "activity"]
    assert spec.weight == 1.0 and not spec.needs_instance


def test_every_due_day_complete_is_healthy(warehouse):
    store_snapshots(warehouse, WINDOW, collected_at=NOW - timedelta(hours=11, minutes=30))
    check = activity(warehouse)
    assert check.status == HealthStatus.HEALTHY and check.score == 100.0
    assert check.summary == "every due day complete up to 2026-11-19; last snapshot 11.5 h ago"
    assert check.metrics == {
        "activity_missing_days": 0,
        "activity_late_days": 0,
        "activity_hours_since_snapshot": 11.5,
    }
    assert check.details["missing_days"] == []
    assert check.details["window"] == "2026-10-21..2026-11-19"


def test_yesterday_is_not_judged_before_it_is_due(warehouse):
    # At 01:00 the window is one day earlier: 10-20 .. 11-18.
    store_snapshots(warehouse, [date(2026, 10, 20), *WINDOW[:-1]], collected_at=NOW - timedelta(hours=12))
    assert activity(warehouse, now=datetime(2026, 11, 20, 1, 0, tzinfo=UTC)).status == HealthStatus.HEALTHY
    assert activity(warehouse).status == HealthStatus.DEGRADED


def test_a_missing_or_incomplete_recent_day_is_degraded_and_listed(warehouse):
    store_snapshots(warehouse, WINDOW[:-3], collected_at=NOW - timedelta(days=3))
    store_snapshots(warehouse, [WINDOW[-1]], collected_at=NOW - timedelta(hours=10), late=True)
    store_snapshots(warehouse, [WINDOW[-2]], collected_at=NOW - timedelta(hours=10), metrics=["users_total"])
    check = activity(warehouse)
    assert check.status == HealthStatus.DEGRADED
    assert check.details["missing_days"] == ["2026-11-17", "2026-11-18"]
    assert check.details["missing_metrics"]["2026-11-18"] == [
        "posts_total",
        "comments_total",
        "posts_created",
        "comments_created",
    ]
    assert check.metrics["activity_missing_days"] == 2
    assert check.metrics["activity_late_days"] == 1
    assert check.score == round(100 * 28 / 30, 1)
    assert check.summary == (
        "2 due day(s) missing in the last 30: 2026-11-17, 2026-11-18; last snapshot 10.0 h ago"
    )


def test_more_than_48_hours_without_a_snapshot_is_unhealthy(warehouse):
    store_snapshots(warehouse, WINDOW[:-2], collected_at=NOW - timedelta(hours=49))
    check = activity(warehouse)
    assert check.status == HealthStatus.UNHEALTHY and check.score == 0.0
    assert check.metrics["activity_hours_since_snapshot"] == 49.0
    assert check.summary == (
        "no snapshot for 49 h (over 48 h); 2 due day(s) missing in the last 30: 2026-11-18, 2026-11-19"
    )


def test_no_snapshot_at_all_is_unhealthy(warehouse):
    check = activity(warehouse)
    assert check.status == HealthStatus.UNHEALTHY
    assert check.summary.startswith("no activity snapshot stored; 30 due day(s) missing in the last 30: ")
    assert check.summary.endswith(" and 10 more")
    assert "activity_hours_since_snapshot" not in check.metrics
    assert check.metrics["activity_missing_days"] == 30
    assert len(check.details["missing_days"]) == 30
