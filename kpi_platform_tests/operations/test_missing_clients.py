"""Missing clients escalate: MEDIUM at the freshness deadline (the `fresh_per_client` check), CRITICAL "daily
collection incomplete" naming every missing client `escalation_hours` later, resolved once they are collected.

A fixed clock on 2026-11-10. Warsaw is UTC+1 then, so its 09:00 deadline is 08:00 UTC; New York is UTC-5, its
09:00 deadline is 14:00 UTC.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.operations.alert_facts import CHECK_PREFIX, CheckFact, check_alerts
from kpi_platform.operations.alerts import Notifier, Severity
from kpi_platform.operations.missing_clients import (
    DETAIL_LINES_MAX,
    MISSING_CLIENTS_KEY,
    MISSING_CLIENTS_PREFIX,
    RegisteredClient,
    escalation_hours_from_env,
    find_missing_clients,
    missing_client_alerts,
    shortfall_alerts,
)
from kpi_platform.quality.warehouse_checks import evaluate_warehouse_checks
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.sinks import webhook_sink
from kpi_platform_tests.support.warehouse_data import client, day_row, span, store_days

DUE = date(2026, 11, 9)
WARSAW_DEADLINE = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)
NEW_YORK_DEADLINE = datetime(2026, 11, 10, 14, 0, tzinfo=UTC)
REGISTERED = datetime(2026, 10, 1, tzinfo=UTC)
HOURS = settings.DEFAULT_MISSING_CLIENT_ESCALATION_HOURS


@pytest.fixture
def warehouse(tmp_path):
    """acme and globex (Warsaw), initech (New York), all registered long ago, each stored up to 2026-11-08."""
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    wh.migrate()
    wh.upsert_clients(
        [client("acme"), client("globex"), {**client("initech"), "timezone": "America/New_York"}]
    )
    with wh.engine.begin() as conn:
        conn.execute(schema.clients.update().values(created_at=REGISTERED))
    for client_id in ("acme", "globex", "initech"):
        store_days(
            wh, client_id, [day_row(client_id, d) for d in span(date(2026, 10, 20), DUE - timedelta(days=1))]
        )
    yield wh
    wh.dispose()


def collect(wh: Warehouse, client_id: str, day: date = DUE) -> None:
    store_days(wh, client_id, [day_row(client_id, day)])


def freshness_alerts(wh: Warehouse, now: datetime):
    """The alerts the `fresh_per_client` check gives at `now` (as `alert_sync_sensor` turns check results into alerts)."""
    clients = [Client.from_row(row) for row in wh.list_clients(active_only=True)]
    (fresh,) = [
        o
        for o in evaluate_warehouse_checks(warehouse=wh, clients=clients, now_utc=now)
        if o.name == "fresh_per_client"
    ]
    return check_alerts([CheckFact("meta_ads/client_daily_kpis", fresh.name, fresh.passed, fresh.metadata)])


def escalated(wh: Warehouse, now: datetime, hours: float = HOURS):
    return missing_client_alerts(wh, now_utc=now, escalation_hours=hours)


def texts(sink) -> list[str]:
    return [body["text"] for body in sink.bodies("/slack")]


def test_before_the_deadline_nothing(warehouse):
    before = WARSAW_DEADLINE - timedelta(minutes=1)
    assert freshness_alerts(warehouse, before) == []
    assert escalated(warehouse, before) == []


def test_at_the_deadline_the_check_alerts_medium_only(warehouse):
    (late,) = freshness_alerts(warehouse, WARSAW_DEADLINE)
    assert late.key.startswith(CHECK_PREFIX) and late.key.endswith(":fresh_per_client")
    assert late.severity == Severity.MEDIUM
    assert "acme" in late.body and "globex" in late.body
    assert escalated(warehouse, WARSAW_DEADLINE) == []
    assert escalated(warehouse, WARSAW_DEADLINE + timedelta(hours=HOURS) - timedelta(seconds=1)) == []


def test_escalation_hours_after_the_deadline_one_critical_names_every_missing_client(warehouse):
    (alert,) = escalated(warehouse, WARSAW_DEADLINE + timedelta(hours=HOURS))
    assert alert.key == MISSING_CLIENTS_KEY
    assert alert.severity == Severity.CRITICAL
    # initech's day is not due yet in New York: it counts as collected.
    assert alert.title == "daily collection incomplete: expected 3 clients, got 1"
    assert "Missing clients: acme, globex" in alert.body
    assert (
        "- acme: 2026-11-09 not stored (due 2026-11-10 08:00 UTC), last stored day 2026-11-08" in alert.body
    )
    assert "initech" not in alert.body
    assert "Runbook" in alert.body

    # Each client by its own timezone: 3 h after New York's deadline initech is missing too.
    (later,) = escalated(warehouse, NEW_YORK_DEADLINE + timedelta(hours=HOURS))
    assert later.title == "daily collection incomplete: expected 3 clients, got 0"
    assert "Missing clients: acme, globex, initech" in later.body


def test_the_escalation_delay_is_configurable(warehouse, monkeypatch):
    monkeypatch.setenv(settings.ENV_MISSING_CLIENT_ESCALATION_HOURS, "1.5")
    hours = escalation_hours_from_env()
    assert hours == 1.5
    assert escalated(warehouse, WARSAW_DEADLINE + timedelta(hours=1), hours) == []
    assert len(escalated(warehouse, WARSAW_DEADLINE + timedelta(hours=1.5), hours)) == 1
    # 0: critical at the deadline itself, together with the check's MEDIUM.
    assert len(escalated(warehouse, WARSAW_DEADLINE, 0)) == 1


@pytest.mark.parametrize("raw", ["-1", "three", "nan", "inf"])
def test_an_invalid_escalation_delay_is_logged_and_the_default_used(raw, caplog):
    with pytest.raises(ValueError, match=settings.ENV_MISSING_CLIENT_ESCALATION_HOURS):
        settings.missing_client_escalation_hours({settings.ENV_MISSING_CLIENT_ESCALATION_HOURS: raw})
    with caplog.at_level(logging.ERROR):
        hours = escalation_hours_from_env({settings.ENV_MISSING_CLIENT_ESCALATION_HOURS: raw})
    assert hours == settings.DEFAULT_MISSING_CLIENT_ESCALATION_HOURS == 3.0
    assert settings.ENV_MISSING_CLIENT_ESCALATION_HOURS in caplog.text


def test_sent_once_and_resolved_after_collection(warehouse):
    now = [WARSAW_DEADLINE + timedelta(hours=HOURS)]
    with webhook_sink() as sink:
        notifier = Notifier.from_env(
            warehouse, environ={settings.ENV_ALERT_SLACK_WEBHOOK: f"{sink.url}/slack"}, clock=lambda: now[0]
        )

        def tick() -> None:
            notifier.sync(escalated(warehouse, now[0]), MISSING_CLIENTS_PREFIX)

        tick()
        tick()
        (message,) = texts(sink)
        assert message.startswith("*[CRITICAL] daily collection incomplete: expected 3 clients, got 1*")
        assert "acme, globex" in message

        collect(warehouse, "acme")  # one of two: still incomplete, nothing new
        now[0] += timedelta(minutes=30)
        tick()
        assert len(texts(sink)) == 1
        assert [p.key for p in notifier.open_problems(scope_prefix=MISSING_CLIENTS_PREFIX)] == [
            MISSING_CLIENTS_KEY
        ]

        collect(warehouse, "globex")
        now[0] += timedelta(minutes=30)
        tick()
        messages = texts(sink)
        assert len(messages) == 2
        assert messages[1].startswith("*[RESOLVED] daily collection incomplete")
        assert notifier.open_problems(scope_prefix=MISSING_CLIENTS_PREFIX) == []


def test_inactive_clients_and_clients_registered_within_the_delay_are_not_judged():
    acme = Client(id="acme", name="Acme", ad_account_id="act_1", currency="EUR", timezone="Europe/Warsaw")
    now = WARSAW_DEADLINE + timedelta(hours=HOURS)
    clients = [
        RegisteredClient(acme, REGISTERED),
        RegisteredClient(Client(**{**vars(acme), "id": "old", "active": False}), REGISTERED),
        # Added an hour ago: gap healing collects it within minutes, it is judged from 3 h after registration.
        RegisteredClient(Client(**{**vars(acme), "id": "new"}), now - timedelta(hours=1)),
        RegisteredClient(Client(**{**vars(acme), "id": "unknown"}), None),
    ]
    shortfall = find_missing_clients(clients, {"acme": DUE}, now_utc=now, escalation_hours=HOURS)
    assert (shortfall.expected, shortfall.collected) == (2, 1)
    assert [(m.client_id, m.expected_day, m.last_day) for m in shortfall.missing] == [("unknown", DUE, None)]
    later = find_missing_clients(
        clients, {"acme": DUE}, now_utc=now + timedelta(hours=2), escalation_hours=HOURS
    )
    assert [m.client_id for m in later.missing] == ["new", "unknown"]


def test_every_missing_id_is_named_even_past_the_detail_lines():
    base = Client(id="c", name="C", ad_account_id="act_1", currency="EUR", timezone="Europe/Warsaw")
    ids = [f"client{n:02d}" for n in range(DETAIL_LINES_MAX + 5)]
    clients = [RegisteredClient(Client(**{**vars(base), "id": i}), REGISTERED) for i in ids]
    now = WARSAW_DEADLINE + timedelta(hours=HOURS)
    (alert,) = shortfall_alerts(find_missing_clients(clients, {}, now_utc=now, escalation_hours=HOURS))
    assert f"Missing clients: {', '.join(ids)}" in alert.body
    assert "last stored day none in the last 45 days" in alert.body
    assert "… and 5 more" in alert.body
    assert alert.title == f"daily collection incomplete: expected {len(ids)} clients, got 0"


def test_the_clock_must_be_aware_and_the_delay_valid():
    with pytest.raises(ValueError, match="timezone-aware"):
        find_missing_clients([], {}, now_utc=datetime(2026, 11, 10), escalation_hours=3)
    with pytest.raises(ValueError, match="escalation_hours"):
        find_missing_clients([], {}, now_utc=WARSAW_DEADLINE, escalation_hours=-1)


def test_a_warehouse_without_clients_has_nothing_missing(tmp_path):
    wh = Warehouse(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    wh.migrate()
    try:
        assert escalated(wh, WARSAW_DEADLINE + timedelta(days=3)) == []
        with wh.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(schema.alert_state)).scalar() == 0
    finally:
        wh.dispose()
