"""Collection: the client-day asset, its job, the daily schedule, the clients sync and the gap-healing sensor."""

import json
from collections.abc import Callable
from datetime import UTC, date, datetime

import dagster as dg

from kpi_platform import settings
from kpi_platform.clients import (
    Client,
    file_fingerprint,
    load_clients,
    plan_sync,
    registered_clients,
    sync_clients_to_warehouse,
)
from kpi_platform.collect import CollectionResult, PreparedRange, prepare_range, store_range
from kpi_platform.defs import run_history
from kpi_platform.defs.partitions import CLIENTS_PARTITIONS_NAME, client_daily_partitions, clients_partitions
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.keys import client_ranges
from kpi_platform.meta.breaker import BreakerGuard
from kpi_platform.meta.errors import MetaApiError
from kpi_platform.operations import check_catalogue
from kpi_platform.operations.plans import (
    GIVE_UP_AFTER_FAILURES,
    TRANSIENT_COOLDOWN_S,
    FailureMemory,
    failure_reports,
    healing_keys,
    missing_client_tag,
    plan_daily_collection,
    plan_gap_healing,
    prune_failures,
    record_failures,
)
from kpi_platform.quality.schemas import ContractViolation
from kpi_platform.warehouse import Warehouse

CLIENT_DAILY_KPIS = dg.AssetKey(list(check_catalogue.DAILY_KPIS_ASSET))
#: In-asset, blocking: everything fetched for the run's range meets the pandera contract before it is stored.
CONTRACT_CHECK = check_catalogue.CONTRACT_CHECK


class UnknownClientError(RuntimeError):
    """A partition names a client that is not in the warehouse `clients` table."""


def load_client(warehouse: Warehouse, client_id: str) -> Client:
    row = warehouse.get_client(client_id)
    if row is None:
        raise UnknownClientError(
            f"client '{client_id}' is not registered (it is not in clients.yaml), so its partition cannot be "
            "collected: add the client to clients.yaml (clients_sync_sensor registers it within a minute), or "
            f"remove the partition with `kpi-platform clients remove-partition {client_id}` (README › Runbook › "
            "A client partition that is not in clients.yaml)."
        )
    return Client.from_row(row)


def collection_metadata(results: list[CollectionResult]) -> dict[str, dg.MetadataValue]:
    """Numeric values plot over time in the UI; text values describe the run."""
    by_currency: dict[str, float] = {}
    for r in results:
        by_currency[r.currency] = round(by_currency.get(r.currency, 0.0) + r.spend, 2)
    sources = sorted({r.source for r in results})
    metadata: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(sum(r.campaign_rows for r in results)),
        "days": dg.MetadataValue.int(sum(r.days for r in results)),
        "idle_days": dg.MetadataValue.int(sum(r.idle_days for r in results)),
        "spend": dg.MetadataValue.float(round(sum(r.spend for r in results), 2)),
        "spend_by_currency": dg.MetadataValue.json(by_currency),
        "source": dg.MetadataValue.text(",".join(sources)),
        "api_requests": dg.MetadataValue.int(sum(r.api_requests for r in results)),
        "api_retries": dg.MetadataValue.int(sum(r.api_retries for r in results)),
        "throttle_wait_s": dg.MetadataValue.float(round(sum(r.throttle_wait_s for r in results), 3)),
        "fetch_seconds": dg.MetadataValue.float(round(sum(r.fetch_seconds for r in results), 3)),
        "write_seconds": dg.MetadataValue.float(round(sum(r.write_seconds for r in results), 3)),
        "ranges": dg.MetadataValue.text("; ".join(f"{r.client_id} {r.start}..{r.end}" for r in results)),
        "quality_score_mean": dg.MetadataValue.float(
            round(
                sum(r.quality_score_mean * r.days for r in results) / max(1, sum(r.days for r in results)), 2
            )
        ),
    }
    return metadata


def violation_metadata(
    exc: ContractViolation, client_id: str, start: date, end: date
) -> dict[str, dg.MetadataValue]:
    """Failed rules, the days they hit and a capped sample of failing rows, for the check result in the UI."""
    return {
        "client": dg.MetadataValue.text(client_id),
        "range": dg.MetadataValue.text(f"{start}..{end}"),
        "failed_rules": dg.MetadataValue.json(sorted(exc.rules)),
        "n_failures": dg.MetadataValue.int(len(exc.failures)),
        "failed_days": dg.MetadataValue.json(exc.days()[:50]),
        "sample": dg.MetadataValue.json(exc.sample(20)),
        "summary": dg.MetadataValue.text(exc.summary()),
    }


