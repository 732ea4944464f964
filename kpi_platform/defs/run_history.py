"""Every fact this platform reads from Dagster's run, check and backfill history, in one place.

Dagster's run history is the collection log: which client-days a run covered (its range tags), why it failed
(its step failure), which checks last finished and how, which partitions a backfill still holds, and how many
runs and backfills are in progress. Sensors, alerts and the health report read them through these functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.keys import PARTITION_TAG, RANGE_END_TAG, RANGE_START_TAG, ClientRange, day_range_from_tags
from kpi_platform.operations.health.success_rates import (
    KIND_BACKFILL,
    KIND_DAILY,
    KIND_HEAL,
    KIND_MANUAL,
    CollectionRun,
)
from kpi_platform.runtime.dagster_private import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
    BulkActionsFilter,
    BulkActionStatus,
    InstigatorStatus,
    InstigatorType,
    RunsTable,
    RunTagsTable,
    SqlRunStorage,
    cron_string_iterator,
)

#: Dagster's tag on a failed run, "true" when its run retries will re-run it (set when the failure is recorded).
WILL_RETRY_TAG = "dagster/will_retry"
#: Dagster's tag on every run a backfill launched: the backfill's id.
BACKFILL_TAG = "dagster/backfill"
#: Why our schedules and sensors launched a run (`plans.CollectionRequest.tags`).
REASON_TAG = "kpi/reason"
FINISHED_CHECK_STATUSES = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
#: A run's update time comes from the process that wrote it, not from the reader's clock; reading an overlap
#: again costs nothing (the keys are a set) and a run stored late is not missed.
FAILED_RUNS_OVERLAP = timedelta(minutes=5)
#: How the code server reports a run worker that died under it (Dagster 1.13's `_check_for_orphaned_runs`):
#: "Run execution process for <run id> was terminated by signal 9 (SIGKILL). This usually indicates …" or
#: "… unexpectedly exited with code 1."
WORKER_DIED = re.compile(
    r"Run execution process for \S+ "
    r"(was terminated by signal \d+(?: \(\w+\))?|unexpectedly exited with code -?\d+)"
)

#: How the run-monitoring daemon cancels a run past its `dagster/max_runtime` tag (Dagster 1.13's
#: `check_run_timeout`): "Canceling due to exceeding maximum runtime of 1860 seconds."
MAX_RUNTIME_EXCEEDED = re.compile(r"exceeding maximum runtime of (\d+) seconds")


def will_be_retried(run: dg.DagsterRun) -> bool:
    """True for a failed run that Dagster's run retries (`run_retries` in dagster.yaml) re-run: its worker died
    or it never started, and retries are left. Dagster tags the run so (`WILL_RETRY_TAG`) as it records the
    failure; the retry is a run of its own, judged again when it ends."""
    return run.tags.get(WILL_RETRY_TAG, "").lower() == "true"


def run_range(run: dg.DagsterRun) -> ClientRange | None:
    """The client × date range a collection run covered, from its range or partition tags; None for other runs."""
    return ClientRange.from_tags(run.tags)


def run_keys(run: dg.DagsterRun) -> list[str]:
    """The client-day keys a collection run covered, from its range or partition tags."""
    rng = run_range(run)
    return rng.keys() if rng is not None else []


def failure_reason(instance: dg.DagsterInstance, run_id: str) -> tuple[bool, str]:
    """(non_transient, reason) from the run's step failure.

    Only a failure our asset marks `transient` in its Failure metadata (a Meta throttle, 5xx, timeout or an open
    breaker, after the client's own retries) is transient. Everything else is non-transient: contract failures,
    token and permission errors, and anything unknown (a bug, a database error, a run that died before its step),
    which a retry every few minutes would not fix and would only hide.

    A run whose worker process was killed (SIGKILL from an operator or the kernel's OOM killer) has no step
    failure; its reason names how the worker died, and it stays non-transient. Dagster's run retries
    (`run_retries` in dagster.yaml) already re-execute such a run at once, twice; a range that is still killed
    after that is most likely too big for the memory (Dagster's own message for SIGKILL says so), and retrying
    it every 10 minutes would only kill a worker again and again, unreported. So it cools down and is reported
    like any other failure that needs a person.

    A run ended by the run-monitoring daemon for exceeding its time bound (`dagster/max_runtime`, scaled to its
    range) hung: its reason says so, whatever its interrupted step recorded. It is non-transient for the same
    reason: the bound is generous, so a range that keeps hanging needs a person, not a retry every 10 minutes.
    """
    exceeded = max_runtime_exceeded(instance, run_id)
    if exceeded is not None:
        return True, (
            f"run exceeded its maximum runtime of {exceeded} s (dagster/max_runtime) and was ended by run "
            "monitoring: a Meta API call or the run hung"
        )
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.get_dagster_event().step_failure_data
        user = data.user_failure_data
        transient = user.metadata.get("transient") if user is not None else None
        if user is not None and user.description:
            message = user.description
        else:
            # Dagster wraps an unexpected exception in "Error occurred while executing op"; the cause names it.
            error = data.error
            while error is not None and error.cause is not None:
                error = error.cause
            message = error.message if error is not None else ""
        return not (transient is not None and bool(transient.value)), message.strip()
    died = worker_death(instance, run_id)
    if died is not None:
        return True, f"run worker process {died}"
    return True, "run failed before its step ran"


def max_runtime_exceeded(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The time bound in seconds a run was canceled for exceeding, None if run monitoring never canceled it."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_CANCELING):
        match = MAX_RUNTIME_EXCEEDED.search(record.get_dagster_event().message or record.user_message or "")
        if match is not None:
            return int(match.group(1))
    return None


def worker_death(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """How the run's worker process died, as the code server recorded it ("was terminated by signal 9
    (SIGKILL)", "unexpectedly exited with code 1"); None if it did not die under the code server's watch."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        match = WORKER_DIED.search(record.get_dagster_event().message or "")
        if match is not None:
            return match.group(1)
    return None


def step_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str, str]:
    """(error class, redacted message) of the run's step failure; `RunTimedOut` for a run ended by run monitoring
    past its time bound."""
    exceeded = max_runtime_exceeded(instance, run_id)
    if exceeded is not None:
        return "RunTimedOut", f"the run exceeded its maximum runtime of {exceeded} s and was ended"
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = record.get_dagster_event().step_failure_data
        user = data.user_failure_data
        if user is not None:
            error = user.metadata.get("error")
            return (str(error.value) if error is not None else "ContractViolation"), user.description or ""
        if data.error is None:
            return "Error", ""
        # Dagster wraps an unexpected exception in "Error occurred while executing op"; the cause names it.
        cause = data.error
        while cause.cause is not None:
            cause = cause.cause
        return str(cause.cls_name), cause.message  # cls_name None (not an exception) reads "None"
    died = worker_death(instance, run_id)
    if died is not None:
        return "RunWorkerDied", f"the run worker process {died}"
    return "RunFailure", "the run failed before its step ran"


def failed_runs_since(instance: dg.DagsterInstance, since: datetime) -> list[dg.RunRecord]:
    """Records of the runs that failed after `since`, oldest first."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since)
    )
    return sorted(records, key=lambda r: r.update_timestamp)


def failed_run_keys(instance: dg.DagsterInstance, since: datetime) -> list[str]:
    """Client-days of the collection runs that failed after `since` (or a little before, see
    `FAILED_RUNS_OVERLAP`)."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.FAILURE], updated_after=since - FAILED_RUNS_OVERLAP
        )
    )
    return [key for run in runs for key in run_keys(run)]


