"""The platform activity snapshot asset and its two checks, evaluated over the rows stored in the warehouse."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field

from kpi_platform import settings
from kpi_platform.activity.metrics import CATEGORY, TABLE_METRICS
from kpi_platform.activity.snapshot import describe_days, missing_metrics, snapshot_rows, totals_mismatches
from kpi_platform.activity.retry import DatabaseUnavailableError, call_with_connection_retries
from kpi_platform.activity.source import AppDatabaseError
from kpi_platform.defs.partitions import daily_partitions
from kpi_platform.defs.resources import AppDatabaseResource, WarehouseResource
from kpi_platform.operations import check_catalogue
from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse.store import describe_replacements

DAILY_ACTIVITY_SNAPSHOT = dg.AssetKey(list(check_catalogue.ACTIVITY_SNAPSHOT_ASSET))
ALL_METRICS_PRESENT = "daily_activity_snapshot__all_metrics_present"
TOTALS_MATCH_CREATED = "daily_activity_snapshot__totals_match_created"
#: Days listed in check metadata at most; the counts always cover every day.
MAX_LISTED_DAYS = 100


class ActivitySnapshotConfig(dg.Config):
    force: bool = Field(
        default=False,
        description="Replace days already stored (corrections only). Every replaced day is logged as a WARNING "
        "with its old and new values, and the old value stays in the row's metadata.",
    )


@dg.asset(
    key_prefix="platform",
    name="daily_activity_snapshot",
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="platform",
    kinds={"python", "sql"},
    owners=["team:data-engineering"],
)
def daily_activity_snapshot(
    context: dg.AssetExecutionContext,
    config: ActivitySnapshotConfig,
    app_db: AppDatabaseResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The agency's own platform activity at the end of each UTC day: users_total, posts_total, comments_total,
    posts_created, comments_created.

    Grain: one `daily_metrics` row per day × metric (category `platform`).
    Source: the application database (KPI_APP_DB_URL): tables profiles, posts, comments, counted by created_at.
    The application deletes rows outright, so a day's counts are only true when taken: a stored snapshot is
    immutable. A re-run reports its days as already recorded and leaves them; `force: true` replaces them
    (logged per day, old → new). A one-day run and a year's backfill take the same path, in one run.
    """
    days = sorted(date.fromisoformat(key) for key in context.partition_keys)
    reader = app_db.get_app_database()
    try:
        # Connection errors are retried (3 attempts, exponential backoff, each logged); anything else fails at once.
        counts = call_with_connection_retries(
            lambda: reader.count_days(start=days[0], end=days[-1]),
            what=f"reading the application database {reader.url_for_display}",
            log=context.log,
        )
    except AppDatabaseError as exc:
        raise dg.Failure(
            description=str(exc), metadata={"error": "AppDatabaseError"}, allow_retries=False
        ) from None
    except DatabaseUnavailableError as exc:
        raise _database_failure(exc) from None
    finally:
        reader.dispose()
    wanted = set(days)
    rows = [row for row in snapshot_rows(counts, run_id=context.run.run_id) if row["metric_date"] in wanted]
    if config.force:
        context.log.warning(f"force: stored activity snapshots of {describe_days(days)} will be replaced")
    try:
        wh = call_with_connection_retries(warehouse.get_warehouse, what="opening the warehouse", log=context.log)
        # One transaction: a repeat after a failed attempt finds what a committed attempt stored and keeps it.
        write = call_with_connection_retries(
            lambda: wh.record_daily_metrics(rows, force=config.force),
            what="storing the activity snapshot in the warehouse",
            log=context.log,
        )
        last = call_with_connection_retries(
            lambda: wh.read_daily_metrics(start=days[-1], end=days[-1], categories=[CATEGORY]),
            what="reading the stored activity snapshot back",
            log=context.log,
        )
    except DatabaseUnavailableError as exc:
        raise _database_failure(exc) from None
    for line in describe_replacements(write.replaced):
        context.log.warning(line)
    if write.days_already_recorded:
        context.log.info(
            f"already recorded, left unchanged (snapshots are immutable): {describe_days(write.days_already_recorded)}"
        )
    late = sorted({row["metric_date"] for row in rows if row["metadata"]["late"]} & set(write.days_recorded))
    if late:
        context.log.warning(
            f"late snapshot of {describe_days(late)} (stored with metadata late=true): counted now from created_at, "
            "so rows deleted since those days ended are not in their counts"
        )
    metadata: dict[str, dg.MetadataValue] = {
        "days_recorded": dg.MetadataValue.int(len(write.days_recorded)),
        "days_already_recorded": dg.MetadataValue.int(len(write.days_already_recorded)),
        "days_late": dg.MetadataValue.int(len(late)),
        "days_forced": dg.MetadataValue.int(len({r.metric_date for r in write.replaced})),
        "range": dg.MetadataValue.text(describe_days(days)),
        "source": dg.MetadataValue.text(counts.source),
        "taken_at": dg.MetadataValue.text(counts.taken_at.isoformat()),
    }
    # Numbers, so the UI plots each metric over time.
    for metric_type, value in zip(last["metric_type"], last["value"], strict=True):
        metadata[metric_type] = dg.MetadataValue.int(int(value))
    return dg.MaterializeResult(metadata=metadata)


