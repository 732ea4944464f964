"""Collection: the client-day asset, its job, the daily schedule, the clients sync and the gap-healing sensor."""

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

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
from kpi_platform.collect import CollectionResult, PreparedRange, day_figures, prepare_range, store_range
from kpi_platform.defs import run_history
from kpi_platform.defs.partitions import CLIENTS_PARTITIONS_NAME, client_daily_partitions, clients_partitions
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.keys import client_day_key, client_ranges
from kpi_platform.meta.breaker import BreakerGuard
from kpi_platform.meta.errors import MetaApiError
from kpi_platform.meta.pacing import WarehousePacingStore
from kpi_platform.operations import check_catalogue
from kpi_platform.operations.plans import (
    DAILY_COLLECTION_CRON,
    DAILY_COLLECTION_JOB,
    DAILY_COLLECTION_SCHEDULE,
    DAILY_COLLECTION_TIMEZONE,
    GIVE_UP_AFTER_FAILURES,
    MATERIALIZED,
    TRANSIENT_COOLDOWN_S,
    FailureMemory,
    collection_due_day,
    failure_reports,
    healing_keys,
    healing_window,
    history_gap_keys,
    missing_client_tag,
    missing_max_runtime_tag,
    plan_daily_collection,
    plan_gap_healing,
    prune_failures,
    record_failures,
)
from kpi_platform.quality.history import read_histories
from kpi_platform.quality.schemas import ContractViolation
from kpi_platform.runtime.dagster_private import add_partition_metadata
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


#: The counts a day's partition reports (reservation_value is money, reported beside spend).
_DAY_COUNTS: tuple[str, ...] = ("impressions", "clicks", *settings.CONVERSION_COUNT_COLUMNS)


def day_metadata(figures: list[dict[str, Any]]) -> dict[str, dict[str, dg.MetadataValue]]:
    """Each day's own figures (`collect.day_figures`) as the metadata of its partition's materialization, by
    partition key: numbers plot per day in the UI (spend in the day's `currency`, its campaign `rows`, delivery,
    conversions, quality score, issue count), text says the currency, source, delivery and the issues.
    Undefined values (CTR or CPC without a denominator, an idle day's score) are left out, not plotted as 0."""
    by_key: dict[str, dict[str, dg.MetadataValue]] = {}
    for day in figures:
        metadata: dict[str, dg.MetadataValue] = {
            "spend": dg.MetadataValue.float(float(day["spend"])),
            "currency": dg.MetadataValue.text(day["currency"]),
            "rows": dg.MetadataValue.int(int(day["campaign_rows"])),
            **{name: dg.MetadataValue.int(int(day[name])) for name in _DAY_COUNTS},
            "reservation_value": dg.MetadataValue.float(float(day["reservation_value"])),
            "delivery": dg.MetadataValue.text(day["delivery"]),
            "source": dg.MetadataValue.text(day["source"]),
        }
        for name in ("ctr_pct", "cpc", "quality_score"):
            if day[name] is not None:
                metadata[name] = dg.MetadataValue.float(round(float(day[name]), 4))
        if day["issues"] is not None:
            metadata["issues"] = dg.MetadataValue.int(len(day["issues"]))
            metadata["issues_text"] = dg.MetadataValue.text("; ".join(day["issues"]) or "none")
        by_key[client_day_key(day["client_id"], day["kpi_date"])] = metadata
    return by_key


def run_totals_metadata(results: list[CollectionResult]) -> dict[str, dg.MetadataValue]:
    """The run's totals over every range it stored (`collection_metadata`, `pacing_metadata`), each named
    `run_…`: what the run did, never a figure of one day."""
    totals = collection_metadata(results) | pacing_metadata(results)
    return {f"run_{name}": value for name, value in totals.items()}


