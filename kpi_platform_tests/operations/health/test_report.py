"""The health report on a known dataset: numbers per check, status thresholds, scoring, JSON shape and CLI exit codes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from dagster._core.execution.backfill import (  # PRIVATE: no public way to add one
    BulkActionStatus,
    PartitionBackfill,
)
from dagster._core.remote_origin import (  # PRIVATE: a QUEUED run needs a code-location origin
    RegisteredCodeLocationOrigin,
    RemoteRepositoryOrigin,
)

from kpi_platform.cli import command as cli
from kpi_platform.clients import Client
from kpi_platform.definitions import defs
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS, CONTRACT_CHECK
from kpi_platform.defs.quality_checks import KPI_WAREHOUSE
from kpi_platform.operations.health import (
    DAEMON_HEARTBEAT_UNHEALTHY_S,
    HEALTH_CHECKS,
    HealthCheck,
    HealthReport,
    HealthStatus,
    build_health_report,
    clients_from_warehouse,
)
from kpi_platform.operations.plans import CollectionRequest
from kpi_platform.warehouse import schema
from kpi_platform_tests.support.activity import snapshot_days, store_snapshots
from kpi_platform_tests.support.heartbeats import beat
from kpi_platform_tests.support.platform import Platform, make_platform
from kpi_platform_tests.support.postgres import temp_database
from kpi_platform_tests.support.token_checks import record_token_check

# The report reads a Dagster instance and the code location's Definitions.
pytestmark = pytest.mark.usefixtures("no_current_defs_state_storage")

# 12:00 UTC is 13:00 or 14:00 in Warsaw: past the 09:00 deadline, so yesterday is due for both clients.
TODAY = datetime.now(UTC).date()
NOW = datetime.combine(TODAY, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
YESTERDAY = TODAY - timedelta(days=1)
CONTRACT = dg.AssetCheckKey(CLIENT_DAILY_KPIS, CONTRACT_CHECK)
COMPLETENESS = dg.AssetCheckKey(KPI_WAREHOUSE, "completeness_meets_target")
NEVER_RUN = dg.AssetCheckKey(dg.AssetKey(["platform", "probe"]), "never_run")


@pytest.fixture
def platform(request, tmp_path, monkeypatch, dagster_instance_template) -> Iterator[Platform]:
    """SQLite unless a test asks for `postgresql` (indirect parametrization): then a copy of the migrated template."""
    if getattr(request, "param", "sqlite") == "postgresql":
        with temp_database(template=request.getfixturevalue("pg_template")) as url:
            yield from make_platform(tmp_path, monkeypatch, url, instance_template=dagster_instance_template)
    else:
        url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
        yield from make_platform(tmp_path, monkeypatch, url, instance_template=dagster_instance_template)


@pytest.fixture
def collected(platform) -> Platform:
    """Both clients collected for the 35 days before today, each last collected 3 hours before NOW; the platform
    activity snapshotted for the same days, 3 hours before NOW."""
    for client_id in ("acme", "globex"):
        assert platform.collect(client_id, TODAY - timedelta(days=35), YESTERDAY).success
        set_fetched_at(platform, client_id, NOW - timedelta(hours=3))
    record_activity(platform)
    return platform


def record_activity(platform: Platform) -> None:
    """Activity snapshots of the 35 days before today, taken 3 hours before NOW."""
    days = snapshot_days(TODAY - timedelta(days=35), YESTERDAY)
    store_snapshots(platform.warehouse, days, collected_at=NOW - timedelta(hours=3))


def set_fetched_at(platform: Platform, client_id: str, at: datetime) -> None:
    table = schema.client_daily_kpis
    with platform.warehouse.engine.begin() as conn:
        conn.execute(table.update().where(table.c.client_id == client_id).values(fetched_at=at))


def delete_day(platform: Platform, client_id: str, day) -> None:
    with platform.warehouse.engine.begin() as conn:
        for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
            conn.execute(sa.delete(table).where(table.c.client_id == client_id, table.c.kpi_date == day))


def make_split_day(platform: Platform, client_id: str, day) -> None:
    """Conversions stored without spend: always a split day."""
    table = schema.client_daily_kpis
    with platform.warehouse.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.client_id == client_id, table.c.kpi_date == day)
            .values(spend=0, clicks=0, impressions=0, leads=7)
        )


def set_breaker(platform: Platform, name: str, state: str) -> None:
    with platform.warehouse.engine.begin() as conn:
        conn.execute(
            schema.circuit_breakers.insert().values(
                name=name, state=state, fail_counter=5, opened_at=NOW - timedelta(minutes=5), updated_at=NOW
            )
        )


def enqueue(instance: dg.DagsterInstance, job_name: str = "daily_collection_job") -> dg.DagsterRun:
    """A QUEUED run, as the queued run coordinator stores it, created now (wall clock)."""
    repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("kpi"), "__repository__")
    origin = repository.get_job_origin(job_name)
    return instance.add_run(
        dg.DagsterRun(job_name=job_name, status=dg.DagsterRunStatus.QUEUED, remote_job_origin=origin)
    )


def daemon_check(
    platform: Platform, now_utc: datetime, instance: dg.DagsterInstance | None = None
) -> HealthCheck:
    """The report's `daemon` check alone, as of `now_utc`."""
    result = build_health_report(
        warehouse=platform.warehouse,
        instance=instance or platform.instance,
        clients=clients_from_warehouse(platform.warehouse),
        now_utc=now_utc,
        checks=[spec for spec in HEALTH_CHECKS if spec.name == "daemon"],
    )
    return result.check("daemon")


