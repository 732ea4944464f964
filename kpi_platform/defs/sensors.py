"""Sensors: clients.yaml → partitions and warehouse, the automation sensor that closes months, and gap healing."""

import json
from collections.abc import Callable
from datetime import UTC, date, datetime

import dagster as dg

# PRIVATE in 1.13: the only way to see which partitions a not-yet-launched backfill will cover.
from dagster._core.execution.backfill import BulkActionStatus

from kpi_platform import settings
from kpi_platform.automation import (
    GIVE_UP_AFTER_FAILURES,
    RANGE_END_TAG,
    RANGE_START_TAG,
    TRANSIENT_COOLDOWN_S,
    FailureMemory,
    failure_reports,
    healing_keys,
    keys_of_range,
    plan_gap_healing,
    prune_failures,
    record_failures,
)
from kpi_platform.clients import Client, file_fingerprint, load_clients, plan_sync, sync_clients_to_warehouse
from kpi_platform.defs.jobs import daily_collection_job
from kpi_platform.defs.partitions import clients_partitions
from kpi_platform.defs.resources import WarehouseResource


@dg.sensor(
    name="clients_sync_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the `clients` partitions and the warehouse `clients` table in step with clients.yaml. "
    "Partitions are only added, never removed; a client dropped from the file is deactivated, its history kept.",
)
def clients_sync_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    path = settings.clients_file()
    # An invalid file raises here: the tick fails with the entry and field named, and nothing is changed.
    clients = load_clients(path)
    existing = context.instance.get_dynamic_partitions(clients_partitions.name)
    plan = plan_sync(clients, existing)
    fingerprint = file_fingerprint(path)
    if fingerprint == context.cursor and not plan.partitions_to_add:
        return dg.SensorResult(skip_reason=dg.SkipReason("clients.yaml unchanged"), cursor=fingerprint)
    added, updated, unchanged, deactivated = sync_clients_to_warehouse(clients=clients, warehouse=warehouse.get_warehouse())
    context.log.info(
        f"clients synced: partitions added {list(plan.partitions_to_add)}, warehouse added={added} "
        f"updated={updated} unchanged={unchanged}, deactivated {list(deactivated)}"
    )
    requests = [clients_partitions.build_add_request(list(plan.partitions_to_add))] if plan.partitions_to_add else []
    return dg.SensorResult(dynamic_partitions_requests=requests, cursor=fingerprint)


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


