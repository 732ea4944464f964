"""The production processes (code server, webserver, daemon): their commands, a supervisor that runs them as
process groups and stops them without orphans, and the webserver's GraphQL calls used to drive and watch them.

`kpi-platform serve` runs the three together for a trial on one machine; in production each runs on its own under
the platform's process manager, with the commands `process_specs` builds (listed in the README).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from kpi_platform import settings

#: Set in every supervised process's environment, so processes that escaped their group can still be found.
SUPERVISOR_MARKER_ENV = "KPI_SUPERVISOR_ID"
#: The variables deploy/dagster.yaml and deploy/workspace.yaml read; `serve` refuses to start without them.
REQUIRED_ENV: tuple[str, ...] = (
    settings.ENV_DAGSTER_PG_HOST,
    settings.ENV_DAGSTER_PG_PORT,
    settings.ENV_DAGSTER_PG_USER,
    settings.ENV_DAGSTER_PG_PASSWORD,
    settings.ENV_DAGSTER_PG_DB,
    settings.ENV_CODE_SERVER_HOST,
    settings.ENV_CODE_SERVER_PORT,
)
#: What the embedded default (`kpi-platform ui`: SQLite storage in DAGSTER_HOME) needs: only where the code server is.
EMBEDDED_REQUIRED_ENV: tuple[str, ...] = (settings.ENV_CODE_SERVER_HOST, settings.ENV_CODE_SERVER_PORT)
#: `kpi-platform ui`'s daemon console: warnings and errors only (every tick is in the UI).
EMBEDDED_DAEMON_LOG_LEVEL = "warning"
#: Dagster settings read from the environment, for every process of the deployment (README "Running in
#: production"): a range run's materializations (one per client-day) are written as one batch, not one by one.
DAGSTER_TUNING_ENV: Mapping[str, str] = {"DAGSTER_EVENT_BATCH_SIZE": "1000"}
#: The mutation the UI sends from an asset's partitions page ("Launch backfill"), verbatim in its fields.
LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on RunConfigValidationInvalid { pipelineName errors { message path reason } }
    ... on PythonError { message stack }
  }
}
"""
#: What the UI adds to every launch it makes.
UI_EXECUTION_TAGS: tuple[dict[str, str], ...] = ({"key": "dagster/from_ui", "value": "true"},)


def deploy_dir() -> Path:
    """The folder with the production dagster.yaml and workspace.yaml: `deploy/` in the working directory, else
    the repository's."""
    local = settings.project_root() / "deploy"
    return local if local.is_dir() else Path(__file__).resolve().parents[2] / "deploy"


def _executable(name: str) -> str:
    """A console script of this interpreter's environment (the venv's `dagster`, `dagster-webserver` …)."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else (shutil.which(name) or name)


@dataclass(frozen=True)
class ProcessSpec:
    """One supervised process: a name for its log lines, its argv, and what it adds to the environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def command_line(self) -> str:
        return " ".join(self.argv)


def code_server_spec(
    *,
    host: str,
    port: int,
    module: str = "kpi_platform.definitions",
    attribute: str = "defs",
    working_directory: Path | None = None,
) -> ProcessSpec:
    """`dagster code-server start` through `python -m kpi_platform.runtime.code_server`, which forks run workers from a
    preloaded process: loads the code location in a child process it can restart on reload."""
    argv = [
        sys.executable,
        "-m",
        "kpi_platform.runtime.code_server",
        "code-server",
        "start",
        "-h",
        host,
        "-p",
        str(port),
        "-m",
        module,
        "-a",
        attribute,
        "--location-name",
        settings.CODE_LOCATION_NAME,
    ]
    if working_directory is not None:
        argv += ["-d", str(working_directory)]
    return ProcessSpec("code-server", tuple(argv))


def webserver_spec(*, host: str, port: int, workspace: Path) -> ProcessSpec:
    return ProcessSpec(
        "webserver", (_executable("dagster-webserver"), "-h", host, "-p", str(port), "-w", str(workspace))
    )


def daemon_spec(*, workspace: Path, log_level: str | None = None) -> ProcessSpec:
    """`dagster-daemon run` through `python -m kpi_platform.runtime.daemon`, which paces the backfill daemon at
    KPI_BACKFILL_INTERVAL_SECONDS (5 s) instead of 30 s. `log_level` is `dagster-daemon run --log-level`
    (its default: info, a line per sensor and schedule tick)."""
    argv = (sys.executable, "-m", "kpi_platform.runtime.daemon", "run", "-w", str(workspace))
    return ProcessSpec("daemon", argv + (("--log-level", log_level) if log_level else ()))


