"""Schedules: the daily collection of every active client's lookback window."""

import dagster as dg

from kpi_platform.automation import plan_daily_collection
from kpi_platform.clients import Client
from kpi_platform.defs.jobs import daily_collection_job
from kpi_platform.defs.resources import WarehouseResource


@dg.schedule(
    name="daily_collection_schedule",
    job=daily_collection_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly tick; each active client is collected once a day at its local collection hour, "
    "re-pulling its lookback window (default 28 days: Meta restates conversions that long) as one run.",
)
def daily_collection_schedule(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    clients = [Client.from_row(row) for row in warehouse.get_warehouse().list_clients(active_only=True)]
    plans = plan_daily_collection(clients, context.scheduled_execution_time)
    if not plans:
        return dg.SkipReason("no active client is at its collection hour")
    return [dg.RunRequest(run_key=p.run_key, tags=p.tags()) for p in plans]
