"""The facts the alert sync sensor gathers from Dagster: a run in progress is not a result, a queued retry is not
a heal, a fresh instance is not an error, and one misconfigured channel does not silence the others."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import dagster as dg

from kpi_platform import settings
from kpi_platform.defs.alerting import alert_sync_sensor
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.partitions import client_daily_partitions
from kpi_platform.defs.quality_checks import KPI_WAREHOUSE
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.keys import keys_of_range
from kpi_platform.operations.alerts import Alert, Notifier, Severity
from kpi_platform.operations.plans import IN_PROGRESS, CollectionRequest
from kpi_platform_tests.support.alert_sensors import collect_a_month_with_a_lost_day, run_failure_tick, texts
from kpi_platform_tests.support.sinks import slack_sink, webhook_sink


def tick(
    platform, defs, cursor: str | None = None, log_handler: logging.Handler | None = None
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=platform.instance,
        repository_def=defs.get_repository_def(),
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url)},
        cursor=cursor,
    )
    if log_handler is not None:
        context.log.addHandler(log_handler)  # the tick's logger does not propagate to the root logger
    return alert_sync_sensor(context)


def open_keys(platform) -> list[str]:
    return [p.key for p in Notifier(platform.warehouse, channels=()).open_problems()]


def test_a_fresh_instance_syncs_without_error(platform):
    result = tick(platform, platform.defs())
    assert "collections resolved: 0" in result.skip_reason.skip_message


def test_a_queued_retry_keeps_the_collection_alert_open(platform, monkeypatch):
    defs = platform.defs()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    request = CollectionRequest("acme", yesterday - timedelta(days=2), yesterday, run_key="", reason="heal")
    with slack_sink(monkeypatch) as sink:
        monkeypatch.setenv("META_ACCESS_TOKEN", "invalid-token")
        failed = platform.collect("acme", request.start, request.end)
        assert not failed.success
        run_failure_tick(platform, failed)
        assert len(texts(sink)) == 1 and open_keys(platform) == ["token_invalid:acme"]

        # The retry is queued before the sync ever saw the days FAILED: they show as IN_PROGRESS.
        job = defs.resolve_job_def("daily_collection_job")
        retry = platform.instance.create_run_for_job(job_def=job, tags=request.tags())
        days = keys_of_range("acme", request.start, request.end)
        statuses = platform.instance.get_status_by_partition(CLIENT_DAILY_KPIS, days, client_daily_partitions)
        assert {status.value for status in statuses.values()} == {IN_PROGRESS}
        cursor = tick(platform, defs).cursor
        cursor = tick(platform, defs, cursor).cursor
        assert len(texts(sink)) == 1 and open_keys(platform) == ["token_invalid:acme"]

        # The retry fails too: the problem was never resolved, so nothing is sent again.
        platform.instance.report_run_failed(platform.instance.get_run_by_id(retry.run_id))
        cursor = tick(platform, defs, cursor).cursor
        assert len(texts(sink)) == 1

        monkeypatch.delenv("META_ACCESS_TOKEN")
        assert platform.collect("acme", request.start, request.end).success
        tick(platform, defs, cursor)
        messages = texts(sink)
        assert len(messages) == 2 and "resolved" in messages[1].lower()
        assert open_keys(platform) == []


def test_a_check_run_in_progress_keeps_the_check_alert_open(platform, monkeypatch):
    defs = platform.defs()
    collect_a_month_with_a_lost_day(platform)
    checks_job = defs.resolve_job_def("warehouse_checks_job")
    with slack_sink(monkeypatch, min_severity="MEDIUM") as sink:
        checks_job.execute_in_process(instance=platform.instance)
        tick(platform, defs)
        assert [m for m in texts(sink) if "completeness_meets_target" in m]
        sent = len(texts(sink))

        # A new checks run records every check as PLANNED until it evaluates them.
        planned = platform.instance.create_run_for_job(job_def=checks_job)
        completeness = dg.AssetCheckKey(KPI_WAREHOUSE, "completeness_meets_target")
        assert (
            platform.instance.get_latest_asset_check_evaluation_record(completeness).status.value == "PLANNED"
        )
        tick(platform, defs)
        assert len(texts(sink)) == sent
        assert any("completeness_meets_target" in key for key in open_keys(platform))

        # The run fails before evaluating anything: its checks stay PLANNED, the failed result still stands.
        platform.instance.report_run_failed(platform.instance.get_run_by_id(planned.run_id))
        tick(platform, defs)
        assert len(texts(sink)) == sent
        assert not any("resolved" in m.lower() for m in texts(sink))
        assert any("completeness_meets_target" in key for key in open_keys(platform))


def test_an_invalid_channel_setting_leaves_the_other_channels_working(platform, monkeypatch, caplog):
    defs = platform.defs()
    with webhook_sink() as sink:
        slack = {"KPI_ALERT_SLACK_WEBHOOK": f"{sink.url}/slack"}
        Notifier.from_env(platform.warehouse, environ=slack).raise_alert(
            Alert("check:kpi/gone:rows_meet_contract", Severity.HIGH, "Check rows_meet_contract failed", "b")
        )
        monkeypatch.setenv("KPI_ALERT_SLACK_WEBHOOK", slack["KPI_ALERT_SLACK_WEBHOOK"])
        monkeypatch.setenv(
            "KPI_ALERT_DISCORD_WEBHOOK", "discord.com/api/webhooks/1/discordSecretToken0123456789"
        )
        tick(platform, defs, log_handler=caplog.handler)  # the tick does not fail; Slack hears the resolution
        messages = texts(sink)
        assert len(messages) == 2 and "resolved" in messages[1].lower()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("discord" in e and "KPI_ALERT_DISCORD_WEBHOOK" in e for e in errors)
    assert "discordSecretToken" not in caplog.text


def test_a_partition_not_in_clients_yaml_keeps_its_alert_open_until_it_is_removed(platform, monkeypatch):
    """A client partition added by hand (not in clients.yaml, so never registered nor expected): its failed days
    keep `collection_failed:<client>` open; removing the partition resolves it."""
    defs = platform.defs()
    platform.instance.add_dynamic_partitions("clients", ["acme-dentl"])
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    with slack_sink(monkeypatch) as sink:
        failed = platform.collect("acme-dentl", yesterday - timedelta(days=2), yesterday)
        assert not failed.success
        run_failure_tick(platform, failed)
        assert open_keys(platform) == ["collection_failed:acme-dentl"]
        (message,) = texts(sink)
        assert "acme-dentl" in message and "remove-partition" in message

        cursor = tick(platform, defs).cursor
        cursor = tick(platform, defs, cursor).cursor
        assert open_keys(platform) == ["collection_failed:acme-dentl"] and len(texts(sink)) == 1

        platform.instance.delete_dynamic_partition("clients", "acme-dentl")
        tick(platform, defs, cursor)
        assert open_keys(platform) == []
        messages = texts(sink)
        assert len(messages) == 2 and "resolved" in messages[1].lower()


def test_a_failed_day_older_than_the_horizon_keeps_its_alert_open_until_it_is_stored(platform, monkeypatch):
    defs = platform.defs()
    # Gap healing collects a client's whole history, so a day long before the 90-day horizon can fail too.
    old = datetime.now(UTC).date() - timedelta(days=settings.HEALING_HORIZON_DAYS + 30)
    with slack_sink(monkeypatch) as sink:
        monkeypatch.setenv("META_ACCESS_TOKEN", "invalid-token")
        failed = platform.collect("acme", old, old)
        assert not failed.success
        run_failure_tick(platform, failed)
        assert open_keys(platform) == ["token_invalid:acme"]
        cursor = tick(platform, defs).cursor
        cursor = tick(platform, defs, cursor).cursor
        assert open_keys(platform) == ["token_invalid:acme"] and len(texts(sink)) == 1

        monkeypatch.delenv("META_ACCESS_TOKEN")
        assert platform.collect("acme", old, old).success
        tick(platform, defs, cursor)
        assert open_keys(platform) == []
        assert "resolved" in texts(sink)[-1].lower()
