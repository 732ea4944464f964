"""Monthly summaries: the month × client asset, its job, the sensor that closes months as they complete (with
its plain planning functions), and the schedule that turns them final."""

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from kpi_platform.defs import run_history
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.partitions import (
    CLIENTS_PARTITIONS_NAME,
    client_daily_partitions,
    client_monthly_partitions,
    daily_to_monthly,
)
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, client_day_key, keys_of_range, parse_key
from kpi_platform.operations import check_catalogue
from kpi_platform.summaries import build_monthly_summary, month_end, months_due_final

CLIENT_MONTHLY_SUMMARY = dg.AssetKey(list(check_catalogue.MONTHLY_SUMMARY_ASSET))


def _month_keys(partition_keys: list[str]) -> list[tuple[str, date]]:
    return [parse_key(key) for key in partition_keys]


@dg.asset(
    key=CLIENT_MONTHLY_SUMMARY,
    partitions_def=client_monthly_partitions,
    ins={
        "daily": dg.AssetIn(
            key=CLIENT_DAILY_KPIS, partition_mapping=daily_to_monthly, dagster_type=dg.Nothing
        )
    },
    # `monthly_summary_sensor` requests one range run per client and consecutive months; a UI backfill of the
    # asset likewise runs each contiguous range as one run.
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
    month is collected for that client (`monthly_summary_sensor`), and again whenever a day of it is restated. `status` is `provisional`
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


#: Summaries wait in the run queue behind collection runs (which they depend on anyway): a large backfill's
#: months never take the run slots its collection runs are queued for.
SUMMARY_RUN_TAGS = {"dagster/priority": "-1", "kpi/reason": "month_complete"}
MATERIALIZATIONS_PAGE = 1000
MATERIALIZED, IN_PROGRESS = "MATERIALIZED", "IN_PROGRESS"

Month = tuple[str, date]


def months_of(day_keys: Iterable[object]) -> set[Month]:
    """(client, first day of the month) of `client|date` keys."""
    return {(client_id, day.replace(day=1)) for client_id, day in map(parse_key, day_keys)}


def day_keys_of(months: Iterable[Month]) -> list[str]:
    return [
        key
        for client_id, month in sorted(months)
        for key in keys_of_range(client_id, month, month_end(month))
    ]


def ready_months(
    pending: Iterable[Month],
    *,
    day_status: Mapping[str, str | None],
    summary_status: Mapping[str, str | None],
    today: date,
) -> tuple[set[Month], set[Month]]:
    """(ready, waiting) of the months whose days changed. A month is ready once every one of its days is
    materialized and its summary is not already queued or running. While any day of a client's changed months is
    still being collected, all of that client's months wait, so the months one run completes are summarised
    together (Dagster's status of a range run's days turns materialized a batch of events at a time)."""
    pending = set(pending)
    busy_clients = {
        client_id
        for client_id, month in pending
        if month_end(month) < today
        and any(day_status.get(k) == IN_PROGRESS for k in keys_of_range(client_id, month, month_end(month)))
    }
    ready = {
        (client_id, month)
        for client_id, month in pending
        if client_id not in busy_clients
        and month_end(month) < today
        and summary_status.get(client_day_key(client_id, month)) != IN_PROGRESS
        and all(day_status.get(k) == MATERIALIZED for k in keys_of_range(client_id, month, month_end(month)))
    }
    return ready, pending - ready


def summary_runs(months: Iterable[Month]) -> list[tuple[str, date, date]]:
    """(client, first month, last month): one per client and run of consecutive months, in client order."""
    runs: list[tuple[str, date, date]] = []
    for client_id, month in sorted(set(months)):
        if runs and runs[-1][0] == client_id and _next_month(runs[-1][2]) == month:
            runs[-1] = (client_id, runs[-1][1], month)
        else:
            runs.append((client_id, month, month))
    return runs


def _next_month(month: date) -> date:
    return month_end(month) + timedelta(days=1)


def _latest_storage_id(instance: dg.DagsterInstance) -> int:
    records = instance.fetch_materializations(CLIENT_DAILY_KPIS, limit=1).records
    return records[0].storage_id if records else 0


def _materialized_keys_since(instance: dg.DagsterInstance, after: int) -> tuple[set[str], int]:
    """The client-day keys materialized after storage id `after`, and the last storage id read."""
    keys: set[str] = set()
    cursor = None
    while True:
        result = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=CLIENT_DAILY_KPIS, after_storage_id=after),
            limit=MATERIALIZATIONS_PAGE,
            cursor=cursor,
            ascending=True,
        )
        for record in result.records:
            after = max(after, record.storage_id)
            if record.partition_key:
                keys.add(record.partition_key)
        if not result.has_more:
            return keys, after
        cursor = result.cursor