def report(platform: Platform, *, check_keys=(CONTRACT,), instance=True) -> HealthReport:
    return build_health_report(
        warehouse=platform.warehouse,
        instance=platform.instance if instance else None,
        clients=clients_from_warehouse(platform.warehouse),
        now_utc=NOW,
        check_keys=check_keys,
    )


def test_complete_recent_data_is_healthy_with_full_score(collected):
    beat(collected.instance, NOW - timedelta(minutes=1))
    record_token_check(collected.instance, NOW - timedelta(hours=1))
    required = len(collected.instance.get_required_daemon_types())
    result = report(collected)
    assert [c.name for c in result.checks] == [spec.name for spec in HEALTH_CHECKS]
    assert result.status == HealthStatus.HEALTHY
    assert result.score == 100.0
    assert result.exit_code() == 0
    # The success rates and collections entries have their own tests (test_success_rates.py).
    own = {*result.check("success_rates").metrics, *result.check("collections").metrics}
    assert {k: v for k, v in result.metrics().items() if k not in own} == {
        "clients_collected_yesterday": 2,
        "clients_active": 2,
        "clients_overdue_yesterday": 0,
        "missing_days_7d": 0,
        "missing_days_30d": 0,
        "missing_days_history": 0,
        "split_days": 0,
        "clients_never_collected": 0,
        "max_hours_since_collection": 3.0,
        "failed_checks": 0,
        "checks_never_evaluated": 0,
        "open_breakers": 0,
        "activity_missing_days": 0,
        "activity_late_days": 0,
        "activity_hours_since_snapshot": 3.0,
        "daemons_healthy": required,
        "daemons_required": required,
        "run_queue_length": 0,
        "run_queue_oldest_age_seconds": 0.0,
        "runs_in_progress": 0,
        "runs_queued": 0,
        "runs_running": 0,
        "backfills_in_progress": 0,
        "token_check_age_h": 1.0,
        "forecast_days_judged_30d": 0,
    }
    assert result.check("asset_checks").summary == "1/1 passed"


