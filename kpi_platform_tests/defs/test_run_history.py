"""Why a run failed, as the gap healer reads it from Dagster's run history: a run worker killed by a signal is
named as such and stays non-transient (Dagster's own run retries re-run it first). Collection runs by kind, as the
success rates read them, and a schedule's state and ticks."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from dagster._utils import (
    get_run_crash_explanation,  # PRIVATE: the code server's own wording for a dead worker
)

from kpi_platform import settings
from kpi_platform.defs.run_history import (
    _finished_collection_runs_from_records,
    cron_ticks,
    failure_reason,
    finished_collection_runs,
    schedule_state,
    worker_death,
)
from kpi_platform.keys import ClientRange
from kpi_platform.operations.plans import NON_TRANSIENT_BASE_COOLDOWN_S, FailureMemory, record_failures
from kpi_platform_tests.support.dagster_instance import noop_job
from kpi_platform_tests.support.postgres import create_temp_database, pooled_storage_overrides


def died_run(instance: dg.DagsterInstance, exit_code: int) -> str:
    """A run failed the way the code server fails one whose worker process exited with `exit_code` (negative:
    killed by that signal): its engine event, then the run failure."""
    run = instance.create_run_for_job(noop_job)
    message = get_run_crash_explanation(prefix=f"Run execution process for {run.run_id}", exit_code=exit_code)
    instance.report_engine_event(message, run)
    instance.report_run_failed(run)
    return run.run_id


def test_a_worker_killed_by_a_signal_is_named_and_stays_non_transient(instance):
    run_id = died_run(instance, -9)
    assert worker_death(instance, run_id) == "was terminated by signal 9 (SIGKILL)"
    non_transient, reason = failure_reason(instance, run_id)
    assert non_transient is True
    assert reason == "run worker process was terminated by signal 9 (SIGKILL)"
    # The first failure cools the days down an hour (Dagster's run retries re-run the range meanwhile).
    memory = record_failures(
        {}, keys=["acme|2026-01-01"], failed_ts=0.0, non_transient=non_transient, reason=reason
    )
    assert memory["acme|2026-01-01"].cooldown_s() == NON_TRANSIENT_BASE_COOLDOWN_S
    assert memory["acme|2026-01-01"] == FailureMemory(1, 0.0, True, reason)


def test_a_worker_that_exited_with_an_error_code_is_named(instance):
    run_id = died_run(instance, 1)
    assert failure_reason(instance, run_id) == (True, "run worker process unexpectedly exited with code 1")


def test_a_run_failed_from_outside_without_a_dead_worker_keeps_the_generic_reason(instance):
    run = instance.create_run_for_job(noop_job)
    instance.report_engine_event("Started process for run (pid: 4242).", run)
    instance.report_run_failed(run, "Run timed out due to taking longer than 180 seconds to start.")
    assert worker_death(instance, run.run_id) is None
    assert failure_reason(instance, run.run_id) == (True, "run failed before its step ran")


def test_the_collection_alert_names_a_dead_worker_too(instance):
    from kpi_platform.defs.run_history import step_failure

    run_id = died_run(instance, -9)
    assert step_failure(instance, run_id) == (
        "RunWorkerDied",
        "the run worker process was terminated by signal 9 (SIGKILL)",
    )


# --- collection runs as the success rates read them ---------------------------------------------------------------


def test_finished_collection_runs_by_kind_without_canceled_or_retried_runs(instance):
    when = datetime(2026, 11, 20, 5, 10, tzinfo=UTC)

    def stored(
        tags: dict[str, str], status: dg.DagsterRunStatus, job_name: str = "daily_collection_job"
    ) -> str:
        rng = ClientRange("acme", date(2026, 11, 1), date(2026, 11, 19)).tags()
        run = instance.add_run(
            dg.DagsterRun(job_name=job_name, tags={**rng, settings.CLIENT_TAG: "acme", **tags}, status=status)
        )
        return run.run_id

    daily = stored({"kpi/reason": "daily"}, dg.DagsterRunStatus.SUCCESS)
    heal = stored({"kpi/reason": "heal"}, dg.DagsterRunStatus.FAILURE)
    backfill = stored({"dagster/backfill": "bkf1"}, dg.DagsterRunStatus.SUCCESS)
    manual = stored({}, dg.DagsterRunStatus.FAILURE)
    stored({"kpi/reason": "daily"}, dg.DagsterRunStatus.CANCELED)
    stored({"kpi/reason": "daily", "dagster/will_retry": "true"}, dg.DagsterRunStatus.FAILURE)
    stored({"kpi/reason": "finalize"}, dg.DagsterRunStatus.SUCCESS, job_name="monthly_summary_job")
    runs = finished_collection_runs(
        instance,
        client_ids=["acme", "globex"],
        since=when - timedelta(days=1),
        job_name="daily_collection_job",
        asset_key=dg.AssetKey(["meta_ads", "client_daily_kpis"]),
    )
    assert {(r.run_id, r.kind, r.succeeded) for r in runs} == {
        (daily, "daily", True),
        (heal, "heal", False),
        (backfill, "backfill", True),
        (manual, "manual", False),
    }
    assert {(r.client_id, r.start, r.end) for r in runs} == {("acme", date(2026, 11, 1), date(2026, 11, 19))}
    assert (
        finished_collection_runs(
            instance,
            client_ids=["globex"],
            since=when,
            job_name="daily_collection_job",
            asset_key=dg.AssetKey("x"),
        )
        == []
    )


def test_a_schedule_without_stored_state_runs_as_declared(instance):
    state = schedule_state(instance, "daily_collection_schedule", default_running=True)
    assert (state.running, state.last_tick_at) == (True, None)
    after = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    ticks = cron_ticks("5 * * * *", "Europe/Warsaw", after)
    assert [next(ticks) for _ in range(3)] == [after.replace(minute=5, hour=h) for h in (1, 2, 3)]


@pytest.fixture(params=["sqlite", "postgres"])
def any_storage_instance(request) -> Iterator[dg.DagsterInstance]:
    """The ephemeral SQLite instance, and production's pooled dagster-postgres storage on a database of its own."""
    if request.param == "sqlite":
        with dg.instance_for_test() as inst:
            yield inst
        return
    request.getfixturevalue("pg_admin_url")
    url, drop = create_temp_database("kpi_dagster")
    overrides = pooled_storage_overrides(url)
    try:
        with dg.instance_for_test(overrides=overrides) as inst:
            yield inst
    finally:
        drop()