def _database_failure(exc: DatabaseUnavailableError) -> dg.Failure:
    """The run's failure once a database connection failed on every attempt."""
    return dg.Failure(
        description=str(exc),
        metadata={"error": "DatabaseUnavailableError", "attempts": exc.attempts},
        allow_retries=False,
    )


def _check_window(context: dg.AssetCheckExecutionContext, warehouse: Warehouse) -> tuple[date, date] | None:
    """The run's partition range (clipped to the last ended day), else every stored day; None if nothing to check."""
    op_context = context.op_execution_context
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    if op_context.has_partition_key or op_context.has_partition_key_range:
        key_range = op_context.partition_key_range
        start, end = date.fromisoformat(key_range.start), min(date.fromisoformat(key_range.end), yesterday)
        return (start, end) if start <= end else None
    return warehouse.daily_metric_bounds(category=CATEGORY)


@dg.asset_check(
    asset=DAILY_ACTIVITY_SNAPSHOT,
    name=ALL_METRICS_PRESENT,
    blocking=True,
    description=check_catalogue.description(ALL_METRICS_PRESENT),
)
def all_metrics_present(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    wh = warehouse.get_warehouse()
    window = _check_window(context, wh)
    if window is None:
        return dg.AssetCheckResult(passed=True, metadata={"days_checked": dg.MetadataValue.int(0)})
    start, end = window
    stored = wh.read_daily_metrics(start=start, end=end, categories=[CATEGORY])
    missing = missing_metrics(stored, start=start, end=end)
    listed = dict(list(sorted(missing.items()))[:MAX_LISTED_DAYS])
    return dg.AssetCheckResult(
        passed=not missing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "window": dg.MetadataValue.text(f"{start}..{end}"),
            "days_checked": dg.MetadataValue.int((end - start).days + 1),
            "days_incomplete": dg.MetadataValue.int(len(missing)),
            "incomplete_days": dg.MetadataValue.text(describe_days(missing)),
            "missing_metrics": dg.MetadataValue.json(
                {day.isoformat(): types for day, types in listed.items()}
            ),
            "expected_metrics": dg.MetadataValue.json(list(settings.ACTIVITY_METRIC_TYPES)),
        },
    )


@dg.asset_check(
    asset=DAILY_ACTIVITY_SNAPSHOT,
    name=TOTALS_MATCH_CREATED,
    blocking=False,
    description=check_catalogue.description(TOTALS_MATCH_CREATED),
)
def totals_match_created(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    wh = warehouse.get_warehouse()
    window = _check_window(context, wh)
    if window is None:
        return dg.AssetCheckResult(
            passed=True,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"days_checked": dg.MetadataValue.int(0)},
        )
    start, end = window
    stored = wh.read_daily_metrics(start=start - timedelta(days=1), end=end, categories=[CATEGORY])
    mismatches = totals_mismatches(stored, start=start, end=end)
    metadata: dict[str, dg.MetadataValue] = {
        "window": dg.MetadataValue.text(f"{start}..{end}"),
        "days_checked": dg.MetadataValue.int((end - start).days + 1),
        "days_mismatched": dg.MetadataValue.int(len({m.day for m in mismatches})),
        "deletions": dg.MetadataValue.json([m.as_dict() for m in mismatches[:MAX_LISTED_DAYS]]),
    }
    for _, total_type, created_type in TABLE_METRICS:
        if created_type is not None:
            removed = sum(m.removed for m in mismatches if m.total_type == total_type)
            metadata[f"removed_{total_type.removesuffix('_total')}"] = dg.MetadataValue.int(removed)
    return dg.AssetCheckResult(passed=not mismatches, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)


ACTIVITY_ASSETS = [daily_activity_snapshot]
ACTIVITY_CHECKS = [all_metrics_present, totals_match_created]

activity_snapshot_job = dg.define_asset_job(
    "activity_snapshot_job",
    selection=dg.AssetSelection.assets(daily_activity_snapshot),
    description="Snapshot the platform's activity (users, posts, comments) for a UTC day or a range of days.",
)
#: Shortly after each UTC day ends, that day is snapshotted (and never rewritten later).
activity_snapshot_schedule = dg.build_schedule_from_partitioned_job(
    activity_snapshot_job, hour_of_day=0, minute_of_hour=30, default_status=dg.DefaultScheduleStatus.RUNNING
)
