"""The one entry point: `defs = build_defs()`; tests call `build_defs(resources=...)` to swap parts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from kpi_platform import settings
from kpi_platform.defs.activity import (
    ACTIVITY_ASSETS,
    ACTIVITY_CHECKS,
    ACTIVITY_SENSORS,
    activity_snapshot_job,
    activity_snapshot_schedule,
)
from kpi_platform.defs.alerting import ALERT_ASSETS, ALERT_SENSORS
from kpi_platform.defs.collection import (
    build_gap_healing_sensor,
    client_daily_kpis,
    clients_sync_sensor,
    daily_collection_job,
    daily_collection_schedule,
)
from kpi_platform.defs.forecasts import kpi_forecasts, kpi_forecasts_job, kpi_forecasts_schedule
from kpi_platform.defs.health import HEALTH_JOBS, HEALTH_SCHEDULES, build_health_report_asset
from kpi_platform.defs.monthly import (
    client_monthly_summary,
    month_finalizing_schedule,
    monthly_summary_job,
    monthly_summary_sensor,
)
from kpi_platform.defs.quality_checks import (
    checks_after_collection_sensor,
    kpi_warehouse,
    warehouse_checks,
    warehouse_checks_job,
    warehouse_checks_schedule,
)
from kpi_platform.defs.resources import default_resources


def build_defs(
    *,
    resources: Mapping[str, Any] | None = None,
    gap_healing_interval_s: int = 300,
    healing_horizon_days: int = settings.HEALING_HORIZON_DAYS,
    executor: dg.ExecutorDefinition = dg.in_process_executor,
    activity_sensors: bool = True,
) -> dg.Definitions:
    """Assemble the code location; `resources` overrides the default wiring by key, the gap-healing sensor's
    interval and horizon default to production's (end-to-end tests shorten them). `activity_sensors=False` leaves
    out the activity snapshot's healing and alert sensors (end-to-end tests of collection, which count every run
    and alert of their instance).

    Runs execute their steps in the run's own process: every job is one asset step (plus its checks), so a
    process per step would only add an interpreter start and the imports to each run (see
    benchmarks/ui_backfill.py).
    """
    gap_healing_sensor = build_gap_healing_sensor(
        minimum_interval_seconds=gap_healing_interval_s, horizon_days=healing_horizon_days
    )
    assets = [client_daily_kpis, client_monthly_summary, kpi_forecasts, *ACTIVITY_ASSETS]
    asset_checks = [warehouse_checks, *ACTIVITY_CHECKS]
    # The health report judges exactly the checks assembled here (in-asset ones included).
    check_keys = [key for definition in (*assets, *asset_checks) for key in definition.check_keys]
    return dg.Definitions(
        # `kpi_warehouse` is external (never materialized): it only carries the warehouse-wide checks.
        assets=[*assets, kpi_warehouse, *ALERT_ASSETS, build_health_report_asset(check_keys)],
        asset_checks=asset_checks,
        jobs=[
            daily_collection_job,
            monthly_summary_job,
            warehouse_checks_job,
            activity_snapshot_job,
            kpi_forecasts_job,
            *HEALTH_JOBS,
        ],
        schedules=[
            daily_collection_schedule,
            month_finalizing_schedule,
            warehouse_checks_schedule,
            activity_snapshot_schedule,
            kpi_forecasts_schedule,
            *HEALTH_SCHEDULES,
        ],
        sensors=[
            clients_sync_sensor,
            monthly_summary_sensor,
            checks_after_collection_sensor,
            gap_healing_sensor,
            *ALERT_SENSORS,
            *(ACTIVITY_SENSORS if activity_sensors else []),
        ],
        resources={**default_resources(), **(resources or {})},
        executor=executor,
    )


defs = build_defs()
