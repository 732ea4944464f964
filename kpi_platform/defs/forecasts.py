"""Forecasts of the client-days not collected yet: the daily-refreshed asset, its job and schedule. The model and
the refresh are `kpi_platform.forecast`."""

from datetime import UTC, datetime

import dagster as dg

from kpi_platform.clients import registered_clients
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.forecast import (
    HORIZON_DAYS,
    INTERVAL_PCT,
    MISSING_WINDOW_DAYS,
    MODEL_NAME,
    refresh_forecasts,
)

KPI_FORECASTS = dg.AssetKey(["meta_ads", "kpi_forecasts"])


@dg.asset(
    key=KPI_FORECASTS,
    deps=[CLIENT_DAILY_KPIS],
    group_name="meta_ads",
    kinds={"python", "sql"},
    owners=["team:data-engineering"],
)
def kpi_forecasts(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """Forecasts of each active client's days without collected data: missing days of the last 30 and the coming
    week, from the client's own last 8 weeks (weekday medians scaled to the last two weeks' level), with an 80 %
    interval. Stored apart from the data (`kpi_forecasts`, one row per client × day) and never counted as data;
    writing a collected day removes its forecast and records the error (`forecast_accuracy`). Clients with less
    than 3 weeks of history get none. Idempotent: each run replaces every client's forecasts.
    """
    wh = warehouse.get_warehouse()
    refresh = refresh_forecasts(wh, registered_clients(wh, active_only=False), now_utc=datetime.now(UTC))
    if refresh.skipped:
        context.log.info(
            "no forecast (too little history) for: "
            + "; ".join(f"{client}: {reason}" for client, reason in sorted(refresh.skipped.items()))
        )
    return dg.MaterializeResult(
        metadata={
            "forecast_days": dg.MetadataValue.int(refresh.total_days),
            "clients_forecast": dg.MetadataValue.int(len(refresh.forecast_days)),
            "clients_skipped": dg.MetadataValue.int(len(refresh.skipped)),
            "skipped": dg.MetadataValue.json(refresh.skipped),
            "model": dg.MetadataValue.text(MODEL_NAME),
            "interval_pct": dg.MetadataValue.float(INTERVAL_PCT),
            "window": dg.MetadataValue.text(f"{MISSING_WINDOW_DAYS} days back to {HORIZON_DAYS} days ahead"),
        }
    )


kpi_forecasts_job = dg.define_asset_job(
    "kpi_forecasts_job",
    selection=dg.AssetSelection.assets(KPI_FORECASTS),
    description="Refresh the forecasts of client-days not collected yet.",
)

kpi_forecasts_schedule = dg.ScheduleDefinition(
    name="kpi_forecasts_schedule",
    job=kpi_forecasts_job,
    # After the morning collection of the European clients (06:00 local); a day collected later still replaces
    # its forecast at once, so the hour only decides when the coming week's forecasts move on a day.
    cron_schedule="30 7 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: forecasts of the client-days not collected yet (labelled, never data).",
)
