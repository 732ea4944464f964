"""The platform health report as an asset evaluated every 15 minutes: the markdown table and plottable numbers in
its metadata (the `score` history is what the watchdog's `health:score_low` alert reads)."""

from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg

from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.operations.health import HealthReport, build_health_report, clients_from_warehouse

# Defined beside the checks that read the instance, so `kpi-platform health` has them without this module's
# resources (and the simulator they import).
from kpi_platform.operations.health.instance_checks import HEALTH_REPORT as HEALTH_REPORT
from kpi_platform.operations.health.instance_checks import catalogue_check_keys as catalogue_check_keys


def health_metadata(report: HealthReport) -> dict[str, dg.MetadataValue]:
    """`report` (the table), `score` and `status`, then every check's numbers: the UI plots numeric values over
    materializations, so each number is one series (`failed_checks`, `missing_days_7d`, ...)."""
    metadata: dict[str, dg.MetadataValue] = {
        "report": dg.MetadataValue.md(report.to_markdown()),
        "score": dg.MetadataValue.float(float(report.score)),
        "status": dg.MetadataValue.text(report.status.value),
    }
    for name, value in report.metrics().items():
        metadata[name] = (
            dg.MetadataValue.int(value) if isinstance(value, int) else dg.MetadataValue.float(value)
        )
    return metadata


def build_health_report_asset(check_keys: Sequence[dg.AssetCheckKey]) -> dg.AssetsDefinition:
    """The health report asset, judging the asset checks `check_keys` (the ones `build_defs` assembled)."""
    judged = sorted(check_keys, key=lambda k: k.to_user_string())

    @dg.asset(
        key=HEALTH_REPORT,
        group_name="platform",
        kinds={"python"},
        owners=["team:data-engineering"],
    )
    def health_report(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        """Health of the KPI platform, the same report as `kpi-platform health`: yesterday's collection, missing
        days (7 / 30 days), split data, hours since each client's last successful collection, failed asset checks,
        open circuit breakers, the Dagster daemon's heartbeats and run queue, runs and backfills in progress, the
        roadmap's success rates (1, 7 and 30 days against their targets), the next scheduled collection and the
        failed collections; a status (healthy / degraded / unhealthy) and a 0–100 score. Grain: one
        materialization per evaluation (every 15 minutes). Materializes whatever the status is: an unhealthy platform is a result, not a failure of this asset.
        """
        wh = warehouse.get_warehouse()
        report = build_health_report(
            warehouse=wh,
            instance=context.instance,
            clients=clients_from_warehouse(wh),
            now_utc=datetime.now(UTC),
            check_keys=judged,
            exclude_run_id=context.run.run_id,
        )
        context.log.info(f"platform {report.status.value}, score {report.score:g}")
        return dg.MaterializeResult(metadata=health_metadata(report))

    return health_report


health_report_job = dg.define_asset_job(
    "health_report_job",
    selection=dg.AssetSelection.assets(HEALTH_REPORT),
    description="Evaluate the platform health report.",
)

health_report_schedule = dg.ScheduleDefinition(
    name="health_report_schedule",
    job=health_report_job,
    # Every 15 minutes (the roadmap), on minutes that follow the hourly collection (:05) and the warehouse checks
    # (:20) by five minutes or more, so each hour's report judges their results.
    cron_schedule="10,25,40,55 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every 15 minutes: the health report, plotted in the asset's metadata.",
)

HEALTH_JOBS = [health_report_job]
HEALTH_SCHEDULES = [health_report_schedule]
