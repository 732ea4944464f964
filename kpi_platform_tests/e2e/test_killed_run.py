"""A killed run never holds what others need, under the daemon, on both profiles.

The embedded default (SQLite instance seeded from the top-level dagster.yaml, the in-process simulator) runs as
`kpi-platform ui` does: `dagster dev` is `dagster code-server start` for the code location, the webserver and
`dagster-daemon run` on one instance; here the same three commands start one by one, so the test can queue its
runs before the daemon looks at them. The production profile is the supervisor's stack on PostgreSQL
(deploy/dagster.yaml). Only the monitoring intervals are shortened, in the test's copy of dagster.yaml.

Three collection runs are queued (one client each); two start and claim both `meta_api` slots, the simulator
answering slowly; both run workers are killed with SIGKILL mid-step. Then: both runs are FAILURE with the
code server's "terminated by signal 9" event, no slot is held for them, the queued run starts and succeeds,
Dagster's run retry re-runs the one killed run that may be retried, and the gap healer requests the days of the
other (its retries are off) once its cool-down ends (shortened in `support/killed_run_defs.py`). Every day is
materialized once and stored, and no process is left behind.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from kpi_platform import settings
from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.cli.supervisor import (
    SUPERVISOR_MARKER_ENV,
    LocalStack,
    ProcessSpec,
    StopReport,
    Supervisor,
    Webserver,
    dagster_pg_env,
    free_port,
    marked_processes,
    port_open,
    prepare_dagster_home,
    wait_until,
    webserver_spec,
)
from kpi_platform.clients import Client, load_clients
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.run_history import failure_reason, worker_death
from kpi_platform.keys import ClientRange
from kpi_platform.operations.plans import healing_window
from kpi_platform.warehouse import Warehouse

# Not from killed_run_defs: importing that module shortens the healer's cool-down in this whole process.
from kpi_platform_tests.support.e2e_defs import E2E_DAYS
from kpi_platform_tests.support.postgres import create_temp_database
from kpi_platform_tests.support.process_logs import process_tails

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFS_MODULE = "kpi_platform_tests.support.killed_run_defs"
CLIENT_IDS = ("acme", "globex", "initech")
TIMEZONE = "Europe/Warsaw"
#: Every simulated API response takes this long, so a run holds its slot long enough to be killed mid-step.
SLOW_SECONDS = 8.0
#: The test's copy of dagster.yaml only: the daemon looks every second and frees slots 2 s after a run ended.
MONITORING_OVERRIDES = {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 2}
#: Dagster's tags: how many times a run may be retried, and which run a retry re-runs.
MAX_RETRIES_TAG = "dagster/max_retries"
PARENT_RUN_ID_TAG = "dagster/parent_run_id"
DAEMONS = ("SENSOR", "SCHEDULER", "BACKFILL", "QUEUED_RUN_COORDINATOR", "MONITORING", "EVENT_LOG_CONSUMER")
LAUNCH_RUN = """
mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on InvalidSubsetError { message }
  ... on PipelineNotFoundError { message }
} }
"""


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


def write_instance_yaml(home: Path, template: Path) -> None:
    """$DAGSTER_HOME/dagster.yaml: `template` with the monitoring intervals shortened."""
    config = yaml.safe_load(template.read_text(encoding="utf-8"))
    config["run_monitoring"].update(MONITORING_OVERRIDES)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


class Stack(Protocol):
    supervisor: Supervisor
    webserver: Webserver

    def start_servers(self) -> None: ...
    def start_daemon(self) -> None: ...
    def stop(self) -> StopReport: ...


class EmbeddedStack:
    """The processes of `dagster dev` (what `kpi-platform ui` runs), started one by one on an embedded home."""

    def __init__(self, *, env: dict[str, str], log_dir: Path, workspace: Path) -> None:
        self.host = "127.0.0.1"
        self.code_server_port = free_port()
        self.workspace = workspace
        workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "grpc_server": {
                                "host": self.host,
                                "port": self.code_server_port,
                                "location_name": settings.CODE_LOCATION_NAME,
                            }
                        }
                    ]
                }
            ),
            encoding="utf-8",
        )
        self.supervisor = Supervisor(env=env, log_dir=log_dir, cwd=PROJECT_ROOT)
        webserver_port = free_port()
        self._webserver_spec = webserver_spec(host=self.host, port=webserver_port, workspace=workspace)
        self.webserver = Webserver(f"http://{self.host}:{webserver_port}")

    def start_servers(self) -> None:
        dagster = str(Path(sys.executable).with_name("dagster"))
        self.supervisor.start(
            ProcessSpec(
                "code-server",
                (
                    dagster, "code-server", "start", "-h", self.host, "-p", str(self.code_server_port),
                    "-m", DEFS_MODULE, "-a", "defs", "--location-name", settings.CODE_LOCATION_NAME,
                ),
            )
        )  # fmt: skip
        wait_until(
            lambda: port_open(self.host, self.code_server_port),
            timeout_s=120,
            what="the code server",
            supervisor=self.supervisor,
        )
        self.supervisor.start(self._webserver_spec)
        wait_until(self.webserver.is_up, timeout_s=120, what="the webserver", supervisor=self.supervisor)
        last_reload = [time.monotonic()]

        def loaded() -> bool:
            if self.webserver.location_loaded():
                return True
            if time.monotonic() - last_reload[0] > 5:  # the code server may still have been loading
                last_reload[0] = time.monotonic()
                self.webserver.reload_location()
            return False

        wait_until(loaded, timeout_s=120, what="the code location", supervisor=self.supervisor)

    def start_daemon(self) -> None:
        daemon = str(Path(sys.executable).with_name("dagster-daemon"))
        self.supervisor.start(ProcessSpec("daemon", (daemon, "run", "-w", str(self.workspace))))

    def stop(self) -> StopReport:
        return self.supervisor.stop()


@dataclass
class Profile:
    """One deployment profile in a temporary home: its environment, warehouse and a way to start its stack."""

    name: str
    env: dict[str, str]
    home: Path
    log_dir: Path
    warehouse: Warehouse
    make_stack: Callable[[], Stack]
    closers: list[Callable[[], None]] = field(default_factory=list)

    @cached_property
    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))


@pytest.fixture(
    params=["sqlite", "postgresql"], ids=["embedded", "production"]
)  # "postgresql" marks the production case `postgres` (see conftest)
def profile(request, tmp_path, monkeypatch) -> Iterator[Profile]:
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(clients_yaml(), encoding="utf-8")
    home = tmp_path / "dagster_home"
    log_dir = tmp_path / "logs"
    marker = f"e2e-killed-run-{os.getpid()}-{time.time_ns()}"
    env = {
        **os.environ,
        settings.ENV_CLIENTS_FILE: str(clients_file),
        settings.ENV_DATA_DIR: str(tmp_path / "data"),
        settings.ENV_SIMULATOR_FAULTS: f'{{"slow_seconds": {SLOW_SECONDS}}}',
        SUPERVISOR_MARKER_ENV: marker,
        "DAGSTER_HOME": str(home),
    }
    for name in (settings.ENV_META_URL, settings.ENV_TOKEN):
        env.pop(name, None)
    closers: list[Callable[[], None]] = []
    try:
        if request.param == "sqlite":
            home.mkdir(parents=True)
            write_instance_yaml(home, PROJECT_ROOT / "dagster.yaml")
            monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml's storage lives in $DAGSTER_HOME
            warehouse_url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
            env[settings.ENV_WAREHOUSE_URL] = warehouse_url

            def make_stack() -> Stack:
                return EmbeddedStack(env=env, log_dir=log_dir, workspace=tmp_path / "workspace.yaml")

        else:
            request.getfixturevalue("pg_admin_url")
            dagster_url, drop_dagster = create_temp_database("kpi_e2e_dagster")
            closers.append(drop_dagster)
            warehouse_url, drop_warehouse = create_temp_database("kpi_e2e_warehouse")
            closers.append(drop_warehouse)
            prepare_dagster_home(home)
            write_instance_yaml(home, home / "dagster.yaml")
            env.update(dagster_pg_env(dagster_url))
            env[settings.ENV_WAREHOUSE_URL] = warehouse_url
            for name, value in dagster_pg_env(dagster_url).items():
                monkeypatch.setenv(name, value)

            def make_stack() -> Stack:
                return LocalStack(env=env, module=DEFS_MODULE, log_dir=log_dir, cwd=PROJECT_ROOT)

        warehouse = Warehouse(warehouse_url)
        closers.insert(0, warehouse.dispose)
        result = Profile(request.node.callspec.id, env, home, log_dir, warehouse, make_stack, closers)
        yield result
        if "instance" in result.__dict__:
            result.instance.dispose()
    finally:
        for close in closers:
            close()


def launch_run(webserver: Webserver, tags: dict[str, str]) -> str:
    """Launch the collection job with these tags, as the UI's launchpad does; the run is queued."""
    params = {
        "selector": {
            "repositoryLocationName": settings.CODE_LOCATION_NAME,
            "repositoryName": "__repository__",
            "jobName": "daily_collection_job",
        },
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    result = webserver.query(LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


def step_started(instance: dg.DagsterInstance, run_id: str) -> bool:
    return bool(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START))


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The run worker's pid, from the engine event the worker writes when it starts ("Started process for run
    (pid: N).")."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = record.get_dagster_event().engine_event_data
        if data is not None and "pid" in data.metadata:
            return int(str(data.metadata["pid"].value))
    raise AssertionError(f"run {run_id} recorded no worker pid")


def slot_holders(instance: dg.DagsterInstance) -> set[str]:
    """Run ids holding a `meta_api` slot or a pending step of the pool, which the queue also counts as taken
    (neither exists with pool granularity `run`, where the queue counts the runs in progress instead)."""
    info = instance.event_log_storage.get_concurrency_info(settings.META_API_POOL)
    return info.active_run_ids | {step.run_id for step in info.pending_steps}


def runs_tagged(instance: dg.DagsterInstance, **tags: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(dg.RunsFilter(tags=tags)))


def materialization_counts(instance: dg.DagsterInstance, keys: list[str]) -> Counter:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CLIENT_DAILY_KPIS, asset_partitions=keys), limit=10 * len(keys)
    ).records
    return Counter(r.partition_key for r in records)