@pytest.mark.parametrize("platform", ["sqlite", "postgresql"], indirect=True)
def test_known_problems_are_counted_per_check(collected):
    platform = collected
    # acme: one day missing in the last 7, another only in the last 30; one split day.
    delete_day(platform, "acme", TODAY - timedelta(days=3))
    delete_day(platform, "acme", TODAY - timedelta(days=20))
    make_split_day(platform, "acme", TODAY - timedelta(days=10))
    # globex: yesterday missing, last collected 30 h ago, its ad account's breaker open.
    delete_day(platform, "globex", YESTERDAY)
    set_fetched_at(platform, "globex", NOW - timedelta(hours=30))
    set_breaker(platform, "meta_api:act_100000000002", "open")
    set_breaker(platform, "meta_api:act_999999999999", "open")  # no active client uses it: ignored
    # One run queued, one backfill requested, the completeness check failed (ERROR, not blocking).
    job = platform.defs().resolve_job_def("daily_collection_job")
    queued = CollectionRequest("acme", YESTERDAY, YESTERDAY, run_key="", reason="test").tags()
    platform.instance.create_run_for_job(job_def=job, tags=queued)  # NOT_STARTED: created, waiting
    platform.instance.add_backfill(
        PartitionBackfill(
            backfill_id="bf1",
            status=BulkActionStatus.REQUESTED,
            from_failure=False,
            tags={},
            backfill_timestamp=time.time(),
            partition_names=["acme|2025-01-01"],
        )
    )
    checks_job = platform.defs().resolve_job_def("warehouse_checks_job")
    assert checks_job.execute_in_process(instance=platform.instance, raise_on_error=False).success

    result = report(platform, check_keys=(CONTRACT, COMPLETENESS, NEVER_RUN))
    metrics = result.metrics()
    assert metrics["clients_collected_yesterday"] == 1
    assert metrics["clients_overdue_yesterday"] == 1
    assert metrics["missing_days_7d"] == 2  # acme today-3, globex yesterday
    assert metrics["missing_days_30d"] == 3
    assert metrics["missing_days_history"] == 3  # the same days: both histories start 35 days ago
    assert metrics["split_days"] == 1
    assert metrics["max_hours_since_collection"] == 30.0
    assert metrics["failed_checks"] == 1
    assert metrics["checks_never_evaluated"] == 1
    assert metrics["open_breakers"] == 1
    assert metrics["runs_in_progress"] == 1 and metrics["runs_queued"] == 1
    # The NOT_STARTED run was never submitted to the daemon's queue.
    assert metrics["run_queue_length"] == 0
    assert metrics["backfills_in_progress"] == 1

    statuses = {c.name: c.status for c in result.checks}
    assert statuses == {
        "yesterday_collection": HealthStatus.DEGRADED,
        "missing_days": HealthStatus.DEGRADED,
        "split_days": HealthStatus.DEGRADED,
        "hours_since_collection": HealthStatus.DEGRADED,
        "asset_checks": HealthStatus.DEGRADED,
        "circuit_breakers": HealthStatus.DEGRADED,
        "activity": HealthStatus.HEALTHY,
        "daemon": HealthStatus.DEGRADED,  # never ran on this test instance
        "in_progress": HealthStatus.HEALTHY,
        "success_rates": HealthStatus.HEALTHY,  # informational
        "collections": HealthStatus.HEALTHY,  # the daily schedule was never stopped
        "token": HealthStatus.DEGRADED,  # never checked on this test instance
        "forecast_accuracy": HealthStatus.HEALTHY,  # no forecast stored: nothing to judge
    }
    assert result.status == HealthStatus.DEGRADED and result.exit_code() == 1
    assert 0 < result.score < 100
    missing = result.check("missing_days").details["per_client"]
    assert missing["acme"]["missing_dates"] == [
        (TODAY - timedelta(days=20)).isoformat(),
        (TODAY - timedelta(days=3)).isoformat(),
    ]
    assert result.check("yesterday_collection").details["overdue"] == ["globex"]
    assert result.check("split_days").details["days_by_client"] == {
        "acme": [(TODAY - timedelta(days=10)).isoformat()]
    }
    assert result.check("circuit_breakers").details["clients_blocked"] == ["globex"]
    assert "completeness_meets_target (ERROR)" in result.check("asset_checks").summary


def test_missing_days_report_the_whole_history_since_each_clients_start(collected):
    platform = collected
    # acme's history starts 40 days ago (its start_date; collection began 35 days ago) and misses a day 33 days
    # ago: older than both windows. globex has no start_date, so its history starts on its first collected day.
    acme = Client.from_row(platform.warehouse.get_client("acme"))
    platform.warehouse.upsert_clients([replace(acme, start_date=TODAY - timedelta(days=40)).to_row()])
    delete_day(platform, "acme", TODAY - timedelta(days=33))
    delete_day(platform, "globex", TODAY - timedelta(days=35))

    check = report(platform).check("missing_days")
    assert check.metrics == {"missing_days_7d": 0, "missing_days_30d": 0, "missing_days_history": 6}
    # The windows decide the status; the history is reported beside them.
    assert check.status == HealthStatus.HEALTHY
    oldest = TODAY - timedelta(days=40)
    assert (
        check.summary
        == f"no missing days in the last 30 days; 6 since each client's start, the oldest {oldest} (acme)"
    )
    per_client = check.details["per_client"]
    assert (per_client["acme"]["history_start"], per_client["acme"]["missing_days_history"]) == (oldest, 6)
    assert per_client["acme"]["oldest_missing_day"] == oldest
    # globex's first stored day is now 34 days ago: nothing before it is expected.
    assert per_client["globex"]["history_start"] == TODAY - timedelta(days=34)
    assert (per_client["globex"]["missing_days_history"], per_client["globex"]["oldest_missing_day"]) == (
        0,
        None,
    )
    assert check.details["clients_with_history_gaps"] == ["acme"]
    assert check.details["oldest_missing_day"] == oldest


