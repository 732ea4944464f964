"""Alert sensors: a failed collection run alerts at once; a periodic sync raises and resolves alerts for failed
checks (freshness, completeness, split data …), open circuit breakers, clients with failed days and clients still
not collected hours after their freshness deadline (also synced by the watchdog, `kpi-platform health --alert`);
a daily check warns before the Meta access token stops working (`operations/token_watch.py`)."""

import json
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from kpi_platform import settings
from kpi_platform.clients import registered_clients
from kpi_platform.defs import run_history
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.partitions import CLIENTS_PARTITIONS_NAME, client_daily_partitions
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.keys import client_of, parse_key
from kpi_platform.meta.breaker import BreakerGuard
from kpi_platform.meta.token_check import assess
from kpi_platform.operations.alert_facts import (
    CHECK_PREFIX,
    COLLECTION_PREFIX,
    TOKEN_PREFIX,
    CheckFact,
    check_alerts,
    collection_failure_alert,
    failing_collection_keys,
)
from kpi_platform.operations.alerts import BREAKER_ALERT_PREFIX, Alert, Notifier, breaker_alerts
from kpi_platform.operations.missing_clients import (
    MISSING_CLIENTS_PREFIX,
    escalation_hours_from_env,
    missing_client_alerts,
)
from kpi_platform.operations.plans import expected_keys
from kpi_platform.operations.token_watch import (
    TOKEN_ASSET_PATH,
    TOKEN_CHECK_INTERVAL_S,
    TOKEN_CHECK_PREFIX,
    record_metadata,
    token_alerts,
    token_summary,
)


