"""The health report's `forecast_accuracy` check: the MAPE of the forecasts of days collected in the last 30 days
(recorded by the real write path), healthy with nothing to judge, degraded when far off or a day stale, unhealthy
(and alerting) when the refresh stopped three days ago."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from kpi_platform.clients import Client
from kpi_platform.operations.health import HEALTH_CHECKS, HealthCheck, HealthStatus, build_health_report
from kpi_platform.operations.health.forecast_checks import HEADLINE_METRICS
from kpi_platform.operations.watchdog import health_alerts
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.forecast_data import forecast_frame
from kpi_platform_tests.support.warehouse_data import client, day_row, span, store_days

NOW = datetime(2026, 1, 25, 12, 0, tzinfo=UTC)
FORECAST_DAYS = span(date(2026, 1, 12), date(2026, 1, 14))


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([client("acme")])
    yield wh
    wh.dispose()


def forecast_check(warehouse: Warehouse, now: datetime = NOW) -> HealthCheck:
    report = build_health_report(
        warehouse=warehouse,
        instance=None,
        clients=[Client.from_row(row) for row in warehouse.list_clients()],
        now_utc=now,
        checks=[spec for spec in HEALTH_CHECKS if spec.name == "forecast_accuracy"],
    )
    return report.check("forecast_accuracy")


def test_the_check_is_in_the_report_with_a_light_weight():
    (spec,) = [spec for spec in HEALTH_CHECKS if spec.name == "forecast_accuracy"]
    assert 0 < spec.weight < 1 and not spec.needs_instance


def test_nothing_to_judge_is_healthy_and_does_not_drag_the_score(warehouse):
    check = forecast_check(warehouse)
    assert (check.status, check.score) == (HealthStatus.HEALTHY, 100.0)
    assert "nothing to judge" in check.summary and "forecast_mape_30d_pct" not in check.metrics


def test_collected_forecast_days_give_the_mape_in_the_report(warehouse):
    generated = NOW - timedelta(hours=5)
    warehouse.replace_forecasts(
        client_id="acme",
        forecasts=forecast_frame("acme", [*FORECAST_DAYS, NOW.date()], 1000.0, generated_at=generated),
    )
    # The past days are collected (today is not yet): the write path records the errors.
    actual = [day_row("acme", d) for d in FORECAST_DAYS]
    store_days(warehouse, "acme", actual)
    expected = [abs(1000.0 - row[m]) / row[m] * 100 for row in actual for m in HEADLINE_METRICS]

    check = forecast_check(warehouse)
    assert check.metrics["forecast_mape_30d_pct"] == pytest.approx(sum(expected) / len(expected), abs=0.05)
    assert check.metrics["forecast_days_judged_30d"] == 3
    assert check.metrics["forecast_hours_since_refresh"] == pytest.approx(5.0)
    # The forecast (1000 of everything) is far off: degraded, and the score says how far.
    assert check.status == HealthStatus.DEGRADED and check.score == 0.0
    assert "MAPE" in check.summary and "3 forecast day(s)" in check.summary
    assert set(check.details["mape_pct_per_metric"]) >= set(HEADLINE_METRICS)


def test_a_good_forecast_is_healthy_and_days_outside_30_days_are_left_out(warehouse):
    def record(day: date, error_pct: float) -> dict:
        return {
            "client_id": "acme",
            "kpi_date": day,
            "forecast": 100.0 + error_pct,
            "lower": 80.0,
            "upper": 120.0,
            "actual": 100.0,
            "abs_pct_error": error_pct,
            "generated_at": NOW - timedelta(days=20),
            "recorded_at": NOW - timedelta(days=19),
        }

    rows = [
        {**record(date(2026, 1, 20), e), "metric": m}
        for m, e in zip(HEADLINE_METRICS, (5.0, 10.0, 15.0), strict=True)
    ]
    rows += [{**record(date(2026, 1, 20), 400.0), "metric": "leads"}]
    rows += [{**record(date(2025, 12, 1), 90.0), "metric": "spend"}]  # outside the window
    with warehouse.engine.begin() as conn:
        conn.execute(schema.forecast_accuracy.insert(), rows)
    check = forecast_check(warehouse)
    assert check.metrics["forecast_mape_30d_pct"] == 10.0
    assert check.details["mape_pct_per_metric"]["leads"] == 400.0, "conversions are in the details only"
    assert check.metrics["forecast_interval_coverage_30d_pct"] == 100.0
    assert (check.status, check.score) == (HealthStatus.HEALTHY, 90.0)


def test_a_stopped_refresh_degrades_then_alerts(warehouse):
    warehouse.replace_forecasts(
        client_id="acme",
        forecasts=forecast_frame("acme", [date(2026, 1, 26)], 5.0, generated_at=NOW - timedelta(hours=40)),
    )
    assert forecast_check(warehouse).status == HealthStatus.DEGRADED
    with warehouse.engine.begin() as conn:
        conn.execute(sa.update(schema.kpi_forecasts).values(generated_at=NOW - timedelta(hours=80)))
    check = forecast_check(warehouse)
    assert (check.status, check.score) == (HealthStatus.UNHEALTHY, 0.0)
    assert "has not run for over 72 h" in check.summary
    report = build_health_report(
        warehouse=warehouse,
        instance=None,
        clients=[],
        now_utc=NOW,
        checks=[spec for spec in HEALTH_CHECKS if spec.name == "forecast_accuracy"],
    )
    (alert,) = health_alerts(report)
    assert alert.key == "health:forecast_accuracy" and "kpi_forecasts_job" in alert.body