def simulator_spec(*, port: int) -> ProcessSpec:
    return ProcessSpec("simulator", (_executable("kpi-platform"), "simulator", "serve", "--port", str(port)))


def process_specs(
    *,
    host: str = "127.0.0.1",
    webserver_port: int = settings.DEFAULT_WEBSERVER_PORT,
    code_server_host: str = "127.0.0.1",
    code_server_port: int = settings.DEFAULT_CODE_SERVER_PORT,
    workspace: Path | None = None,
    module: str = "kpi_platform.definitions",
) -> list[ProcessSpec]:
    """The three production processes in start order: code server, webserver, daemon."""
    workspace = workspace or deploy_dir() / "workspace.yaml"
    return [
        code_server_spec(host=code_server_host, port=code_server_port, module=module),
        webserver_spec(host=host, port=webserver_port, workspace=workspace),
        daemon_spec(workspace=workspace),
    ]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def missing_env(env: Mapping[str, str], required: Sequence[str] = REQUIRED_ENV) -> list[str]:
    return [name for name in required if name not in env]


def prepare_dagster_home(home: Path, *, template: Path | None = None) -> Path:
    """Create `home` with a copy of the production dagster.yaml, unless it already has one (an operator's own
    file is never overwritten)."""
    template = template or deploy_dir() / "dagster.yaml"
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(template, target)
    return home


# --- Supervisor -------------------------------------------------------------------------------------------------


def _reset_signals() -> None:
    # A shell's background job may hand down ignored SIGINT/SIGTERM, and ignored dispositions survive exec:
    # without this, the servers could not be stopped gracefully.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class Child:
    """A running supervised process; it leads its own process group (and session)."""

    spec: ProcessSpec
    process: subprocess.Popen
    log_path: Path | None
    pump: threading.Thread

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(frozen=True)
class StopReport:
    """How a stop went: exit codes by name; `forced`, the processes that outlived the grace period and were
    killed; `group_leftovers`, what still ran in a process group after its leader exited (e.g. a run worker of
    a run in flight) and was killed with it; `stragglers`, marked processes found outside every group."""

    exit_codes: Mapping[str, int | None]
    forced: tuple[str, ...]
    group_leftovers: Mapping[str, tuple[str, ...]]
    stragglers: tuple[int, ...]


def _process_table() -> list[tuple[int, int, str]]:
    """(pid, process group, command line) of every live, non-zombie process (Linux /proc)."""
    table: list[tuple[int, int, str]] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            table.append((int(entry.name), int(fields[2]), cmdline))
    return table


def group_members(pgid: int) -> list[str]:
    """Command lines of the live processes in a process group."""
    return [cmd for _pid, group, cmd in _process_table() if group == pgid]


def marked_processes(marker: str) -> list[int]:
    """PIDs of live processes whose environment carries `KPI_SUPERVISOR_ID=<marker>` (Linux /proc)."""
    needle = f"{SUPERVISOR_MARKER_ENV}={marker}".encode()
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


