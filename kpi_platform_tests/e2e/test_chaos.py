"""Chaos on the production profile: code server, webserver and daemon as real processes on PostgreSQL
(deploy/dagster.yaml, deploy/workspace.yaml), the Meta simulator over HTTP, a UI backfill of 5 clients × 60 days
launched through GraphQL, and while it runs:

(a) one run worker is killed with SIGKILL (by the pid Dagster recorded for its run);
(b) the warehouse sessions of another run's worker are ended with pg_terminate_backend while it writes;
(c) a UI backfill overlapping two of the same clients is launched, and one client's run from each backfill
    reach its write at the same time;
(d) the daemon is stopped (SIGTERM to its process group) while those two runs are in flight,
    `kpi-platform health --alert` alerts that it is down, the daemon is started again and the next watchdog run
    resolves that alert.

How the faults are aimed. Before the daemon starts, the test takes every client's warehouse write lock in a
session of its own (as a slow writer would), so the first two runs reach their write and wait there, inside their
step and inside their write transaction: a known moment, whatever the machine's speed. (a) kills the first run's
worker at that moment. (b) finds the second run's sessions without guessing: the session waiting for that client's
lock is the run's writer, and every session of the warehouse database whose TCP client port is a socket of the
run's worker process is that worker's (its writer among them, checked); exactly those are terminated, filtered by
the warehouse database's name. The warehouse engine sets no application_name, and one per process would not
single out a run anyway. (c) lets go of every client but the first overlapping one: the runs of the others go
ahead, and that client's main run and overlapping run both wait for its lock (two sessions waiting, one from each
run's worker, checked), so they provably overlap in time; it is released while the daemon is down.

What is expected, and why exactly that:

* (a) The code server fails the killed run at once ("terminated by signal 9"); run_retries re-run it (a worker
  death is not a step failure), and the backfill waits for that retry, which stores the client's days. Dagster
  tags the killed run `dagster/will_retry=true`, so `collection_failure_alert_sensor` sends nothing for it (its
  retry would alert if it failed too). The gap healer never requests those days: they stay reserved by the
  backfill until its retry has finished.
* (b) The write fails with OperationalError: a step failure, which run_retries do not re-run
  (`retry_on_asset_or_op_failure: false`) and the collection path does not retry either. The run fails, so
  `collection_failure_alert_sensor` raises `collection_failed:<client>` (naming the OperationalError) whatever
  happens next; once the backfill is over and the (shortened) cool-down has passed, the gap healer requests the
  client's 60 days as one run, it succeeds, and `alert_sync_sensor` resolves the alert at its next tick (every
  2 min, as in production).
* (c) Both overlapping runs succeed, one after the other, without the daemon: the warehouse's per-client lock
  serialises the writers. The other client's overlapping run has run before them or waits in the queue until
  the daemon is back (whichever the backfill created first).
* (d) The daemon check calls a daemon down when its heartbeats are older than 30.5 min (Dagster's own liveness
  rule), or, while runs are queued, when the run-queue daemon's is older than 5 min; the queue may be empty at that
  moment, so the test stands in for the half hour by dating the stopped daemon's last heartbeats back by it in its
  own Dagster database. The watchdog then raises `health:daemon` (CRITICAL) and nothing else: the
  clients' recent days and the platform activity snapshots are stored before the stack starts (as the daily
  schedule and the snapshot job would have), so no other health check depends on how far the backfill has got.
  The restarted daemon writes fresh heartbeats and the next watchdog run sends "resolved".

Only the failure sensors, the alert sync and the gap healer run with the backfill: the schedules, the warehouse
checks after collection and the monthly automation are stopped (as the UI's toggles do), so every run and alert
of the instance is one this test accounts for.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from kpi_platform import settings
from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.cli.supervisor import (
    BACKFILL_DONE,
    SUPERVISOR_MARKER_ENV,
    LocalStack,
    NotReadyError,
    dagster_pg_env,
    marked_processes,
    prepare_dagster_home,
)
from kpi_platform.clients import Client, load_clients
from kpi_platform.collect import collect_range
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.resources import MetaApiResource
from kpi_platform.defs.run_history import failure_reason, will_be_retried, worker_death
from kpi_platform.keys import ClientRange
from kpi_platform.operations.health.report import DAEMON_HEARTBEAT_UNHEALTHY_S
from kpi_platform.operations.plans import healing_window
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.activity import snapshot_days, store_snapshots
from kpi_platform_tests.support.chaos import (
    CHAOS_DAYS,
    ClientLocks,
    Deadline,
    backends_of_process,
    latest_tick_timestamp,
    lock_waiters,
    run_watchdog,
    set_sensor_running,
    slack_headlines,
    stop_schedules,
    stop_supervised,
    terminate_backends,
    worker_pid,
)
from kpi_platform_tests.support.heartbeats import beat
from kpi_platform_tests.support.postgres import create_temp_database
from kpi_platform_tests.support.process_logs import process_tails
from kpi_platform_tests.support.sinks import WebhookSink, webhook_sink

#: The test's own overall budget (every wait draws on it); pytest-timeout is the backstop that still lets the
#: clean-up run.
DEADLINE_S = 360.0
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(DEADLINE_S + 120)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFS_MODULE = "kpi_platform_tests.support.chaos_defs"
CLIENT_IDS = ("acme", "globex", "hooli", "initech", "umbrella")
CURRENCIES = ("EUR", "PLN", "USD", "EUR", "PLN")
TIMEZONE = "Europe/Warsaw"
#: Days per client stored before the stack starts (the daily schedule's recent work), and activity days.
SEEDED_DAYS = 7
ACTIVITY_DAYS = 31
#: Days of the overlapping backfill, the last of the two clients' backfilled ranges.
OVERLAP_DAYS = 20
#: Sensors that would start runs or raise alerts of their own, unrelated to the faults (the warehouse-wide checks
#: after each collection, the monthly summaries once a month is complete).
SENSORS_OFF = ("checks_after_collection_sensor", "monthly_summary_sensor")
FAILURE_SENSOR = "collection_failure_alert_sensor"
SLACK_PATH = "/slack"
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
BACKFILL_ID_TAG = "dagster/backfill"
IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def clients_yaml() -> str:
    # The daily schedule must not collect during the test: every client's collection hour is far from now.
    hour = (datetime.now(ZoneInfo(TIMEZONE)).hour + 12) % 24
    entries = [
        {
            "id": client_id,
            "name": client_id.title(),
            "ad_account_id": f"act_{100000000001 + i}",
            "currency": CURRENCIES[i],
            "timezone": TIMEZONE,
            "settings": {"collection_hour": hour},
        }
        for i, client_id in enumerate(CLIENT_IDS)
    ]
    return yaml.safe_dump({"clients": entries}, sort_keys=False)


@dataclass
class Deployment:
    """A temporary production deployment: its environment (alerts to a local Slack sink), databases and an
    instance for assertions."""

    env: dict[str, str]
    home: Path
    log_dir: Path
    warehouse: Warehouse
    warehouse_db: str
    sink: WebhookSink

    @cached_property
    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture
def deployment(tmp_path, monkeypatch, pg_admin_url) -> Iterator[Deployment]:
    dagster_url, drop_dagster = create_temp_database("kpi_chaos_dagster")
    try:
        warehouse_url, drop_warehouse = create_temp_database("kpi_chaos_warehouse")
    except BaseException:
        drop_dagster()
        raise
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(clients_yaml(), encoding="utf-8")
    home = prepare_dagster_home(tmp_path / "dagster_home")
    warehouse = Warehouse(warehouse_url)
    deployment: Deployment | None = None
    try:
        with webhook_sink() as sink:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("KPI_ALERT_")},
                **dagster_pg_env(dagster_url),
                "DAGSTER_HOME": str(home),
                settings.ENV_WAREHOUSE_URL: warehouse_url,
                settings.ENV_CLIENTS_FILE: str(clients_file),
                settings.ENV_DATA_DIR: str(tmp_path / "data"),
                settings.ENV_ALERT_SLACK_WEBHOOK: f"{sink.url}{SLACK_PATH}",
                # Every process of the test carries it, so whatever it started can be found (and nothing else).
                SUPERVISOR_MARKER_ENV: f"e2e-chaos-{os.getpid()}-{time.time_ns()}",
            }
            for name in (
                settings.ENV_SIMULATOR_FAULTS,
                settings.ENV_META_URL,
                settings.ENV_TOKEN,
                settings.ENV_HEARTBEAT_URL,
                settings.ENV_MISSING_CLIENT_ESCALATION_HOURS,
            ):
                env.pop(name, None)
            for name, value in dagster_pg_env(dagster_url).items():
                monkeypatch.setenv(name, value)
            database = sa.make_url(warehouse_url).database
            assert database
            deployment = Deployment(env, home, tmp_path / "logs", warehouse, database, sink)
            yield deployment
    finally:
        if deployment is not None and "instance" in deployment.__dict__:
            deployment.instance.dispose()
        warehouse.dispose()
        drop_warehouse()
        drop_dagster()


def seed_recent_days(warehouse: Warehouse, clients: list[Client], ranges: dict[str, ClientRange]) -> None:
    """The last `SEEDED_DAYS` of each client's range collected straight into the warehouse (the daily schedule's
    recent work, from the same simulated data), and the platform activity snapshots of the last `ACTIVITY_DAYS`:
    the watchdog's data checks are then healthy however far the backfill has got."""
    meta = MetaApiResource(api_url=settings.SIMULATOR_BASE_URL).get_client(
        accounts={c.ad_account_id: c.currency for c in clients}
    )
    try:
        for client in clients:
            rng = ranges[client.id]
            collect_range(
                client=client,
                start=rng.end - timedelta(days=SEEDED_DAYS - 1),
                end=rng.end,
                meta=meta,
                warehouse=warehouse,
                run_id="stored-before-the-backfill",
            )
    finally:
        meta.close()
    today = datetime.now(UTC).date()
    store_snapshots(
        warehouse,
        snapshot_days(today - timedelta(days=ACTIVITY_DAYS), today - timedelta(days=1)),
        collected_at=datetime.now(UTC) - timedelta(hours=1),
    )