def _backfill_pending_keys(instance: dg.DagsterInstance) -> set[str]:
    """Client-day keys that backfills in progress have still to collect: their runs may not exist yet, so Dagster's
    partition status does not show them in progress."""
    pending: set[str] = set()
    for backfill in run_history.backfills_in(instance, ["REQUESTED"]):
        data = backfill.asset_backfill_data
        if data is None:
            continue
        target = _daily_keys(data.target_subset)
        pending |= (
            target - _daily_keys(data.materialized_subset) - _daily_keys(data.failed_and_downstream_subset)
        )
    return pending


def _daily_keys(subset) -> set[str]:
    partitions = subset.partitions_subsets_by_asset_key.get(CLIENT_DAILY_KPIS)
    return set() if partitions is None else {str(k) for k in partitions.get_partition_keys()}


def _statuses(
    instance: dg.DagsterInstance,
    asset_key: dg.AssetKey,
    keys: list[str],
    partitions_def: dg.PartitionsDefinition,
) -> dict[str, str | None]:
    # None until the asset has its first event on this instance: every key is missing.
    by_key = instance.get_status_by_partition(asset_key, keys, partitions_def) or {}
    return {key: (status.value if status is not None else None) for key, status in by_key.items()}


@dg.sensor(
    name="monthly_summary_sensor",
    job=monthly_summary_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Summarises the months whose days changed once every day of them is collected: one run per client "
    "and consecutive months (a year's backfill of a client is one summary run), waiting while any day of the "
    "client's changed months is still being collected.",
)
def monthly_summary_sensor(context: dg.SensorEvaluationContext):
    instance = context.instance
    state = json.loads(context.cursor) if context.cursor else {}
    # First tick: days collected before the sensor existed are summarised already (or by the operator).
    after = int(state["after"]) if "after" in state else _latest_storage_id(instance)
    keys, after = _materialized_keys_since(instance, after)
    clients = set(instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME))
    pending = {m for m in {*months_of(state.get("pending", [])), *months_of(keys)} if m[0] in clients}
    today = datetime.now(UTC).date()
    closed = {m for m in pending if month_end(m[1]) < today}
    day_status = _statuses(instance, CLIENT_DAILY_KPIS, day_keys_of(closed), client_daily_partitions)
    # A UI backfill's runs are created a chunk at a time: a client whose days it has still to collect waits.
    day_status.update(dict.fromkeys(_backfill_pending_keys(instance) & day_status.keys(), IN_PROGRESS))
    ready, waiting = ready_months(
        pending,
        day_status=day_status,
        summary_status=_statuses(
            instance,
            CLIENT_MONTHLY_SUMMARY,
            [client_day_key(c, m) for c, m in sorted(closed)],
            client_monthly_partitions,
        ),
        today=today,
    )
    cursor = json.dumps({"after": after, "pending": [client_day_key(c, m) for c, m in sorted(waiting)]})
    runs = summary_runs(ready)
    if not runs:
        return dg.SensorResult(
            skip_reason=dg.SkipReason(f"{len(waiting)} changed months wait"), cursor=cursor
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"summary:{client_id}:{first}:{last}:{after}",
                tags={
                    RANGE_START_TAG: client_day_key(client_id, first),
                    RANGE_END_TAG: client_day_key(client_id, last),
                    **SUMMARY_RUN_TAGS,
                },
            )
            for client_id, first, last in runs
        ],
        cursor=cursor,
    )


@dg.schedule(
    name="month_finalizing_schedule",
    job=monthly_summary_job,
    cron_schedule="15 2 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily: re-summarises every month still provisional 28 days after it ended, so it is stored "
    "as final (monthly_summary_sensor only re-runs a month when one of its days changes).",
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