@dg.run_failure_sensor(
    name="collection_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="CRITICAL alert when a collection run fails after the client's retries (token errors get their own "
    "alert) and Dagster will not re-run it; one alert per client until its failed days are healed.",
)
def collection_failure_alert_sensor(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    rng = run_history.run_range(context.dagster_run)
    if rng is None:
        # Logged, not a SkipReason: a run-status sensor that returns one for a run while it reacts to another in
        # the same tick fails the whole tick ("received both DagsterRunReaction and SkipReason").
        context.log.info("not a collection run")
        return None
    if run_history.will_be_retried(context.dagster_run):
        # A worker that died (killed, out of memory) is re-run by Dagster within seconds; the retry alerts if it
        # fails too, the last one when no retry is left.
        context.log.info("Dagster re-runs this run (run retries); its retry alerts if it fails")
        return None
    error, message = run_history.step_failure(context.instance, context.dagster_run.run_id)
    alert = collection_failure_alert(
        client_id=rng.client_id,
        first_day=rng.start.isoformat(),
        last_day=rng.end.isoformat(),
        error=error,
        message=message[:1500],
    )
    sent = Notifier.from_env(warehouse.get_warehouse(), log=context.log).raise_alert(alert)
    context.log.info(f"{alert.key}: {'notified' if sent else 'already open or no channel'}")


def _check_facts(context: dg.SensorEvaluationContext) -> list[CheckFact]:
    facts = []
    repository = context.repository_def
    assert repository is not None, "a sensor evaluated by Dagster knows its repository"
    for key in repository.asset_graph.asset_check_keys:
        record = run_history.latest_check_result(context.instance, key)
        evaluation = record.evaluation if record is not None else None
        if evaluation is None:
            continue
        metadata = {name: value.value for name, value in (evaluation.metadata or {}).items()}
        facts.append(CheckFact(key.asset_key.to_user_string(), key.name, bool(evaluation.passed), metadata))
    return facts


@dg.sensor(
    name="alert_sync_sensor",
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Raises one alert per problem (failed checks incl. freshness and completeness, open breakers, "
    "clients still not collected KPI_MISSING_CLIENT_ESCALATION_HOURS after their freshness deadline) and sends "
    "'resolved' when it is gone; collection alerts resolve once the client's failed days are healed.",
)
def alert_sync_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    state = json.loads(context.cursor) if context.cursor else {}
    # Taken before reading the runs, so a run failing meanwhile is read again next tick rather than missed.
    now = datetime.now(UTC)
    # Without a cursor (first tick, or reset) the failures of the whole horizon are learnt from the run history.
    since = (
        datetime.fromtimestamp(state["since"], UTC)
        if "since" in state
        else now - timedelta(days=settings.HEALING_HORIZON_DAYS)
    )

    wh = warehouse.get_warehouse()
    notifier = Notifier.from_env(wh, log=context.log)
    checks = notifier.sync(check_alerts(_check_facts(context)), CHECK_PREFIX)
    breakers = notifier.sync(breaker_alerts(BreakerGuard(wh).list_breakers()), BREAKER_ALERT_PREFIX)
    hours = escalation_hours_from_env(log=context.log)
    incomplete = notifier.sync(
        missing_client_alerts(wh, now_utc=now, escalation_hours=hours), MISSING_CLIENTS_PREFIX
    )

    clients = registered_clients(wh)
    keys = expected_keys(clients, today=now.date(), horizon_days=settings.HEALING_HORIZON_DAYS)
    remembered = state.get("failing", ())
    failed_in_runs = run_history.failed_run_keys(context.instance, since)
    # A partition added by hand for a client clients.yaml does not have is never expected, yet its runs fail: its
    # failed days count until the partition is removed (or the client registered), so its alert stays open.
    unregistered = set(context.instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)) - {
        c.id for c in registered_clients(wh, active_only=False)
    }
    keys += sorted({k for k in (*remembered, *failed_in_runs) if client_of(k) in unregistered} - set(keys))
    # Gap healing also collects the days of a client's history older than the horizon: their failures count too,
    # until the days are stored (or fall before the client's start_date).
    starts = {c.id: c.start_date for c in clients if c.active}
    keys += sorted(
        {
            k
            for k in (*remembered, *failed_in_runs)
            if client_of(k) in starts and (starts[client_of(k)] or date.min) <= parse_key(k)[1]
        }
        - set(keys)
    )
    # None until the asset has its first event on this instance.
    by_partition = (
        context.instance.get_status_by_partition(CLIENT_DAILY_KPIS, keys, client_daily_partitions) or {}
    )
    failing = failing_collection_keys(
        keys=keys,
        statuses={
            key: (status.value if status is not None else None) for key, status in by_partition.items()
        },
        remembered=remembered,
        failed_in_runs=failed_in_runs,
    )
    failing_clients = {client_of(key) for key in failing}
    resolved: list[str] = []
    for prefix in (COLLECTION_PREFIX, TOKEN_PREFIX):
        still_open = [
            Alert(p.key, p.severity, p.title, "still failing")
            for p in notifier.open_problems(scope_prefix=prefix)
            if p.key.removeprefix(prefix) in failing_clients
        ]
        resolved += notifier.sync(still_open, prefix).resolved
    summary = (
        f"checks: {len(checks.open)} open, {len(checks.notified)} new, {len(checks.resolved)} resolved; "
        f"breakers: {len(breakers.open)} open; collections resolved: {len(resolved)}; "
        f"client-days failing: {len(failing)}; daily collection incomplete: "
        f"{'open' if incomplete.open else 'no'}{', resolved' if incomplete.resolved else ''}"
    )
    context.log.info(summary)
    cursor = json.dumps({"since": now.timestamp(), "failing": sorted(failing)})
    return dg.SensorResult(skip_reason=dg.SkipReason(summary), cursor=cursor)


#: External: observed once a day by `meta_token_check_sensor`, never materialized; its observations are the token's
#: history (days left, plotted) and what the health report's `token` check reads.
meta_access_token = dg.AssetSpec(
    key=dg.AssetKey(list(TOKEN_ASSET_PATH)),
    group_name="meta_ads",
    kinds={"meta"},
    owners=["team:data-engineering"],
    description="The Meta access token as Meta's debug_token describes it (validity, expiry and data-access "
    "expiry, scopes), observed daily; never the token itself.",
)


@dg.sensor(
    name="meta_token_check_sensor",
    minimum_interval_seconds=TOKEN_CHECK_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Daily: asks Meta's debug_token about the access token and records the answer (an observation of "
    "meta_ads/access_token, read by the health report). HIGH alert 7 days before the token or its data access "
    "expires, CRITICAL 1 day before, when ads_read is missing or the token is invalid; resolved once a new token "
    "is in place. A tick fails (redacted) when Meta cannot be asked.",
)
def meta_token_check_sensor(
    context: dg.SensorEvaluationContext, meta_api: MetaApiResource, warehouse: WarehouseResource
):
    checked_at = datetime.now(UTC)
    assessment = assess(meta_api.check_token(), checked_at)
    context.instance.report_runless_asset_event(
        dg.AssetObservation(asset_key=meta_access_token.key, metadata=record_metadata(assessment, checked_at))
    )
    synced = Notifier.from_env(warehouse.get_warehouse(), log=context.log).sync(
        token_alerts(assessment), TOKEN_CHECK_PREFIX
    )
    summary = (
        f"{token_summary(assessment)}; alert {'open' if synced.open else 'none'}"
        f"{', resolved' if synced.resolved else ''}"
    )
    context.log.info(summary)
    return dg.SkipReason(summary)


ALERT_SENSORS = [collection_failure_alert_sensor, alert_sync_sensor, meta_token_check_sensor]
ALERT_ASSETS = [meta_access_token]