# --- Runs of a date-partitioned asset (the activity snapshot) ---------------------------------------------------


def runs_asset(run: dg.DagsterRun, *, job_name: str, asset_key: dg.AssetKey) -> bool:
    """True for a run of `job_name`, and for any other run whose asset selection holds `asset_key` (a UI
    backfill's `__ASSET_JOB` run, `dagster asset materialize`)."""
    return run.job_name == job_name or asset_key in (run.asset_selection or frozenset())


def run_days(run: dg.DagsterRun) -> tuple[date, date] | None:
    """(first, last) day a run of a date-partitioned asset covered, from its range or partition tags."""
    return day_range_from_tags(run.tags)


def failures_in_a_row(
    instance: dg.DagsterInstance, *, job_name: str, asset_key: dg.AssetKey, limit: int = 50
) -> list[dg.RunRecord]:
    """The latest finished runs of `job_name` that failed, newest first: back to its latest successful run, and
    not before the latest materialization of `asset_key` by any run (a backfill from the UI that stored the asset
    ends the streak too). Runs still queued or running, canceled ones and failed ones Dagster re-runs
    (`will_be_retried`: their retry is judged when it ends) neither count nor end it."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=job_name, statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
        ),
        limit=limit,
        order_by="update_timestamp",
        ascending=False,
    )
    latest = instance.get_latest_materialization_event(asset_key)
    stored_at = latest.timestamp if latest is not None else None
    failed: list[dg.RunRecord] = []
    for record in records:
        if will_be_retried(record.dagster_run):
            continue
        if record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        if stored_at is not None and record.update_timestamp.timestamp() <= stored_at:
            break
        failed.append(record)
    return failed


@dataclass(frozen=True)
class CheckResultRecord:
    """The latest record of a check and the latest that finished (they differ while a run has only planned it)."""

    latest: AssetCheckExecutionRecord | None
    finished: AssetCheckExecutionRecord | None

    @property
    def latest_is_planned(self) -> bool:
        return self.latest is not None and self.latest.status not in FINISHED_CHECK_STATUSES

    @property
    def passed(self) -> bool:
        return self.finished is not None and self.finished.status == AssetCheckExecutionRecordStatus.SUCCEEDED


def check_result(instance: dg.DagsterInstance, key: dg.AssetCheckKey) -> CheckResultRecord:
    """The check's latest record and its latest finished one. Creating a run records every check it covers as
    PLANNED; until the run evaluates it (or forever, if the run fails first) the result before stands."""
    record = instance.get_latest_asset_check_evaluation_record(key)
    if record is None or record.status in FINISHED_CHECK_STATUSES:
        return CheckResultRecord(record, record)
    history = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=1, status=FINISHED_CHECK_STATUSES
    )
    return CheckResultRecord(record, history[0] if history else None)


def latest_check_result(
    instance: dg.DagsterInstance, key: dg.AssetCheckKey
) -> AssetCheckExecutionRecord | None:
    """The check's latest finished record, None if it never finished."""
    return check_result(instance, key).finished


