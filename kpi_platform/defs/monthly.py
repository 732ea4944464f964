"""Monthly summaries: the month × client asset, its job, the automation sensor that closes months as they
complete, and the schedule that turns them final."""

from datetime import UTC, date, datetime

import dagster as dg

from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.partitions import client_monthly_partitions, daily_to_monthly
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.keys import client_day_key, parse_key
from kpi_platform.operations import check_catalogue
from kpi_platform.summaries import build_monthly_summary, months_due_final

CLIENT_MONTHLY_SUMMARY = dg.AssetKey(list(check_catalogue.MONTHLY_SUMMARY_ASSET))


def _month_keys(partition_keys: list[str]) -> list[tuple[str, date]]:
    return [parse_key(key) for key in partition_keys]


#: Any month (not only the latest) is summarised once all its days are present, and again when a day is
#: restated; `in_latest_time_window` is removed from eager() so that late backfills of old months close too.
monthly_summary_condition = dg.AutomationCondition.eager().without(
    dg.AutomationCondition.in_latest_time_window()
)


@dg.asset(
    key=CLIENT_MONTHLY_SUMMARY,
    partitions_def=client_monthly_partitions,
    ins={
        "daily": dg.AssetIn(
            key=CLIENT_DAILY_KPIS, partition_mapping=daily_to_monthly, dagster_type=dg.Nothing
        )
    },
    automation_condition=monthly_summary_condition,
    # The automation sensor requests the months that became complete as one backfill: with this policy that is
    # one run per client and contiguous months, not one run per month (600 runs after a year's backfill of 50
    # clients, each holding a run slot that collection needs).
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="kpi",
    kinds={"python", "sql"},
    owners=["team:data-engineering"],
)
def client_monthly_summary(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Monthly KPI totals per client, summed from the month's client-day rows.

    Grain: one row per client × month (`client_monthly_kpis`). Materialized automatically once every day of the
    month is collected for that client, and again whenever a day of it is restated. `status` is `provisional`
    until 28 days after the month ends (Meta can still restate), `final` after.
    """
    wh = warehouse.get_warehouse()
    today = datetime.now(UTC).date()
    summaries = [
        build_monthly_summary(
            warehouse=wh, client_id=client_id, month=month, today=today, run_id=context.run.run_id
        )
        for client_id, month in _month_keys(context.partition_keys)
    ]
    statuses = sorted({s.status for s in summaries})
    return dg.MaterializeResult(
        metadata={
            "months": dg.MetadataValue.int(len(summaries)),
            "status": dg.MetadataValue.text(",".join(statuses)),
            "spend": dg.MetadataValue.float(round(sum(float(s.row["spend"]) for s in summaries), 2)),
            "clicks": dg.MetadataValue.int(sum(int(s.row["clicks"]) for s in summaries)),
            "days_present": dg.MetadataValue.int(sum(int(s.row["days_present"]) for s in summaries)),
            "idle_days": dg.MetadataValue.int(sum(int(s.row["idle_days"]) for s in summaries)),
        }
    )


monthly_summary_job = dg.define_asset_job(
    "monthly_summary_job",
    selection=dg.AssetSelection.assets(CLIENT_MONTHLY_SUMMARY).without_checks(),
    description="Summarise complete months per client.",
)


kpi_automation_sensor = dg.AutomationConditionSensorDefinition(
    "kpi_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    # Summaries wait in the run queue behind collection runs (which they depend on anyway): a large backfill's
    # months never take the run slots its collection runs are queued for.
    run_tags={"dagster/priority": "-1"},
    description="Evaluates automation conditions (monthly summaries close when their month is complete). "
    "Declared here because Dagster's own automation sensor starts stopped.",
)


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
            run_key=f"final:{client_day_key(client_id, month)}",
            partition_key=client_day_key(client_id, month),
            tags={"kpi/reason": "finalize"},
        )
        for client_id, month in due
    ]