class Supervisor:
    """Starts processes each in a new session (so a terminal's Ctrl-C reaches only the supervisor) and stops them
    group by group: SIGTERM, a grace period, SIGKILL, then a sweep for anything carrying the marker."""

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        echo: IO[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        base = dict(env if env is not None else os.environ)
        # A marker handed down by whoever started us (a test) is kept, so they can find everything below us too.
        self.marker = base.get(SUPERVISOR_MARKER_ENV) or uuid.uuid4().hex
        self.env = {**base, SUPERVISOR_MARKER_ENV: self.marker}
        self.log_dir = log_dir
        self.echo = echo
        self.cwd = cwd
        self.children: list[Child] = []
        self._echo_lock = threading.Lock()

    def start(self, spec: ProcessSpec) -> Child:
        log_path = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{spec.name}.log"
        process = subprocess.Popen(  # noqa: S603 - argv built from fixed executables
            list(spec.argv),
            env={**self.env, **spec.env},
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_reset_signals,  # noqa: PLW1509 - runs before exec, touches signals only
        )
        pump = threading.Thread(
            target=self._pump,
            args=(spec.name, process.stdout, log_path),
            name=f"log-{spec.name}",
            daemon=True,
        )
        pump.start()
        child = Child(spec, process, log_path, pump)
        self.children.append(child)
        return child

    def _pump(self, name: str, stream: IO[bytes], log_path: Path | None) -> None:
        log = log_path.open("ab") if log_path is not None else None
        try:
            for line in iter(stream.readline, b""):
                if log is not None:
                    log.write(line)
                    log.flush()
                if self.echo is not None:
                    with self._echo_lock:
                        self.echo.write(f"{name:>11} | {line.decode('utf-8', 'replace')}")
                        self.echo.flush()
        finally:
            stream.close()
            if log is not None:
                log.close()

    def exited(self) -> Child | None:
        """The first child that is no longer running, if any."""
        return next((c for c in self.children if c.process.poll() is not None), None)

    def stop(self, *, grace_s: float = 15.0) -> StopReport:
        """Stop every child, last started first: SIGTERM to each group, up to `grace_s` for the leaders to
        exit, then SIGKILL to whatever is left in each group and to marked stragglers. Idempotent."""
        forced: list[str] = []
        leftovers: dict[str, tuple[str, ...]] = {}
        for child in reversed(self.children):
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                forced.append(child.spec.name)
            members = group_members(child.pid)
            if members:
                leftovers[child.spec.name] = tuple(members)
            _signal_group(child.pid, signal.SIGKILL)
            child.process.wait()
        stragglers = tuple(marked_processes(self.marker))
        for pid in stragglers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for child in self.children:
            child.pump.join(timeout=5)
        return StopReport(
            exit_codes={c.spec.name: c.process.returncode for c in self.children},
            forced=tuple(forced),
            group_leftovers=leftovers,
            stragglers=stragglers,
        )

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a whole process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --- Waiting on the servers -------------------------------------------------------------------------------------


class NotReadyError(RuntimeError):
    """A server did not come up in time (its log says why)."""


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout_s: float,
    what: str,
    interval_s: float = 0.5,
    supervisor: Supervisor | None = None,
) -> None:
    """Poll `predicate` until true; fail early if a supervised process exits meanwhile."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if supervisor is not None and (dead := supervisor.exited()) is not None:
            raise NotReadyError(
                f"{dead.spec.name} exited with code {dead.process.returncode} while waiting for {what}"
                + (f"; see {dead.log_path}" if dead.log_path else "")
            )
        try:
            if predicate():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(interval_s)
    raise NotReadyError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


class GraphQLError(RuntimeError):
    """The webserver answered a GraphQL request with errors."""


@dataclass(frozen=True)
class Webserver:
    """The webserver's GraphQL endpoint, as the UI uses it."""

    url: str
    timeout_s: float = 60.0

    def query(self, document: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            f"{self.url}/graphql",
            json={"query": document, "variables": dict(variables or {})},
            timeout=self.timeout_s,
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise GraphQLError("; ".join(str(e.get("message")) for e in body["errors"]))
        return body["data"]

    def is_up(self) -> bool:
        return requests.get(f"{self.url}/server_info", timeout=5).status_code == 200

    def location_loaded(self, name: str = settings.CODE_LOCATION_NAME) -> bool:
        data = self.query(
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus"
            " locationOrLoadError { __typename } } } } }"
        )
        entries = data["workspaceOrError"].get("locationEntries") or []
        return any(
            e["name"] == name
            and e["loadStatus"] == "LOADED"
            and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
            for e in entries
        )

    def reload_location(self, name: str = settings.CODE_LOCATION_NAME) -> str:
        data = self.query(
            "mutation($name: String!) { reloadRepositoryLocation(repositoryLocationName: $name) { __typename } }",
            {"name": name},
        )
        return data["reloadRepositoryLocation"]["__typename"]

    def daemons_healthy(
        self, required: Sequence[str] = ("SENSOR", "SCHEDULER", "BACKFILL", "QUEUED_RUN_COORDINATOR")
    ) -> bool:
        data = self.query(
            "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
        )
        statuses = {
            s["daemonType"]: s["healthy"] for s in data["instance"]["daemonHealth"]["allDaemonStatuses"]
        }
        return all(statuses.get(name) for name in required)

    def launch_asset_backfill(
        self,
        *,
        asset_key: Sequence[str],
        partition_keys: Sequence[str],
        tags: Mapping[str, str] | None = None,
        title: str | None = None,
    ) -> str:
        """Launch a backfill of `partition_keys` of one asset the way the partitions page does; its id."""
        params: dict[str, Any] = {
            "tags": [*({"key": k, "value": v} for k, v in (tags or {}).items()), *UI_EXECUTION_TAGS],
            "assetSelection": [{"path": list(asset_key)}],
            "partitionNames": list(partition_keys),
            "fromFailure": False,
        }
        if title:
            params["title"] = title
        result = self.query(LAUNCH_PARTITION_BACKFILL, {"backfillParams": params})["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise GraphQLError(f"{result['__typename']}: {result.get('message') or result}")
        return str(result["backfillId"])

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        """Status, partition counts and runs of one backfill."""
        data = self.query(
            """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
                 __typename ... on PartitionBackfill { id status numPartitions
                   runs(limit: 1000) { runId status } }
                 ... on PythonError { message } } }""",
            {"id": backfill_id},
        )
        result = data["partitionBackfillOrError"]
        if result["__typename"] != "PartitionBackfill":
            raise GraphQLError(f"{result['__typename']}: {result.get('message')}")
        return result


#: Backfill statuses after which nothing more happens.
BACKFILL_DONE = frozenset({"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"})


# --- The stack: the processes started in order and waited for -----------------------------------------------


def dagster_pg_env(url: str) -> dict[str, str]:
    """DAGSTER_PG_* for deploy/dagster.yaml from a database URL; the password goes only into the environment."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    return {
        settings.ENV_DAGSTER_PG_HOST: parsed.host or "127.0.0.1",
        settings.ENV_DAGSTER_PG_PORT: str(parsed.port or 5432),
        settings.ENV_DAGSTER_PG_USER: parsed.username or "",
        settings.ENV_DAGSTER_PG_PASSWORD: parsed.password or "",
        settings.ENV_DAGSTER_PG_DB: parsed.database or "",
    }


class LocalStack:
    """Code server, webserver and daemon (optionally the Meta simulator) on this machine, under one supervisor.

    `env` must hold DAGSTER_HOME (prepared with `prepare_dagster_home`) and `required_env` (DAGSTER_PG_* for
    deploy/dagster.yaml; `EMBEDDED_REQUIRED_ENV` for a SQLite instance); `DAGSTER_TUNING_ENV` applies unless `env`
    sets the same names; ports left None are picked free. The servers and the daemon start separately, so a caller can act between the two.
    `simulator_env` adds to the simulator's environment only (e.g. its own KPI_CLIENTS_FILE).
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str],
        host: str = "127.0.0.1",
        webserver_port: int | None = None,
        code_server_port: int | None = None,
        simulator_port: int | None = None,
        with_simulator: bool = False,
        simulator_env: Mapping[str, str] | None = None,
        module: str = "kpi_platform.definitions",
        log_dir: Path | None = None,
        echo: IO[str] | None = None,
        cwd: Path | None = None,
        abort: threading.Event | None = None,
        required_env: Sequence[str] = REQUIRED_ENV,
    ) -> None:
        self.host = host
        self.webserver_port = webserver_port or free_port(host)
        self.code_server_port = code_server_port or free_port(host)
        self.simulator_port = (simulator_port or free_port(host)) if with_simulator else None
        self.module = module
        self.simulator_env = dict(simulator_env or {})
        full_env = {**DAGSTER_TUNING_ENV, **env}
        full_env.setdefault(settings.ENV_CODE_SERVER_HOST, host)
        full_env[settings.ENV_CODE_SERVER_PORT] = str(self.code_server_port)
        if self.simulator_port is not None:
            full_env[settings.ENV_META_URL] = f"http://{host}:{self.simulator_port}"
        missing = missing_env(full_env, required_env)
        if missing or not full_env.get("DAGSTER_HOME"):
            raise ValueError(f"missing environment: {', '.join(missing or ['DAGSTER_HOME'])}")
        self.env = full_env
        self.workspace = deploy_dir() / "workspace.yaml"
        self.supervisor = Supervisor(env=full_env, log_dir=log_dir, echo=echo, cwd=cwd)
        self.webserver = Webserver(f"http://{host}:{self.webserver_port}")
        self._abort = abort or threading.Event()

    def _wait(self, predicate: Callable[[], bool], *, timeout_s: float, what: str) -> None:
        wait_until(
            lambda: self._abort.is_set() or predicate(),
            timeout_s=timeout_s,
            what=what,
            supervisor=self.supervisor,
        )

    def start_servers(self, *, timeout_s: float = 180.0) -> None:
        """Simulator (if any), code server, then the webserver; returns once the webserver has the location."""
        simulator_port = self.simulator_port
        if simulator_port is not None:
            spec = simulator_spec(port=simulator_port)
            self.supervisor.start(ProcessSpec(spec.name, spec.argv, self.simulator_env))
            self._wait(
                lambda: port_open(self.host, simulator_port), timeout_s=timeout_s, what="the simulator"
            )
        self.supervisor.start(
            code_server_spec(
                host=self.env[settings.ENV_CODE_SERVER_HOST], port=self.code_server_port, module=self.module
            )
        )
        self._wait(
            lambda: port_open(self.env[settings.ENV_CODE_SERVER_HOST], self.code_server_port),
            timeout_s=timeout_s,
            what="the code server",
        )
        if self._abort.is_set():
            return
        self.supervisor.start(
            webserver_spec(host=self.host, port=self.webserver_port, workspace=self.workspace)
        )
        self._wait(self.webserver.is_up, timeout_s=timeout_s, what="the webserver")
        last_reload = [time.monotonic()]

        def loaded() -> bool:
            if self.webserver.location_loaded():
                return True
            # The code server may still have been loading when the webserver asked: ask again.
            if time.monotonic() - last_reload[0] > 5:
                last_reload[0] = time.monotonic()
                self.webserver.reload_location()
            return False

        self._wait(loaded, timeout_s=timeout_s, what="the code location in the webserver")

    def start_daemon(
        self, *, timeout_s: float = 120.0, wait_healthy: bool = True, log_level: str | None = None
    ) -> None:
        self.supervisor.start(daemon_spec(workspace=self.workspace, log_level=log_level))
        if wait_healthy:
            self._wait(self.webserver.daemons_healthy, timeout_s=timeout_s, what="healthy daemons")

    def stop(self, *, grace_s: float = 15.0) -> StopReport:
        return self.supervisor.stop(grace_s=grace_s)

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- `kpi-platform serve` ---------------------------------------------------------------------------------------