def test_unhealthy_thresholds(collected):
    platform = collected
    # Three of acme's last 7 days missing: gap healing has not caught up.
    for days_ago in (2, 3, 4):
        delete_day(platform, "acme", TODAY - timedelta(days=days_ago))
    result = report(platform)
    assert result.check("missing_days").status == HealthStatus.UNHEALTHY
    assert result.check("yesterday_collection").status == HealthStatus.HEALTHY
    assert result.status == HealthStatus.UNHEALTHY and result.exit_code() == 2

    # Nobody collected yesterday; more than 50 h since the last collection; the API-wide breaker open.
    delete_day(platform, "globex", YESTERDAY)
    delete_day(platform, "acme", YESTERDAY)
    set_fetched_at(platform, "globex", NOW - timedelta(hours=51))
    set_breaker(platform, "meta_api", "half-open")
    result = report(platform)
    assert result.check("yesterday_collection").status == HealthStatus.UNHEALTHY
    assert result.check("hours_since_collection").status == HealthStatus.UNHEALTHY
    assert result.check("hours_since_collection").details["per_client"]["acme"]["status"] == "healthy"
    assert result.check("circuit_breakers").status == HealthStatus.UNHEALTHY
    assert result.check("circuit_breakers").score == 0.0


def test_failed_checks_by_severity_warn_healthy_blocking_unhealthy(collected):
    probe_key = dg.AssetKey(["platform", "probe"])

    @dg.asset(
        key=probe_key,
        check_specs=[
            dg.AssetCheckSpec("hint", asset=probe_key),
            dg.AssetCheckSpec("gate", asset=probe_key, blocking=True),
        ],
    )
    def probe():
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="hint", passed=False, severity=dg.AssetCheckSeverity.WARN)
        yield dg.AssetCheckResult(check_name="gate", passed=False)

    dg.materialize([probe], instance=collected.instance, raise_on_error=False)
    hint, gate = dg.AssetCheckKey(probe_key, "hint"), dg.AssetCheckKey(probe_key, "gate")

    warned = report(collected, check_keys=(CONTRACT, hint)).check("asset_checks")
    assert warned.status == HealthStatus.HEALTHY
    assert (warned.metrics["failed_checks"], warned.score) == (1, 50.0)
    assert warned.summary == "1/2 failed: platform/probe:hint (WARN)"

    blocked = report(collected, check_keys=(CONTRACT, gate)).check("asset_checks")
    assert blocked.status == HealthStatus.UNHEALTHY
    assert blocked.details["failed"][0]["check"] == "platform/probe:gate"
    assert blocked.details["failed"][0]["blocking"] is True


def test_a_check_planned_in_a_failed_run_is_judged_by_its_previous_result(collected):
    # A collection that fails on the API before validating leaves the contract check planned without a result.
    failed = collected.collect(
        "acme", YESTERDAY, YESTERDAY, simulator_faults_json='{"fail_page": 1, "fail_page_error": 190}'
    )
    assert not failed.success
    check = report(collected).check("asset_checks")
    assert check.status == HealthStatus.HEALTHY
    assert check.details["passed"] == [CONTRACT.to_user_string()]
    assert check.details["latest_without_result"][0]["run_id"] == failed.run_id


def test_without_an_instance_only_warehouse_checks_are_reported(collected):
    result = report(collected, instance=False)
    assert "asset_checks" not in {c.name for c in result.checks}
    assert "in_progress" not in {c.name for c in result.checks}
    assert "daemon" not in {c.name for c in result.checks}
    assert result.status == HealthStatus.HEALTHY


def test_inactive_clients_are_not_judged(platform):
    beat(platform.instance, NOW)
    record_token_check(platform.instance, NOW)
    assert platform.collect("acme", TODAY - timedelta(days=35), YESTERDAY).success
    set_fetched_at(platform, "acme", NOW - timedelta(hours=1))
    record_activity(platform)
    row = platform.warehouse.get_client("globex")
    platform.warehouse.upsert_clients(
        [
            {k: row[k] for k in ("client_id", "name", "ad_account_id", "currency", "timezone", "settings")}
            | {"active": False}
        ]
    )
    result = report(platform)
    assert result.metrics()["clients_active"] == 1
    assert result.status == HealthStatus.HEALTHY


