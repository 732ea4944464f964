"""Why a run failed, as the gap healer reads it from Dagster's run history: a run worker killed by a signal is
named as such and stays non-transient (Dagster's own run retries re-run it first)."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._utils import (
    get_run_crash_explanation,  # PRIVATE: the code server's own wording for a dead worker
)

from kpi_platform.defs.run_history import failure_reason, worker_death
from kpi_platform.operations.plans import NON_TRANSIENT_BASE_COOLDOWN_S, FailureMemory, record_failures


@dg.op
def _noop() -> None:
    pass


@dg.job
def _job() -> None:
    _noop()


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def died_run(instance: dg.DagsterInstance, exit_code: int) -> str:
    """A run failed the way the code server fails one whose worker process exited with `exit_code` (negative:
    killed by that signal): its engine event, then the run failure."""
    run = instance.create_run_for_job(_job)
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
    run = instance.create_run_for_job(_job)
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
