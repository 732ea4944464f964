"""Sensors: clients.yaml → partitions and warehouse, and the automation sensor that closes months."""

import json
import time
from datetime import UTC, date, datetime

import dagster as dg

# PRIVATE in 1.13: the only way to see which partitions a not-yet-launched backfill will cover.
from dagster._core.execution.backfill import BulkActionStatus

from kpi_platform import settings
from kpi_platform.automation import (
    MATERIALIZED,
    RANGE_END_TAG,
    RANGE_START_TAG,
    FailureMemory,
    expected_keys,
    keys_of_range,
    plan_gap_healing,
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
    """(non_transient, reason) from the run's step failure: our asset marks Meta errors `transient` in the
    Failure metadata and raises contract failures without a retry; anything else counts as transient."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        user = data.user_failure_data
        message = (user.description if user and user.description else data.error.message if data.error else "") or ""
        if user is not None:
            transient = user.metadata.get("transient")
            return (not bool(transient.value) if transient is not None else True), message
        return False, message
    return False, "run failed before its step ran"


def build_gap_healing_sensor(
    *,
    minimum_interval_seconds: int = 300,
    horizon_days: int = settings.HEALING_HORIZON_DAYS,
) -> dg.SensorDefinition:
    """The gap-healing sensor; the defaults are production's, shorter values are for end-to-end tests."""

    @dg.sensor(
        name="gap_healing_sensor",
        job=daily_collection_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Finds missing and failed client-days over the healing horizon that are not queued, running or "
        "in a backfill, and requests one run per contiguous range per client (bounded per tick). Days failing for a "
        "non-transient reason cool down longer after each failure and are reported instead of retried forever.",
    )
    def gap_healing_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        return _heal_gaps(context, warehouse, horizon_days=horizon_days)

    return gap_healing_sensor


def _heal_gaps(context: dg.SensorEvaluationContext, warehouse: WarehouseResource, *, horizon_days: int):
    from kpi_platform.defs.assets import CLIENT_DAILY_KPIS
    from kpi_platform.defs.partitions import client_daily_partitions

    state = json.loads(context.cursor) if context.cursor else {}
    now = time.time()
    since = float(state.get("since", 0.0))
    tick = int(state.get("tick", 0)) + 1
    failures = {k: FailureMemory.from_json(v) for k, v in state.get("failures", {}).items()}

    # Learn from runs that failed since the last tick (Dagster's run history is the collection log).
    failed_runs = context.instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=datetime.fromtimestamp(since, UTC))
    )
    for run in failed_runs:
        keys = _run_keys(run)
        if keys:
            non_transient, reason = _failure_reason(context.instance, run.run_id)
            failures = record_failures(failures, keys=keys, failed_ts=now, non_transient=non_transient, reason=reason)

    clients = [Client.from_row(row) for row in warehouse.get_warehouse().list_clients(active_only=True)]
    keys = expected_keys(clients, today=datetime.now(UTC).date(), horizon_days=horizon_days)
    # None until the asset has its first event on this instance (a fresh deployment): every key is missing.
    by_partition = context.instance.get_status_by_partition(CLIENT_DAILY_KPIS, keys, client_daily_partitions) or {}
    statuses = {key: (status.value if status is not None else None) for key, status in by_partition.items()}
    failures = {k: m for k, m in failures.items() if statuses.get(k) != MATERIALIZED}
    plan = plan_gap_healing(
        keys=keys,
        statuses=statuses,
        reserved=backfill_reserved_keys(context.instance, CLIENT_DAILY_KPIS),
        failures=failures,
        now_ts=now,
        max_runs=settings.HEALING_MAX_RUNS_PER_TICK,
        tick=tick,
    )
    for key, memory in plan.reported:
        context.log.warning(
            f"{key} failed {memory.count} times for a non-transient reason; retried every "
            f"{memory.cooldown_s() / 3600:.0f} h until fixed: {memory.reason}"
        )
    context.log.info(
        f"missing={plan.missing} failed={plan.failed} in_progress={plan.in_progress} cooling={len(plan.cooling)} "
        f"requested={len(plan.requests)} deferred={plan.deferred_ranges}"
    )
    cursor = json.dumps({"since": now, "tick": tick, "failures": {k: m.to_json() for k, m in failures.items()}})
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