def test_the_column_read_of_collection_runs_matches_the_run_records(any_storage_instance):
    """The read of status, end and tags (no run body) finds the same runs, kinds, ranges and ends as Dagster's run
    records, including runs of another job told apart by their asset selection and single-partition runs."""
    instance = any_storage_instance
    daily_kpis = dg.AssetKey(["meta_ads", "client_daily_kpis"])

    def stored(client: str, tags: dict[str, str], status: dg.DagsterRunStatus, **run: object) -> None:
        rng = ClientRange(client, date(2026, 11, 1), date(2026, 11, 19)).tags()
        fields: dict = {"job_name": "daily_collection_job", **run}
        instance.add_run(
            dg.DagsterRun(tags={**rng, settings.CLIENT_TAG: client, **tags}, status=status, **fields)
        )

    for client in ("acme", "globex"):
        stored(client, {"kpi/reason": "daily"}, dg.DagsterRunStatus.SUCCESS)
        stored(client, {"kpi/reason": "heal"}, dg.DagsterRunStatus.FAILURE)
        stored(client, {"dagster/will_retry": "true"}, dg.DagsterRunStatus.FAILURE)
        stored(client, {"dagster/backfill": "bkf1"}, dg.DagsterRunStatus.SUCCESS)
        stored(client, {}, dg.DagsterRunStatus.STARTED)
    # A UI backfill's run of the asset job, one of another asset, and one run of a single client-day partition.
    stored(
        "acme",
        {"dagster/backfill": "bkf2"},
        dg.DagsterRunStatus.SUCCESS,
        job_name="__ASSET_JOB",
        asset_selection=frozenset({daily_kpis}),
    )
    stored(
        "acme",
        {},
        dg.DagsterRunStatus.SUCCESS,
        job_name="__ASSET_JOB",
        asset_selection=frozenset({dg.AssetKey(["kpi", "client_monthly_summary"])}),
    )
    instance.add_run(
        dg.DagsterRun(
            job_name="daily_collection_job",
            tags={"dagster/partition": "initech|2026-11-18", settings.CLIENT_TAG: "initech"},
            status=dg.DagsterRunStatus.FAILURE,
        )
    )
    arguments = {"job_name": "daily_collection_job", "asset_key": daily_kpis}
    since = datetime.now(UTC) - timedelta(hours=1)
    for clients in (["acme", "globex", "initech"], ["globex"]):
        read = finished_collection_runs(instance, client_ids=clients, since=since, **arguments)
        expected = _finished_collection_runs_from_records(
            instance, client_ids=clients, since=since, **arguments
        )
        assert read == expected
    assert len(read) == 3
    everyone = finished_collection_runs(
        instance, client_ids=["acme", "globex", "initech"], since=since, **arguments
    )
    assert {(r.client_id, r.kind) for r in everyone} >= {("acme", "backfill"), ("initech", "manual")}
    assert len(everyone) == 8
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert finished_collection_runs(instance, client_ids=["acme"], since=later, **arguments) == []