@dg.asset(
    key=CLIENT_DAILY_KPIS,
    partitions_def=client_daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=settings.META_API_POOL,
    group_name="meta_ads",
    kinds={"python", "sql"},
    owners=["team:data-engineering"],
    check_specs=[
        dg.AssetCheckSpec(
            CONTRACT_CHECK,
            asset=CLIENT_DAILY_KPIS,
            blocking=True,
            description=check_catalogue.description(CONTRACT_CHECK),
        )
    ],
)
def client_daily_kpis(
    context: dg.AssetExecutionContext, meta_api: MetaApiResource, warehouse: WarehouseResource
):
    """Daily Meta Ads KPIs per client: spend, impressions, clicks, CTR, CPC and conversions
    (calls, contacts, leads, reservations, reservation value).

    Grain: one row per client × day × campaign (`campaign_daily_kpis`) and one per client × day
    (`client_daily_kpis`, idle days recorded explicitly with zero delivery).
    Source: `GET act_<id>/insights`, level=campaign, time_increment=1 (async report for long ranges).
    Idempotency key: (client_id, kpi_date[, campaign_id]); a run replaces its whole client × date range in one
    transaction, so re-runs and restatements leave exactly one row per key.
    A one-day run and a backfill range run take the same path: the partition keys become one contiguous range
    per client, fetched as one request stream.
    Contract failures store nothing for the range and fail the run without a materialization, so the partitions
    stay failed (not materialized) and gap healing finds them.
    A run of one client carries the `kpi/client` tag, added when it starts if it was launched without it.
    """
    wh = warehouse.get_warehouse()
    ranges = client_ranges(context.partition_keys)
    # A run launched without the client tag (a UI backfill's run, `dagster asset materialize`) tags itself, so
    # filtering runs by `kpi/client` finds every run of a client. Too late for the run queue's per-client limit;
    # the warehouse serialises the writers of one client anyway (Warehouse._lock_client).
    client_tag = missing_client_tag(context.run.tags, (r.client_id for r in ranges))
    if client_tag:
        context.instance.add_run_tags(context.run.run_id, client_tag)
        context.log.info(f"run tagged {client_tag}")
    try:
        clients = {r.client_id: load_client(wh, r.client_id) for r in ranges}
    except UnknownClientError as exc:
        # A partition added by hand (the UI's "Add a partition") for a client clients.yaml does not have: the run
        # fails with the sentence that says what to do, not a stack trace; retrying cannot help.
        raise dg.Failure(
            description=str(exc),
            metadata={"error": type(exc).__name__, "transient": False},
            allow_retries=False,
        ) from None
    # Breakers (API-wide and per ad account) live in the warehouse, so every run shares them; while one is
    # open the run fails fast with the reason instead of calling Meta.
    meta = BreakerGuard(wh).wrap(
        meta_api.get_client(accounts={c.ad_account_id: c.currency for c in clients.values()})
    )
    prepared: list[PreparedRange] = []
    try:
        # Every range of the run is fetched and validated before any is stored: a run covering several
        # clients or gaps (launched by hand with range tags) stores all of them or none.
        for rng in ranges:
            client = clients[rng.client_id]
            context.log.info(f"collecting {client.id} ({client.ad_account_id}) {rng.start}..{rng.end}")
            try:
                prepared.append(
                    prepare_range(
                        client=client, start=rng.start, end=rng.end, meta=meta, run_id=context.run.run_id
                    )
                )
            except ContractViolation as exc:
                # Dagster records the materialization even when a blocking in-asset check fails, so the check
                # result is reported without one and the step fails: the partitions stay FAILED and nothing
                # was written.
                yield dg.AssetCheckResult(
                    check_name=CONTRACT_CHECK,
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata=violation_metadata(exc, rng.client_id, rng.start, rng.end),
                )
                raise dg.Failure(description=exc.summary(), allow_retries=False) from None
    except MetaApiError as exc:
        # The client has already retried what is retryable (with backoff); a step retry would only hold a pool
        # slot while waiting. The message is already redacted and names the client and the fix.
        raise dg.Failure(
            description=str(exc),
            metadata={
                "error": type(exc).__name__,
                "code": exc.code or 0,
                "transient": exc.transient,
                "breaker": getattr(exc, "breaker", "") or "",
            },
            allow_retries=False,
        ) from None
    finally:
        meta.close()
    results: list[CollectionResult] = [store_range(p, warehouse=wh) for p in prepared]
    yield dg.MaterializeResult(metadata=collection_metadata(results))
    yield dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        passed=True,
        metadata={
            "rows_validated": dg.MetadataValue.int(sum(r.campaign_rows + r.day_rows for r in results)),
            "days": dg.MetadataValue.int(sum(r.days for r in results)),
        },
    )