def test_scoring_is_a_weighted_mean_and_status_the_worst_check():
    checks = [
        HealthCheck("a", HealthStatus.HEALTHY, 100.0, "", weight=3.0),
        HealthCheck("b", HealthStatus.UNHEALTHY, 0.0, "", weight=1.0),
        HealthCheck("info", HealthStatus.HEALTHY, 0.0, "", weight=0.0),
    ]
    result = HealthReport.from_checks(checks, generated_at=NOW)
    assert result.score == 75.0
    assert result.status == HealthStatus.UNHEALTHY


def test_a_check_that_raises_is_reported_unhealthy_without_hiding_the_others(collected):
    with collected.warehouse.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE circuit_breakers"))
    result = report(collected)
    assert result.check("circuit_breakers").status == HealthStatus.HEALTHY  # no table: no breakers
    with collected.warehouse.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE circuit_breakers (name TEXT)"))
    result = report(collected)
    broken = result.check("circuit_breakers")
    assert broken.status == HealthStatus.UNHEALTHY and broken.summary.startswith("could not be evaluated: ")
    assert result.check("missing_days").status == HealthStatus.HEALTHY


def test_json_shape_and_markdown(collected):
    set_breaker(collected, "meta_api:act_100000000001", "open")
    result = report(collected)
    data = json.loads(result.to_json())
    assert set(data) == {"status", "score", "generated_at", "metrics", "checks"}
    assert data["status"] == "degraded"
    assert datetime.fromisoformat(data["generated_at"]) == NOW
    assert {"name", "status", "score", "weight", "summary", "metrics", "details"} == set(data["checks"][0])
    breakers = next(c for c in data["checks"] if c["name"] == "circuit_breakers")
    assert breakers["details"]["breakers"][0]["opened_at"] == (NOW - timedelta(minutes=5)).isoformat()
    markdown = result.to_markdown()
    assert "| check | status | summary |" in markdown
    assert "| circuit_breakers | degraded | meta_api:act_100000000001 open since" in markdown
    assert result.to_text().startswith("KPI platform health: DEGRADED")


# --- the daemon -------------------------------------------------------------------------------------------------


def test_daemon_with_fresh_heartbeats_is_healthy(platform):
    required = platform.instance.get_required_daemon_types()
    assert "QUEUED_RUN_COORDINATOR" in required and "SCHEDULER" in required
    # Dagster's own tolerance: a heartbeat half an hour old still counts as alive.
    beat(platform.instance, NOW - timedelta(minutes=30))
    check = daemon_check(platform, NOW)
    assert check.status == HealthStatus.HEALTHY and check.score == 100.0
    assert check.metrics == {
        "daemons_healthy": len(required),
        "daemons_required": len(required),
        "run_queue_length": 0,
        "run_queue_oldest_age_seconds": 0.0,
    }
    assert check.summary == f"{len(required)}/{len(required)} daemons alive; run queue empty"
    assert check.details["daemons"]["SCHEDULER"]["heartbeat_age_seconds"] == 1800.0


def test_a_stale_or_missing_required_daemon_is_unhealthy(platform):
    required = platform.instance.get_required_daemon_types()
    others = [t for t in required if t not in ("SCHEDULER", "SENSOR")]
    beat(platform.instance, NOW - timedelta(minutes=1), others)
    beat(platform.instance, NOW - timedelta(seconds=DAEMON_HEARTBEAT_UNHEALTHY_S + 90), ["SCHEDULER"])
    check = daemon_check(platform, NOW)
    assert check.status == HealthStatus.UNHEALTHY
    assert check.details["daemons_down"] == [t for t in required if t in ("SCHEDULER", "SENSOR")]
    assert check.details["daemons"]["SCHEDULER"]["state"] == "stale"
    assert check.details["daemons"]["SENSOR"]["state"] == "missing"
    assert "SCHEDULER 32 min ago" in check.summary and "SENSOR never" in check.summary
    assert check.metrics["daemons_healthy"] == len(others)
    assert check.metrics["daemons_required"] == len(required)
    assert check.score == round(100.0 * len(others) / len(required), 1)


