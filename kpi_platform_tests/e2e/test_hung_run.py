"""Hung collection runs are ended by their time bound and their days heal, under the daemon.

The embedded default (SQLite instance seeded from the top-level dagster.yaml, the in-process simulator), started
as `kpi-platform ui` starts it minus the webserver: `dagster code-server start` for the code location and
`dagster-daemon run`. In the test's copy of dagster.yaml the monitoring poll is shortened and Dagster's run retries
are off; in the code location the time bound and the healer's cool-down are shortened (`support/hung_run_defs.py`).

Run retries are off because with them on, which of two recorders comes first decides whether Dagster re-runs a
run ended by its bound: the daemon's own failure (no reason: retried at once) or the worker's interrupted step
(a step failure: left to the healer). Either way the days come back once; here only the healer can bring them.

The simulator holds every insights request unanswered while a file exists (`FaultConfig.hang_while_path`): a
Meta call that never returns, below the client's timeouts. Two hung runs, one after the other:

1. acme's: the gap healer requests its missing days; the run hangs, carries `dagster/max_runtime` scaled to its
   range, and the MONITORING daemon cancels it through the code server. The API answers again, and the healer's
   next run (after the failure's cool-down) stores every day, exactly once.
2. globex's (registered afterwards): while its run hangs, the code server's whole process group is killed with
   SIGKILL, run worker included, so nothing is left to report the run: it stays STARTED. Its time bound ends it
   all the same (the daemon cannot reach the code server and marks it failed), and once a code server is back
   the healer's next run stores its days.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml

from kpi_platform import settings
from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.cli.supervisor import (
    SUPERVISOR_MARKER_ENV,
    Child,
    ProcessSpec,
    Supervisor,
    free_port,
    group_members,
    marked_processes,
    port_open,
    wait_until,
)
from kpi_platform.clients import Client, load_clients
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.run_history import failure_reason, max_runtime_exceeded
from kpi_platform.keys import ClientRange
from kpi_platform.operations.plans import MAX_RUNTIME_TAG, healing_window
from kpi_platform.warehouse import Warehouse

# Not from hung_run_defs: importing that module shortens the time bounds and cool-downs in this whole process.
from kpi_platform_tests.support.e2e_defs import E2E_DAYS
from kpi_platform_tests.support.process_logs import process_tails

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(360)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFS_MODULE = "kpi_platform_tests.support.hung_run_defs"
TIMEZONE = "Europe/Warsaw"
#: The healer's run over E2E_DAYS days in that code location: 10 s + 1 s per day (support/hung_run_defs.py).
MAX_RUNTIME_S = 10 + E2E_DAYS
#: The test's copy of dagster.yaml only: the MONITORING daemon looks every second; no run retries (see above).
MONITORING_OVERRIDES = {"poll_interval_seconds": 1, "free_slots_after_run_end_seconds": 2}
RETRIES_OVERRIDES = {"max_retries": 0}
#: A hung request gives up on its own after this long at the latest, so nothing outlives the test.
HANG_SECONDS = 150
REASON_TAG = "kpi/reason"


def clients_yaml(client_ids: tuple[str, ...]) -> str:
    # The daily schedule must not collect during the test: every collection hour is far from now.
    hour = (datetime.now(ZoneInfo(TIMEZONE)).hour + 12) % 24
    entries = [
        {
            "id": client_id,
            "name": client_id.title(),
            "ad_account_id": f"act_{100000000001 + i}",
            "currency": "EUR",
            "timezone": TIMEZONE,
            "settings": {"collection_hour": hour},
        }
        for i, client_id in enumerate(client_ids)
    ]
    return yaml.safe_dump({"clients": entries}, sort_keys=False)


def heal_runs(instance: dg.DagsterInstance, client_id: str) -> list[dg.DagsterRun]:
    """The healer's runs of one client, oldest first."""
    runs = instance.get_runs(dg.RunsFilter(tags={REASON_TAG: "heal", settings.CLIENT_TAG: client_id}))
    return list(reversed(runs))


def record(instance: dg.DagsterInstance, run_id: str) -> dg.RunRecord:
    (found,) = instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
    return found


def warehouse_days(warehouse: Warehouse, client_id: str) -> list[str]:
    with warehouse.engine.connect() as conn:
        rows = conn.execute(
            sa.text("select kpi_date from client_daily_kpis where client_id = :c order by 1"),
            {"c": client_id},
        ).all()
    return [r[0] if isinstance(r[0], str) else r[0].isoformat() for r in rows]


