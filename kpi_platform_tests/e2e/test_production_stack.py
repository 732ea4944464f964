"""End to end on the production profile: code server, webserver and daemon as real processes on PostgreSQL
(deploy/dagster.yaml, deploy/workspace.yaml), the Meta simulator over HTTP, a UI backfill launched through GraphQL,
gap healing under the daemon, a UI backfill overlapping a client's scheduled run, and no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
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
    Webserver,
    dagster_pg_env,
    deploy_dir,
    free_port,
    group_members,
    marked_processes,
    prepare_dagster_home,
    wait_until,
)
from kpi_platform.clients import load_clients
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS, CONTRACT_CHECK
from kpi_platform.defs.quality_checks import KPI_WAREHOUSE
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG
from kpi_platform.operations import check_catalogue
from kpi_platform.operations.plans import CollectionRequest, healing_window
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.client_lock import hold_client_lock, sessions_waiting_for_client_lock
from kpi_platform_tests.support.e2e_defs import E2E_DAYS, E2E_HEALING_INTERVAL_S
from kpi_platform_tests.support.postgres import create_temp_database
from kpi_platform_tests.support.process_logs import process_tails

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CLIENT_IDS = ("acme", "globex", "initech")
GAP_HEALING_SENSOR = "gap_healing_sensor"
TIMEZONE = "Europe/Warsaw"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def clients_yaml() -> str:
    # The daily schedule must not collect during the test: every client's collection hour is far from now.
    hour = (datetime.now(ZoneInfo(TIMEZONE)).hour + 12) % 24
    entries = [
        {
            "id": client_id,
            "name": client_id.title(),
            "ad_account_id": f"act_{100000000001 + i}",
            "currency": ("EUR", "PLN", "USD")[i],
            "timezone": TIMEZONE,
            "settings": {"collection_hour": hour},
        }
        for i, client_id in enumerate(CLIENT_IDS)
    ]
    return yaml.safe_dump({"clients": entries}, sort_keys=False)


@dataclass
class Production:
    """A temporary production deployment: the environment, its databases and an instance for assertions (opened
    on first use, so a test can find Dagster's database still empty)."""

    env: dict[str, str]
    home: Path
    log_dir: Path
    warehouse: Warehouse

    @cached_property
    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture
def production(tmp_path, monkeypatch, pg_admin_url) -> Iterator[Production]:
    dagster_url, drop_dagster = create_temp_database("kpi_e2e_dagster")
    warehouse_url, drop_warehouse = create_temp_database("kpi_e2e_warehouse")
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(clients_yaml(), encoding="utf-8")
    home = prepare_dagster_home(tmp_path / "dagster_home")
    env = {
        **os.environ,
        **dagster_pg_env(dagster_url),
        "DAGSTER_HOME": str(home),
        settings.ENV_WAREHOUSE_URL: warehouse_url,
        settings.ENV_CLIENTS_FILE: str(clients_file),
        settings.ENV_DATA_DIR: str(tmp_path / "data"),
    }
    for name in (
        settings.ENV_SIMULATOR_FAULTS,
        settings.ENV_META_URL,
        settings.ENV_TOKEN,
        SUPERVISOR_MARKER_ENV,
    ):
        env.pop(name, None)
    for name, value in dagster_pg_env(dagster_url).items():
        monkeypatch.setenv(name, value)
    warehouse = Warehouse(warehouse_url)
    production = Production(env, home, tmp_path / "logs", warehouse)
    try:
        yield production
    finally:
        if "instance" in production.__dict__:
            production.instance.dispose()
        warehouse.dispose()
        drop_warehouse()
        drop_dagster()


def materialization_counts(instance: dg.DagsterInstance, keys: list[str]) -> Counter:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CLIENT_DAILY_KPIS, asset_partitions=keys), limit=10 * len(keys)
    ).records
    return Counter(r.partition_key for r in records)


def warehouse_days(warehouse: Warehouse) -> list[tuple[str, str]]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.text("select client_id, kpi_date from client_daily_kpis order by 1, 2")).all()
    return [(r[0], r[1].isoformat()) for r in rows]