def test_queued_runs_without_a_live_daemon_are_unhealthy(platform):
    first = enqueue(platform.instance)
    enqueue(platform.instance)
    now = datetime.now(UTC) + timedelta(minutes=45)
    check = daemon_check(platform, now)
    assert check.status == HealthStatus.UNHEALTHY and check.score == 0.0
    assert check.metrics["run_queue_length"] == 2
    assert 45 * 60 - 5 <= check.metrics["run_queue_oldest_age_seconds"] <= 45 * 60 + 60
    assert check.summary.startswith("2 runs queued, oldest 45 min, and no live daemon starts them")
    assert check.details["oldest_queued_run"]["run_id"] == first.run_id

    # Every other daemon alive does not help: the run-queue daemon is the one that starts queued runs.
    others = [t for t in platform.instance.get_required_daemon_types() if t != "QUEUED_RUN_COORDINATOR"]
    beat(platform.instance, now, others)
    assert daemon_check(platform, now).status == HealthStatus.UNHEALTHY


def test_queued_runs_are_stuck_once_the_run_queue_daemon_missed_five_minutes_of_beats(platform):
    """The run-queue daemon is judged by RUN_QUEUE_HEARTBEAT_STALE_S when runs wait, not by Dagster's 30 minutes:
    a stopped daemon with work queued is reported within minutes."""
    from kpi_platform.operations.health.report import RUN_QUEUE_HEARTBEAT_STALE_S

    enqueue(platform.instance)
    now = datetime.now(UTC) + timedelta(minutes=1)
    beat(platform.instance, now - timedelta(seconds=RUN_QUEUE_HEARTBEAT_STALE_S - 30))
    assert daemon_check(platform, now).status == HealthStatus.HEALTHY
    beat(platform.instance, now - timedelta(seconds=RUN_QUEUE_HEARTBEAT_STALE_S + 30))
    stuck = daemon_check(platform, now)
    assert stuck.status == HealthStatus.UNHEALTHY and "no live daemon starts them" in stuck.summary


def test_a_queue_with_a_live_daemon_is_degraded_only_when_old(platform):
    enqueue(platform.instance)
    soon = datetime.now(UTC) + timedelta(minutes=1)
    beat(platform.instance, soon)
    young = daemon_check(platform, soon)
    assert young.status == HealthStatus.HEALTHY
    assert young.metrics["run_queue_length"] == 1

    later = soon + timedelta(minutes=45)
    beat(platform.instance, later)
    old = daemon_check(platform, later)
    assert old.status == HealthStatus.DEGRADED and old.score == 50.0
    assert old.summary.endswith("1 run queued, oldest 46 min (over 30 min)")


def test_a_daemon_that_never_ran_is_degraded_as_not_running(platform):
    # Right after the quickstart, or on a test instance: no heartbeat ever, nothing queued.
    check = daemon_check(platform, NOW)
    assert check.status == HealthStatus.DEGRADED and check.score == 50.0
    assert check.summary.startswith("daemon not running (no heartbeat ever recorded)")
    assert check.metrics["daemons_healthy"] == 0
    assert {d["state"] for d in check.details["daemons"].values()} == {"missing"}

    # An ephemeral instance cannot run a daemon and requires none.
    ephemeral = daemon_check(platform, NOW, instance=dg.DagsterInstance.ephemeral())
    assert ephemeral.status == HealthStatus.HEALTHY
    assert ephemeral.summary == "no daemon required by this instance; run queue empty"


# --- the CLI ------------------------------------------------------------------------------------------------------


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["health", *args])
    return code, capsys.readouterr().out