class Stack:
    """The code server and the daemon of one embedded home, under a supervisor."""

    def __init__(self, env: dict[str, str], tmp_path: Path) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.workspace = tmp_path / "workspace.yaml"
        location = {"host": self.host, "port": self.port, "location_name": settings.CODE_LOCATION_NAME}
        self.workspace.write_text(
            yaml.safe_dump({"load_from": [{"grpc_server": location}]}), encoding="utf-8"
        )
        self.log_dir = tmp_path / "logs"
        self.supervisor = Supervisor(env=env, log_dir=self.log_dir, cwd=PROJECT_ROOT)
        self.bin_dir = Path(sys.executable).parent

    def start_code_server(self, name: str = "code-server") -> Child:
        child = self.supervisor.start(
            ProcessSpec(
                name,
                (
                    str(self.bin_dir / "dagster"), "code-server", "start", "-h", self.host, "-p", str(self.port),
                    "-m", DEFS_MODULE, "-a", "defs", "--location-name", settings.CODE_LOCATION_NAME,
                ),
            )
        )  # fmt: skip
        self.wait(lambda: port_open(self.host, self.port), timeout_s=120, what=f"the {name}")
        return child

    def start_daemon(self) -> None:
        daemon = str(self.bin_dir / "dagster-daemon")
        self.supervisor.start(ProcessSpec("daemon", (daemon, "run", "-w", str(self.workspace))))

    def kill_group(self, child: Child) -> None:
        """SIGKILL to the child's whole process group (its run workers with it), as when its host or container
        dies; the supervisor forgets it."""
        os.killpg(child.pid, signal.SIGKILL)
        child.process.wait()
        wait_until(lambda: not group_members(child.pid), timeout_s=10, what="the killed group to be gone")
        self.supervisor.children.remove(child)

    def wait(self, predicate, *, timeout_s: float, what: str, interval_s: float = 0.5) -> None:
        wait_until(
            predicate, timeout_s=timeout_s, what=what, interval_s=interval_s, supervisor=self.supervisor
        )


def wait_for_hung_run(stack: Stack, instance: dg.DagsterInstance, client: Client) -> dg.DagsterRun:
    """The healer's first run of `client`, once it is inside its step (hanging on its first Meta call)."""

    def started() -> bool:
        runs = heal_runs(instance, client.id)
        return bool(runs) and bool(instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_START))

    stack.wait(started, timeout_s=120, what=f"the healer's first run of {client.id} inside its step")
    hung = heal_runs(instance, client.id)[0]
    assert hung.tags[MAX_RUNTIME_TAG] == str(MAX_RUNTIME_S)
    return hung


def assert_ended_by_its_bound(instance: dg.DagsterInstance, run_id: str) -> float:
    """The run failed (or was canceled) for exceeding its bound, within a few polls after it; its run time."""
    ended = record(instance, run_id)
    assert ended.dagster_run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
    assert ended.start_time is not None and ended.end_time is not None
    ran_s = ended.end_time - ended.start_time
    assert MAX_RUNTIME_S <= ran_s <= MAX_RUNTIME_S + 30, ran_s
    assert max_runtime_exceeded(instance, run_id) == MAX_RUNTIME_S
    non_transient, reason = failure_reason(instance, run_id)
    assert non_transient and f"maximum runtime of {MAX_RUNTIME_S} s" in reason
    return ran_s


def assert_healed_once(
    instance: dg.DagsterInstance, warehouse: Warehouse, expected: ClientRange, hung_run_id: str
) -> None:
    """One later healer run (not a Dagster retry) stored every day of `expected`, each materialized once."""
    runs = heal_runs(instance, expected.client_id)
    healed = [r for r in runs if r.status == dg.DagsterRunStatus.SUCCESS]
    assert [ClientRange.from_tags(r.tags) for r in healed] == [expected]
    assert "dagster/parent_run_id" not in healed[0].tags
    assert [r.run_id for r in runs if r.status != dg.DagsterRunStatus.SUCCESS] == [hung_run_id]
    keys = expected.keys()
    materialized = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CLIENT_DAILY_KPIS, asset_partitions=keys), limit=10 * len(keys)
    ).records
    assert Counter(r.partition_key for r in materialized) == Counter(keys)
    assert warehouse_days(warehouse, expected.client_id) == [key.split("|")[1] for key in keys]


def healer_range(client: Client) -> ClientRange:
    start, end = healing_window(client, datetime.now(UTC), E2E_DAYS)
    return ClientRange(client.id, start, end)