def collection_metadata(results: list[CollectionResult]) -> dict[str, dg.MetadataValue]:
    """The run's totals: numeric values describe its size and cost, text values what it covered."""
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
        "days_with_quality_issues": dg.MetadataValue.int(sum(r.days_with_issues for r in results)),
    }
    scored = [r for r in results if r.quality_score_mean is not None]
    if scored:
        # Mean over the scored days (idle days are not scored); left out when every day was idle.
        mean = sum(r.quality_score_mean * r.scored_days for r in scored if r.quality_score_mean is not None)
        metadata["quality_score_mean"] = dg.MetadataValue.float(
            round(mean / sum(r.scored_days for r in scored), 2)
        )
    return metadata


def pacing_metadata(results: list[CollectionResult]) -> dict[str, dg.MetadataValue]:
    """Meta API usage of the run, numeric so the UI plots it: the highest usage figure (percent of a rate limit)
    and the seconds calls were paced, over the run and per ad account (`…:act_<id>`)."""
    by_account: dict[str, tuple[float, float]] = {}
    for r in results:
        usage, paced = by_account.get(r.ad_account_id, (0.0, 0.0))
        by_account[r.ad_account_id] = (max(usage, r.max_usage_pct), paced + r.paced_s)
    highest = max((usage for usage, _ in by_account.values()), default=0.0)
    metadata: dict[str, dg.MetadataValue] = {
        "api_usage_max_pct": dg.MetadataValue.float(round(highest, 2)),
        "api_paced_s": dg.MetadataValue.float(round(sum(paced for _, paced in by_account.values()), 3)),
    }
    for account, (usage, paced) in sorted(by_account.items()):
        metadata[f"api_usage_max_pct:{account}"] = dg.MetadataValue.float(round(usage, 2))
        metadata[f"api_paced_s:{account}"] = dg.MetadataValue.float(round(paced, 3))
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
    A run of one client carries the `kpi/client` tag, and every run a time bound scaled to its days
    (`dagster/max_runtime`), added when it starts if it was launched without them.
    """
    wh = warehouse.get_warehouse()
    ranges = client_ranges(context.partition_keys)
    # A run launched without the client tag (a UI backfill's run, `dagster asset materialize`) tags itself, so
    # filtering runs by `kpi/client` finds every run of a client. Too late for the run queue's per-client limit;
    # the warehouse serialises the writers of one client anyway (Warehouse._lock_client).
    # Likewise its time bound (`dagster/max_runtime`, scaled to the run's days), which the monitoring daemon
    # enforces from its next poll on: schedule and healer runs carry it from the start.
    own_tags = {
        **missing_client_tag(context.run.tags, (r.client_id for r in ranges)),
        **missing_max_runtime_tag(context.run.tags, sum(r.days for r in ranges)),
    }
    if own_tags:
        context.instance.add_run_tags(context.run.run_id, own_tags)
        context.log.info(f"run tagged {own_tags}")
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
        meta_api.get_client(
            accounts={c.ad_account_id: c.currency for c in clients.values()},
            # Usage seen by any run paces every run's calls (meta/pacing.py), as the breakers are shared.
            pacing_store=WarehousePacingStore(wh),
        )
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
    # Each partition's materialization shows its own day, computed from the frames in memory; the run's totals
    # go on the run: its log and its one contract check result (a range run records it once, not per day).
    add_partition_metadata(context, {k: m for p in prepared for k, m in day_metadata(day_figures(p)).items()})
    run_totals = run_totals_metadata(results)
    context.log.info(
        "run totals: " + ", ".join(f"{name} {value.value}" for name, value in run_totals.items())
    )
    yield dg.MaterializeResult()
    yield dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        passed=True,
        metadata={
            "rows_validated": dg.MetadataValue.int(sum(r.campaign_rows + r.day_rows for r in results)),
            "days": dg.MetadataValue.int(sum(r.days for r in results)),
            **run_totals,
        },
    )


# Collection runs carry only the in-asset contract check; the warehouse-wide checks run in their own job.
daily_collection_job = dg.define_asset_job(
    DAILY_COLLECTION_JOB,
    selection=dg.AssetSelection.assets(CLIENT_DAILY_KPIS).without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(CLIENT_DAILY_KPIS, CONTRACT_CHECK)),
    description="Collect client-day KPIs from the Meta API for one client and one contiguous date range.",
)


@dg.schedule(
    name=DAILY_COLLECTION_SCHEDULE,
    job=daily_collection_job,
    cron_schedule=DAILY_COLLECTION_CRON,
    execution_timezone=DAILY_COLLECTION_TIMEZONE,
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
    history_days_per_tick: int = settings.HEALING_HISTORY_DAYS_PER_TICK,
    clock: Callable[[], datetime] = _utc_now,
) -> dg.SensorDefinition:
    """The gap-healing sensor; the defaults are production's. Shorter intervals and horizons are for end-to-end
    tests and benchmarks, `clock` (an aware datetime) lets tests tick at a fixed time."""
    if history_days_per_tick < 1:
        raise ValueError(f"history_days_per_tick must be at least 1, got {history_days_per_tick}")

    @dg.sensor(
        name="gap_healing_sensor",
        job=daily_collection_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Finds missing and failed client-days over the healing horizon (up to each client's last due day "
        "in its timezone) and, before it, the days of each client's history (from its start_date) the warehouse "
        f"has no row for (at most {history_days_per_tick} per tick, newest first), that are not queued, running or in a "
        "backfill, and requests one run per contiguous range per client (bounded per tick, the most recent "
        f"first). Transient failures are retried after {TRANSIENT_COOLDOWN_S / 60:.0f} min; "
        "other failures cool down longer after each one, are reported once per escalation, and are left to a "
        f"person after {GIVE_UP_AFTER_FAILURES} in a row (the days stay failed).",
    )
    def gap_healing_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        return _heal_gaps(
            context,
            warehouse,
            horizon_days=horizon_days,
            history_days_per_tick=history_days_per_tick,
            now_utc=clock(),
        )

    return gap_healing_sensor


def _heal_gaps(
    context: dg.SensorEvaluationContext,
    warehouse: WarehouseResource,
    *,
    horizon_days: int,
    history_days_per_tick: int,
    now_utc: datetime,
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

    wh = warehouse.get_warehouse()
    clients = registered_clients(wh)
    active = [c for c in clients if c.active]
    # The recent window is judged by Dagster's statuses; before it, by the warehouse's rows.
    recent_starts = {c.id: healing_window(c, now_utc, horizon_days)[0] for c in active}
    histories = read_histories(
        wh,
        active,
        ends={c.id: collection_due_day(c, now_utc) for c in active},
        default_days=horizon_days,
        list_before=recent_starts,
    )
    keys = healing_keys(clients, now_utc=now_utc, horizon_days=horizon_days)
    older = history_gap_keys(
        histories, before=recent_starts, failures=failures, now_ts=now, max_days=history_days_per_tick
    )
    # None until the asset has its first event on this instance (a fresh deployment): every key is missing.
    by_partition = (
        context.instance.get_status_by_partition(CLIENT_DAILY_KPIS, keys + older, client_daily_partitions)
        or {}
    )
    statuses = {key: (status.value if status is not None else None) for key, status in by_partition.items()}
    for key in older:
        # The warehouse has no row for these days, whatever Dagster last recorded (a restored warehouse, say).
        if statuses.get(key) == MATERIALIZED:
            statuses[key] = None
    # The cursor stays bounded: no memory of healed days, days outside the history or clients no longer active.
    failures = prune_failures(
        failures,
        clients=clients,
        now_utc=now_utc,
        horizon_days=horizon_days,
        statuses=statuses,
        histories=histories,
    )
    plan = plan_gap_healing(
        keys=keys + older,
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
        f"keys={len(keys)} history_keys={len(older)} history_missing={sum(h.missing_days for h in histories.values())} "
        f"missing={plan.missing} failed={plan.failed} in_progress={plan.in_progress} "
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