def backfill_reserved_keys(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> set[str]:
    """Keys targeted by asset backfills still in progress: their runs may not exist yet, so they are not
    IN_PROGRESS, but requesting them again would duplicate the backfill's work."""
    reserved: set[str] = set()
    for backfill in instance.get_backfills(status=BulkActionStatus.REQUESTED):
        data = backfill.asset_backfill_data
        if data is None:
            continue
        subset = data.target_subset.partitions_subsets_by_asset_key.get(asset_key)
        if subset is not None:
            reserved.update(str(k) for k in subset.get_partition_keys())
    return reserved


def count_runs(
    instance: dg.DagsterInstance, statuses: Sequence[str], *, exclude_run_id: str | None = None
) -> int:
    """Runs in any of `statuses` (DagsterRunStatus values), not counting `exclude_run_id` (the caller's own run)."""
    n = instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus(s) for s in statuses]))
    own = instance.get_run_by_id(exclude_run_id) if exclude_run_id else None
    return n - 1 if own is not None and own.status.value in statuses else n


def backfills_in(instance: dg.DagsterInstance, statuses: Sequence[str]) -> list:
    """Backfills whose status is one of `statuses` (BulkActionStatus values)."""
    return list(
        instance.get_backfills(filters=BulkActionsFilter(statuses=[BulkActionStatus(s) for s in statuses]))
    )


def oldest_queued_run(instance: dg.DagsterInstance) -> tuple[int, dg.RunRecord | None]:
    """(queued runs, the record of the one queued longest)."""
    queued = dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])
    oldest = instance.get_run_records(queued, limit=1, order_by="create_timestamp", ascending=True)
    return instance.get_runs_count(queued), (oldest[0] if oldest else None)


# --- Collection runs, schedules and the health report's own history ------------------------------------------------


def collection_kind(run: dg.DagsterRun) -> str:
    """Which kind of collection `run` is: `heal` (the gap healer), `backfill` (launched by a backfill), `daily`
    (the schedule) or `manual` (anything else: the CLI, a launch from the UI)."""
    return collection_kind_of_tags(run.tags)