def runs(instance: dg.DagsterInstance, **tags: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags=tags) if tags else None))


def started_run_of(instance: dg.DagsterInstance, backfill_id: str, client_id: str) -> dg.DagsterRun:
    """The backfill's run of `client_id` in progress (it tagged itself with its client when its step started)."""
    found = [
        r
        for r in instance.get_runs(
            dg.RunsFilter(tags={BACKFILL_ID_TAG: backfill_id}, statuses=[dg.DagsterRunStatus.STARTED])
        )
        if r.tags.get(settings.CLIENT_TAG) == client_id
    ]
    assert len(found) == 1, (client_id, [(r.run_id, r.tags) for r in found])
    return found[0]


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def duplicate_keys(warehouse: Warehouse) -> dict[str, list[tuple]]:
    """Primary keys stored more than once, per table (GROUP BY the key HAVING count(*) > 1)."""
    found = {}
    with warehouse.engine.connect() as conn:
        for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
            key = [c for c in table.primary_key.columns]
            rows = conn.execute(
                sa.select(*key, sa.func.count()).group_by(*key).having(sa.func.count() > 1)
            ).all()
            found[table.name] = [tuple(r) for r in rows]
    return found


def alert_rows(warehouse: Warehouse) -> list[sa.Row]:
    with warehouse.engine.connect() as conn:
        return list(conn.execute(sa.select(schema.alert_state).order_by(schema.alert_state.c.key)).all())


