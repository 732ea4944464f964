"""Alert sensors end to end: a failed collection alerts once, a failed check alerts once, healing resolves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from kpi_platform.defs.alerting import alert_sync_sensor
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform_tests.support.alert_sensors import collect_a_month_with_a_lost_day, run_failure_tick, texts
from kpi_platform_tests.support.sinks import slack_sink


def sync(platform, defs):
    context = dg.build_sensor_context(
        instance=platform.instance,
        repository_def=defs.get_repository_def(),
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url)},
    )
    return alert_sync_sensor(context)


def test_token_failure_alerts_once_and_resolves_after_healing(platform, monkeypatch):
    defs = platform.defs()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with slack_sink(monkeypatch, min_severity="LOW") as sink:
        monkeypatch.setenv("META_ACCESS_TOKEN", "invalid-token")
        failed = platform.collect("acme", yesterday - timedelta(days=2), yesterday)
        assert not failed.success
        run_failure_tick(platform, failed)
        run_failure_tick(platform, failed)  # the same problem again: no second message
        messages = texts(sink)
        assert len(messages) == 1
        assert "acme" in messages[0] and "token" in messages[0].lower()
        assert "invalid-token" not in messages[0]

        sync(platform, defs)  # still failing: stays open, nothing sent
        assert len(texts(sink)) == 1

        monkeypatch.delenv("META_ACCESS_TOKEN")
        assert platform.collect("acme", yesterday - timedelta(days=2), yesterday).success
        sync(platform, defs)
        messages = texts(sink)
        assert len(messages) == 2 and "resolved" in messages[1].lower()


def test_failed_check_alerts_once_and_resolves(platform, monkeypatch):
    defs = platform.defs()
    gone = collect_a_month_with_a_lost_day(platform)
    checks_job = defs.resolve_job_def("warehouse_checks_job")
    with slack_sink(monkeypatch, min_severity="MEDIUM") as sink:
        checks_job.execute_in_process(instance=platform.instance)
        sync(platform, defs)
        sync(platform, defs)
        completeness = [m for m in texts(sink) if "completeness_meets_target" in m]
        assert len(completeness) == 1
        assert "acme" in completeness[0] and gone.isoformat() in completeness[0]
        assert not any("no_anomalies" in m for m in texts(sink))  # LOW is below Slack's minimum here

        assert platform.collect("acme", gone, gone).success
        checks_job.execute_in_process(instance=platform.instance)
        sync(platform, defs)
        resolved = [m for m in texts(sink) if "completeness_meets_target" in m and "resolved" in m.lower()]
        assert len(resolved) == 1