# Collection runs carry only the in-asset contract check; the warehouse-wide checks run in their own job.
daily_collection_job = dg.define_asset_job(
    "daily_collection_job",
    selection=dg.AssetSelection.assets(CLIENT_DAILY_KPIS).without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(CLIENT_DAILY_KPIS, CONTRACT_CHECK)),
    description="Collect client-day KPIs from the Meta API for one client and one contiguous date range.",
)


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
    clients = registered_clients(warehouse.get_warehouse())
    plans = plan_daily_collection(clients, context.scheduled_execution_time)
    if not plans:
        return dg.SkipReason("no active client is at its collection hour")
    return [dg.RunRequest(run_key=p.run_key, tags=p.tags()) for p in plans]


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
    existing = context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)
    plan = plan_sync(clients, existing)
    fingerprint = file_fingerprint(path)
    if fingerprint == context.cursor and not plan.partitions_to_add:
        return dg.SensorResult(skip_reason=dg.SkipReason("clients.yaml unchanged"), cursor=fingerprint)
    added, updated, unchanged, deactivated = sync_clients_to_warehouse(
        clients=clients, warehouse=warehouse.get_warehouse()
    )
    context.log.info(
        f"clients synced: partitions added {list(plan.partitions_to_add)}, warehouse added={added} "
        f"updated={updated} unchanged={unchanged}, deactivated {list(deactivated)}"
    )
    requests = (
        [clients_partitions.build_add_request(list(plan.partitions_to_add))] if plan.partitions_to_add else []
    )
    return dg.SensorResult(dynamic_partitions_requests=requests, cursor=fingerprint)


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
    state = json.loads(context.cursor) if context.cursor else {}
    now = now_utc.timestamp()
    # Watermark on Dagster's own run update times, not the tick's clock: every failed run is counted exactly once.
    since = float(state.get("since", 0.0))
    tick = int(state.get("tick", 0)) + 1
    failures = {k: FailureMemory.from_json(v) for k, v in state.get("failures", {}).items()}

    # Learn from runs that failed since the last tick (Dagster's run history is the collection log), oldest
    # first so that "in a row" follows the order the failures happened in.
    recorded: set[str] = set()
    for record in run_history.failed_runs_since(context.instance, datetime.fromtimestamp(since, UTC)):
        since = max(since, record.update_timestamp.timestamp())
        keys_failed = run_history.run_keys(record.dagster_run)
        if keys_failed:
            non_transient, reason = run_history.failure_reason(context.instance, record.dagster_run.run_id)
            failures = record_failures(
                failures, keys=keys_failed, failed_ts=now, non_transient=non_transient, reason=reason
            )
            recorded.update(keys_failed)

    clients = registered_clients(warehouse.get_warehouse())
    keys = healing_keys(clients, now_utc=now_utc, horizon_days=horizon_days)
    # None until the asset has its first event on this instance (a fresh deployment): every key is missing.
    by_partition = (
        context.instance.get_status_by_partition(CLIENT_DAILY_KPIS, keys, client_daily_partitions) or {}
    )
    statuses = {key: (status.value if status is not None else None) for key, status in by_partition.items()}
    # The cursor stays bounded: no memory of healed days, days before the horizon or clients no longer active.
    failures = prune_failures(
        failures, clients=clients, now_utc=now_utc, horizon_days=horizon_days, statuses=statuses
    )
    plan = plan_gap_healing(
        keys=keys,
        statuses=statuses,
        reserved=run_history.backfill_reserved_keys(context.instance, CLIENT_DAILY_KPIS),
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
