"""The platform activity snapshot asset and its two checks, evaluated over the rows stored in the warehouse."""

import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import dagster as dg
from pydantic import Field

from kpi_platform.activity.metrics import COUNT, CollectionPlan, collection_plan, totals_pairs
from kpi_platform.activity.retry import DatabaseUnavailableError, call_with_connection_retries
from kpi_platform.activity.snapshot import describe_days, missing_metrics, snapshot_rows, totals_mismatches
from kpi_platform.activity.source import AppDatabaseError
from kpi_platform.defs import run_history
from kpi_platform.defs.partitions import daily_partitions
from kpi_platform.defs.resources import AppDatabaseResource, WarehouseResource
from kpi_platform.keys import day_range_tags
from kpi_platform.operations import check_catalogue
from kpi_platform.operations.activity_watch import (
    ACTIVITY_PREFIX,
    FAILURES_CRITICAL,
    HEAL_BASE_COOLDOWN_S,
    HORIZON_DAYS,
    MISSING_PREFIX,
    DayFailure,
    FailureStreak,
    activity_alerts,
    day_of_missing_key,
    describe_plan,
    plan_activity_healing,
    prune_day_failures,
    read_activity_facts,
    record_day_failures,
)
from kpi_platform.operations.alerts import Notifier, SyncResult
from kpi_platform.operations.plans import IN_PROGRESS
from kpi_platform.warehouse import Warehouse, as_utc
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
    """The agency's own platform activity at the end of each UTC day: every active metric of
    `metric_definitions` (built in: users_total, posts_total, comments_total, posts_created, comments_created).

    Grain: one `daily_metrics` row per day × metric (metric_type `count`, metric_category the metric).
    Source: the application database (KPI_APP_DB_URL): tables profiles, posts, comments, counted by created_at.
    Inactive definitions, and active ones no collector counts, are not collected: the run says which and why
    (log warning, metadata `metrics_not_collected`).
    The application deletes rows outright, so a day's counts are only true when taken: a stored snapshot is
    immutable. A re-run reports its days as already recorded and leaves them; `force: true` replaces them
    (logged per day, old → new). A one-day run and a year's backfill take the same path, in one run.
    A day snapshotted after it was due (02:00 UTC the next day) is stored with metadata `late: true`: rows deleted
    since the day ended are not in its counts. Database connection errors (application database and warehouse)
    are retried 3 times with exponential backoff, each attempt logged; other errors fail the run at once.
    """
    days = sorted(date.fromisoformat(key) for key in context.partition_keys)
    try:
        # Connection errors are retried (3 attempts, exponential backoff, each logged); anything else fails at once.
        wh = call_with_connection_retries(
            warehouse.get_warehouse, what="opening the warehouse", log=context.log
        )
        plan = call_with_connection_retries(
            lambda: _collection_plan(wh), what="reading the metric definitions", log=context.log
        )
    except DatabaseUnavailableError as exc:
        raise _database_failure(exc) from None
    for metric, reason in plan.not_collected().items():
        context.log.warning(f"activity metric {metric} not collected: {reason}")
    if not plan.collected:
        raise dg.Failure(
            description="no active metric definition has a collector: nothing to snapshot "
            f"(not collected: {plan.not_collected()}); set is_active in metric_definitions",
            metadata={"metrics_not_collected": dg.MetadataValue.json(plan.not_collected())},
            allow_retries=False,
        )
    reader = app_db.get_app_database()
    try:
        counts = call_with_connection_retries(
            lambda: reader.count_days(start=days[0], end=days[-1], metrics=plan.collected),
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
        # One transaction: a repeat after a failed attempt finds what a committed attempt stored and keeps it.
        write = call_with_connection_retries(
            lambda: wh.record_daily_metrics(rows, force=config.force),
            what="storing the activity snapshot in the warehouse",
            log=context.log,
        )
        last = call_with_connection_retries(
            lambda: wh.read_daily_metrics(start=days[-1], end=days[-1], categories=plan.collected),
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
        "metrics_collected": dg.MetadataValue.json(list(plan.collected)),
        "metrics_not_collected": dg.MetadataValue.json(plan.not_collected()),
    }
    # Numbers, so the UI plots each metric over time.
    for metric, value in zip(last["metric_category"], last["value"], strict=True):
        metadata[metric] = dg.MetadataValue.int(int(value))
    return dg.MaterializeResult(metadata=metadata)


def _collection_plan(wh: Warehouse) -> CollectionPlan:
    """Which defined metrics are collected, from the warehouse's metric_definitions."""
    return collection_plan(wh.metric_definitions())


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
    return warehouse.daily_metric_bounds(metric_type=COUNT)


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
    plan = _collection_plan(wh)
    stored = wh.read_daily_metrics(start=start, end=end, types=[COUNT])
    missing = missing_metrics(stored, start=start, end=end, metrics=plan.collected)
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
            "expected_metrics": dg.MetadataValue.json(list(plan.collected)),
            "metrics_not_collected": dg.MetadataValue.json(plan.not_collected()),
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
    stored = wh.read_daily_metrics(start=start - timedelta(days=1), end=end, types=[COUNT])
    mismatches = totals_mismatches(stored, start=start, end=end)
    metadata: dict[str, dg.MetadataValue] = {
        "window": dg.MetadataValue.text(f"{start}..{end}"),
        "days_checked": dg.MetadataValue.int((end - start).days + 1),
        "days_mismatched": dg.MetadataValue.int(len({m.day for m in mismatches})),
        "deletions": dg.MetadataValue.json([m.as_dict() for m in mismatches[:MAX_LISTED_DAYS]]),
    }
    for total_metric, _ in totals_pairs(_collection_plan(wh).collected):
        removed = sum(m.removed for m in mismatches if m.total_metric == total_metric)
        metadata[f"removed_{total_metric.removesuffix('_total')}"] = dg.MetadataValue.int(removed)
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


# --- Healing missed days ----------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_activity_gap_healing_sensor(
    *,
    minimum_interval_seconds: int = 300,
    horizon_days: int = HORIZON_DAYS,
    clock: Callable[[], datetime] = _utc_now,
) -> dg.SensorDefinition:
    """The activity healing sensor; the defaults are production's, `clock` (aware) lets tests tick at fixed times."""

    @dg.sensor(
        name="activity_gap_healing_sensor",
        job=activity_snapshot_job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests the activity snapshot of every due day of the last {horizon_days} days (day D is due "
        "from 02:00 UTC on D + 1) that lacks any of its active metrics and is not queued, running or in a backfill: "
        "one run per contiguous range, newest first. A day whose run failed waits "
        f"{HEAL_BASE_COOLDOWN_S / 60:.0f} min, doubling with each failure in a row (at most 8 h). A snapshot taken "
        "late is labelled `late` (rows deleted since the day are not in its counts).",
    )
    def activity_gap_healing_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        return _heal_activity(context, warehouse.get_warehouse(), horizon_days=horizon_days, now_utc=clock())

    return activity_gap_healing_sensor


def _is_snapshot_run(run: dg.DagsterRun) -> bool:
    return run_history.runs_asset(run, job_name=activity_snapshot_job.name, asset_key=DAILY_ACTIVITY_SNAPSHOT)


def _heal_activity(
    context: dg.SensorEvaluationContext, wh: Warehouse, *, horizon_days: int, now_utc: datetime
) -> dg.SensorResult:
    state = json.loads(context.cursor) if context.cursor else {}
    # Watermark on Dagster's run update times: every failed snapshot run is counted once, oldest first.
    since = float(state.get("since", 0.0))
    tick = int(state.get("tick", 0)) + 1
    failures = {k: DayFailure.from_json(v) for k, v in state.get("failures", {}).items()}
    for record in run_history.failed_runs_since(context.instance, datetime.fromtimestamp(since, UTC)):
        since = max(since, record.update_timestamp.timestamp())
        days = run_history.run_days(record.dagster_run) if _is_snapshot_run(record.dagster_run) else None
        if days is not None:
            _, reason = run_history.failure_reason(context.instance, record.dagster_run.run_id)
            failures = record_day_failures(
                failures,
                first=days[0],
                last=days[1],
                failed_ts=record.update_timestamp.timestamp(),
                reason=reason,
            )

    missing = read_activity_facts(wh, now_utc=now_utc, horizon_days=horizon_days).missing_in_window
    keys = [day.isoformat() for day in missing]
    # None until the asset has its first event on this instance.
    statuses = (
        context.instance.get_status_by_partition(DAILY_ACTIVITY_SNAPSHOT, keys, daily_partitions) or {}
        if keys
        else {}
    )
    busy = {key for key, status in statuses.items() if status is not None and status.value == IN_PROGRESS}
    busy |= run_history.backfill_reserved_keys(context.instance, DAILY_ACTIVITY_SNAPSHOT) & set(keys)
    failures = prune_day_failures(failures, missing=missing)
    plan = plan_activity_healing(
        missing=missing,
        in_progress={date.fromisoformat(key) for key in busy},
        failures=failures,
        now_ts=now_utc.timestamp(),
    )
    context.log.info(describe_plan(plan))
    cursor = json.dumps(
        {"since": since, "tick": tick, "failures": {k: m.to_json() for k, m in failures.items()}}
    )
    if not plan.ranges:
        return dg.SensorResult(skip_reason=dg.SkipReason("no missed activity days to heal"), cursor=cursor)
    requests = [
        dg.RunRequest(
            run_key=f"activity-heal:{first}:{last}:{tick}",
            tags={**day_range_tags(first, last), "kpi/reason": "activity_heal"},
        )
        for first, last in plan.ranges
    ]
    return dg.SensorResult(run_requests=requests, cursor=cursor)


# --- Alerts -----------------------------------------------------------------------------------------------------


def failure_streak(instance: dg.DagsterInstance) -> FailureStreak:
    """The snapshot job's failed runs in a row (Dagster's run history) and the newest one's error."""
    records = run_history.failures_in_a_row(
        instance, job_name=activity_snapshot_job.name, asset_key=DAILY_ACTIVITY_SNAPSHOT
    )
    if not records:
        return FailureStreak()
    newest = records[0]
    error, message = run_history.step_failure(instance, newest.dagster_run.run_id)
    return FailureStreak(
        count=len(records),
        run_id=newest.dagster_run.run_id,
        failed_at=as_utc(newest.update_timestamp),
        error=error,
        message=message,
    )


def sync_activity_alerts(
    instance: dg.DagsterInstance, wh: Warehouse, *, log: logging.Logger, now_utc: datetime
) -> SyncResult:
    """Raise the activity problems of now and resolve those gone (scope `activity:`)."""
    notifier = Notifier.from_env(wh, log=log)
    # A day whose alert is open stays judged after it leaves the horizon: resolved only once it is stored.
    open_days = [day_of_missing_key(p.key) for p in notifier.open_problems(scope_prefix=MISSING_PREFIX)]
    facts = read_activity_facts(wh, now_utc=now_utc, also_days=[d for d in open_days if d is not None])
    return notifier.sync(activity_alerts(facts, failure_streak(instance)), ACTIVITY_PREFIX)


def _summary(result: SyncResult) -> str:
    return (
        f"activity alerts: {len(result.open)} open, {len(result.notified)} new, {len(result.resolved)} resolved"
        + (f" ({', '.join(result.open)})" if result.open else "")
    )


def build_activity_alert_sensor(
    *, minimum_interval_seconds: int = 120, clock: Callable[[], datetime] = _utc_now
) -> dg.SensorDefinition:
    """The periodic activity alert sync; `clock` (aware) lets tests evaluate it at fixed times."""

    @dg.sensor(
        name="activity_alert_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Activity snapshot alerts, each raised once and resolved when fixed: a due day missing "
        "(MEDIUM), the snapshot job failing (MEDIUM, CRITICAL from "
        f"{FAILURES_CRITICAL} failed runs in a row), no snapshot for 48 h (CRITICAL).",
    )
    def activity_alert_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        result = sync_activity_alerts(
            context.instance, warehouse.get_warehouse(), log=context.log, now_utc=clock()
        )
        summary = _summary(result)
        context.log.info(summary)
        return dg.SkipReason(summary)

    return activity_alert_sensor


@dg.run_failure_sensor(
    name="activity_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="When a run of the activity snapshot fails, syncs the activity alerts at once: the failure alert "
    f"(MEDIUM, CRITICAL from {FAILURES_CRITICAL} failed runs of activity_snapshot_job in a row) and missing days.",
)
def activity_failure_alert_sensor(context: dg.RunFailureSensorContext, warehouse: WarehouseResource):
    if not _is_snapshot_run(context.dagster_run):
        # Logged, not a SkipReason: a run-status sensor that returns one for a run while it reacts to another in
        # the same tick fails the whole tick ("received both DagsterRunReaction and SkipReason").
        context.log.info("not an activity snapshot run")
        return None
    if run_history.will_be_retried(context.dagster_run):
        context.log.info("Dagster re-runs this run (run retries); its retry alerts if it fails")
        return None
    result = sync_activity_alerts(
        context.instance, warehouse.get_warehouse(), log=context.log, now_utc=datetime.now(UTC)
    )
    context.log.info(_summary(result))
    return None


activity_gap_healing_sensor = build_activity_gap_healing_sensor()
activity_alert_sensor = build_activity_alert_sensor()
ACTIVITY_SENSORS = [activity_gap_healing_sensor, activity_alert_sensor, activity_failure_alert_sensor]
