"""`collection_failure_alert_sensor` on runs that failed outside our code: a run Dagster re-runs (its worker died)
alerts only when no retry is left, and an unexpected exception is named by its cause, not by Dagster's wrapper."""

from __future__ import annotations

from datetime import date

import dagster as dg
from dagster._utils import (
    get_run_crash_explanation,  # PRIVATE: the code server's own wording for a dead worker
)

from kpi_platform.defs.alerting import collection_failure_alert_sensor
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.defs.run_history import WILL_RETRY_TAG, step_failure
from kpi_platform.operations.plans import CollectionRequest
from kpi_platform.warehouse import schema
from kpi_platform_tests.support.alert_sensors import texts
from kpi_platform_tests.support.dagster_instance import noop_job
from kpi_platform_tests.support.sinks import slack_sink

DAY = date(2026, 11, 30)
TAGS = CollectionRequest("acme", DAY, DAY, run_key="", reason="test").tags()


@dg.op
def _write() -> None:
    try:
        raise ConnectionError("server closed the connection unexpectedly")
    except ConnectionError as exc:
        raise RuntimeError("the warehouse write failed") from exc


@dg.job
def _failing_job() -> None:
    _write()


def tick(platform, run_id: str) -> None:
    """One tick of the sensor for the failed run `run_id`, as the daemon evaluates it."""
    instance = platform.instance
    (record,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="collection_failure_alert_sensor",
        dagster_event=record.get_dagster_event(),
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id),
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url)},
    ).for_run_failure()
    collection_failure_alert_sensor(context)


def killed_run(platform, *, will_retry: str) -> str:
    """A collection run of acme whose worker the code server saw die of SIGKILL, tagged as Dagster tags a failed
    run its run retries will (or will not) re-run."""
    run = platform.instance.create_run_for_job(noop_job, tags={**TAGS, WILL_RETRY_TAG: will_retry})
    message = get_run_crash_explanation(prefix=f"Run execution process for {run.run_id}", exit_code=-9)
    platform.instance.report_engine_event(message, run)
    platform.instance.report_run_failed(run)
    return run.run_id


def open_alerts(platform) -> list[str]:
    with platform.warehouse.engine.connect() as conn:
        return list(
            conn.execute(schema.alert_state.select().with_only_columns(schema.alert_state.c.key)).scalars()
        )


def test_a_killed_run_that_dagster_retries_does_not_alert(platform, monkeypatch):
    with slack_sink(monkeypatch) as sink:
        tick(platform, killed_run(platform, will_retry="true"))
        assert texts(sink) == []
        assert open_alerts(platform) == []


def test_a_killed_run_without_a_retry_left_alerts_with_the_worker_death(platform, monkeypatch):
    with slack_sink(monkeypatch) as sink:
        tick(platform, killed_run(platform, will_retry="false"))
        (message,) = texts(sink)
        assert message.startswith("*[CRITICAL] Collection failed for acme*")
        assert "(RunWorkerDied): the run worker process was terminated by signal 9 (SIGKILL)" in message
        assert open_alerts(platform) == ["collection_failed:acme"]


def test_an_unexpected_error_is_named_by_its_cause(platform, monkeypatch):
    result = _failing_job.execute_in_process(instance=platform.instance, tags=TAGS, raise_on_error=False)
    assert not result.success
    error, message = step_failure(platform.instance, result.run_id)
    assert error == "ConnectionError"
    assert message.startswith("ConnectionError: server closed the connection unexpectedly")
    with slack_sink(monkeypatch) as sink:
        tick(platform, result.run_id)
        (text,) = texts(sink)
        assert "failed after retries (ConnectionError): ConnectionError: server closed" in text
        assert "DagsterExecutionStepExecutionError" not in text