def serve(
    *,
    host: str,
    webserver_port: int,
    code_server_port: int,
    simulator_port: int | None,
    log_dir: Path | None,
    module: str = "kpi_platform.definitions",
    out: IO[str] = sys.stdout,
    embedded: bool = False,
) -> int:
    """Run code server, webserver and daemon (and optionally the simulator) until Ctrl-C/SIGTERM or until one
    exits, then stop all of them. 0 after Ctrl-C/SIGTERM, 1 when a process died or never came up, 2 on setup.

    `embedded` runs the same processes on the embedded default's instance (`kpi-platform ui`: DAGSTER_HOME
    already seeded by `cli.local.ensure_dagster_home`, SQLite storage, no DAGSTER_PG_*)."""
    env = dict(os.environ)
    home = env.get("DAGSTER_HOME")
    label = "kpi-platform ui" if embedded else "kpi-platform serve"
    required = EMBEDDED_REQUIRED_ENV if embedded else REQUIRED_ENV
    missing = missing_env(
        {**_SERVE_DEFAULTS, settings.ENV_CODE_SERVER_PORT: str(code_server_port), **env}, required
    )
    if missing or not home:
        print(
            f"error: set {', '.join(missing or ['DAGSTER_HOME'])} (see README, 'Running in production'); "
            f"{settings.ENV_DAGSTER_PG_PASSWORD} may be empty for trust authentication but must be set",
            file=sys.stderr,
        )
        return 2
    if not embedded:
        prepare_dagster_home(Path(home))
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = LocalStack(
        env={**_SERVE_DEFAULTS, **env},
        host=host,
        webserver_port=webserver_port,
        code_server_port=code_server_port,
        simulator_port=simulator_port,
        with_simulator=simulator_port is not None,
        module=module,
        log_dir=log_dir,
        echo=out,
        abort=stopping,
        required_env=required,
    )
    status = 0
    try:
        stack.start_servers()
        if not stopping.is_set():
            # The embedded default's terminal is a newcomer's: the daemon's warnings and errors, not its ticks.
            stack.start_daemon(wait_healthy=False, log_level=EMBEDDED_DAEMON_LOG_LEVEL if embedded else None)
            print(
                f"{label}: UI on {stack.webserver.url}; Ctrl-C stops all processes",
                file=out,
                flush=True,
            )
        while not stopping.is_set():
            dead = stack.supervisor.exited()
            if dead is not None:
                print(
                    f"error: {label}: {dead.spec.name} exited ({dead.process.returncode}); stopping",
                    file=sys.stderr,
                    flush=True,
                )
                status = 1
                break
            stopping.wait(0.5)
    except NotReadyError as exc:
        print(f"error: {label}: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        report = stack.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        codes = ", ".join(f"{name} {code}" for name, code in report.exit_codes.items())
        print(f"{label}: stopped ({codes})", file=out, flush=True)
    return status


#: What `serve` assumes when unset: the code server on this machine.
_SERVE_DEFAULTS = {settings.ENV_CODE_SERVER_HOST: "127.0.0.1"}