def test_cli_exit_codes_follow_the_status(platform, tmp_path, monkeypatch, capsys):
    # make_platform pointed KPI_DATA_DIR, KPI_WAREHOUSE_URL and KPI_CLIENTS_FILE at tmp_path.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    for client_id in ("acme", "globex"):
        assert platform.collect(client_id, TODAY - timedelta(days=35), YESTERDAY).success
    record_activity(platform)

    # The CLI's own instance has never seen a daemon.
    code, out = run_cli(capsys, "--json")
    data = json.loads(out)
    daemon = next(c for c in data["checks"] if c["name"] == "daemon")
    assert (code, data["status"], daemon["status"]) == (1, "degraded", "degraded")
    assert daemon["summary"].startswith("daemon not running")
    assert daemon["details"]["daemons"]["SCHEDULER"] == {
        "state": "missing",
        "last_heartbeat_at": None,
        "heartbeat_age_seconds": None,
        "recent_errors": 0,
    }
    assert {"daemons_healthy", "daemons_required", "run_queue_length", "run_queue_oldest_age_seconds"} <= set(
        data["metrics"]
    )

    with dg.DagsterInstance.get() as instance:
        beat(instance, datetime.now(UTC))
        record_token_check(instance, datetime.now(UTC))
    code, out = run_cli(capsys, "--json")
    data = json.loads(out)
    assert (code, data["status"]) == (0, "healthy")
    daemon = next(c for c in data["checks"] if c["name"] == "daemon")
    assert daemon["metrics"]["daemons_healthy"] == daemon["metrics"]["daemons_required"] > 0
    assert data["metrics"]["clients_active"] == 2
    # The CLI judges every asset check of the code location; its own instance has evaluated none yet.
    assert data["metrics"]["checks_never_evaluated"] == len(defs.resolve_asset_graph().asset_check_keys) > 0

    set_breaker(platform, "meta_api:act_100000000001", "open")
    code, out = run_cli(capsys)
    assert code == 1
    assert out.startswith("warehouse: sqlite:///")
    assert "KPI platform health: DEGRADED" in out

    set_breaker(platform, "meta_api", "open")
    code, out = run_cli(capsys, "--json")
    assert (code, json.loads(out)["status"]) == (2, "unhealthy")


def test_cli_reports_a_missing_warehouse_as_unhealthy(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KPI_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'nothing.sqlite'}")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    code, out = run_cli(capsys, "--json")
    data = json.loads(out)
    assert code == 2
    assert data["checks"][0]["name"] == "warehouse"
    assert "no warehouse at" in data["checks"][0]["summary"]


def test_cli_never_prints_the_warehouse_password(platform, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KPI_WAREHOUSE_URL", "postgresql://kpi:s3cret-pw@127.0.0.1:1/kpi")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    code, out = run_cli(capsys)
    assert code == 2
    assert "s3cret-pw" not in out + capsys.readouterr().err


def test_each_client_is_due_by_its_own_freshness_deadline():
    """The report uses each client's `freshness_deadline_hour`, as the `fresh_per_client` check does."""
    from dataclasses import replace

    from kpi_platform.clients import Client, ClientSettings
    from kpi_platform.operations.health import HealthContext

    early = Client(id="early", name="Early", ad_account_id="act_1", currency="EUR", timezone="Europe/Warsaw")
    late = replace(early, id="late", settings=ClientSettings(freshness_deadline_hour=14))
    noon_warsaw = datetime(2026, 11, 10, 11, 0, tzinfo=UTC)  # 12:00 in Warsaw
    ctx = HealthContext(warehouse=None, instance=None, clients=[early, late], now_utc=noon_warsaw)
    assert ctx.due_day(early).isoformat() == "2026-11-09"  # past its 09:00 deadline: yesterday is due
    assert ctx.due_day(late).isoformat() == "2026-11-08"  # before 14:00: yesterday still pending
    forced = HealthContext(
        warehouse=None, instance=None, clients=[early, late], now_utc=noon_warsaw, deadline_hour=9
    )
    assert forced.due_day(late).isoformat() == "2026-11-09"


@pytest.mark.parametrize("platform", ["sqlite", "postgresql"], indirect=True)
def test_split_days_read_only_each_clients_window_with_the_warehouse_types(collected):
    """The split-day check's narrow read: the rows of each client's own window, in client and day order, with the
    columns the rule reads typed as `read_client_days` types them."""
    from kpi_platform.operations.health.warehouse_checks import read_split_day_rows

    warehouse = collected.warehouse
    windows = {
        "acme": (TODAY - timedelta(days=30), TODAY - timedelta(days=2)),
        "globex": (TODAY - timedelta(days=10), YESTERDAY),
    }
    read = read_split_day_rows(warehouse, windows)
    every = warehouse.read_client_days(start=TODAY - timedelta(days=40), end=TODAY)
    inside = [
        windows[cid][0] <= day <= windows[cid][1]
        for cid, day in zip(every["client_id"], every["kpi_date"], strict=True)
    ]
    expected = every[inside].reset_index(drop=True)[list(read.columns)]
    assert list(read.columns[:3]) == ["client_id", "kpi_date", "spend"]
    assert len(read) == 29 + 10
    pd.testing.assert_frame_equal(read, expected)
    assert read_split_day_rows(warehouse, {}).empty