def set_sensor_running(webserver: Webserver, name: str, *, running: bool) -> None:
    """Start or stop a sensor the way the UI's toggle does."""
    selector = {
        "repositoryName": "__repository__",
        "repositoryLocationName": settings.CODE_LOCATION_NAME,
        "sensorName": name,
    }
    if running:
        result = webserver.query(
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename } }",
            {"s": selector},
        )["startSensor"]
        assert result["__typename"] == "Sensor", result
        return
    state_id = webserver.query(
        "query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) { ... on Sensor { sensorState { id } } } }",
        {"s": selector},
    )["sensorOrError"]["sensorState"]["id"]
    result = webserver.query(
        "mutation($id: String!) { stopSensor(id: $id) { __typename } }", {"id": state_id}
    )["stopSensor"]
    assert result["__typename"] == "StopSensorMutationResult", result


def heal_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags={"kpi/reason": "heal"})))


def test_ui_backfill_and_gap_healing_on_the_production_processes(production: Production):
    """3 clients × 10 days launched as the UI does: one run per client, every partition materialized once, the
    checks recorded, the rows stored once; a deleted client-day is requested once by the gap-healing sensor
    and healed; every process is gone afterwards."""
    instance, warehouse = production.instance, production.warehouse
    warehouse.migrate()
    clients = load_clients(Path(production.env[settings.ENV_CLIENTS_FILE]))
    sync_clients(instance=instance, clients=clients, warehouse=warehouse)
    # The healer's own window (judged in the clients' timezone and collection hour), not UTC's yesterday: at
    # 00:15 UTC the last due day in Warsaw can still be the day before, and a window ending at UTC's yesterday
    # would leave the healer's oldest day for it to collect beside the backfill.
    start, end = healing_window(clients[0], datetime.now(UTC), E2E_DAYS)
    days = [(start + timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    assert len(days) == E2E_DAYS
    keys = [f"{client_id}|{day}" for client_id in CLIENT_IDS for day in days]

    stack = LocalStack(
        env=production.env,
        with_simulator=True,
        module="kpi_platform_tests.support.e2e_defs",
        log_dir=production.log_dir,
        cwd=PROJECT_ROOT,
    )
    try:
        stack.start_servers()
        # Launched before the daemon starts, so the fast gap-healing sensor's first tick already sees the days
        # reserved by the backfill instead of racing it for them.
        backfill_id = stack.webserver.launch_asset_backfill(
            asset_key=CLIENT_DAILY_KPIS.path, partition_keys=keys
        )
        stack.start_daemon()
        wait_until(
            lambda: stack.webserver.backfill(backfill_id)["status"] in BACKFILL_DONE,
            timeout_s=180,
            what="the backfill",
            interval_s=1.0,
            supervisor=stack.supervisor,
        )
        assert stack.webserver.backfill(backfill_id)["status"] == "COMPLETED_SUCCESS"
        # The runs were forked from the code server's preloaded fork server (kpi_platform/runtime/code_server.py).
        code_server = next(c for c in stack.supervisor.children if c.spec.name == "code-server")
        assert any("multiprocessing.forkserver" in cmd for cmd in group_members(code_server.pid))

        runs = list(instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": backfill_id})))
        assert [r.status.value for r in runs] == ["SUCCESS"] * len(CLIENT_IDS)
        ranges = sorted((r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in runs)
        assert ranges == [(f"{c}|{days[0]}", f"{c}|{days[-1]}") for c in CLIENT_IDS]
        assert materialization_counts(instance, keys) == Counter({key: 1 for key in keys})

        check = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(CLIENT_DAILY_KPIS, CONTRACT_CHECK), limit=20
        )
        assert sorted(c.run_id for c in check) == sorted(r.run_id for r in runs)
        assert {c.status.value for c in check} == {"SUCCEEDED"}
        assert {e.passed for e in (c.evaluation for c in check)} == {True}
        # The backfill's runs carry the contract check only: the warehouse-wide ones never run in them.
        for entry in check_catalogue.warehouse_wide():
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(KPI_WAREHOUSE, entry.name), limit=20
            )
            assert not {c.run_id for c in history} & {r.run_id for r in runs}, entry.name

        assert warehouse_days(warehouse) == sorted((c, d) for c in CLIENT_IDS for d in days)
        with warehouse.engine.connect() as conn:
            campaign = conn.execute(
                sa.text(
                    "select count(*), count(distinct (client_id, kpi_date, campaign_id)) from campaign_daily_kpis"
                )
            ).one()
            run_ids = {
                row[0] for row in conn.execute(sa.text("select distinct run_id from client_daily_kpis"))
            }
            sources = {
                row[0] for row in conn.execute(sa.text("select distinct source from campaign_daily_kpis"))
            }
        assert campaign[0] > 0 and campaign[0] == campaign[1]
        assert run_ids == {r.run_id for r in runs}
        assert sources == {settings.SOURCE_SIMULATOR}
        assert heal_runs(instance) == []

        # One stored client-day disappears from the warehouse and from Dagster. Dagster's PostgreSQL storage
        # cannot wipe single partitions ("not supported yet"), and deleting the run leaves the cached partition
        # status stale, so the asset is wiped and the 29 other days are reported again, as the UI's "Wipe
        # materializations" and "Report materialization events" do. The sensor is paused meanwhile, so no tick
        # sees the moment when all 30 days are gone.
        lost_client, lost_day = "globex", days[4]
        lost_key = f"{lost_client}|{lost_day}"
        set_sensor_running(stack.webserver, GAP_HEALING_SENSOR, running=False)
        time.sleep(3)  # a tick already under way finishes
        with warehouse.engine.begin() as conn:
            for table in ("campaign_daily_kpis", "client_daily_kpis"):
                conn.execute(
                    sa.text(f"delete from {table} where client_id = :c and kpi_date = :d"),  # noqa: S608 - fixed names
                    {"c": lost_client, "d": lost_day},
                )
        kept = [key for key in keys if key != lost_key]
        wiped = stack.webserver.query(
            """mutation($ranges: [PartitionsByAssetSelector!]!) { wipeAssets(assetPartitionRanges: $ranges) {
                 __typename ... on PythonError { message } } }""",
            {"ranges": [{"assetKey": {"path": CLIENT_DAILY_KPIS.path}}]},
        )["wipeAssets"]
        assert wiped["__typename"] == "AssetWipeSuccess", wiped
        reported = stack.webserver.query(
            """mutation($params: ReportRunlessAssetEventsParams!) { reportRunlessAssetEvents(eventParams: $params) {
                 __typename ... on PythonError { message } } }""",
            {
                "params": {
                    "eventType": "ASSET_MATERIALIZATION",
                    "assetKey": {"path": CLIENT_DAILY_KPIS.path},
                    "partitionKeys": kept,
                    "description": "stored before the loss",
                }
            },
        )["reportRunlessAssetEvents"]
        assert reported["__typename"] == "ReportRunlessAssetEventsSuccess", reported
        assert instance.get_materialized_partitions(CLIENT_DAILY_KPIS) == set(kept)
        set_sensor_running(stack.webserver, GAP_HEALING_SENSOR, running=True)

        wait_until(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in heal_runs(instance)),
            timeout_s=120,
            what="the gap-healing run",
            interval_s=1.0,
            supervisor=stack.supervisor,
        )
        # A few more ticks: the healed day is not requested again.
        time.sleep(3 * E2E_HEALING_INTERVAL_S)
        healed = heal_runs(instance)
        assert len(healed) == 1
        assert (healed[0].tags[RANGE_START_TAG], healed[0].tags[RANGE_END_TAG]) == (lost_key, lost_key)
        assert healed[0].tags[settings.CLIENT_TAG] == lost_client
        assert healed[0].status == dg.DagsterRunStatus.SUCCESS
        assert materialization_counts(instance, keys) == Counter({key: 1 for key in keys})
        assert warehouse_days(warehouse) == sorted((c, d) for c in CLIENT_IDS for d in days)
    except BaseException:
        print(process_tails(production.log_dir), file=sys.stderr)
        raise
    finally:
        report = stack.stop()
    assert marked_processes(stack.supervisor.marker) == []
    assert report.stragglers == ()
    # Every server exited on SIGTERM within the grace period; anything still in a group after its leader
    # (a run in flight) was killed with it.
    assert report.forced == (), report
    print(f"stopped: {report}")


def test_serve_starts_all_three_and_stops_them_on_ctrl_c(production: Production):
    """`kpi-platform serve`: the code location loads and the daemons are healthy; SIGINT (Ctrl-C) stops every
    process it started, and the command exits 0."""
    marker = f"e2e-serve-{os.getpid()}-{time.time_ns()}"
    port, code_port = free_port(), free_port()
    env = {**production.env, SUPERVISOR_MARKER_ENV: marker}
    kpi_platform = str(Path(sys.executable).with_name("kpi-platform"))
    log = (production.home.parent / "serve.log").open("wb")
    serve = subprocess.Popen(  # noqa: S603 - fixed argv
        [kpi_platform, "serve", "--port", str(port), "--code-server-port", str(code_port)],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    webserver = Webserver(f"http://127.0.0.1:{port}")
    try:
        wait_until(
            lambda: serve.poll() is not None or webserver.location_loaded(), timeout_s=120, what="the UI"
        )
        wait_until(
            lambda: serve.poll() is not None or webserver.daemons_healthy(), timeout_s=120, what="daemons"
        )
        assert serve.poll() is None
        assert len(marked_processes(marker)) >= 4  # serve, code server (proxy and server), webserver, daemon
        # "Reload" in the UI reloads the code in the code server; the webserver keeps running.
        assert webserver.reload_location() == "WorkspaceLocationEntry"
        wait_until(webserver.location_loaded, timeout_s=120, what="the reloaded code location")
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait()
        log.close()
    output = (production.home.parent / "serve.log").read_text(encoding="utf-8", errors="replace")
    assert marked_processes(marker) == [], output[-3000:]
    assert "stopped (code-server 0, webserver 0, daemon 0)" in output, output[-3000:]
    assert output.count("Started Dagster code server for module") == 2, output[-3000:]


def schema_snapshot(url: str) -> list[tuple]:
    """Tables, columns, indexes and alembic revisions of one database."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            columns = conn.execute(
                sa.text(
                    "select table_name, column_name, data_type, is_nullable from information_schema.columns "
                    "where table_schema = 'public' order by 1, 2"
                )
            ).all()
            indexes = conn.execute(
                sa.text("select indexname, indexdef from pg_indexes where schemaname = 'public' order by 1")
            ).all()
            versions = conn.execute(sa.text("select version_num from alembic_version order by 1")).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in [*columns, *indexes, *versions]]


def test_migrate_applies_everything_once_on_the_production_home(production: Production):
    """`kpi-platform migrate` with DAGSTER_HOME on deploy/dagster.yaml migrates the warehouse and Dagster's
    PostgreSQL storage; a second run changes nothing."""
    kpi_platform = str(Path(sys.executable).with_name("kpi-platform"))
    dagster_url = sa.URL.create(
        "postgresql+psycopg2",
        username=production.env[settings.ENV_DAGSTER_PG_USER],
        password=production.env[settings.ENV_DAGSTER_PG_PASSWORD] or None,
        host=production.env[settings.ENV_DAGSTER_PG_HOST],
        port=int(production.env[settings.ENV_DAGSTER_PG_PORT]),
        database=production.env[settings.ENV_DAGSTER_PG_DB],
    ).render_as_string(hide_password=False)
    warehouse_url = production.env[settings.ENV_WAREHOUSE_URL]
    snapshots = []
    for _ in range(2):
        done = subprocess.run(  # noqa: S603 - fixed argv
            [kpi_platform, "migrate"], env=production.env, cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Postgres" in done.stdout or "postgres" in done.stdout.lower()
        snapshots.append((schema_snapshot(dagster_url), schema_snapshot(warehouse_url)))
    assert snapshots[0][0] and snapshots[0][1]
    assert snapshots[1] == snapshots[0]
    assert (production.home / "dagster.yaml").read_bytes() == (deploy_dir() / "dagster.yaml").read_bytes()


REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": settings.CODE_LOCATION_NAME}
#: Sensors that would start runs of their own during the overlap test (healing the other clients' days, the
#: warehouse-wide checks); the alert sensors keep running.
SENSORS_OUTSIDE_THE_OVERLAP = (GAP_HEALING_SENSOR, "checks_after_collection_sensor")
OVERLAP_DAYS = 3


def stop_schedules(webserver: Webserver) -> list[str]:
    """Stop every running schedule of the code location, as the UI's toggles do; their names."""
    data = webserver.query(
        """query($r: RepositorySelector!) { schedulesOrError(repositorySelector: $r) {
             __typename ... on Schedules { results { name scheduleState { id status } } } } }""",
        {"r": REPOSITORY},
    )["schedulesOrError"]
    assert data["__typename"] == "Schedules", data
    stopped = []
    for schedule in data["results"]:
        if schedule["scheduleState"]["status"] != "RUNNING":
            continue
        result = webserver.query(
            "mutation($id: String!) { stopRunningSchedule(id: $id) { __typename } }",
            {"id": schedule["scheduleState"]["id"]},
        )["stopRunningSchedule"]
        assert result["__typename"] == "ScheduleStateResult", result
        stopped.append(schedule["name"])
    return stopped


def launch_job_run(webserver: Webserver, job_name: str, tags: dict[str, str]) -> str:
    """Submit a run of `job_name` with `tags` through the run queue, as a schedule's RunRequest is; its id."""
    result = webserver.query(
        """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
             ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
             ... on RunConfigValidationInvalid { errors { message } } } }""",
        {
            "p": {
                "selector": {**REPOSITORY, "jobName": job_name},
                "runConfigData": {},
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
        },
    )["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def latest_tick_timestamp(webserver: Webserver, sensor_name: str) -> float:
    data = webserver.query(
        """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
             ... on Sensor { sensorState { ticks(limit: 1) { timestamp } } } } }""",
        {"s": {**REPOSITORY, "sensorName": sensor_name}},
    )["sensorOrError"]
    ticks = data["sensorState"]["ticks"]
    return float(ticks[0]["timestamp"]) if ticks else 0.0


def test_a_ui_backfill_overlapping_the_clients_scheduled_run_waits_and_both_succeed(production: Production):
    """A client's scheduled range run (the schedule's tags, kpi/client included) and a UI backfill of the same
    client × days run at once: the backfill's run carries no kpi/client tag when queued, so the queue's per-client
    limit does not keep them apart. Both reach their warehouse write while the test holds the client's lock (as a
    slow writer would); both wait for it, then write one after the other and succeed. No run fails, no alert is
    raised, the rows are those of one run, and the backfill's run tagged itself with its client.

    Without the warehouse's per-client lock the two runs would never wait here (the test times out waiting for
    them) and, writing at once, one of them would fail on pk_campaign_daily_kpis."""
    instance, warehouse = production.instance, production.warehouse
    warehouse.migrate()
    clients = load_clients(Path(production.env[settings.ENV_CLIENTS_FILE]))
    sync_clients(instance=instance, clients=clients, warehouse=warehouse)
    client_id = CLIENT_IDS[0]
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    start = yesterday - timedelta(days=OVERLAP_DAYS - 1)
    days = [(start + timedelta(days=i)).isoformat() for i in range(OVERLAP_DAYS)]
    keys = [f"{client_id}|{day}" for day in days]
    scheduled_tags = CollectionRequest(
        client_id, start, yesterday, run_key="e2e-overlap", reason="daily"
    ).tags()
    # A separate connection that really closes: a session must not keep the lock in a pool after the test.
    holder = sa.create_engine(warehouse.engine.url, poolclass=sa.pool.NullPool)

    stack = LocalStack(
        env=production.env,
        with_simulator=True,
        module="kpi_platform_tests.support.e2e_defs",
        log_dir=production.log_dir,
        cwd=PROJECT_ROOT,
    )
    started = time.monotonic()
    try:
        stack.start_servers()
        for name in SENSORS_OUTSIDE_THE_OVERLAP:
            set_sensor_running(stack.webserver, name, running=False)
        assert stop_schedules(stack.webserver)

        with holder.connect() as conn, conn.begin():
            hold_client_lock(conn, client_id)
            scheduled_run_id = launch_job_run(stack.webserver, "daily_collection_job", scheduled_tags)
            backfill_id = stack.webserver.launch_asset_backfill(
                asset_key=CLIENT_DAILY_KPIS.path, partition_keys=keys
            )
            stack.start_daemon()
            wait_until(
                lambda: sessions_waiting_for_client_lock(warehouse.engine, client_id) == 2,
                timeout_s=180,
                what="both runs to wait for the client's lock at their write",
                interval_s=0.5,
                supervisor=stack.supervisor,
            )
            overlapping = time.monotonic()
            in_progress = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
            (backfill_run,) = [r for r in in_progress if r.tags.get("dagster/backfill") == backfill_id]
            assert {r.run_id for r in in_progress} == {scheduled_run_id, backfill_run.run_id}
            # Tagged when it started: too late for the queue, in time for "filter runs by client".
            assert backfill_run.tags[settings.CLIENT_TAG] == client_id
        # The holder's transaction has ended: the two writes go ahead, one after the other.

        wait_until(
            lambda: (
                stack.webserver.backfill(backfill_id)["status"] in BACKFILL_DONE
                and instance.get_run_by_id(scheduled_run_id).is_finished
            ),
            timeout_s=120,
            what="both runs to finish",
            interval_s=1.0,
            supervisor=stack.supervisor,
        )
        finished = time.monotonic()
        assert stack.webserver.backfill(backfill_id)["status"] == "COMPLETED_SUCCESS"
        runs = list(instance.get_runs())
        assert sorted(r.run_id for r in runs) == sorted([scheduled_run_id, backfill_run.run_id])
        assert [r.status for r in runs] == [dg.DagsterRunStatus.SUCCESS] * 2
        assert {r.tags[settings.CLIENT_TAG] for r in runs} == {client_id}
        records = instance.get_run_records(dg.RunsFilter(run_ids=[r.run_id for r in runs]))
        assert max(r.start_time for r in records) < min(r.end_time for r in records)  # they ran at once
        assert materialization_counts(instance, keys) == Counter({key: 2 for key in keys})

        # The rows are one run's: every day once, every campaign row once, all from the run that wrote last.
        assert warehouse_days(warehouse) == [(client_id, day) for day in days]
        with warehouse.engine.connect() as conn:
            campaign = conn.execute(
                sa.text(
                    "select count(*), count(distinct (client_id, kpi_date, campaign_id)) from campaign_daily_kpis"
                )
            ).one()
            written_by = {
                row[0]
                for table in ("campaign_daily_kpis", "client_daily_kpis")
                for row in conn.execute(sa.text(f"select distinct run_id from {table}"))  # noqa: S608 - fixed
            }
        assert campaign[0] > 0 and campaign[0] == campaign[1]
        assert len(written_by) == 1 and written_by <= {r.run_id for r in runs}

        # No alert: the run-failure alert sensor has ticked since both runs ended, and nothing is stored.
        ended = max(r.end_time for r in records)
        wait_until(
            lambda: latest_tick_timestamp(stack.webserver, "collection_failure_alert_sensor") > ended,
            timeout_s=90,
            what="a tick of collection_failure_alert_sensor after the runs",
            interval_s=1.0,
            supervisor=stack.supervisor,
        )
        with warehouse.engine.connect() as conn:
            alerts = conn.execute(sa.select(schema.alert_state)).all()
        assert alerts == []
        assert instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])) == []
        print(
            f"overlap: both runs waiting {overlapping - started:.1f} s after start, "
            f"both done {finished - overlapping:.1f} s after the release"
        )
    except BaseException:
        print(process_tails(production.log_dir), file=sys.stderr)
        raise
    finally:
        holder.dispose()
        report = stack.stop()
    assert marked_processes(stack.supervisor.marker) == []
    assert report.stragglers == ()
    assert report.forced == (), report
