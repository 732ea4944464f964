"""The health report asset: materialized through its job, with the markdown table and plottable numbers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from kpi_platform.defs import run_history
from kpi_platform.defs.health import HEALTH_REPORT, health_report_schedule
from kpi_platform.warehouse import schema
from kpi_platform_tests.support.activity import snapshot_days, store_snapshots
from kpi_platform_tests.support.heartbeats import beat
from kpi_platform_tests.support.token_checks import record_token_check


def defs_with_health(platform) -> dg.Definitions:
    """The code location: `build_defs` wires the health objects, built from the checks it assembled."""
    return platform.defs()


def materialize_report(platform) -> dict[str, object]:
    job = defs_with_health(platform).resolve_job_def("health_report_job")
    result = job.execute_in_process(instance=platform.instance)
    assert result.success  # an unhealthy platform is a result, not a failed run
    [event] = result.get_asset_materialization_events()
    assert event.asset_key == HEALTH_REPORT
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_asset_metadata_carries_the_table_score_and_numbers(platform):
    today = datetime.now(UTC).date()
    for client_id in ("acme", "globex"):
        assert platform.collect(client_id, today - timedelta(days=35), today - timedelta(days=1)).success
    days = snapshot_days(today - timedelta(days=35), today - timedelta(days=1))
    store_snapshots(platform.warehouse, days, collected_at=datetime.now(UTC) - timedelta(hours=1))
    beat(platform.instance, datetime.now(UTC))
    record_token_check(platform.instance, datetime.now(UTC))

    meta = materialize_report(platform)
    assert meta["status"] == "healthy"
    assert meta["score"] == 100.0
    assert "| check | status | summary |" in meta["report"]
    assert "| yesterday_collection | healthy |" in meta["report"]
    for name in (
        "clients_collected_yesterday",
        "clients_active",
        "missing_days_7d",
        "missing_days_30d",
        "split_days",
        "max_hours_since_collection",
        "failed_checks",
        "open_breakers",
        "activity_missing_days",
        "activity_hours_since_snapshot",
        "daemons_healthy",
        "daemons_required",
        "run_queue_length",
        "run_queue_oldest_age_seconds",
        "runs_in_progress",
        "backfills_in_progress",
    ):
        assert isinstance(meta[name], int | float) and not isinstance(meta[name], bool), name
    assert meta["clients_active"] == 2
    # The run materializing the report is not counted as a run in progress.
    assert meta["runs_in_progress"] == 0
    # The asset judges the checks of its code location; the collections evaluated the contract check.
    assert meta["failed_checks"] == 0
    assert meta["daemons_healthy"] == meta["daemons_required"] > 0
    assert "| daemon | healthy |" in meta["report"]
    # The success rates, plotted per window, and their table against the targets in the report.
    assert meta["completeness_pct_7d"] == 100.0 and meta["collection_success_pct_1d"] == 100.0
    assert "| rate | target | 1 d | 7 d | 30 d |" in meta["report"]
    assert "| collection success | ≥ 99 % | 100 % |" in meta["report"]
    assert meta["failed_collections_24h"] == 0 and meta["hours_to_next_collection"] <= 24

    now = datetime.now(UTC)
    with platform.warehouse.engine.begin() as conn:
        conn.execute(
            schema.circuit_breakers.insert().values(
                name="meta_api", state="open", fail_counter=5, opened_at=now, updated_at=now
            )
        )
    meta = materialize_report(platform)
    assert (meta["status"], meta["open_breakers"]) == ("unhealthy", 1)
    assert "| circuit_breakers | unhealthy | meta_api open since" in meta["report"]
    history = platform.instance.fetch_materializations(HEALTH_REPORT, limit=10).records
    assert len(history) == 2


def test_schedule_runs_every_15_minutes_and_is_running_by_default(platform):
    defs = defs_with_health(platform)
    dg.Definitions.validate_loadable(defs)
    ticks = run_history.cron_ticks(
        str(health_report_schedule.cron_schedule),
        health_report_schedule.execution_timezone or "UTC",
        datetime(2026, 11, 20, 23, 50, tzinfo=UTC),
    )
    assert [f"{next(ticks):%H:%M}" for _ in range(5)] == ["23:55", "00:10", "00:25", "00:40", "00:55"]
    assert health_report_schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    tick = health_report_schedule.evaluate_tick(
        dg.build_schedule_context(instance=platform.instance, repository_def=defs.get_repository_def())
    )
    [request] = tick.run_requests
    assert request.job_name in (None, "health_report_job")
