"""Schedule that turns provisional monthly summaries final once Meta can no longer restate their days."""

from __future__ import annotations

import dagster as dg

from kpi_platform.defs.jobs import monthly_summary_job
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.summaries import months_due_final


@dg.schedule(
    name="month_finalizing_schedule",
    job=monthly_summary_job,
    cron_schedule="15 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: re-summarises every month still provisional 28 days after it ended, so it is stored "
    "as final (the automation only re-runs a month when one of its days changes).",
)
def month_finalizing_schedule(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    today = context.scheduled_execution_time.date()
    due = months_due_final(warehouse.get_warehouse().read_monthly(), today)
    if not due:
        return dg.SkipReason("no provisional month is past its restatement window")
    return [
        dg.RunRequest(
            run_key=f"final:{client_id}|{month.isoformat()}",
            partition_key=f"{client_id}|{month.isoformat()}",
            tags={"kpi/reason": "finalize"},
        )
        for client_id, month in due
    ]