def warehouse_days(warehouse: Warehouse) -> list[tuple[str, str]]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.text("select client_id, kpi_date from client_daily_kpis order by 1, 2")).all()
    return [(r[0], r[1] if isinstance(r[1], str) else r[1].isoformat()) for r in rows]


def healer_ranges(clients: list[Client], now: datetime) -> dict[str, ClientRange]:
    """Each client's healing window: the days the gap healer would request if they were missing."""
    ranges = {}
    for client in clients:
        start, end = healing_window(client, now, E2E_DAYS)
        ranges[client.id] = ClientRange(client.id, start, end)
    return ranges


def test_killed_run_workers_free_their_slots_and_their_days_heal(profile: Profile):
    """Two run workers killed with SIGKILL mid-step: their runs fail, nothing stays held for them, the queued run
    runs, and their days are stored again (one by Dagster's run retry, one by the gap healer), each exactly once."""
    instance, warehouse = profile.instance, profile.warehouse
    warehouse.migrate()
    clients = load_clients(Path(profile.env[settings.ENV_CLIENTS_FILE]))
    sync_clients(instance=instance, clients=clients, warehouse=warehouse)
    ranges = healer_ranges(clients, datetime.now(UTC))
    keys = [key for rng in ranges.values() for key in rng.keys()]
    days = sorted((client_id, key.split("|")[1]) for client_id, rng in ranges.items() for key in rng.keys())
    timings: dict[str, float] = {}

    stack = profile.make_stack()
    try:
        began = time.monotonic()
        stack.start_servers()
        # Queued before the daemon starts, in this order: acme and globex start first and take both slots,
        # initech waits. globex may not be retried by Dagster, so only the gap healer can bring its days back.
        run_tags: dict[str, dict[str, str]] = {
            "acme": {},
            "globex": {MAX_RETRIES_TAG: "0"},
            "initech": {},
        }
        run_ids = {
            client_id: launch_run(
                stack.webserver,
                {**ranges[client_id].tags(), settings.CLIENT_TAG: client_id, "kpi/reason": "test", **extra},
            )
            for client_id, extra in run_tags.items()
        }
        victims = (run_ids["acme"], run_ids["globex"])
        stack.start_daemon()
        wait_until(
            lambda: stack.webserver.daemons_healthy(DAEMONS),
            timeout_s=120,
            what="healthy daemons",
            supervisor=stack.supervisor,
        )
        timings["stack up"] = time.monotonic() - began

        # Both victims are inside their step (holding the pool), the third run is still queued behind them.
        wait_until(
            lambda: all(step_started(instance, run_id) for run_id in victims),
            timeout_s=120,
            what="both runs inside their step",
            interval_s=0.2,
            supervisor=stack.supervisor,
        )
        # The embedded default's steps claim their slots (pool granularity `op`); production counts runs.
        assert slot_holders(instance) == (set(victims) if profile.name == "embedded" else set())
        assert status(instance, run_ids["initech"]) == dg.DagsterRunStatus.QUEUED
        pids = [worker_pid(instance, run_id) for run_id in victims]
        # Only processes this test started carry its marker: nothing else is ever signalled.
        assert set(pids) <= set(marked_processes(profile.env[SUPERVISOR_MARKER_ENV])), pids
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()

        wait_until(
            lambda: all(status(instance, run_id) == dg.DagsterRunStatus.FAILURE for run_id in victims),
            timeout_s=60,
            what="the killed runs to be marked failed",
            interval_s=0.2,
            supervisor=stack.supervisor,
        )
        timings["killed -> both FAILURE"] = time.monotonic() - killed
        wait_until(
            lambda: not slot_holders(instance) & set(victims),
            timeout_s=60,
            what="the killed runs' slots to be freed",
            interval_s=0.2,
            supervisor=stack.supervisor,
        )
        timings["killed -> slots free"] = time.monotonic() - killed
        for run_id in victims:
            assert worker_death(instance, run_id) == "was terminated by signal 9 (SIGKILL)"
        assert failure_reason(instance, run_ids["globex"]) == (
            True,
            "run worker process was terminated by signal 9 (SIGKILL)",
        )

        wait_until(
            lambda: status(instance, run_ids["initech"]) == dg.DagsterRunStatus.SUCCESS,
            timeout_s=120,
            what="the queued run",
            interval_s=0.5,
            supervisor=stack.supervisor,
        )
        timings["killed -> queued run SUCCESS"] = time.monotonic() - killed

        def retries(run_id: str) -> list[dg.DagsterRun]:
            return runs_tagged(instance, **{PARENT_RUN_ID_TAG: run_id})

        def heals() -> list[dg.DagsterRun]:
            return runs_tagged(instance, **{"kpi/reason": "heal"})

        wait_until(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in retries(run_ids["acme"])),
            timeout_s=120,
            what="Dagster's retry of the killed acme run",
            interval_s=0.5,
            supervisor=stack.supervisor,
        )
        timings["killed -> acme retried"] = time.monotonic() - killed
        wait_until(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in heals()),
            timeout_s=150,
            what="the gap healer's run for globex",
            interval_s=0.5,
            supervisor=stack.supervisor,
        )
        timings["killed -> globex healed"] = time.monotonic() - killed

        (retry,) = retries(run_ids["acme"])
        assert ClientRange.from_tags(retry.tags) == ranges["acme"]
        assert retries(run_ids["globex"]) == []
        # The healer requested exactly the killed globex range, once; acme's days were Dagster's retry's.
        (heal,) = heals()
        assert ClientRange.from_tags(heal.tags) == ranges["globex"]
        assert heal.status == dg.DagsterRunStatus.SUCCESS
        assert materialization_counts(instance, keys) == Counter({key: 1 for key in keys})
        assert warehouse_days(warehouse) == days
        assert not slot_holders(instance)
    except BaseException:
        print(process_tails(profile.log_dir), file=sys.stderr)
        raise
    finally:
        report = stack.stop()
        print(f"{profile.name}: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}; stopped: {report}")
    assert marked_processes(profile.env[SUPERVISOR_MARKER_ENV]) == []
    assert report.stragglers == ()
