"""The report's checks: `WAREHOUSE_CHECKS`, which read only the warehouse, and `health_checks()`, every check in
report order (the instance's, `instance_checks.INSTANCE_CHECKS`, among them); `build_health_report` evaluates them.

Importing this module imports the warehouse checks and their pandas, not Dagster: the worker process of
`kpi-platform health` (`side_by_side.py`) evaluates these while the other process opens the Dagster instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from kpi_platform.operations.health.activity_checks import check_activity
from kpi_platform.operations.health.forecast_checks import check_forecast_accuracy
from kpi_platform.operations.health.report import REPORT_ORDER, CheckSpec, HealthReport, evaluate_checks
from kpi_platform.operations.health.warehouse_checks import (
    check_circuit_breakers,
    check_hours_since_collection,
    check_missing_days,
    check_split_days,
    check_yesterday_collection,
)

if TYPE_CHECKING:
    import dagster as dg

    from kpi_platform.clients import Client
    from kpi_platform.warehouse import Warehouse

#: The checks that read only the warehouse, with their weights. Weights: not collecting (yesterday, hours,
#: breakers, and a daemon down, which fires no schedule) counts most.
WAREHOUSE_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("yesterday_collection", 3.0, check_yesterday_collection),
    CheckSpec("missing_days", 2.0, check_missing_days),
    CheckSpec("split_days", 1.0, check_split_days),
    CheckSpec("hours_since_collection", 2.0, check_hours_since_collection),
    CheckSpec("circuit_breakers", 2.0, check_circuit_breakers),
    CheckSpec("activity", 1.0, check_activity),
    # Light: forecasts are not data; with nothing to judge it scores 100 and never drags the report.
    CheckSpec("forecast_accuracy", 0.5, check_forecast_accuracy),
)


def health_checks() -> tuple[CheckSpec, ...]:
    """Every check of the report, in `REPORT_ORDER` (this imports Dagster, for the instance's checks)."""
    from kpi_platform.operations.health.instance_checks import INSTANCE_CHECKS

    specs = {spec.name: spec for spec in (*WAREHOUSE_CHECKS, *INSTANCE_CHECKS)}
    if sorted(specs) != sorted(REPORT_ORDER):
        raise RuntimeError(f"REPORT_ORDER {sorted(REPORT_ORDER)} does not name the checks {sorted(specs)}")
    return tuple(specs[name] for name in REPORT_ORDER)


def build_health_report(
    *,
    warehouse: Warehouse,
    instance: dg.DagsterInstance | None,
    clients: Sequence[Client],
    now_utc: datetime,
    check_keys: Sequence[dg.AssetCheckKey] = (),
    exclude_run_id: str | None = None,
    checks: Sequence[CheckSpec] | None = None,
) -> HealthReport:
    """The health report as of `now_utc` (timezone-aware) for the active ones of `clients`: `checks`, every check
    of the report unless given, evaluated by `report.evaluate_checks` (which says what each argument is)."""
    return evaluate_checks(
        warehouse=warehouse,
        instance=instance,
        clients=clients,
        now_utc=now_utc,
        check_keys=check_keys,
        exclude_run_id=exclude_run_id,
        checks=health_checks() if checks is None else checks,
    )