#: The tags a collection run is judged by (its range, kind and retry): all `finished_collection_runs` reads of a
#: run of the collection job, besides its status and end.
_COLLECTION_RUN_TAGS = (
    RANGE_START_TAG,
    RANGE_END_TAG,
    PARTITION_TAG,
    REASON_TAG,
    BACKFILL_TAG,
    WILL_RETRY_TAG,
)


def collection_kind_of_tags(tags: Mapping[str, str]) -> str:
    """`collection_kind` from a run's tags alone."""
    return _kind(tags.get(REASON_TAG), tags.get(BACKFILL_TAG))


def _kind(reason: str | None, backfill: str | None) -> str:
    """`collection_kind` from the run's `kpi/reason` and `dagster/backfill` tags (None when it has none)."""
    if reason == KIND_HEAL:
        return KIND_HEAL
    if backfill is not None:
        return KIND_BACKFILL
    return KIND_DAILY if reason == KIND_DAILY else KIND_MANUAL


def finished_collection_runs(
    instance: dg.DagsterInstance,
    *,
    client_ids: Sequence[str],
    since: datetime,
    job_name: str,
    asset_key: dg.AssetKey,
) -> list[CollectionRun]:
    """Collection runs of `client_ids` that succeeded or failed after `since`, oldest end first.

    Bounded by the runs' update time, and kept when they carry the `kpi/client` tag of one of `client_ids` (every
    collection run has it: the schedule's and the healer's from their request, any other from its first step). A
    run counts when it is a run of `job_name` or materializes `asset_key` and covers a client range. A failed run
    that Dagster's run retries re-run (`will_be_retried`) is left out: its retry is the attempt that counts. A run
    that failed before its first step and was launched without the client tag (a backfill's) cannot be found this
    way.

    On a SQL run storage (every storage Dagster ships) one query returns one row per run with its status, end and
    the few tags judged, pivoted on the server, and only the bodies of runs of other jobs are deserialized (for
    their asset selection): a month of a thousand clients' daily runs is some 30,000 runs, and deserializing each
    body took seconds, reading each tag as a row of its own a third of a second.
    """
    if not client_ids:
        return []
    storage = instance.run_storage
    if not isinstance(storage, SqlRunStorage):
        return _finished_collection_runs_from_records(
            instance, client_ids=client_ids, since=since, job_name=job_name, asset_key=asset_key
        )
    with_end = storage.has_run_stats_index_cols()
    tag = RunTagsTable.c
    # One column per judged tag: max() over the run's tag rows of the value under that key (NULL without one).
    judged = (settings.CLIENT_TAG, *_COLLECTION_RUN_TAGS)
    pivoted = [
        sa.func.max(sa.case((tag.key == key, tag.value))).label(f"tag_{i}") for i, key in enumerate(judged)
    ]
    query = (
        sa.select(
            RunsTable.c.run_id,
            RunsTable.c.pipeline_name,
            RunsTable.c.status,
            RunsTable.c.update_timestamp,
            RunsTable.c.end_time if with_end else sa.null().label("end_time"),
            *pivoted,
        )
        .select_from(
            RunsTable.join(
                RunTagsTable,
                sa.and_(tag.run_id == RunsTable.c.run_id, tag.key.in_(judged)),
            )
        )
        .where(
            RunsTable.c.status.in_([dg.DagsterRunStatus.SUCCESS.value, dg.DagsterRunStatus.FAILURE.value]),
            # The storage keeps naive UTC times (Dagster's own `updated_after` filter compares the same way).
            RunsTable.c.update_timestamp > since.astimezone(UTC).replace(tzinfo=None),
        )
        .group_by(RunsTable.c.id)
        # Newest first, as Dagster lists run records: runs ending in the same instant keep that order below.
        .order_by(RunsTable.c.id.desc())
    )
    wanted = set(client_ids)
    success = dg.DagsterRunStatus.SUCCESS.value
    with storage.connect() as conn:
        # Fetched at once: row by row through the result costs more than the query itself.
        rows = [row for row in conn.execute(query).all() if row[5] in wanted]
        other_jobs = [row[0] for row in rows if row[1] != job_name]
        bodies = (
            dict(
                conn.execute(
                    sa.select(RunsTable.c.run_id, RunsTable.c.run_body).where(
                        RunsTable.c.run_id.in_(other_jobs)
                    )
                ).all()
            )
            if other_jobs
            else {}
        )
    runs: list[CollectionRun] = []
    for run_id, _, status, updated, end_time, _, start, end, partition, reason, backfill, retry in rows:
        if run_id in bodies:
            selection = dg.deserialize_value(bodies[run_id], dg.DagsterRun).asset_selection
            if asset_key not in (selection or frozenset()):
                continue
        if retry is not None and retry.lower() == "true":
            continue
        rng = ClientRange.from_tag_values(start, end, partition)
        if rng is None:
            continue
        runs.append(
            CollectionRun(
                run_id=run_id,
                client_id=rng.client_id,
                start=rng.start,
                end=rng.end,
                succeeded=status == success,
                ended_at=datetime.fromtimestamp(end_time, UTC) if end_time else updated.replace(tzinfo=UTC),
                kind=_kind(reason, backfill),
            )
        )
    runs.sort(key=lambda r: r.ended_at)
    return runs


