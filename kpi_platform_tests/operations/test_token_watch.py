"""The token watch: its alert (HIGH a week out, CRITICAL a day out or for a missing scope or an invalid token,
resolved by a new token) through the real notifier and warehouse, and the record the health report reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kpi_platform import settings
from kpi_platform.meta.token_check import TokenInfo, assess
from kpi_platform.operations.alert_facts import TOKEN_PREFIX, collection_failure_alert
from kpi_platform.operations.alerts import Notifier, Severity
from kpi_platform.operations.token_watch import (
    TOKEN_ALERT_KEY,
    TOKEN_CHECK_PREFIX,
    read_record,
    record_metadata,
    token_alerts,
)
from kpi_platform.warehouse import Warehouse
from kpi_platform_tests.support.sinks import webhook_sink

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
SLACK_PATH = "/services/T0000/B0000/slackSecretToken0123456789"
META_TOKEN = "EAABmetaSecretToken42"


def token(
    days: float | None, *, scopes=("ads_read",), is_valid=True, data_access_days: float | None = None
) -> TokenInfo:
    return TokenInfo(
        is_valid=is_valid,
        expires_at=None if days is None else NOW + timedelta(days=days),
        data_access_expires_at=None if data_access_days is None else NOW + timedelta(days=data_access_days),
        scopes=scopes,
        error="" if is_valid else "The session has been invalidated. (190/460)",
    )


@pytest.mark.parametrize(
    ("answer", "severity", "title"),
    [
        (token(None), None, None),
        (token(8), None, None),
        (token(7), Severity.HIGH, "Meta access token expires in 7.0 days"),
        (token(40, data_access_days=2), Severity.HIGH, "Meta access token expires in 2.0 days"),
        (token(0.9), Severity.CRITICAL, "Meta access token expires in 0.9 days"),
        (token(None, scopes=("business_management",)), Severity.CRITICAL, "Meta access token lacks ads_read"),
        (token(None, scopes=(), is_valid=False), Severity.CRITICAL, "Meta access token is invalid"),
    ],
)
def test_one_alert_by_urgency(answer, severity, title):
    alerts = token_alerts(assess(answer, NOW))
    if severity is None:
        assert alerts == []
        return
    (alert,) = alerts
    assert (alert.key, alert.severity, alert.title) == (TOKEN_ALERT_KEY, severity, title)
    assert "META_ACCESS_TOKEN" in alert.body and "Rotating the token" in alert.body


def test_high_then_critical_then_a_new_token_resolves(migrated_warehouse_url):
    warehouse = Warehouse(migrated_warehouse_url)
    warehouse.migrate()
    try:
        with webhook_sink() as web:
            env = {settings.ENV_ALERT_SLACK_WEBHOOK: web.url + SLACK_PATH, settings.ENV_TOKEN: META_TOKEN}
            notifier = Notifier.from_env(warehouse, environ=env)

            def daily(answer: TokenInfo, day: int):
                return notifier.sync(
                    token_alerts(assess(answer, NOW + timedelta(days=day))), TOKEN_CHECK_PREFIX
                )

            assert daily(token(10), 0).open == ()
            week = daily(token(10), 3)  # 7 days left
            assert week.notified == (TOKEN_ALERT_KEY,)
            assert daily(token(10), 4).notified == ()  # still HIGH: once per problem
            day = daily(token(10), 9)  # 1 day left: sent again, more urgent
            assert day.notified == (TOKEN_ALERT_KEY,)
            (problem,) = notifier.open_problems(scope_prefix=TOKEN_CHECK_PREFIX)
            assert problem.severity == Severity.CRITICAL
            rotated = daily(token(60 + 9), 9)  # a new token, 60 days left
            assert rotated.resolved == (TOKEN_ALERT_KEY,) and rotated.open == ()
            texts = [body["text"] for body in web.bodies(SLACK_PATH)]
    finally:
        warehouse.dispose()
    assert [t.split("]")[0] for t in texts] == ["*[HIGH", "*[CRITICAL", "*[RESOLVED"]
    assert "expires in 7.0 days" in texts[0] and "expires in 1.0 days" in texts[1]
    assert all(META_TOKEN not in t for t in texts)


def test_the_token_alert_leaves_per_client_token_alerts_alone(migrated_warehouse_url):
    """`token_invalid:<client>` (a run refused by Meta) is another checker's problem: a fine token check does not
    resolve it."""
    warehouse = Warehouse(migrated_warehouse_url)
    warehouse.migrate()
    try:
        notifier = Notifier(warehouse, channels=())
        notifier.raise_alert(
            collection_failure_alert(
                client_id="acme",
                first_day="2026-12-01",
                last_day="2026-12-03",
                error="TokenInvalid",
                message="x",
            )
        )
        notifier.sync(token_alerts(assess(token(None), NOW)), TOKEN_CHECK_PREFIX)
        assert [p.key for p in notifier.open_problems()] == [f"{TOKEN_PREFIX}acme"]
    finally:
        warehouse.dispose()


def test_the_record_round_trips_and_holds_no_token():
    answer = TokenInfo(
        is_valid=True,
        expires_at=NOW + timedelta(days=5, hours=6),
        data_access_expires_at=None,
        scopes=("ads_read", "business_management"),
        token_type="SYSTEM_USER",
    )
    metadata = record_metadata(assess(answer, NOW), NOW)
    assert metadata["days_left"] == 5.25 and metadata["urgency"] == "high"
    assert metadata["data_access_expires_at"] == "never"
    assert read_record(metadata) == (answer, NOW)
    never = record_metadata(assess(token(None), NOW), NOW)
    assert "days_left" not in never


def test_a_broken_record_is_named():
    with pytest.raises(ValueError, match="the token check's record is unreadable"):
        read_record(
            {"is_valid": True, "expires_at": "soon", "data_access_expires_at": "never", "checked_at": "x"}
        )
