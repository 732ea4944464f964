"""The forecast asset through its job: forecasts of the days without data for the clients with enough history, and
a collection run that later writes a forecast day replacing it and recording its error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import sqlalchemy as sa

from kpi_platform.definitions import defs
from kpi_platform.defs.forecasts import KPI_FORECASTS
from kpi_platform.forecast import HORIZON_DAYS
from kpi_platform.warehouse import schema


def refresh(platform) -> dict[str, object]:
    result = (
        platform.defs().resolve_job_def("kpi_forecasts_job").execute_in_process(instance=platform.instance)
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.asset_key == KPI_FORECASTS
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_job_forecasts_missing_days_and_collection_replaces_them(platform):
    today = datetime.now(UTC).astimezone(ZoneInfo("Europe/Warsaw")).date()
    yesterday = today - timedelta(days=1)
    assert platform.collect("acme", today - timedelta(days=35), today - timedelta(days=2)).success
    assert platform.collect("globex", today - timedelta(days=10), yesterday).success

    meta = refresh(platform)
    assert (meta["clients_forecast"], meta["clients_skipped"]) == (1, 1)
    assert "globex" in meta["skipped"] and meta["forecast_days"] == 1 + HORIZON_DAYS + 1
    stored = platform.warehouse.read_forecasts(start=yesterday, end=today + timedelta(days=HORIZON_DAYS))
    assert set(stored["client_id"]) == {"acme"} and min(stored["kpi_date"]) == yesterday

    # The next collection writes yesterday: its forecast goes, its error is recorded.
    assert platform.collect("acme", yesterday, yesterday).success
    assert yesterday not in set(platform.warehouse.read_forecasts(start=yesterday, end=today)["kpi_date"])
    errors = platform.warehouse.read_forecast_accuracy(start=yesterday, end=yesterday)
    assert set(errors["metric"]) == set(schema.FORECAST_METRICS)
    with platform.warehouse.engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(sa.func.count())
                .select_from(schema.client_daily_kpis)
                .where(schema.client_daily_kpis.c.source == "forecast")
            ).scalar_one()
            == 0
        )


def test_the_schedule_runs_the_job_daily():
    schedule = defs.resolve_schedule_def("kpi_forecasts_schedule")
    assert schedule.job_name == "kpi_forecasts_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 10, 7, 30, tzinfo=UTC))
    assert isinstance(schedule.evaluate_tick(context).run_requests[0], dg.RunRequest)
