"""Fault injection for the chaos end-to-end test, aimed only at what the test itself started: its run workers (by
the pid Dagster records), the warehouse sessions of one run worker (by the TCP ports that worker owns), one
supervised process of its stack, and the daemon heartbeats of its own Dagster database. Also the UI's GraphQL
toggles the test needs, the watchdog as a subprocess, and one overall deadline for every wait.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.cli.supervisor import Supervisor, Webserver, group_members, wait_until
from kpi_platform.warehouse.store import client_lock_key

REPOSITORY = {"repositoryName": "__repository__", "repositoryLocationName": settings.CODE_LOCATION_NAME}
#: Days backfilled per client in the chaos test (ending at each client's due day); the gap-healing horizon of its
#: code location (`chaos_defs`) covers exactly these. Here, not there: importing `chaos_defs` shortens the
#: healer's cool-down in the importing process, which must stay the code server's alone.
CHAOS_DAYS = 60


# --- One deadline for the whole test ----------------------------------------------------------------------------


class Deadline:
    """The test's overall budget: every wait gets at most what is left of it, and says which step ran out."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def wait(
        self,
        predicate: Callable[[], bool],
        *,
        what: str,
        timeout_s: float,
        interval_s: float = 0.5,
        supervisor: Supervisor | None = None,
    ) -> float:
        """`wait_until` bounded by the step's own timeout and by the overall deadline; the seconds it took."""
        budget = min(timeout_s, self.left())
        if budget <= 0:
            raise AssertionError(f"overall deadline of {self.seconds:.0f} s spent before waiting for {what}")
        began = time.monotonic()
        wait_until(predicate, timeout_s=budget, what=what, interval_s=interval_s, supervisor=supervisor)
        return time.monotonic() - began


# --- The UI's toggles (GraphQL, as the webserver's pages send them) ---------------------------------------------


def set_sensor_running(webserver: Webserver, name: str, *, running: bool) -> None:
    """Start or stop a sensor the way the UI's toggle does."""
    selector = {**REPOSITORY, "sensorName": name}
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


def latest_tick_timestamp(webserver: Webserver, sensor_name: str) -> float:
    """When the sensor last ticked (0.0 if never)."""
    data = webserver.query(
        """query($s: SensorSelector!) { sensorOrError(sensorSelector: $s) {
             ... on Sensor { sensorState { ticks(limit: 1) { timestamp } } } } }""",
        {"s": {**REPOSITORY, "sensorName": sensor_name}},
    )["sensorOrError"]
    ticks = data["sensorState"]["ticks"]
    return float(ticks[0]["timestamp"]) if ticks else 0.0


# --- Run workers ------------------------------------------------------------------------------------------------


def worker_pid(instance: dg.DagsterInstance, run_id: str) -> int:
    """The run worker's pid, from the engine event the worker writes when it starts ("Started process for run
    (pid: N).")."""
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = record.get_dagster_event().engine_event_data
        if data is not None and "pid" in data.metadata:
            return int(str(data.metadata["pid"].value))
    raise AssertionError(f"run {run_id} recorded no worker pid")


