"""The watchdog (`kpi-platform health --alert`): one alert per unhealthy check, deduplicated and resolved through
the alert state, the missing-clients escalation, and the outbound heartbeat pinged only while nothing is unhealthy.
Reports are built by hand here; the CLI test drives the real report against a Dagster instance."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import pytest

from kpi_platform import settings
from kpi_platform.operations.alerts import Notifier, Severity
from kpi_platform.operations.health import HealthCheck, HealthReport, HealthStatus
from kpi_platform.operations.health.success_rates import TARGETS, WINDOWS, Rate, rates_finding
from kpi_platform.operations.missing_clients import MISSING_CLIENTS_KEY
from kpi_platform.operations.watchdog import (
    HEALTH_ALERT_PREFIX,
    NO_CHANNEL,
    SCORE_LOW_KEY,
    SUCCESS_RATE_ALERT_PREFIX,
    health_alerts,
    health_problems,
    low_score_since,
    ping_heartbeat,
    run_watchdog,
    success_rate_alerts,
)
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.ping_sink import ping_sink
from kpi_platform_tests.support.sinks import closed_port, webhook_sink
from kpi_platform_tests.support.warehouse_data import client

NOW = datetime(2026, 11, 10, 12, 0, tzinfo=UTC)
SLACK_PATH = "/services/T0000/B0000/slackSecretToken0123456789"
PING_PATH = "/ping/0f6c1b0e-6b7e-4c1e-9d58-3f2a5d8c9e11"


def report(*statuses: tuple[str, HealthStatus], summary: str = "as arranged") -> HealthReport:
    checks = [HealthCheck(name=name, status=status, score=0.0, summary=summary) for name, status in statuses]
    return HealthReport.from_checks(checks, generated_at=NOW)


HEALTHY = report(("daemon", HealthStatus.HEALTHY), ("missing_days", HealthStatus.HEALTHY))
DEGRADED = report(("daemon", HealthStatus.DEGRADED), ("missing_days", HealthStatus.DEGRADED))
DAEMON_DOWN = report(("daemon", HealthStatus.UNHEALTHY), ("missing_days", HealthStatus.HEALTHY))


@pytest.fixture
def warehouse(tmp_path):
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    wh.migrate()
    yield wh
    wh.dispose()


@pytest.fixture
def sinks():
    """A Slack sink and a ping sink, and the environment pointing at both."""
    with webhook_sink() as slack, ping_sink() as monitor:
        env = {
            settings.ENV_ALERT_SLACK_WEBHOOK: f"{slack.url}{SLACK_PATH}",
            settings.ENV_HEARTBEAT_URL: f"{monitor.url}{PING_PATH}",
        }
        yield slack, monitor, env


def texts(sink) -> list[str]:
    return [body["text"] for body in sink.bodies(SLACK_PATH)]


def watch(report_, warehouse, env, **kwargs):
    return run_watchdog(report_, warehouse=warehouse, environ=env, clock=lambda: NOW, **kwargs)


# --- which checks alert -------------------------------------------------------------------------------------------


def test_one_alert_per_unhealthy_check_critical_for_the_daemon_high_otherwise():
    alerts = health_alerts(
        report(
            ("daemon", HealthStatus.UNHEALTHY),
            ("missing_days", HealthStatus.UNHEALTHY),
            ("split_days", HealthStatus.DEGRADED),
            ("in_progress", HealthStatus.HEALTHY),
        )
    )
    assert [(a.key, a.severity) for a in alerts] == [
        ("health:daemon", Severity.CRITICAL),
        ("health:missing_days", Severity.HIGH),
    ]
    assert alerts[0].title == "Health check daemon is unhealthy"
    assert "as arranged" in alerts[0].body and "Restart the daemon" in alerts[0].body


def test_an_unreadable_instance_is_critical_and_checks_not_evaluated_stay_open(warehouse):
    notifier = Notifier(warehouse, channels=(), clock=lambda: NOW)
    notifier.sync(health_alerts(report(("missing_days", HealthStatus.UNHEALTHY))), HEALTH_ALERT_PREFIX)
    unreadable = HealthReport.unavailable(name="dagster_instance", summary="cannot open", now_utc=NOW)
    alerts = health_problems(unreadable, notifier.open_problems(scope_prefix=HEALTH_ALERT_PREFIX))
    assert [(a.key, a.severity) for a in alerts] == [
        ("health:dagster_instance", Severity.CRITICAL),
        ("health:missing_days", Severity.HIGH),
    ]
    result = notifier.sync(alerts, HEALTH_ALERT_PREFIX)
    assert result.resolved == ()


def test_summaries_quoted_in_alerts_are_redacted():
    (alert,) = health_alerts(
        report(("dagster_instance", HealthStatus.UNHEALTHY), summary="auth failed for pg-s3cret"),
        secrets=["pg-s3cret"],
    )
    assert "pg-s3cret" not in alert.body


# --- a watchdog pass ----------------------------------------------------------------------------------------------


def test_alerts_once_resolves_and_pings_only_while_nothing_is_unhealthy(warehouse, sinks):
    slack, monitor, env = sinks
    first = watch(DAEMON_DOWN, warehouse, env)
    assert first.health.notified == ("health:daemon",)
    assert first.heartbeat == "withheld" and monitor.pings == []
    (message,) = texts(slack)
    assert message.startswith("*[CRITICAL] Health check daemon is unhealthy*")

    again = watch(DAEMON_DOWN, warehouse, env)
    assert again.health.notified == () and again.health.open == ("health:daemon",)
    assert len(texts(slack)) == 1

    recovered = watch(HEALTHY, warehouse, env)
    assert recovered.health.resolved == ("health:daemon",)
    assert texts(slack)[1].startswith("*[RESOLVED] Health check daemon is unhealthy*")
    assert recovered.heartbeat == "pinged" and monitor.pings == [PING_PATH]
    assert "heartbeat: pinged" in recovered.lines

    # Degraded does not alert, and the heartbeat still goes out.
    degraded = watch(DEGRADED, warehouse, env)
    assert degraded.health.open == () and len(texts(slack)) == 2
    assert degraded.heartbeat == "pinged" and len(monitor.pings) == 2
    for line in (*first.lines, *again.lines, *recovered.lines, *degraded.lines):
        assert PING_PATH not in line and SLACK_PATH not in line


def test_missing_clients_are_synced_too(warehouse, sinks):
    slack, _, env = sinks
    warehouse.upsert_clients([client("acme")])
    with warehouse.engine.begin() as conn:
        conn.execute(schema.clients.update().values(created_at=NOW - timedelta(days=30)))
    result = watch(HEALTHY, warehouse, env)
    assert result.collection.notified == (MISSING_CLIENTS_KEY,)
    (message,) = texts(slack)
    assert message.startswith("*[CRITICAL] daily collection incomplete: expected 1 clients, got 0*")
    assert "Missing clients: acme" in message


def test_without_a_channel_it_says_so_and_still_records(warehouse):
    result = watch(DAEMON_DOWN, warehouse, {})
    assert NO_CHANNEL in result.lines
    assert result.health.open == ("health:daemon",) and result.health.notified == ()
    assert result.heartbeat == "off"
    (problem,) = Notifier(warehouse, channels=()).open_problems(scope_prefix=HEALTH_ALERT_PREFIX)
    assert (problem.key, problem.notified_at) == ("health:daemon", None)


def test_without_a_warehouse_nothing_is_sent_and_the_heartbeat_is_withheld(sinks):
    slack, monitor, env = sinks
    unreadable = HealthReport.unavailable(name="warehouse", summary="no warehouse", now_utc=NOW)
    result = watch(unreadable, None, env)
    assert result.health is None and result.collection is None
    assert "alerts: not sent, the warehouse (which keeps the alert state) cannot be read" in result.lines
    assert result.heartbeat == "withheld"
    assert texts(slack) == [] and monitor.pings == []


def test_a_failing_alert_store_is_reported_not_raised(warehouse, sinks):
    _, monitor, env = sinks
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alert_state")
    result = watch(HEALTHY, warehouse, env)
    assert result.health is None and result.collection is None
    assert any(line.startswith("alerts: health failed: OperationalError") for line in result.lines)
    assert result.heartbeat == "pinged" and monitor.pings == [PING_PATH]


# --- the heartbeat ------------------------------------------------------------------------------------------------


def test_a_refused_ping_is_reported_redacted(warehouse):
    url = f"http://127.0.0.1:{closed_port()}{PING_PATH}?key=query-s3cret"
    result = watch(HEALTHY, warehouse, {settings.ENV_HEARTBEAT_URL: url})
    assert result.heartbeat == "failed"
    (line,) = [line for line in result.lines if line.startswith("heartbeat:")]
    assert line.startswith("heartbeat: ping failed: ConnectionError")
    assert "0f6c1b0e" not in line and "query-s3cret" not in line and url not in line


def test_an_error_answer_and_a_silent_monitor_are_failures():
    with ping_sink() as monitor:
        monitor.status = 500
        assert ping_heartbeat(f"{monitor.url}{PING_PATH}") == "the monitor answered HTTP 500"
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}{PING_PATH}"
        error = ping_heartbeat(url, timeout=(0.5, 0.5))
    assert error is not None and "Timeout" in error and PING_PATH not in error
    assert (
        ping_heartbeat("ftp://monitor.example/ping") == f"{settings.ENV_HEARTBEAT_URL} is not an http(s) URL"
    )


def test_the_heartbeat_url_is_redacted_from_alert_messages(warehouse, sinks):
    slack, _, env = sinks
    leaky = report(("daemon", HealthStatus.UNHEALTHY), summary=f"probe of {env[settings.ENV_HEARTBEAT_URL]}")
    watch(leaky, warehouse, env)
    (message,) = texts(slack)
    assert PING_PATH not in message and "0f6c1b0e" not in message


# --- the score alert and the success-rate alerts ------------------------------------------------------------------


def scored(score: float, at: datetime = NOW) -> HealthReport:
    """A degraded report (no check alert of its own) scoring `score`."""
    check = HealthCheck(name="missing_days", status=HealthStatus.DEGRADED, score=score, summary="as arranged")
    return HealthReport.from_checks([check], generated_at=at)


def minutes_ago(*pairs: tuple[int, float]) -> list[tuple[datetime, float]]:
    return [(NOW - timedelta(minutes=m), score) for m, score in pairs]


def test_the_low_stretch_starts_at_its_first_score_below_80():
    assert low_score_since(minutes_ago((90, 70), (60, 85), (45, 79.9), (30, 50), (0, 60))) == NOW - timedelta(
        minutes=45
    )
    assert low_score_since(minutes_ago((30, 50), (0, 80))) is None
    assert low_score_since([]) is None


def test_score_below_80_for_over_an_hour_alerts_once_and_resolves_itself(warehouse, sinks):
    slack, _, env = sinks
    # Below 80 for 50 minutes: not yet.
    early = watch(
        scored(60), warehouse, env, score_history=minutes_ago((50, 70), (35, 75), (20, 65), (5, 62))
    )
    assert early.health.open == ()
    # A score of 80 or more 30 minutes ago breaks the stretch, however low it was before.
    broken = watch(scored(60), warehouse, env, score_history=minutes_ago((75, 40), (30, 80), (15, 60)))
    assert broken.health.open == ()
    # 65 minutes below 80 (the recorded scores and this report's own).
    low = minutes_ago((65, 70), (50, 72), (35, 60), (20, 65), (5, 62))
    first = watch(scored(60), warehouse, env, score_history=low)
    assert first.health.notified == (SCORE_LOW_KEY,)
    (message,) = texts(slack)
    assert message.startswith("*[HIGH] Health score below 80 for over an hour*")
    assert "for 1.1 h" in message and "now 60/100" in message and "missing_days 60" in message
    assert watch(scored(61), warehouse, env, score_history=low).health.notified == ()
    # The recorded scores cannot be read: not evaluated, the alert stays as it is.
    unread = watch(scored(95), warehouse, env, score_history=None)
    assert unread.health.open == (SCORE_LOW_KEY,) and unread.health.resolved == ()
    # Back at 80: resolved.
    recovered = watch(scored(80), warehouse, env, score_history=low)
    assert recovered.health.resolved == (SCORE_LOW_KEY,)
    assert texts(slack)[-1].startswith("*[RESOLVED] Health score below 80 for over an hour*")


def rates_report(values: dict[tuple[str, int], float | None]) -> HealthReport:
    rates = [Rate(t.name, d, values.get((t.name, d)), 0, 10) for t in TARGETS for d in WINDOWS]
    finding = rates_finding(rates)
    check = HealthCheck(
        name="success_rates",
        status=finding.status,
        score=finding.score,
        summary=finding.summary,
        details=finding.details,
        metrics=finding.metrics,
        weight=0.0,
    )
    return HealthReport.from_checks([check], generated_at=NOW)


def test_one_alert_per_rate_below_target_over_7_days():
    alerts = success_rate_alerts(
        rates_report(
            {
                ("collection_success", 7): 97.5,
                ("completeness", 1): 90.0,  # one day alone does not alert
                ("quality_avg", 7): 95.0,  # must be above 95
                ("freshness", 7): 95.0,
                ("backfill_healing_success", 7): None,  # nothing counted
            }
        )
    )
    assert alerts is not None
    assert [(a.key, a.severity) for a in alerts] == [
        ("success_rate:collection_success", Severity.MEDIUM),
        ("success_rate:quality_avg", Severity.MEDIUM),
    ]
    assert alerts[0].title == "Collection success below target (97.5 %, 7 d)"
    assert "is 97.5 % (0 of 10); the target is ≥ 99 %" in alerts[0].body
    assert "is 95 (mean of 10 delivered days); the target is > 95" in alerts[1].body
    # No evaluated success rates in the report: nothing to judge.
    assert success_rate_alerts(HEALTHY) is None


def test_rate_alerts_resolve_when_back_on_target_and_stay_while_not_evaluated(warehouse):
    below = rates_report({("completeness", 7): 98.0})
    first = watch(below, warehouse, {})
    assert first.rates is not None and first.rates.open == ("success_rate:completeness",)
    # The rates could not be evaluated (no entry): the problem stays open.
    assert watch(HEALTHY, warehouse, {}).rates is None
    notifier = Notifier(warehouse, channels=(), clock=lambda: NOW)
    assert [p.key for p in notifier.open_problems(scope_prefix=SUCCESS_RATE_ALERT_PREFIX)] == [
        "success_rate:completeness"
    ]
    back = watch(rates_report({("completeness", 7): 99.5}), warehouse, {})
    assert back.rates is not None and back.rates.resolved == ("success_rate:completeness",)
    assert any(line.startswith("alerts (success rates): 0 open") for line in back.lines)