def test_hung_runs_are_ended_by_their_time_bound_and_their_days_heal(tmp_path, monkeypatch):
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(clients_yaml(("acme",)), encoding="utf-8")
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    config["run_monitoring"].update(MONITORING_OVERRIDES)
    config["run_retries"].update(RETRIES_OVERRIDES)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    hang_file = tmp_path / "meta_api_hangs"
    warehouse_url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    marker = f"e2e-hung-run-{os.getpid()}-{time.time_ns()}"
    faults = f'{{"hang_while_path": "{hang_file}", "hang_seconds": {HANG_SECONDS}}}'
    env = {
        **os.environ,
        settings.ENV_CLIENTS_FILE: str(clients_file),
        settings.ENV_DATA_DIR: str(tmp_path / "data"),
        settings.ENV_WAREHOUSE_URL: warehouse_url,
        settings.ENV_SIMULATOR_FAULTS: faults,
        SUPERVISOR_MARKER_ENV: marker,
        "DAGSTER_HOME": str(home),
    }
    for name in (settings.ENV_META_URL, settings.ENV_TOKEN):
        env.pop(name, None)

    warehouse = Warehouse(warehouse_url)
    warehouse.migrate()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml's storage lives in $DAGSTER_HOME
    instance = dg.DagsterInstance.from_config(str(home))
    (acme,) = load_clients(clients_file)
    sync_clients(instance=instance, clients=[acme], warehouse=warehouse)
    stack = Stack(env, tmp_path)
    timings: dict[str, float] = {}
    began = time.monotonic()
    try:
        # 1. A run hangs on Meta; run monitoring cancels it at its bound; the healer stores its days.
        hang_file.write_text("remove me to let the simulated Meta API answer\n", encoding="utf-8")
        code_server = stack.start_code_server()
        stack.start_daemon()
        hung = wait_for_hung_run(stack, instance, acme)
        assert ClientRange.from_tags(hung.tags) == healer_range(acme)
        timings["acme: hung run in its step"] = time.monotonic() - began
        stack.wait(
            lambda: record(instance, hung.run_id).dagster_run.is_finished,
            timeout_s=MAX_RUNTIME_S + 60,
            what="run monitoring to end acme's hung run",
            interval_s=0.2,
        )
        timings[f"acme: hung run {record(instance, hung.run_id).dagster_run.status.value} after"] = (
            assert_ended_by_its_bound(instance, hung.run_id)
        )
        assert not instance.get_latest_materialization_event(CLIENT_DAILY_KPIS)
        hang_file.unlink()
        stack.wait(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in heal_runs(instance, "acme")),
            timeout_s=120,
            what="the healer's run of acme after the hung one",
        )
        timings["acme: healed"] = time.monotonic() - began
        assert_healed_once(instance, warehouse, healer_range(acme), hung.run_id)

        # 2. A run hangs, then its worker dies with the code server: nothing reports it, yet its bound ends it.
        hang_file.write_text("remove me to let the simulated Meta API answer\n", encoding="utf-8")
        clients_file.write_text(clients_yaml(("acme", "globex")), encoding="utf-8")
        clients = load_clients(clients_file)
        globex = clients[1]
        sync_clients(instance=instance, clients=clients, warehouse=warehouse)
        orphan = wait_for_hung_run(stack, instance, globex)
        stack.kill_group(code_server)
        killed = time.monotonic()
        time.sleep(3)
        assert record(instance, orphan.run_id).dagster_run.status == dg.DagsterRunStatus.STARTED
        wait_until(  # no supervisor: the code server is down on purpose
            lambda: record(instance, orphan.run_id).dagster_run.is_finished,
            timeout_s=MAX_RUNTIME_S + 60,
            what="run monitoring to end globex's orphaned run",
            interval_s=0.2,
        )
        timings["globex: killed -> ended"] = time.monotonic() - killed
        timings[f"globex: orphaned run {record(instance, orphan.run_id).dagster_run.status.value} after"] = (
            assert_ended_by_its_bound(instance, orphan.run_id)
        )
        hang_file.unlink()
        stack.start_code_server("code-server-restarted")
        stack.wait(
            lambda: any(r.status == dg.DagsterRunStatus.SUCCESS for r in heal_runs(instance, "globex")),
            timeout_s=150,
            what="the healer's run of globex after the orphaned one",
        )
        timings["globex: healed"] = time.monotonic() - began
        assert_healed_once(instance, warehouse, healer_range(globex), orphan.run_id)
    except BaseException:
        print(process_tails(stack.log_dir), file=sys.stderr)
        raise
    finally:
        report = stack.supervisor.stop()
        instance.dispose()
        warehouse.dispose()
        print(f"hung runs: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}; stopped: {report}")
    assert marked_processes(marker) == []
    assert report.stragglers == ()