def process_tcp_ports(pid: int) -> set[int]:
    """Local ports of the TCP sockets process `pid` has open (Linux /proc: its socket inodes, looked up in the
    socket tables of its network namespace)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


# --- The warehouse's sessions -----------------------------------------------------------------------------------


class ClientLocks:
    """Each client's warehouse write lock held in a session of its own, as a slow writer of that client would hold
    it: every run writing the client waits at its write, inside its step and its write transaction, until the
    lock is released. Released one client at a time; `release_all` (idempotent) ends every session."""

    APPLICATION_NAME = "kpi_chaos_lock_holder"

    def __init__(self, url: sa.URL, client_ids: Iterable[str]) -> None:
        # NullPool: a released session really closes, so no lock can outlive the test in a pool.
        self._engine = sa.create_engine(
            url, poolclass=sa.pool.NullPool, connect_args={"application_name": self.APPLICATION_NAME}
        )
        self._held: dict[str, tuple[sa.Connection, sa.RootTransaction]] = {}
        try:
            for client_id in client_ids:
                conn = self._engine.connect()
                transaction = conn.begin()
                self._held[client_id] = (conn, transaction)
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(client_lock_key(client_id))))
        except BaseException:
            self.release_all()
            raise

    @property
    def held(self) -> list[str]:
        return sorted(self._held)

    def release(self, client_id: str) -> None:
        conn, transaction = self._held.pop(client_id)
        try:
            transaction.rollback()
        finally:
            conn.close()

    def release_all(self) -> None:
        for client_id in list(self._held):
            self.release(client_id)
        self._engine.dispose()


def lock_waiters(engine: sa.Engine, database: str, client_ids: Iterable[str]) -> dict[str, list[int]]:
    """Backend pids of `database` waiting for each client's write lock (clients nobody waits for left out).
    pg_locks shows the lock's bigint key as classid (high 32 bits) and objid (low 32 bits), objsubid 1."""
    keys = {client_id: client_lock_key(client_id) & 0xFFFF_FFFF_FFFF_FFFF for client_id in client_ids}
    waiting: dict[str, list[int]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select l.classid::bigint, l.objid::bigint, l.pid from pg_locks l "
                "join pg_stat_activity a on a.pid = l.pid "
                "where l.locktype = 'advisory' and not l.granted and l.objsubid = 1 and a.datname = :db"
            ),
            {"db": database},
        ).all()
    for high, low, pid in rows:
        for client_id, key in keys.items():
            if (high, low) == (key >> 32, key & 0xFFFF_FFFF):
                waiting.setdefault(client_id, []).append(int(pid))
    return {client_id: sorted(pids) for client_id, pids in sorted(waiting.items())}


def backends_of_process(engine: sa.Engine, database: str, pid: int) -> list[int]:
    """Backend pids of `database` whose client is process `pid`: sessions connected over TCP from one of the local
    ports that process owns (the server sees each client's port in pg_stat_activity.client_port)."""
    ports = sorted(process_tcp_ports(pid))
    if not ports:
        return []
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select pid from pg_stat_activity where datname = :db and client_port = any(:ports) "
                "and client_addr is not null and host(client_addr) in ('127.0.0.1', '::1')"
            ),
            {"db": database, "ports": ports},
        ).all()
    return sorted(int(row[0]) for row in rows)


def terminate_backends(engine: sa.Engine, database: str, pids: Sequence[int]) -> list[int]:
    """pg_terminate_backend for those of `pids` that are sessions of `database` (never another database's); the
    pids terminated."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select pid, pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = :db and pid = any(:pids) and pid <> pg_backend_pid()"
            ),
            {"db": database, "pids": list(pids)},
        ).all()
    return sorted(int(pid) for pid, done in rows if done)


# --- One process of the stack -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stopped:
    """A supervised process stopped on its own: its exit code, whether it needed SIGKILL, and what was left in its
    process group after it exited (killed too)."""

    name: str
    exit_code: int | None
    forced: bool
    leftovers: tuple[str, ...]


def stop_supervised(supervisor: Supervisor, name: str, *, grace_s: float = 15.0) -> Stopped:
    """Stop the supervised process `name` (its whole process group: SIGTERM, `grace_s`, then SIGKILL) and take it
    off the supervisor's list, so that waits watching the other processes do not count it as a crash."""
    (child,) = [c for c in supervisor.children if c.spec.name == name and c.process.poll() is None]
    os.killpg(child.pid, signal.SIGTERM)
    forced = False
    try:
        child.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        forced = True
        os.killpg(child.pid, signal.SIGKILL)
        child.process.wait()
    leftovers = tuple(group_members(child.pid))
    if leftovers:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.pump.join(timeout=5)
    supervisor.children.remove(child)
    return Stopped(name, child.process.returncode, forced, leftovers)


# --- The watchdog -----------------------------------------------------------------------------------------------


def run_watchdog(env: Mapping[str, str], *, cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """`kpi-platform health --alert` as cron runs it: a process of its own with the deployment's environment."""
    kpi_platform = str(Path(sys.executable).with_name("kpi-platform"))
    return subprocess.run(  # noqa: S603 - fixed argv
        [kpi_platform, "health", "--alert"],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def slack_headlines(bodies: Iterable[object]) -> list[str]:
    """The first line of each Slack message posted (`*[CRITICAL] Collection failed for acme*`)."""
    lines = []
    for body in bodies:
        assert isinstance(body, Mapping), body
        lines.append(str(body["text"]).splitlines()[0])
    return lines