def _finished_collection_runs_from_records(
    instance: dg.DagsterInstance,
    *,
    client_ids: Sequence[str],
    since: datetime,
    job_name: str,
    asset_key: dg.AssetKey,
) -> list[CollectionRun]:
    """`finished_collection_runs` through the instance's run records, for a run storage that is not SQL."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE],
            tags={settings.CLIENT_TAG: list(client_ids)},
            updated_after=since,
        )
    )
    runs: list[CollectionRun] = []
    for record in records:
        run = record.dagster_run
        rng = run_range(run)
        if rng is None or not runs_asset(run, job_name=job_name, asset_key=asset_key) or will_be_retried(run):
            continue
        ended = datetime.fromtimestamp(record.end_time, UTC) if record.end_time else record.update_timestamp
        runs.append(
            CollectionRun(
                run_id=run.run_id,
                client_id=rng.client_id,
                start=rng.start,
                end=rng.end,
                succeeded=run.status == dg.DagsterRunStatus.SUCCESS,
                ended_at=ended.astimezone(UTC),
                kind=collection_kind(run),
            )
        )
    return sorted(runs, key=lambda r: r.ended_at)


@dataclass(frozen=True)
class ScheduleState:
    """A schedule as the instance knows it: `running` False only when someone stopped it (the UI, the CLI);
    `last_tick_at` is its latest tick, None before the daemon first evaluated it."""

    name: str
    running: bool
    last_tick_at: datetime | None


def schedule_state(instance: dg.DagsterInstance, name: str, *, default_running: bool) -> ScheduleState:
    """The stored state of the schedule called `name`, read from the instance without loading the code location.

    The daemon stores a state the first time it evaluates a schedule, and the UI stores STOPPED / RUNNING when
    someone toggles it; with no stored state the schedule runs as its code declares (`default_running`)."""
    states = [
        s
        for s in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
        if s.instigator_name == name
    ]
    if not states:
        return ScheduleState(name, default_running, None)
    running = any(s.status != InstigatorStatus.STOPPED for s in states)
    last: datetime | None = None
    for s in states:
        for tick in instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=1):
            at = datetime.fromtimestamp(tick.timestamp, UTC)
            last = at if last is None or at > last else last
    return ScheduleState(name, running, last)


def cron_ticks(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """The ticks of `cron` in `timezone` after `after`, as Dagster's scheduler computes them, in UTC."""
    for tick in cron_string_iterator(after.timestamp(), cron, timezone):
        if tick.timestamp() > after.timestamp():
            yield tick.astimezone(UTC)


def recorded_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, name: str, *, since: datetime, limit: int = 500
) -> list[tuple[datetime, float]]:
    """(time, value) of the numeric metadata entry `name` of the asset's materializations after `since`, oldest
    first (at most the latest `limit`)."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, after_timestamp=since.timestamp()), limit=limit
    )
    values: list[tuple[datetime, float]] = []
    for record in result.records:
        materialization = record.asset_materialization
        entry = materialization.metadata.get(name) if materialization is not None else None
        if entry is not None and isinstance(entry.value, int | float) and not isinstance(entry.value, bool):
            values.append((datetime.fromtimestamp(record.timestamp, UTC), float(entry.value)))
    return sorted(values)
