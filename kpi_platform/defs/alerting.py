"""Alert sensors: a failed collection run alerts at once; a periodic sync raises and resolves alerts for failed
checks (freshness, completeness, split data …), open circuit breakers and clients with failed days."""

from datetime import UTC, datetime

import dagster as dg

from kpi_platform import settings
from kpi_platform.alerts import BREAKER_ALERT_PREFIX, Alert, Notifier, breaker_alerts
from kpi_platform.automation import FAILED, expected_keys
from kpi_platform.clients import Client
from kpi_platform.defs.partitions import client_daily_partitions
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.defs.sensors import _run_keys
from kpi_platform.meta.breaker import BreakerGuard
from kpi_platform.problems import (
    CHECK_PREFIX,
    COLLECTION_PREFIX,
    TOKEN_PREFIX,
    CheckFact,
    check_alerts,
    collection_failure_alert,
)


def _step_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str]:
    """(error class, redacted message) of the run's step failure."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        user = data.user_failure_data
        if user is not None:
            error = user.metadata.get("error")
            return (str(error.value) if error is not None else "ContractViolation"), user.description or ""
        return (data.error.cls_name if data.error else "Error"), (data.error.message if data.error else "")
    return "RunFailure", "the run failed before its step ran"


@dg.run_failure_sensor(
    name="collection_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="CRITICAL alert when a collection run fails after the client's retries (token errors get their own "
    "alert); one alert per client until its failed days are healed.",
)
def collection_failure_alert_sensor(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    keys = _run_keys(context.dagster_run)
    if not keys:
        return dg.SkipReason("not a collection run")
    client_id = keys[0].split("|")[0]
    error, message = _step_failure(context.instance, context.dagster_run.run_id)
    alert = collection_failure_alert(
        client_id=client_id,
        first_day=keys[0].split("|")[1],
        last_day=keys[-1].split("|")[1],
        error=error,
        message=message[:1500],
    )
    sent = Notifier.from_env(warehouse.get_warehouse()).raise_alert(alert)
    context.log.info(f"{alert.key}: {'notified' if sent else 'already open or no channel'}")


def _check_facts(context: dg.SensorEvaluationContext) -> list[CheckFact]:
    facts = []
    for key in context.repository_def.asset_graph.asset_check_keys:
        record = context.instance.get_latest_asset_check_evaluation_record(key)
        event = record.event if record is not None else None
        if event is None or event.dagster_event is None:
            continue
        evaluation = event.dagster_event.event_specific_data
        if not hasattr(evaluation, "passed"):
            continue
        metadata = {name: value.value for name, value in (evaluation.metadata or {}).items()}
        facts.append(CheckFact(key.asset_key.to_user_string(), key.name, bool(evaluation.passed), metadata))
    return facts


@dg.sensor(
    name="alert_sync_sensor",
    minimum_interval_seconds=120,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Raises one alert per problem (failed checks incl. freshness and completeness, open breakers) and "
    "sends 'resolved' when it is gone; collection alerts resolve once the client's failed days are healed.",
)
def alert_sync_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    from kpi_platform.defs.assets import CLIENT_DAILY_KPIS

    wh = warehouse.get_warehouse()
    notifier = Notifier.from_env(wh)
    checks = notifier.sync(check_alerts(_check_facts(context)), CHECK_PREFIX)
    breakers = notifier.sync(breaker_alerts(BreakerGuard(wh).list_breakers()), BREAKER_ALERT_PREFIX)

    clients = [Client.from_row(row) for row in wh.list_clients(active_only=True)]
    keys = expected_keys(clients, today=datetime.now(UTC).date(), horizon_days=settings.HEALING_HORIZON_DAYS)
    statuses = context.instance.get_status_by_partition(CLIENT_DAILY_KPIS, keys, client_daily_partitions)
    failing_clients = {
        key.split("|")[0] for key, status in statuses.items() if status is not None and status.value == FAILED
    }
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
        f"breakers: {len(breakers.open)} open; collections resolved: {len(resolved)}"
    )
    context.log.info(summary)
    return dg.SkipReason(summary)


ALERT_SENSORS = [collection_failure_alert_sensor, alert_sync_sensor]
