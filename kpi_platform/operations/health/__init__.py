"""The platform health report: named checks over the warehouse and the Dagster instance, each with a status, a
0–100 score, a one-line summary and details, rolled up into one status, score and exit code.

Plain Python; the CLI (`kpi-platform health`) and the asset `platform/health_report` (every 15 minutes) both call
`build_health_report`. The instance is only read.

Scoring. Each check rates itself `healthy`, `degraded` or `unhealthy` by the thresholds below and scores itself
0–100. The report's **status is the worst check status** (one unhealthy check makes the platform unhealthy, however
good the rest), and its **score is the weighted mean of the check scores** (`HEALTH_CHECKS` weights), a number to
plot over time. Exit codes: 0 healthy, 1 degraded, 2 unhealthy.

Adding a check: write a function `(HealthContext) -> Finding` and append one `CheckSpec` to `HEALTH_CHECKS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from kpi_platform.clients import Client, registered_clients
from kpi_platform.warehouse import Warehouse

if TYPE_CHECKING:
    import dagster as dg

from kpi_platform.operations.health.activity_checks import check_activity
from kpi_platform.operations.health.forecast_checks import check_forecast_accuracy
from kpi_platform.operations.health.instance_checks import (
    check_asset_checks,
    check_collections,
    check_daemon,
    check_in_progress,
    check_success_rates,
)
from kpi_platform.operations.health.report import (
    DAEMON_HEARTBEAT_UNHEALTHY_S,
    CheckSpec,
    Finding,
    HealthCheck,
    HealthContext,
    HealthReport,
    HealthStatus,
    _failed_check,
    _number,
    worst,
)
from kpi_platform.operations.health.token_checks import check_token
from kpi_platform.operations.health.warehouse_checks import (
    check_circuit_breakers,
    check_hours_since_collection,
    check_missing_days,
    check_split_days,
    check_yesterday_collection,
)

__all__ = [
    "DAEMON_HEARTBEAT_UNHEALTHY_S",
    "HEALTH_CHECKS",
    "CheckSpec",
    "Finding",
    "HealthCheck",
    "HealthContext",
    "HealthReport",
    "HealthStatus",
    "build_health_report",
    "clients_from_warehouse",
    "worst",
]

HEALTH_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("yesterday_collection", 3.0, check_yesterday_collection),
    CheckSpec("missing_days", 2.0, check_missing_days),
    CheckSpec("split_days", 1.0, check_split_days),
    CheckSpec("hours_since_collection", 2.0, check_hours_since_collection),
    CheckSpec("asset_checks", 1.0, check_asset_checks, needs_instance=True),
    CheckSpec("circuit_breakers", 2.0, check_circuit_breakers),
    CheckSpec("activity", 1.0, check_activity),
    CheckSpec("daemon", 2.0, check_daemon, needs_instance=True),
    CheckSpec("in_progress", 0.0, check_in_progress, needs_instance=True),
    CheckSpec("success_rates", 0.0, check_success_rates, needs_instance=True),
    CheckSpec("collections", 0.0, check_collections, needs_instance=True),
    # The days left before the Meta access token expires, from the latest daily debug_token answer.
    CheckSpec("token", 2.0, check_token, needs_instance=True),
    # Light: forecasts are not data; with nothing to judge it scores 100 and never drags the report.
    CheckSpec("forecast_accuracy", 0.5, check_forecast_accuracy),
)


def build_health_report(
    *,
    warehouse: Warehouse,
    instance: dg.DagsterInstance | None,
    clients: Sequence[Client],
    now_utc: datetime,
    check_keys: Sequence[dg.AssetCheckKey] = (),
    exclude_run_id: str | None = None,
    checks: Sequence[CheckSpec] = HEALTH_CHECKS,
) -> HealthReport:
    """The health report as of `now_utc` (timezone-aware) for the active ones of `clients`.

    `instance` may be None: the checks that read it (`needs_instance`) are then left out of the report.
    `check_keys` are the asset checks whose latest evaluation is judged (the code location's, e.g.
    `defs.resolve_asset_graph().asset_check_keys`); `exclude_run_id` is left out of the runs in progress (the
    run building the report). A check that raises is reported unhealthy with the error's type and first line
    (secrets of the warehouse URL redacted), so one broken input never hides the others.
    """
    ctx = HealthContext(
        warehouse=warehouse,
        instance=instance,
        clients=clients,
        now_utc=now_utc,
        check_keys=check_keys,
        exclude_run_id=exclude_run_id,
    )
    secrets = (warehouse.engine.url.password,)
    results: list[HealthCheck] = []
    for spec in checks:
        if spec.needs_instance and instance is None:
            continue
        try:
            finding = spec.evaluate(ctx)
            results.append(
                HealthCheck(
                    name=spec.name,
                    status=finding.status,
                    score=round(float(finding.score), 1),
                    summary=finding.summary,
                    details=finding.details,
                    metrics={k: _number(k, v) for k, v in finding.metrics.items()},
                    weight=spec.weight,
                    table=finding.table,
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported as this check's result
            results.append(_failed_check(spec, exc, secrets))
    return HealthReport.from_checks(results, generated_at=ctx.now_utc)


def clients_from_warehouse(warehouse: Warehouse) -> list[Client]:
    """Every registered client (the report considers the active ones)."""
    return registered_clients(warehouse, active_only=False)
