"""`alert_sync_sensor` escalates clients still not collected after their freshness deadline: one CRITICAL "daily
collection incomplete" naming them, sent once, resolved once they are collected (the rule itself:
`operations/test_missing_clients.py`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import dagster as dg

from kpi_platform import settings
from kpi_platform.defs.alerting import alert_sync_sensor
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.operations.alerts import Notifier
from kpi_platform.operations.missing_clients import MISSING_CLIENTS_KEY, MISSING_CLIENTS_PREFIX
from kpi_platform.warehouse import schema
from kpi_platform_tests.support.sinks import slack_sink


def tick(platform, defs, log_handler: logging.Handler | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=platform.instance,
        repository_def=defs.get_repository_def(),
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url)},
    )
    if log_handler is not None:
        context.log.addHandler(log_handler)  # the tick's logger does not propagate to the root logger
    return alert_sync_sensor(context)


def critical_texts(sink) -> list[str]:
    return [body["text"] for body in sink.bodies("/slack") if "daily collection incomplete" in body["text"]]


def test_a_client_never_collected_escalates_once_and_resolves_when_collected(platform, monkeypatch):
    defs = platform.defs()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    # Registered long ago, and judged at the deadline itself, so the test does not depend on the hour it runs at.
    with platform.warehouse.engine.begin() as conn:
        conn.execute(schema.clients.update().values(created_at=datetime.now(UTC) - timedelta(days=30)))
    monkeypatch.setenv(settings.ENV_MISSING_CLIENT_ESCALATION_HOURS, "0")
    assert platform.collect("acme", yesterday - timedelta(days=2), yesterday).success

    with slack_sink(monkeypatch) as sink:
        result = tick(platform, defs)
        tick(platform, defs)
        (message,) = critical_texts(sink)
        assert message.startswith("*[CRITICAL] daily collection incomplete: expected 2 clients, got 1*")
        assert "Missing clients: globex" in message
        assert "daily collection incomplete: open" in result.skip_reason.skip_message

        assert platform.collect("globex", yesterday - timedelta(days=2), yesterday).success
        tick(platform, defs)
        messages = critical_texts(sink)
        assert len(messages) == 2 and messages[1].startswith("*[RESOLVED] daily collection incomplete")
    assert Notifier(platform.warehouse, channels=()).open_problems(scope_prefix=MISSING_CLIENTS_PREFIX) == []


def test_an_invalid_delay_is_logged_and_the_default_used(platform, monkeypatch):
    defs = platform.defs()
    monkeypatch.setenv(settings.ENV_MISSING_CLIENT_ESCALATION_HOURS, "soon")
    with platform.warehouse.engine.begin() as conn:
        conn.execute(schema.clients.update().values(created_at=datetime.now(UTC) - timedelta(days=30)))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    tick(platform, defs, log_handler=handler)
    assert any(settings.ENV_MISSING_CLIENT_ESCALATION_HOURS in r.getMessage() for r in records)
    # Nothing was collected at all: with the default delay both clients are missing, whatever the hour.
    (problem,) = Notifier(platform.warehouse, channels=()).open_problems(scope_prefix=MISSING_CLIENTS_PREFIX)
    assert problem.key == MISSING_CLIENTS_KEY
