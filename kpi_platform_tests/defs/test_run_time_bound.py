"""Every collection run has a time bound: a run launched without `dagster/max_runtime` (a UI backfill's run, a
single partition from the UI) adds one scaled to its days when it starts, and a run the monitoring daemon ended for
exceeding it is named so in the healer's and the alert's reason (the daemon end to end: e2e/test_hung_run.py)."""

from __future__ import annotations

from datetime import date

import dagster as dg

from kpi_platform.defs.run_history import failure_reason, max_runtime_exceeded, step_failure
from kpi_platform.keys import ClientRange
from kpi_platform.operations.plans import MAX_RUNTIME_TAG, CollectionRequest, max_runtime_seconds
from kpi_platform_tests.support.dagster_instance import noop_job

OCT_1, OCT_3 = date(2026, 10, 1), date(2026, 10, 3)


def run_tags(platform, result: dg.ExecuteInProcessResult) -> dict[str, str]:
    run = platform.instance.get_run_by_id(result.run_id)
    assert run is not None
    return dict(run.tags)


def collection_job(platform) -> dg.JobDefinition:
    return platform.defs().resolve_job_def("daily_collection_job")


def test_a_range_run_launched_like_a_ui_backfill_gets_the_bound_of_its_days(platform):
    # A UI backfill's run of a single-run asset carries the range tags, not the bound.
    result = collection_job(platform).execute_in_process(
        instance=platform.instance, tags=ClientRange("acme", OCT_1, OCT_3).tags(), raise_on_error=False
    )
    assert result.success
    assert run_tags(platform, result)[MAX_RUNTIME_TAG] == str(max_runtime_seconds(3))


def test_a_single_partition_run_gets_a_one_day_bound(platform):
    result = collection_job(platform).execute_in_process(
        instance=platform.instance, partition_key="globex|2026-10-01", raise_on_error=False
    )
    assert result.success
    assert run_tags(platform, result)[MAX_RUNTIME_TAG] == str(max_runtime_seconds(1))


def test_a_requested_runs_bound_is_left_as_it_is(platform):
    tags = {
        **CollectionRequest("acme", OCT_1, OCT_3, run_key="", reason="test").tags(),
        MAX_RUNTIME_TAG: "77",
    }
    result = collection_job(platform).execute_in_process(
        instance=platform.instance, tags=tags, raise_on_error=False
    )
    assert result.success
    assert run_tags(platform, result)[MAX_RUNTIME_TAG] == "77"


def test_a_run_ended_for_its_bound_is_named_and_non_transient(instance):
    run = instance.create_run_for_job(noop_job, tags={MAX_RUNTIME_TAG: "1860"})
    # What the monitoring daemon records for a run past its bound (Dagster 1.13's check_run_timeout).
    instance.report_run_canceling(run, message="Canceling due to exceeding maximum runtime of 1860 seconds.")
    instance.report_run_failed(run, "Exceeded maximum runtime of 1860 seconds.")
    assert max_runtime_exceeded(instance, run.run_id) == 1860
    non_transient, reason = failure_reason(instance, run.run_id)
    assert non_transient is True
    assert reason.startswith("run exceeded its maximum runtime of 1860 s (dagster/max_runtime)")
    assert step_failure(instance, run.run_id) == (
        "RunTimedOut",
        "the run exceeded its maximum runtime of 1860 s and was ended",
    )


def test_a_run_canceled_by_hand_is_not_taken_for_a_timeout(instance):
    run = instance.create_run_for_job(noop_job)
    instance.report_run_canceling(run)
    instance.report_run_canceled(run)
    assert max_runtime_exceeded(instance, run.run_id) is None
