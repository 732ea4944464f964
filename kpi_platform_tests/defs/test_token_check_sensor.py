"""The daily token check end to end: `meta_token_check_sensor` asks the simulator's debug_token over real HTTP,
records the answer, alerts HIGH a week out and resolves once a new token is in place; the health report's `token`
check shows the days left from that record; and the token appears nowhere on the way (logs, alerts, metadata,
health output)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.defs.alerting import meta_access_token, meta_token_check_sensor
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.operations.health import (
    HEALTH_CHECKS,
    HealthStatus,
    build_health_report,
    clients_from_warehouse,
)
from kpi_platform.operations.token_watch import TOKEN_ALERT_KEY
from kpi_platform.simulator import MetaSimulator, SimulatorConfig, serve
from kpi_platform.warehouse import schema
from kpi_platform_tests.support.alert_sensors import texts
from kpi_platform_tests.support.sinks import slack_sink

SECRET = "EAABsystemUserSecretToken0042"
TOKEN_CHECK = [spec for spec in HEALTH_CHECKS if spec.name == "token"]


def tick(platform, api_url: str) -> dg.SkipReason:
    context = dg.build_sensor_context(
        instance=platform.instance,
        resources={
            "meta_api": MetaApiResource(api_url=api_url),
            "warehouse": WarehouseResource(url=platform.warehouse_url),
        },
    )
    result = meta_token_check_sensor(context)
    assert isinstance(result, dg.SkipReason)
    return result


def token_report(platform, now: datetime):
    return build_health_report(
        warehouse=platform.warehouse,
        instance=platform.instance,
        clients=clients_from_warehouse(platform.warehouse),
        now_utc=now,
        checks=TOKEN_CHECK,
    )


def alert_rows(platform) -> list[dict]:
    with platform.warehouse.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(schema.alert_state)).all()]


def observations(platform) -> list[dict]:
    records = platform.instance.fetch_observations(meta_access_token.key, limit=10).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in records]


def test_a_token_a_week_from_expiry_alerts_shows_its_days_and_a_new_token_resolves(
    platform, monkeypatch, caplog
):
    monkeypatch.setenv(settings.ENV_TOKEN, SECRET)
    caplog.set_level(logging.DEBUG)
    now = datetime.now(UTC).replace(microsecond=0)
    expiring = SimulatorConfig(token_expires_at=now + timedelta(days=5), token_scopes=("ads_read",))
    with slack_sink(monkeypatch) as sink:
        with serve(MetaSimulator(expiring)) as server:
            summary = tick(platform, server.url).skip_message or ""
        assert "valid (high): expires in 5.0 days" in summary

        (problem,) = [r for r in alert_rows(platform) if r["resolved_at"] is None]
        assert (problem["key"], problem["severity"]) == (TOKEN_ALERT_KEY, "HIGH")
        (record,) = observations(platform)
        assert record["days_left"] == pytest.approx(5.0, abs=0.01) and record["is_valid"] is True

        report = token_report(platform, now + timedelta(days=1))
        check = report.check("token")
        assert check.status == HealthStatus.DEGRADED
        # Judged at the report's time, not at the check's.
        assert check.metrics["token_days_left"] == pytest.approx(4.0, abs=0.01)
        assert "expires in 4.0 days" in check.summary
        assert token_report(platform, now + timedelta(days=4, hours=1)).check("token").status == (
            HealthStatus.UNHEALTHY
        )  # within a day

        renewed = SimulatorConfig(token_expires_at=now + timedelta(days=60))
        with serve(MetaSimulator(renewed)) as server:
            tick(platform, server.url)
        assert [r for r in alert_rows(platform) if r["resolved_at"] is None] == []
        fine = token_report(platform, now + timedelta(hours=1)).check("token")
        assert fine.status == HealthStatus.HEALTHY and fine.score == 100.0
        assert fine.metrics["token_days_left"] == pytest.approx(60.0, abs=0.05)
        messages = texts(sink)

    assert [m.split("]")[0] for m in messages] == ["*[HIGH", "*[RESOLVED"]
    shown = json.dumps(
        {
            "messages": messages,
            "alerts": alert_rows(platform),
            "observations": observations(platform),
            "report": token_report(platform, now).to_dict(),
        },
        default=str,
    )
    assert SECRET not in shown
    assert SECRET not in caplog.text


def test_an_invalid_token_is_critical(platform, monkeypatch):
    monkeypatch.setenv(settings.ENV_TOKEN, SECRET)
    with serve(MetaSimulator(SimulatorConfig(invalid_token=SECRET))) as server:
        summary = tick(platform, server.url).skip_message or ""
    assert "INVALID (critical)" in summary
    (problem,) = alert_rows(platform)
    assert (problem["severity"], problem["title"]) == ("CRITICAL", "Meta access token is invalid")
    check = token_report(platform, datetime.now(UTC)).check("token")
    assert check.status == HealthStatus.UNHEALTHY
    assert "invalid" in " ".join(check.details["problems"])


def test_without_a_check_the_token_is_degraded_and_a_stale_check_unhealthy(platform, monkeypatch):
    monkeypatch.setenv(settings.ENV_TOKEN, SECRET)
    now = datetime.now(UTC)
    never = token_report(platform, now).check("token")
    assert never.status == HealthStatus.DEGRADED and "not been checked yet" in never.summary
    with serve(MetaSimulator(SimulatorConfig())) as server:
        tick(platform, server.url)
    assert token_report(platform, now + timedelta(days=1)).check("token").status == HealthStatus.HEALTHY
    stale = token_report(platform, now + timedelta(days=2, hours=1)).check("token")
    assert stale.status == HealthStatus.UNHEALTHY and "the daily check has stopped" in stale.summary
    assert "token_days_left" not in stale.metrics  # never expires: nothing to count down


def test_a_check_that_cannot_reach_meta_fails_its_tick_without_the_token(platform, monkeypatch):
    monkeypatch.setenv(settings.ENV_TOKEN, SECRET)
    with serve(MetaSimulator()) as server:
        url = server.url
    # The server is gone: connection refused, twice.
    with pytest.raises(Exception) as raised:
        tick(platform, url)
    assert "debug_token" in str(raised.value)
    assert SECRET not in str(raised.value)
    assert observations(platform) == [] and alert_rows(platform) == []