def test_backfill_survives_a_killed_worker_lost_sessions_an_overlap_and_a_stopped_daemon(
    deployment: Deployment,
):
    deadline = Deadline(DEADLINE_S)
    instance, warehouse, sink = deployment.instance, deployment.warehouse, deployment.sink
    marker = deployment.env[SUPERVISOR_MARKER_ENV]
    timings: dict[str, float] = {}

    def mark(name: str) -> float:
        timings[name] = deadline.elapsed()
        return timings[name]

    warehouse.migrate()
    clients = load_clients(Path(deployment.env[settings.ENV_CLIENTS_FILE]))
    sync_clients(instance=instance, clients=clients, warehouse=warehouse)
    now = datetime.now(UTC)
    ranges = {c.id: ClientRange(c.id, *healing_window(c, now, CHAOS_DAYS)) for c in clients}
    assert {rng.days for rng in ranges.values()} == {CHAOS_DAYS}
    keys = [key for rng in ranges.values() for key in rng.keys()]
    seed_recent_days(warehouse, clients, ranges)
    mark("seeded")

    stack = LocalStack(
        env=deployment.env,
        with_simulator=True,
        module=DEFS_MODULE,
        log_dir=deployment.log_dir,
        cwd=PROJECT_ROOT,
    )
    sup = stack.supervisor
    assert sup.marker == marker
    # Every client's writes wait for the test until it lets go of that client (see the module docstring).
    locks = ClientLocks(warehouse.engine.url, CLIENT_IDS)
    try:
        stack.start_servers(timeout_s=min(180.0, deadline.left()))
        for name in SENSORS_OFF:
            set_sensor_running(stack.webserver, name, running=False)
        stop_schedules(stack.webserver)
        mark("servers up")

        main_backfill = stack.webserver.launch_asset_backfill(
            asset_key=CLIENT_DAILY_KPIS.path, partition_keys=keys
        )
        stack.start_daemon(timeout_s=min(120.0, deadline.left()))
        mark("daemon up")
        # A run failure sensor only reports failures after its first tick: let it take it before anything fails.
        deadline.wait(
            lambda: latest_tick_timestamp(stack.webserver, FAILURE_SENSOR) > 0,
            what=f"the first tick of {FAILURE_SENSOR}",
            timeout_s=90,
            supervisor=sup,
        )
        waiting: dict[str, list[int]] = {}

        def waiting_at_their_write(n: int, client_id: str | None = None) -> Callable[[], bool]:
            def check() -> bool:
                waiting.clear()
                waiting.update(lock_waiters(warehouse.engine, deployment.warehouse_db, CLIENT_IDS))
                if client_id is not None:
                    return len(waiting.get(client_id, [])) == n
                return sum(len(p) for p in waiting.values()) == n

            return check

        deadline.wait(
            waiting_at_their_write(2), what="two runs waiting at their write", timeout_s=120, supervisor=sup
        )
        mark("two runs at their write")
        killed_client, cut_client = sorted(waiting)
        killed_run = started_run_of(instance, main_backfill, killed_client)
        cut_run = started_run_of(instance, main_backfill, cut_client)

        # (a) SIGKILL the first run's worker, by the pid Dagster recorded; only a process of this test.
        killed_pid = worker_pid(instance, killed_run.run_id)
        assert killed_pid in marked_processes(marker), killed_pid
        os.kill(killed_pid, signal.SIGKILL)
        mark("(a) worker killed")

        # (b) End the other run's warehouse sessions: those whose client is its worker, its waiting writer included.
        cut_pid = worker_pid(instance, cut_run.run_id)
        assert cut_pid in marked_processes(marker), cut_pid
        sessions = backends_of_process(warehouse.engine, deployment.warehouse_db, cut_pid)
        (writer,) = waiting[cut_client]
        assert writer in sessions, (writer, sessions)
        terminated = terminate_backends(warehouse.engine, deployment.warehouse_db, sessions)
        assert terminated == sessions
        mark("(b) sessions terminated")

        deadline.wait(
            lambda: (
                status(instance, killed_run.run_id) == dg.DagsterRunStatus.FAILURE
                and status(instance, cut_run.run_id) == dg.DagsterRunStatus.FAILURE
            ),
            what="both runs to be marked failed",
            timeout_s=60,
            interval_s=0.2,
            supervisor=sup,
        )
        mark("both runs failed")
        assert worker_death(instance, killed_run.run_id) == "was terminated by signal 9 (SIGKILL)"
        assert will_be_retried(instance.get_run_by_id(killed_run.run_id))
        assert not will_be_retried(instance.get_run_by_id(cut_run.run_id))
        non_transient, reason = failure_reason(instance, cut_run.run_id)
        # libpq reports the terminated session as "terminating connection due to administrator command" or, when
        # the server's notice is not read first, as "server closed the connection unexpectedly".
        assert non_transient and reason.startswith("psycopg2.OperationalError"), reason

        # (c) A UI backfill of the latest days of two other clients. The first of them stays locked: its main
        # run and its overlapping run both reach their write and wait for its lock at the same time (two run
        # slots, both its); everything else goes ahead, and the second client's overlapping run stays queued.
        overlap_clients = sorted(set(CLIENT_IDS) - {killed_client, cut_client})[:2]
        held_client = overlap_clients[0]
        overlap_keys = [k for c in overlap_clients for k in ranges[c].keys()[-OVERLAP_DAYS:]]
        overlap_backfill = stack.webserver.launch_asset_backfill(
            asset_key=CLIENT_DAILY_KPIS.path, partition_keys=overlap_keys
        )
        mark("(c) overlapping backfill launched")
        for client_id in locks.held:
            if client_id != held_client:
                locks.release(client_id)
        deadline.wait(
            lambda: (
                waiting_at_their_write(2, held_client)()
                and bool(runs(instance, **{PARENT_RUN_ID_TAG: killed_run.run_id}))
            ),
            what=f"both backfills' runs of {held_client} waiting at their write, and the killed run's retry",
            timeout_s=120,
            supervisor=sup,
        )
        mark("(c) both runs of one client at their write")
        overlapping = {
            started_run_of(instance, b, held_client).run_id for b in (main_backfill, overlap_backfill)
        }
        overlap_sessions = sorted(
            pid
            for run_id in overlapping
            for pid in backends_of_process(
                warehouse.engine, deployment.warehouse_db, worker_pid(instance, run_id)
            )
        )
        assert set(waiting[held_client]) <= set(overlap_sessions), (waiting, overlap_sessions)

        # (d) Stop the daemon; the two runs in flight go on under the code server, queued ones wait.
        stopped_daemon = stop_supervised(sup, "daemon")
        daemon_down_at = mark("(d) daemon stopped")
        assert not stopped_daemon.forced and stopped_daemon.leftovers == (), stopped_daemon
        in_flight = [r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=IN_PROGRESS[2:]))]
        assert sorted(in_flight) == sorted(overlapping)
        queued = [r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED]))]
        sent_before = len(sink.bodies(SLACK_PATH))
        # Seconds after the stop its heartbeats are fresh (under RUN_QUEUE_HEARTBEAT_STALE_S), so the watchdog
        # cannot tell a stopped daemon from a running one yet: no alert.
        early = run_watchdog(deployment.env, cwd=PROJECT_ROOT, timeout_s=min(120.0, deadline.left()))
        assert early.returncode in (0, 1), early.stdout + early.stderr
        assert "alerts (health): 0 open, 0 notified, 0 resolved" in early.stderr, early.stderr
        assert len(sink.bodies(SLACK_PATH)) == sent_before
        # 30.5 minutes pass: the stopped daemon's last heartbeats are dated back by that much.
        beat(instance, datetime.now(UTC) - timedelta(seconds=DAEMON_HEARTBEAT_UNHEALTHY_S + 60))
        first = run_watchdog(deployment.env, cwd=PROJECT_ROOT, timeout_s=min(120.0, deadline.left()))
        mark("watchdog (daemon down)")
        assert first.returncode == 2, first.stdout + first.stderr
        assert "alerts (health): 1 open, 1 notified, 0 resolved (health:daemon)" in first.stderr, first.stderr
        assert "alerts (missing clients): 0 open, 0 notified, 0 resolved" in first.stderr, first.stderr
        # With the daemon down no sensor sends anything: the watchdog's message is the only new one.
        assert slack_headlines(sink.bodies(SLACK_PATH)[sent_before:]) == [
            "*[CRITICAL] Health check daemon is unhealthy*"
        ]

        # Without the daemon: the two overlapping writers of one client go ahead one after the other and
        # finish; nothing queued starts.
        locks.release(held_client)
        deadline.wait(
            lambda: all(instance.get_run_by_id(run_id).is_finished for run_id in in_flight),
            what="the runs in flight to finish without the daemon",
            timeout_s=90,
            supervisor=sup,
        )
        mark("(c) overlapping runs finished")
        assert [status(instance, run_id) for run_id in in_flight] == [dg.DagsterRunStatus.SUCCESS] * 2
        assert all(status(instance, run_id) == dg.DagsterRunStatus.QUEUED for run_id in queued)

        restarted_at = time.time()
        stack.start_daemon(timeout_s=min(120.0, deadline.left()))
        required = list(instance.get_required_daemon_types())
        deadline.wait(
            lambda: all(
                (hb := instance.get_daemon_heartbeats().get(t)) is not None and hb.timestamp > restarted_at
                for t in required
            ),
            what="a fresh heartbeat from every required daemon",
            timeout_s=90,
            supervisor=sup,
        )
        daemon_back_at = mark("(d) daemon restarted")
        sent_before = len(sink.bodies(SLACK_PATH))
        second = run_watchdog(deployment.env, cwd=PROJECT_ROOT, timeout_s=min(120.0, deadline.left()))
        mark("watchdog (daemon back)")
        assert second.returncode in (0, 1), second.stdout + second.stderr
        assert "alerts (health): 0 open, 0 notified, 1 resolved" in second.stderr, second.stderr
        # The sensors run again meanwhile and may send their own: the resolution is among the new messages.
        assert "*[RESOLVED] Health check daemon is unhealthy*" in slack_headlines(
            sink.bodies(SLACK_PATH)[sent_before:]
        )

        # Convergence: the backfills end, the healer and the retry fill every day, the alerts resolve.
        deadline.wait(
            lambda: (
                stack.webserver.backfill(main_backfill)["status"] in BACKFILL_DONE
                and stack.webserver.backfill(overlap_backfill)["status"] in BACKFILL_DONE
            ),
            what="both backfills to end",
            timeout_s=180,
            supervisor=sup,
        )
        mark("backfills ended")
        deadline.wait(
            lambda: instance.get_materialized_partitions(CLIENT_DAILY_KPIS) >= set(keys),
            what="every client-day to be materialized",
            timeout_s=180,
            supervisor=sup,
        )
        mark("every partition materialized")
        deadline.wait(
            lambda: instance.get_runs_count(dg.RunsFilter(statuses=IN_PROGRESS)) == 0,
            what="no run in progress",
            timeout_s=60,
            supervisor=sup,
        )
        # The watchdog once more, as its 5-minute cron would: the success-rate alerts it raised while the cut
        # client's repair had failed (backfill/healing success below 100 %) resolve now that the healer stored it.
        third = run_watchdog(deployment.env, cwd=PROJECT_ROOT, timeout_s=min(120.0, deadline.left()))
        mark("watchdog (converged)")
        assert third.returncode in (0, 1), third.stdout + third.stderr

        # Exactly these: the failed write, and the daemon the watchdog saw down (not the killed run Dagster re-ran),
        # plus any success rate the watchdog saw below target meanwhile; every one resolved.
        expected_alerts = {f"collection_failed:{cut_client}", "health:daemon"}

        def raised_as_expected() -> bool:
            keys = {r.key for r in alert_rows(warehouse)}
            return expected_alerts <= keys and all(
                k.startswith("success_rate:") for k in keys - expected_alerts
            )

        try:
            deadline.wait(
                lambda: (
                    raised_as_expected() and all(r.resolved_at is not None for r in alert_rows(warehouse))
                ),
                what=f"the alerts {sorted(expected_alerts)} raised and resolved",
                timeout_s=180,
                supervisor=sup,
            )
        except NotReadyError as exc:
            rows = [
                (r.key, r.severity, "resolved" if r.resolved_at else "open") for r in alert_rows(warehouse)
            ]
            raise AssertionError(f"{exc}; the alerts are {rows}") from exc
        # The failure sensor has looked at every failure (the killed run's included) since the last run ended.
        last_end = max(r.end_time or 0.0 for r in instance.get_run_records())
        deadline.wait(
            lambda: latest_tick_timestamp(stack.webserver, FAILURE_SENSOR) > last_end,
            what=f"a tick of {FAILURE_SENSOR} after the last run ended",
            timeout_s=90,
            supervisor=sup,
        )
        deadline.wait(
            lambda: len(sink.bodies(SLACK_PATH)) >= 2 * len(expected_alerts),
            what="every alert and its resolution at the Slack sink",
            timeout_s=30,
            supervisor=sup,
        )
        mark("converged")

        # --- What converged -------------------------------------------------------------------------------
        assert instance.get_materialized_partitions(CLIENT_DAILY_KPIS) == set(keys)
        assert duplicate_keys(warehouse) == {"campaign_daily_kpis": [], "client_daily_kpis": []}
        with warehouse.engine.connect() as conn:
            stored = conn.execute(sa.text("select client_id, kpi_date, run_id from client_daily_kpis")).all()
            writers = {
                row[0]
                for table in ("campaign_daily_kpis", "client_daily_kpis")
                for row in conn.execute(sa.text(f"select distinct run_id from {table}"))  # noqa: S608 - fixed
            }
        assert sorted((r[0], r[1].isoformat()) for r in stored) == sorted(
            (c, k.split("|")[1]) for c, rng in ranges.items() for k in rng.keys()
        )
        every_run = runs(instance)
        succeeded = {r.run_id for r in every_run if r.status == dg.DagsterRunStatus.SUCCESS}
        # Every stored row was written by a run that succeeded: none of the seeded rows is left.
        assert writers <= succeeded, writers - succeeded

        failed = sorted(r.run_id for r in every_run if r.status != dg.DagsterRunStatus.SUCCESS)
        assert failed == sorted([killed_run.run_id, cut_run.run_id])
        (retry,) = runs(instance, **{PARENT_RUN_ID_TAG: killed_run.run_id})
        assert retry.status == dg.DagsterRunStatus.SUCCESS
        assert ClientRange.from_tags(retry.tags) == ranges[killed_client]
        assert runs(instance, **{PARENT_RUN_ID_TAG: cut_run.run_id}) == []
        (heal,) = runs(instance, **{"kpi/reason": "heal"})
        assert heal.status == dg.DagsterRunStatus.SUCCESS
        assert ClientRange.from_tags(heal.tags) == ranges[cut_client]
        assert stack.webserver.backfill(overlap_backfill)["status"] == "COMPLETED_SUCCESS"
        # The main backfill ends failed: the run whose sessions were terminated is one of its runs (its days were
        # healed outside it); the killed run's retry belongs to it and succeeded.
        main_status = stack.webserver.backfill(main_backfill)["status"]
        assert main_status == "COMPLETED_FAILED"
        assert retry.tags[BACKFILL_ID_TAG] == main_backfill

        every_alert = alert_rows(warehouse)
        rows = [r for r in every_alert if not r.key.startswith("success_rate:")]
        assert [(r.key, r.severity) for r in rows] == sorted((key, "CRITICAL") for key in expected_alerts)
        assert all(r.notified_at is not None and r.resolved_at is not None for r in rows)
        # A rate below target is MEDIUM: recorded and resolved, under Slack's minimum severity (HIGH), never sent.
        rates = [r for r in every_alert if r.key.startswith("success_rate:")]
        assert all(
            r.severity == "MEDIUM" and r.notified_at is None and r.resolved_at is not None for r in rates
        )
        titles = {
            f"collection_failed:{cut_client}": f"Collection failed for {cut_client}",
            "health:daemon": "Health check daemon is unhealthy",
        }
        expected_messages = [
            f"*[{label}] {titles[k]}*" for k in expected_alerts for label in ("CRITICAL", "RESOLVED")
        ]
        assert Counter(slack_headlines(sink.bodies(SLACK_PATH))) == Counter(expected_messages)
        (failed_write,) = [
            str(body["text"])
            for body in sink.bodies(SLACK_PATH)
            if str(body["text"]).startswith(f"*[CRITICAL] {titles[f'collection_failed:{cut_client}']}*")
        ]
        assert "failed after retries (OperationalError): psycopg2.OperationalError" in failed_write, (
            failed_write
        )

        pool = instance.event_log_storage.get_concurrency_info(settings.META_API_POOL)
        assert pool.claimed_slots == [] and pool.pending_steps == [], pool
        overlap_runs = runs(instance, **{BACKFILL_ID_TAG: overlap_backfill})
        assert {r.tags[settings.CLIENT_TAG] for r in overlap_runs} == set(overlap_clients)
    except BaseException:
        print(process_tails(deployment.log_dir), file=sys.stderr)
        raise
    finally:
        locks.release_all()
        report = stack.stop()
    assert marked_processes(marker) == []
    assert report.stragglers == ()
    assert report.forced == (), report
    total = deadline.elapsed()
    t = {name: f"{at:.0f}s" for name, at in timings.items()}
    print(
        f"chaos {len(CLIENT_IDS)}x{CHAOS_DAYS}: injected (a) SIGKILL {killed_client} worker @{t['(a) worker killed']}, "
        f"(b) {len(terminated)} warehouse session(s) of {cut_client} terminated @{t['(b) sessions terminated']}, "
        f"(c) overlap {'+'.join(overlap_clients)} x{OVERLAP_DAYS}d @{t['(c) overlapping backfill launched']} "
        f"({held_client}'s two runs at its write together @{t['(c) both runs of one client at their write']}), "
        f"(d) daemon down @{t['(d) daemon stopped']} for {daemon_back_at - daemon_down_at:.0f}s "
        f"({len(in_flight)} runs finished without it @{t['(c) overlapping runs finished']}, "
        f"{len(queued)} stayed queued), watchdog raised health:daemon @{t['watchdog (daemon down)']}, "
        f"resolved @{t['watchdog (daemon back)']}; converged: backfills ended @{t['backfills ended']} "
        f"(main {main_status}), {len(keys)}/{len(keys)} partitions @{t['every partition materialized']} "
        f"({killed_client} by Dagster's retry, {cut_client} by the gap healer), alerts {sorted(expected_alerts)} "
        f"raised+resolved @{t['converged']}, 0 duplicate keys, 0 pool slots, 0 processes left; total {total:.0f}s"
    )
