"""Warehouse-wide asset checks, the external asset they are on, the job that runs them, and what triggers it (after
collection, and hourly).

The checks judge the warehouse as a whole, not one run's partitions, so they sit on `meta_ads/kpi_warehouse`, an
external asset downstream of the daily and monthly assets: a materialization of those (a collection run, a UI
backfill's runs, whose checks are every check of the selected assets) never selects them, and a failed run never
marks them failed. Only `warehouse_checks_job` runs them; the UI offers no Materialize for an external asset.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from kpi_platform.clients import registered_clients
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.monthly import CLIENT_MONTHLY_SUMMARY
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.operations import check_catalogue
from kpi_platform.quality.rules import CheckSeverity
from kpi_platform.quality.warehouse_checks import evaluate_warehouse_checks

KPI_WAREHOUSE = dg.AssetKey(list(check_catalogue.KPI_WAREHOUSE_ASSET))

kpi_warehouse = dg.AssetSpec(
    key=KPI_WAREHOUSE,
    deps=[CLIENT_DAILY_KPIS, CLIENT_MONTHLY_SUMMARY],
    description="The KPI warehouse tables as a whole (`client_daily_kpis`, `campaign_daily_kpis`, "
    "`client_monthly_kpis`), written by the daily and monthly assets. Not materialized itself: it carries the "
    "warehouse-wide checks, run by `warehouse_checks_job` after new data and hourly.",
    group_name="meta_ads",
    kinds={"sql"},
    owners=["team:data-engineering"],
)

WAREHOUSE_CHECK_SPECS = [
    dg.AssetCheckSpec(entry.name, asset=dg.AssetKey(list(entry.asset)), description=entry.description)
    for entry in check_catalogue.warehouse_wide()
]
_ASSET_OF_CHECK = {spec.name: spec.asset_key for spec in WAREHOUSE_CHECK_SPECS}


def to_metadata(values: dict[str, Any]) -> dict[str, dg.MetadataValue]:
    """Numbers stay numbers (the UI plots them over time); everything else becomes JSON or text."""
    out: dict[str, dg.MetadataValue] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = dg.MetadataValue.bool(value)
        elif isinstance(value, int):
            out[key] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[key] = dg.MetadataValue.float(value)
        elif isinstance(value, str):
            out[key] = dg.MetadataValue.text(value)
        elif value is None:
            out[key] = dg.MetadataValue.null()
        else:
            out[key] = dg.MetadataValue.json(value)
    return out


@dg.multi_asset_check(
    specs=WAREHOUSE_CHECK_SPECS,
    name="warehouse_checks",
    can_subset=True,
    description="Warehouse-wide quality checks, evaluated after collection and hourly.",
)
def warehouse_checks(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
    wh = warehouse.get_warehouse()
    # The warehouse rows carry each client's settings, its freshness deadline hour among them.
    clients = registered_clients(wh)
    selected = {key.name for key in context.selected_asset_check_keys}
    for outcome in evaluate_warehouse_checks(warehouse=wh, clients=clients, now_utc=datetime.now(UTC)):
        if outcome.name not in selected:
            continue
        yield dg.AssetCheckResult(
            asset_key=_ASSET_OF_CHECK[outcome.name],
            check_name=outcome.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR
            if outcome.severity == CheckSeverity.ERROR
            else dg.AssetCheckSeverity.WARN,
            metadata=to_metadata(outcome.metadata),
        )


warehouse_checks_job = dg.define_asset_job(
    "warehouse_checks_job",
    selection=dg.AssetSelection.checks(warehouse_checks),
    description="Evaluate the warehouse-wide quality checks.",
)

warehouse_checks_schedule = dg.ScheduleDefinition(
    name="warehouse_checks_schedule",
    job=warehouse_checks_job,
    cron_schedule="20 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Hourly: freshness and completeness change with the clock even when nothing is collected.",
)


@dg.asset_sensor(
    name="checks_after_collection_sensor",
    asset_key=CLIENT_DAILY_KPIS,
    job=warehouse_checks_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs the warehouse checks within minutes of new client-day data.",
)
def checks_after_collection_sensor(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    # One run per tick at most: the sensor only sees the latest materialization since its cursor.
    return dg.RunRequest(run_key=f"after:{asset_event.run_id}")