def _run_keys(run: dg.DagsterRun) -> list[str]:
    """The client-day keys a collection run covered, from its range or partition tags."""
    tags = run.tags
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if start and end and "|" in start:
        (client_id, first), (_, last) = start.split("|"), end.split("|")
        return keys_of_range(client_id, date.fromisoformat(first), date.fromisoformat(last))
    key = tags.get("dagster/partition", "")
    return [key] if "|" in key else []


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> tuple[bool, str]:
    """(non_transient, reason) from the run's step failure.

    Only a failure our asset marks `transient` in its Failure metadata (a Meta throttle, 5xx, timeout or an open
    breaker, after the client's own retries) is transient. Everything else is non-transient: contract failures,
    token and permission errors, and anything unknown (a bug, a database error, a run that died before its step),
    which a retry every few minutes would not fix and would only hide.
    """
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        user = data.user_failure_data
        transient = user.metadata.get("transient") if user is not None else None
        if user is not None and user.description:
            message = user.description
        else:
            # Dagster wraps an unexpected exception in "Error occurred while executing op"; the cause names it.
            error = data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = error.message if error is not None else ""
        return not (transient is not None and bool(transient.value)), message.strip()
    return True, "run failed before its step ran"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_gap_healing_sensor(
    *,
    minimum_interval_seconds: int = 300,
    horizon_days: int = settings.HEALING_HORIZON_DAYS,
    clock: Callable[[], datetime] = _utc_now,
) -> dg.SensorDefinition:
    """The gap-healing sensor; the defaults are production's. Shorter intervals and horizons are for end-to-end
    tests and benchmarks, `clock` (an aware datetime) lets tests tick at a fixed time."""

    @dg.sensor(
        name="gap_healing_sensor",
        job=daily_collection_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Finds missing and failed client-days over the healing horizon (up to each client's last due day "
        "in its timezone) that are not queued, running or in a backfill, and requests one run per contiguous range "
        f"per client (bounded per tick). Transient failures are retried after {TRANSIENT_COOLDOWN_S / 60:.0f} min; "
        "other failures cool down longer after each one, are reported once per escalation, and are left to a "
        f"person after {GIVE_UP_AFTER_FAILURES} in a row (the days stay failed).",
    )
    def gap_healing_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        return _heal_gaps(context, warehouse, horizon_days=horizon_days, now_utc=clock())

    return gap_healing_sensor


def _heal_gaps(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, *, horizon_days: int, now_utc: datetime
):
    from kpi_platform.defs.assets import CLIENT_DAILY_KPIS
    from kpi_platform.defs.partitions import client_daily_partitions

    state = json.loads(context.cursor) if context.cursor else {}
    now = now_utc.timestamp()
    # Watermark on Dagster's own run update times, not the tick's clock: every failed run is counted exactly once.
    since = float(state.get("since", 0.0))
    tick = int(state.get("tick", 0)) + 1
    failures = {k: FailureMemory.from_json(v) for k, v in state.get("failures", {}).items()}

    # Learn from runs that failed since the last tick (Dagster's run history is the collection log), oldest
    # first so that "in a row" follows the order the failures happened in.
    failed_runs = context.instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(since, UTC))
    )
    recorded: set[str] = set()
    for record in sorted(failed_runs, key=lambda r: r.update_timestamp):
        since = max(since, record.update_timestamp.timestamp())
        run_keys = _run_keys(record.dagster_run)
        if run_keys:
            non_transient, reason = _failure_reason(context.instance, record.dagster_run.run_id)
            failures = record_failures(
                failures, keys=run_keys, failed_ts=now, non_transient=non_transient, reason=reason
            )
            recorded.update(run_keys)

    clients = [Client.from_row(row) for row in warehouse.get_warehouse().list_clients(active_only=True)]
    keys = healing_keys(clients, now_utc=now_utc, horizon_days=horizon_days)
    # None until the asset has its first event on this instance (a fresh deployment): every key is missing.
    by_partition = context.instance.get_status_by_partition(CLIENT_DAILY_KPIS, keys, client_daily_partitions) or {}
    statuses = {key: (status.value if status is not None else None) for key, status in by_partition.items()}
    # The cursor stays bounded: no memory of healed days, days before the horizon or clients no longer active.
    failures = prune_failures(
        failures, clients=clients, now_utc=now_utc, horizon_days=horizon_days, statuses=statuses
    )
    plan = plan_gap_healing(
        keys=keys,
        statuses=statuses,
        reserved=backfill_reserved_keys(context.instance, CLIENT_DAILY_KPIS),
        failures=failures,
        now_ts=now,
        max_runs=settings.HEALING_MAX_RUNS_PER_TICK,
        tick=tick,
    )
    for line in failure_reports(failures, recorded=recorded):
        context.log.warning(line)
    context.log.info(
        f"keys={len(keys)} missing={plan.missing} failed={plan.failed} in_progress={plan.in_progress} "
        f"cooling={len(plan.cooling)} given_up={len(plan.given_up)} requested={len(plan.requests)} "
        f"deferred={plan.deferred_ranges}"
    )
    cursor = json.dumps(
        {"since": since, "tick": tick, "failures": {k: m.to_json() for k, m in failures.items()}}
    )
    if not plan.requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no gaps to heal"), cursor=cursor)
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=r.run_key, tags=r.tags()) for r in plan.requests], cursor=cursor
    )


gap_healing_sensor = build_gap_healing_sensor()


def backfill_reserved_keys(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> set[str]:
    """Keys targeted by asset backfills still in progress: their runs may not exist yet, so they are not
    IN_PROGRESS, but requesting them again would duplicate the backfill's work."""
    reserved: set[str] = set()
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        data = backfill.asset_backfill_data
        if data is None:
            continue
        subset = data.target_subset.partitions_subsets_by_asset_key.get(asset_key)
        if subset is not None:
            reserved.update(str(k) for k in subset.get_partition_keys())
    return reserved
