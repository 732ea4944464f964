"""Alerts: delivery to webhooks and SMTP, routing by severity, one message per problem, redaction, failing channels."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from kpi_platform import settings
from kpi_platform.meta.breaker import BreakerState
from kpi_platform.operations.alerts import (
    BREAKER_ALERT_PREFIX,
    Alert,
    Notifier,
    Severity,
    breaker_alerts,
    channels_from_env,
)
from kpi_platform.warehouse import Warehouse
from kpi_platform_tests.support.sinks import closed_port, smtp_sink, webhook_sink

SLACK_PATH = "/services/T0000/B0000/slackSecretToken0123456789"
DISCORD_PATH = "/api/webhooks/1234/discordSecretToken0123456789abcdef"
SMTP_PASSWORD = "p@ss:w/rd%&s3cret"
META_TOKEN = "EAABmetaSecretToken42"

TOKEN_ALERT = Alert(
    key="token_invalid:acme",
    severity=Severity.CRITICAL,
    title="Meta access token invalid for acme",
    body="Meta answered 190/463 for act_111. What to do: rotate the token (README › Runbook › Rotating the token).",
)


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    wh.migrate()
    yield wh
    wh.dispose()


@pytest.fixture
def sinks():
    with webhook_sink() as web, smtp_sink() as mail:
        yield web, mail


def env_for(web_url: str | None, smtp_port: int | None, **overrides: str) -> dict[str, str]:
    env = {settings.ENV_TOKEN: META_TOKEN}
    if web_url:
        env[settings.ENV_ALERT_SLACK_WEBHOOK] = web_url + SLACK_PATH
        env[settings.ENV_ALERT_DISCORD_WEBHOOK] = web_url + DISCORD_PATH + "?thread_id=77"
    if smtp_port:
        env |= {
            settings.ENV_ALERT_SMTP_HOST: "127.0.0.1",
            settings.ENV_ALERT_SMTP_PORT: str(smtp_port),
            settings.ENV_ALERT_SMTP_TLS: "none",
            settings.ENV_ALERT_SMTP_USER: "alerts@example.com",
            settings.ENV_ALERT_SMTP_PASSWORD: SMTP_PASSWORD,
            settings.ENV_ALERT_EMAIL_FROM: "kpi@example.com",
            settings.ENV_ALERT_EMAIL_TO: "oncall@example.com, boss@example.com",
        }
    return env | overrides


def delivered(web, mail) -> dict[str, int]:
    return {
        "slack": len(web.bodies(SLACK_PATH)),
        "discord": len(web.bodies(DISCORD_PATH + "?thread_id=77")),
        "email": sum(1 for _, recipients in mail.envelopes if "oncall@example.com" in recipients),
    }


def test_a_critical_alert_reaches_slack_discord_and_email(warehouse, sinks):
    web, mail = sinks
    notifier = Notifier.from_env(warehouse, environ=env_for(web.url, mail.port))
    assert notifier.raise_alert(TOKEN_ALERT) is True

    expected = f"[CRITICAL] {TOKEN_ALERT.title}"
    assert web.bodies(SLACK_PATH) == [{"text": f"*{expected}*\n{TOKEN_ALERT.body}"}]
    assert web.bodies(DISCORD_PATH + "?thread_id=77") == [{"content": f"**{expected}**\n{TOKEN_ALERT.body}"}]

    # apprise sends one message per recipient.
    assert sorted(recipients for _, recipients in mail.envelopes) == [
        ["boss@example.com"],
        ["oncall@example.com"],
    ]
    for message in mail.messages:
        assert message["Subject"] == f"[kpi_platform CRITICAL] {TOKEN_ALERT.title}"
        assert "kpi@example.com" in message["From"]
        assert message.get_content_type() == "text/plain"
        assert TOKEN_ALERT.body in message.get_payload(decode=True).decode()
    assert mail.logins[0] == ("alerts@example.com", SMTP_PASSWORD)


def test_one_message_per_problem_until_resolved(migrated_warehouse_url, sinks):
    web, _ = sinks
    warehouse = Warehouse(migrated_warehouse_url)
    warehouse.migrate()
    try:
        notifier = Notifier.from_env(warehouse, environ=env_for(web.url, None))
        assert notifier.raise_alert(TOKEN_ALERT) is True
        assert notifier.raise_alert(TOKEN_ALERT) is False
        # Another process sees the same open problem.
        assert (
            Notifier.from_env(Warehouse(warehouse.engine), environ=env_for(web.url, None)).raise_alert(
                TOKEN_ALERT
            )
            is False
        )
        assert len(web.bodies(SLACK_PATH)) == 1

        assert notifier.resolve(TOKEN_ALERT.key) is True
        assert notifier.resolve(TOKEN_ALERT.key) is False
        resolved = web.bodies(SLACK_PATH)[1]["text"]
        assert resolved.startswith(f"*[RESOLVED] {TOKEN_ALERT.title}*") and "token_invalid:acme" in resolved
        assert len(web.bodies(SLACK_PATH)) == 2

        assert notifier.raise_alert(TOKEN_ALERT) is True  # it came back
        assert len(web.bodies(SLACK_PATH)) == 3
        assert [p.key for p in notifier.open_problems()] == [TOKEN_ALERT.key]
    finally:
        warehouse.dispose()


def test_escalation_notifies_again(warehouse, sinks):
    web, _ = sinks
    notifier = Notifier.from_env(warehouse, environ=env_for(web.url, None))
    high = Alert(key="split:acme:2025-03-01", severity=Severity.HIGH, title="split data", body="b")
    assert notifier.raise_alert(high) is True
    assert notifier.raise_alert(Alert(high.key, Severity.CRITICAL, "split data, blocked", "b")) is True
    assert notifier.raise_alert(high) is False  # a lower severity of an open problem stays silent
    assert [p.severity for p in notifier.open_problems()] == [Severity.CRITICAL]


def test_routing_by_minimum_severity(warehouse, sinks):
    web, mail = sinks
    env = env_for(web.url, mail.port, **{settings.ENV_ALERT_SLACK_MIN_SEVERITY: "medium"})
    notifier = Notifier.from_env(warehouse, environ=env)
    assert [(c.kind, c.min_severity) for c in notifier.channels] == [
        ("slack", Severity.MEDIUM),
        ("discord", Severity.HIGH),
        ("email", Severity.CRITICAL),
    ]
    assert notifier.raise_alert(Alert("anomaly:acme", Severity.LOW, "spend anomaly", "z=4.1")) is False
    assert delivered(web, mail) == {"slack": 0, "discord": 0, "email": 0}
    assert notifier.raise_alert(Alert("freshness:acme", Severity.MEDIUM, "late", "b")) is True
    assert delivered(web, mail) == {"slack": 1, "discord": 0, "email": 0}
    assert notifier.raise_alert(Alert("split:acme", Severity.HIGH, "split", "b")) is True
    assert delivered(web, mail) == {"slack": 2, "discord": 1, "email": 0}
    assert notifier.raise_alert(TOKEN_ALERT) is True
    assert delivered(web, mail) == {"slack": 3, "discord": 2, "email": 1}
    # "Resolved" goes to the channels that heard of the problem.
    assert notifier.resolve("split:acme") is True
    assert delivered(web, mail) == {"slack": 4, "discord": 3, "email": 1}
    # An alert no channel takes is not "notified", so resolving it sends nothing.
    assert notifier.resolve("anomaly:acme") is False


def test_a_failing_channel_neither_raises_nor_stops_the_others(warehouse, sinks, caplog):
    web, mail = sinks
    dead = f"http://127.0.0.1:{closed_port()}"
    env = env_for(web.url, mail.port, **{settings.ENV_ALERT_DISCORD_WEBHOOK: dead + DISCORD_PATH})
    notifier = Notifier.from_env(warehouse, environ=env)
    with caplog.at_level(logging.DEBUG):
        assert notifier.raise_alert(TOKEN_ALERT) is True
    assert delivered(web, mail) == {"slack": 1, "discord": 0, "email": 1}
    assert any(r.levelno == logging.WARNING and "discord" in r.getMessage() for r in caplog.records)
    assert "discordSecretToken" not in caplog.text


def test_an_undelivered_alert_is_sent_on_the_next_raise(migrated_warehouse_url, sinks):
    web, _ = sinks
    warehouse = Warehouse(migrated_warehouse_url)
    warehouse.migrate()
    dead = f"http://127.0.0.1:{closed_port()}"
    assert Notifier.from_env(warehouse, environ=env_for(dead, None)).raise_alert(TOKEN_ALERT) is False
    web.status = 500
    assert Notifier.from_env(warehouse, environ=env_for(web.url, None)).raise_alert(TOKEN_ALERT) is False
    web.status = 200
    assert Notifier.from_env(warehouse, environ=env_for(web.url, None)).raise_alert(TOKEN_ALERT) is True
    assert len(web.bodies(SLACK_PATH)) == 2  # the 500 and the success
    warehouse.dispose()


def test_secrets_never_reach_logs_or_messages(warehouse, sinks, caplog):
    web, mail = sinks
    leaky = Alert(
        key="collection_failed:acme",
        severity=Severity.CRITICAL,
        title=f"fetch failed with {META_TOKEN}",
        body=f"GET {web.url}{SLACK_PATH}?access_token={META_TOKEN} failed; password {SMTP_PASSWORD}",
    )
    dead = f"http://127.0.0.1:{closed_port()}"
    env = env_for(web.url, mail.port, **{settings.ENV_ALERT_DISCORD_WEBHOOK: dead + DISCORD_PATH})
    notifier = Notifier.from_env(warehouse, environ=env)
    with caplog.at_level(logging.DEBUG):
        assert notifier.raise_alert(leaky) is True
        assert notifier.raise_alert(Alert("other:acme", Severity.LOW, f"token {META_TOKEN}", "b")) is False
        assert notifier.resolve(leaky.key) is True
    secrets = (META_TOKEN, SMTP_PASSWORD, SLACK_PATH, DISCORD_PATH, "slackSecretToken", "discordSecretToken")
    outputs = [caplog.text, repr(notifier), *map(repr, notifier.channels), str(web.bodies(SLACK_PATH))]
    outputs += [p.title for p in Notifier(warehouse, channels=()).open_problems()]
    outputs += [m.as_string() for m in mail.messages]
    for secret in secrets:
        for output in outputs:
            assert secret not in output
    assert "***" in web.bodies(SLACK_PATH)[0]["text"]


def test_sync_opens_keeps_and_resolves_within_its_scope(migrated_warehouse_url, sinks):
    web, _ = sinks
    warehouse = Warehouse(migrated_warehouse_url)
    warehouse.migrate()
    try:
        notifier = Notifier.from_env(warehouse, environ=env_for(web.url, None))
        other = Alert("token_invalid:acme", Severity.CRITICAL, "token", "b")
        notifier.raise_alert(other)
        a = Alert("freshness_missed:acme", Severity.HIGH, "acme late", "b")
        b = Alert("freshness_missed:beta_co", Severity.HIGH, "beta late", "b")

        first = notifier.sync([a, b], scope_prefix="freshness_missed:")
        assert first.notified == (a.key, b.key) and first.resolved == ()
        second = notifier.sync([b], scope_prefix="freshness_missed:")
        assert second.notified == () and second.resolved == (a.key,)
        assert {p.key for p in notifier.open_problems()} == {b.key, other.key}  # other scopes untouched
        texts = [body["text"] for body in web.bodies(SLACK_PATH)]
        assert len(texts) == 4 and texts[-1].startswith("*[RESOLVED] acme late*")

        # `_` in a prefix is literal, not a LIKE wildcard.
        assert notifier.sync([], scope_prefix="freshness_missed:").resolved == (b.key,)
        assert notifier.sync([], scope_prefix="token_invalid").resolved == (other.key,)
        with pytest.raises(ValueError, match="outside the scope"):
            notifier.sync([other], scope_prefix="freshness_missed:")
    finally:
        warehouse.dispose()


def test_channels_from_env_defaults_and_errors():
    assert channels_from_env({}) == ()
    env = {
        settings.ENV_ALERT_SLACK_WEBHOOK: "https://hooks.slack.com" + SLACK_PATH,
        settings.ENV_ALERT_SMTP_HOST: "smtp.example.com",
        settings.ENV_ALERT_EMAIL_FROM: "kpi@example.com",
        settings.ENV_ALERT_EMAIL_TO: "oncall@example.com",
    }
    slack, mail = channels_from_env(env)
    assert (slack.kind, slack.min_severity) == ("slack", Severity.HIGH)
    assert slack.apprise_url.startswith("jsons://hooks.slack.com" + SLACK_PATH)
    assert (mail.kind, mail.min_severity) == ("email", Severity.CRITICAL)
    assert (
        mail.apprise_url.startswith("mailtos://smtp.example.com:587/") and "mode=starttls" in mail.apprise_url
    )

    with pytest.raises(ValueError, match=settings.ENV_ALERT_SLACK_MIN_SEVERITY):
        channels_from_env(env | {settings.ENV_ALERT_SLACK_MIN_SEVERITY: "urgent"})
    with pytest.raises(ValueError, match=settings.ENV_ALERT_EMAIL_TO):
        channels_from_env({k: v for k, v in env.items() if k != settings.ENV_ALERT_EMAIL_TO})
    with pytest.raises(ValueError, match=settings.ENV_ALERT_DISCORD_WEBHOOK) as raised:
        channels_from_env({settings.ENV_ALERT_DISCORD_WEBHOOK: "discord.com" + DISCORD_PATH})
    assert "discordSecretToken" not in str(raised.value)


def test_an_invalid_channel_is_logged_and_left_out_and_the_others_still_send(warehouse, sinks, caplog):
    web, mail = sinks
    broken = {
        settings.ENV_ALERT_SLACK_MIN_SEVERITY: "urgent",
        settings.ENV_ALERT_DISCORD_WEBHOOK: "discord.com" + DISCORD_PATH,
    }
    with caplog.at_level(logging.INFO):
        notifier = Notifier.from_env(warehouse, environ=env_for(web.url, mail.port, **broken))
    assert [c.kind for c in notifier.channels] == ["email"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert "slack" in errors[0] and settings.ENV_ALERT_SLACK_MIN_SEVERITY in errors[0]
    assert "discord" in errors[1] and settings.ENV_ALERT_DISCORD_WEBHOOK in errors[1]
    for secret in ("slackSecretToken", "discordSecretToken", SMTP_PASSWORD, META_TOKEN):
        assert secret not in caplog.text
    assert notifier.raise_alert(TOKEN_ALERT) is True
    assert delivered(web, mail) == {"slack": 0, "discord": 0, "email": 1}

    caplog.clear()
    bad_port = env_for(web.url, mail.port, **{settings.ENV_ALERT_SMTP_PORT: "twenty-five"})
    assert [c.kind for c in Notifier.from_env(warehouse, environ=bad_port).channels] == ["slack", "discord"]
    assert settings.ENV_ALERT_SMTP_PORT in caplog.text and SMTP_PASSWORD not in caplog.text


def test_alert_validates_its_key_and_severity():
    assert Alert("k", "high", "t", "b").severity is Severity.HIGH
    with pytest.raises(ValueError):
        Alert("", Severity.LOW, "t", "b")
    with pytest.raises(ValueError, match="not one of"):
        Alert("k", "urgent", "t", "b")


def test_breaker_alerts_name_open_breakers_only():
    opened = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    states = [
        BreakerState(
            "meta_api", "open", 5, opened, opened + timedelta(minutes=15), opened, "TransientError: 503"
        ),
        BreakerState("meta_api:act_1", "closed", 2, None, None, opened, None),
    ]
    (alert,) = breaker_alerts(states)
    assert alert.key == f"{BREAKER_ALERT_PREFIX}meta_api" and alert.severity is Severity.CRITICAL
    assert "every ad account" in alert.body and "08:15" in alert.body and "503" in alert.body
    assert "What to do" in alert.body
