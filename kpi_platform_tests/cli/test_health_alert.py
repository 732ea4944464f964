"""`kpi-platform health --alert` against a temporary warehouse and Dagster instance: a stale daemon heartbeat alerts
once, a second run sends nothing new, a fresh heartbeat sends "resolved"; the heartbeat URL is pinged only while
nothing is unhealthy; exit codes stay those of the report, with or without a channel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from kpi_platform import settings
from kpi_platform.cli import command as cli
from kpi_platform.defs import run_history
from kpi_platform.defs.health import HEALTH_REPORT
from kpi_platform.operations.health import DAEMON_HEARTBEAT_UNHEALTHY_S
from kpi_platform_tests.support.activity import snapshot_days, store_snapshots
from kpi_platform_tests.support.heartbeats import beat
from kpi_platform_tests.support.ping_sink import ping_sink
from kpi_platform_tests.support.platform import Platform, make_platform
from kpi_platform_tests.support.sinks import slack_sink
from kpi_platform_tests.support.token_checks import record_token_check

pytestmark = pytest.mark.usefixtures("no_current_defs_state_storage")

PING_PATH = "/ping/5a1d7c52-3f0e-4b8a-9c61-0d2e4f6a8b10"


@pytest.fixture
def collected(tmp_path, monkeypatch) -> Iterator[Platform]:
    """acme and globex collected up to yesterday, the platform activity snapshotted; the CLI's own Dagster
    instance under tmp_path."""
    for platform in make_platform(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'warehouse.sqlite'}"):
        (tmp_path / "dagster_home").mkdir()
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        for client_id in ("acme", "globex"):
            assert platform.collect(client_id, yesterday - timedelta(days=34), yesterday).success
        days = snapshot_days(yesterday - timedelta(days=34), yesterday)
        store_snapshots(platform.warehouse, days, collected_at=datetime.now(UTC) - timedelta(hours=1))
        yield platform


def heartbeat_at(at: datetime) -> None:
    """Every required daemon's heartbeat at `at`, in the instance the CLI opens (DAGSTER_HOME), and the daily token
    check a running daemon records (a token that never expires)."""
    with dg.DagsterInstance.get() as instance:
        beat(instance, at)
        record_token_check(instance, at)


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(["health", "--alert", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def texts(sink) -> list[str]:
    return [body["text"] for body in sink.bodies("/slack")]


def test_a_stale_daemon_alerts_once_and_resolves_when_it_beats_again(collected, monkeypatch, capsys):
    stale = datetime.now(UTC) - timedelta(seconds=DAEMON_HEARTBEAT_UNHEALTHY_S + 600)
    heartbeat_at(stale)
    with slack_sink(monkeypatch) as slack, ping_sink() as monitor:
        monkeypatch.setenv(settings.ENV_HEARTBEAT_URL, f"{monitor.url}{PING_PATH}")

        code, out, err = run(capsys)
        assert code == 2
        assert "KPI platform health: UNHEALTHY" in out
        (alert,) = texts(slack)
        assert alert.startswith("*[CRITICAL] Health check daemon is unhealthy*")
        assert "daemons down" in alert
        assert "alerts (health): 1 open, 1 notified, 0 resolved (health:daemon)" in err
        assert "heartbeat: not pinged, the platform is unhealthy" in err
        assert monitor.pings == []

        code, _, err = run(capsys, "--json")
        assert code == 2
        assert len(texts(slack)) == 1  # the same problem: nothing new
        assert "alerts (health): 1 open, 0 notified, 0 resolved (health:daemon)" in err

        heartbeat_at(datetime.now(UTC))
        code, out, err = run(capsys)
        assert code == 0
        assert "KPI platform health: HEALTHY" in out
        messages = texts(slack)
        assert len(messages) == 2
        assert messages[1].startswith("*[RESOLVED] Health check daemon is unhealthy*")
        assert "alerts (health): 0 open, 0 notified, 1 resolved" in err
        assert monitor.pings == [PING_PATH]
        assert "heartbeat: pinged" in err

        for text in (out, err, *messages):
            assert PING_PATH not in text and f"{slack.url}/slack" not in text


def test_without_a_channel_it_says_so_and_exits_by_status(collected, monkeypatch, capsys):
    for name in (
        settings.ENV_ALERT_SLACK_WEBHOOK,
        settings.ENV_ALERT_DISCORD_WEBHOOK,
        settings.ENV_ALERT_SMTP_HOST,
    ):
        monkeypatch.delenv(name, raising=False)
    heartbeat_at(datetime.now(UTC) - timedelta(seconds=DAEMON_HEARTBEAT_UNHEALTHY_S + 600))
    code, _, err = run(capsys)
    assert code == 2
    assert "alerts: no channel configured" in err

    heartbeat_at(datetime.now(UTC))
    code, _, err = run(capsys)
    assert code == 0
    assert "alerts: no channel configured" in err


def test_a_missing_warehouse_is_reported_and_exits_unhealthy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KPI_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'nothing.sqlite'}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    with ping_sink() as monitor:
        monkeypatch.setenv(settings.ENV_HEARTBEAT_URL, f"{monitor.url}{PING_PATH}")
        code, _, err = run(capsys)
    assert code == 2
    assert "alerts: not sent, the warehouse (which keeps the alert state) cannot be read" in err
    assert monitor.pings == []


def record_score(instance: dg.DagsterInstance, score: float, at: datetime) -> None:
    """A materialization of the health report asset at `at` with metadata `score`, as its schedule leaves one."""
    # PRIVATE: the public `report_runless_asset_event` stamps the current time; the score history needs the past.
    from dagster._core.events import DagsterEvent, DagsterEventType, StepMaterializationData
    from dagster._core.events.log import EventLogEntry

    materialization = dg.AssetMaterialization(HEALTH_REPORT, metadata={"score": score, "status": "unhealthy"})
    event = DagsterEvent(
        DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="health_report_job",
        event_specific_data=StepMaterializationData(materialization),
    )
    instance.store_event(
        EventLogEntry(
            error_info=None,
            level="debug",
            user_message="",
            run_id="",
            timestamp=at.timestamp(),
            dagster_event=event,
        )
    )


def test_a_score_below_80_for_over_an_hour_alerts_from_the_recorded_scores(tmp_path, monkeypatch, capsys):
    """Clients registered, nothing collected: the report scores far below 80. The recorded scores decide when."""
    for _ in make_platform(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'warehouse.sqlite'}"):
        (tmp_path / "dagster_home").mkdir()
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
        now = datetime.now(UTC)
        with dg.DagsterInstance.get() as instance:
            beat(instance, now)
            for minutes in (40, 25, 10):
                record_score(instance, 30.0, now - timedelta(minutes=minutes))
            assert [
                s
                for _, s in run_history.recorded_metadata(
                    instance, HEALTH_REPORT, "score", since=now - timedelta(hours=3)
                )
            ] == [30.0, 30.0, 30.0]
        with slack_sink(monkeypatch) as slack:
            code, out, err = run(capsys)
            assert code == 2 and "success_rates" in out and "next collection" in out
            assert not any("Health score below 80" in t for t in texts(slack))
            with dg.DagsterInstance.get() as instance:
                record_score(instance, 30.0, now - timedelta(minutes=70))
            code, _, err = run(capsys)
            [message] = [t for t in texts(slack) if "Health score below 80" in t]
            assert message.startswith("*[HIGH] Health score below 80 for over an hour*")
            assert "health:score_low" in err
