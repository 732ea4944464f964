"""The UI backfill at full scale: N clients × D days of `meta_ads/client_daily_kpis` launched through the
webserver's GraphQL API (the mutation the partitions page sends), run by the production processes on PostgreSQL,
or (`--profile embedded`) by the processes of `kpi-platform ui` on the embedded default.

Starts the Meta simulator over HTTP, the code server, the webserver and the daemon (`kpi_platform.cli.supervisor`) with
a temporary DAGSTER_HOME holding deploy/dagster.yaml and two temporary PostgreSQL databases (Dagster's storage
and the warehouse), dropped at the end. The clients are registered first (the clients file written and synced, as
`kpi-platform clients sync` does), so the gap-healing sensor's first tick already sees them, as in production; the
backfill of the D days ending yesterday is launched as soon as the webserver answers, and schedules and sensors keep
ticking throughout. Prints every run the processes created, by kind (the backfill's collection runs, gap-healing
runs, other collection runs, monthly summaries, warehouse checks), with how many were still queued when the backfill
completed; the wall time from the launch to the backfill's completion and until the run queue drained (every run
finished and the monthly-summary and check sensors ticked once more without adding any); partitions/s and rows/s, and
the time the runs spent queued versus executing.

    .venv/bin/python benchmarks/ui_backfill.py                       # 50 clients × 365 days
    .venv/bin/python benchmarks/ui_backfill.py --clients 3 --days 10
    .venv/bin/python benchmarks/ui_backfill.py --max-concurrent-runs 3 --pool-limit 3 --logs /tmp/ui_backfill

Target: 50 × 365 completes in under 180 s wall as 50 runs, every partition materialized. With `--repeat` a target
reads met only when the worst measurement meets it.
`--max-concurrent-runs` and `--pool-limit` override deploy/dagster.yaml for one measurement.

`--profile embedded` measures what a newcomer gets from `kpi-platform ui` after the quickstart: a temporary
KPI_DATA_DIR with the top-level dagster.yaml (SQLite storage), the SQLite warehouse, the in-process simulator, and
the same three processes with the same daemon (`kpi_platform.cli.supervisor.serve(embedded=True)`). Its targets:
the first run starts within 10 s of the launch, and the backfill reads completed within 10 s of its last run.

    .venv/bin/python benchmarks/ui_backfill.py --profile embedded --clients 2 --days 14 --repeat 3
    .venv/bin/python benchmarks/ui_backfill.py --profile embedded --clients 10 --days 90
    .venv/bin/python benchmarks/ui_backfill.py --profile embedded --clients 2 --days 14 --backfill-interval 30

(`--backfill-interval 30` is Dagster's own pace, what `dagster dev` ran before.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml
from pg_databases import temporary_database

from kpi_platform import settings
from kpi_platform.activity import ensure_demo_app_db
from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.cli.supervisor import (
    BACKFILL_DONE,
    EMBEDDED_DAEMON_LOG_LEVEL,
    EMBEDDED_REQUIRED_ENV,
    REQUIRED_ENV,
    LocalStack,
    dagster_pg_env,
    deploy_dir,
    marked_processes,
)
from kpi_platform.clients import Client
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.defs.monthly import CLIENT_MONTHLY_SUMMARY
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG
from kpi_platform.runtime.dagster_private import BulkActionsFilter, BulkActionStatus
from kpi_platform.warehouse import Warehouse

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
TARGET_WALL_S = 180.0
#: The embedded default's latency targets: launch → first run start, last run end → backfill completed.
TARGET_FIRST_START_S = 10.0
TARGET_COMPLETION_S = 10.0
CURRENCIES = ("EUR", "PLN", "USD", "GBP")
GAP_HEALING_SENSOR = "gap_healing_sensor"
#: The sensors that create runs in reaction to the backfill's runs: the queue has drained only once each of them
#: has ticked after the last run ended (and added nothing).
REACTING_SENSORS = ("monthly_summary_sensor", "checks_after_collection_sensor")
IN_PROGRESS = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
RUN_KINDS = (
    ("backfill", "backfill collection runs"),
    ("heal", "gap-healing runs"),
    ("collection", "other collection runs"),
    ("monthly", "monthly-summary runs"),
    ("checks", "check runs"),
    ("other", "other runs"),
)


def bench_clients(count: int) -> list[Client]:
    return [
        Client(
            id=f"bench-{i:03d}",
            name=f"Benchmark client {i}",
            ad_account_id=f"act_{920_000_000_000 + i}",
            currency=CURRENCIES[i % len(CURRENCIES)],
            timezone="Europe/Warsaw",
        )
        for i in range(count)
    ]


def write_clients_file(path: Path, clients: Sequence[Client]) -> None:
    entries = [
        {
            "id": c.id,
            "name": c.name,
            "ad_account_id": c.ad_account_id,
            "currency": c.currency,
            "timezone": c.timezone,
        }
        for c in clients
    ]
    path.write_text(yaml.safe_dump({"clients": entries}, sort_keys=False), encoding="utf-8")


STOCK_STORAGE = {
    "run_storage": ("dagster_postgres.run_storage", "PostgresRunStorage"),
    "event_log_storage": ("dagster_postgres.event_log", "PostgresEventLogStorage"),
    "schedule_storage": ("dagster_postgres.schedule_storage", "PostgresScheduleStorage"),
}


def instance_config(
    *, max_concurrent_runs: int | None, pool_limit: int | None, stock_storage: bool = False
) -> str:
    """deploy/dagster.yaml, with the tuning knobs replaced when given; `stock_storage` puts dagster-postgres's
    own storage classes (a connection per statement) in place of the pooled ones."""
    config = yaml.safe_load((deploy_dir() / "dagster.yaml").read_text(encoding="utf-8"))
    if stock_storage:
        for key, (module, cls) in STOCK_STORAGE.items():
            config[key]["module"], config[key]["class"] = module, cls
    if max_concurrent_runs is not None:
        config["concurrency"]["runs"]["max_concurrent_runs"] = max_concurrent_runs
    if pool_limit is not None:
        config["concurrency"]["pools"]["default_limit"] = pool_limit
    return yaml.safe_dump(config, sort_keys=False)


def sensor_ticks(stack: LocalStack, sensor_name: str) -> list[dict]:
    """The sensor's latest ticks, newest first: `status`, `timestamp` and `endTimestamp` (UNIX seconds)."""
    data = stack.webserver.query(
        """query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
             ... on Sensor { sensorState { ticks(limit: 100) { status timestamp endTimestamp } } } } }""",
        {
            "selector": {
                "repositoryName": "__repository__",
                "repositoryLocationName": settings.CODE_LOCATION_NAME,
                "sensorName": sensor_name,
            }
        },
    )
    state = data["sensorOrError"].get("sensorState") or {}
    return list(state.get("ticks") or [])


def sensor_tick_count(stack: LocalStack, sensor_name: str) -> int:
    return len([t for t in sensor_ticks(stack, sensor_name) if t["status"] != "STARTED"])


def ticked_after(stack: LocalStack, sensor_name: str, moment: float) -> bool:
    """Whether a tick of the sensor started after `moment` and has ended (its runs or backfill are recorded)."""
    return any(
        t["status"] != "STARTED" and float(t["timestamp"]) > moment for t in sensor_ticks(stack, sensor_name)
    )


@dataclass(frozen=True)
class RunTimes:
    """One run's life: created (queued), started, ended, as UNIX timestamps."""

    run_id: str
    status: str
    created: float
    started: float | None
    ended: float | None
    kind: str = "other"
    #: What the run materializes: `dagster/partition`, or the range tags' `start...end`; the job for the rest.
    target: str = ""

    @property
    def queued_s(self) -> float:
        return (self.started or self.created) - self.created

    @property
    def executing_s(self) -> float:
        return (self.ended or self.started or self.created) - (self.started or self.created)


def run_kind(run: dg.DagsterRun, backfill_id: str) -> str:
    """Which of `RUN_KINDS` a run is, from what it materializes or checks and its tags."""
    assets = run.asset_selection or set()
    if CLIENT_DAILY_KPIS in assets or run.job_name == "daily_collection_job":
        if run.tags.get("dagster/backfill") == backfill_id:
            return "backfill"
        return "heal" if run.tags.get("kpi/reason") == "heal" else "collection"
    if CLIENT_MONTHLY_SUMMARY in assets or run.job_name == "monthly_summary_job":
        return "monthly"
    if run.job_name == "warehouse_checks_job" or (not assets and run.asset_check_selection):
        return "checks"
    return "other"


def run_target(run: dg.DagsterRun) -> str:
    if RANGE_START_TAG in run.tags:
        return f"{run.tags[RANGE_START_TAG]}...{run.tags.get(RANGE_END_TAG, '')}"
    return run.tags.get("dagster/partition") or run.job_name


def months_in(target: str) -> int:
    """Months a monthly-summary run covers, from its `client|month` key or range."""
    start, _, end = target.partition("...")
    first = date.fromisoformat(start.split("|")[-1])
    last = date.fromisoformat((end or start).split("|")[-1])
    return (last.year - first.year) * 12 + last.month - first.month + 1


def run_times(
    instance: dg.DagsterInstance, run_filter: dg.RunsFilter | None = None, backfill_id: str = ""
) -> list[RunTimes]:
    return [
        RunTimes(
            r.dagster_run.run_id,
            r.dagster_run.status.value,
            r.create_timestamp.timestamp(),
            r.start_time,
            r.end_time,
            run_kind(r.dagster_run, backfill_id),
            run_target(r.dagster_run),
        )
        for r in instance.get_run_records(filters=run_filter)
    ]


def queued_at(run: RunTimes, moment: float) -> bool:
    """Whether the run had been created but not started at `moment`."""
    return run.created <= moment and (run.started is None or run.started > moment)


def drained(instance: dg.DagsterInstance, stack: LocalStack) -> float | None:
    """The time the last run ended once no run or backfill is in progress and the reacting sensors have ticked
    since without adding any; None while the queue has not drained."""
    if instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING])
    ):
        return None
    runs = run_times(instance)
    if any(r.status in IN_PROGRESS for r in runs):
        return None
    last_end = max((r.ended for r in runs if r.ended), default=0.0)
    if not all(ticked_after(stack, name, last_end) for name in REACTING_SENSORS):
        return None
    # A tick may have created runs or a backfill while the sensors were asked: look once more.
    if instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED, BulkActionStatus.CANCELING])
    ) or any(r.status in IN_PROGRESS for r in run_times(instance)):
        return None
    return last_end


def peak_concurrency(runs: Sequence[RunTimes]) -> int:
    edges = sorted([(r.started, 1) for r in runs if r.started] + [(r.ended, -1) for r in runs if r.ended])
    peak = current = 0
    for _, delta in edges:
        current += delta
        peak = max(peak, current)
    return peak


def group_cpu_s(pgid: int) -> float:
    """CPU seconds of the live processes of a process group, with their reaped children (run workers are
    grandchildren of the code server and are reaped by it)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += sum(int(v) for v in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values) / os.sysconf("SC_CLK_TCK")
    idle = (values[3] + values[4]) / os.sysconf("SC_CLK_TCK")
    return total - idle, total


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile",
        choices=["production", "embedded"],
        default="production",
        help="production: deploy/dagster.yaml on PostgreSQL, the simulator over HTTP; embedded: what "
        "`kpi-platform ui` runs on the quickstart's instance (SQLite, in-process simulator)",
    )
    parser.add_argument("--clients", type=int, default=50, help="clients to backfill (default: 50)")
    parser.add_argument("--days", type=int, default=365, help="days ending yesterday (default: 365)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure this many times; print median and worst"
    )
    parser.add_argument(
        "--max-concurrent-runs", type=int, help="override concurrency.runs.max_concurrent_runs"
    )
    parser.add_argument(
        "--pool-limit", type=int, help="override concurrency.pools.default_limit (the meta_api pool)"
    )
    parser.add_argument(
        "--backfill-interval",
        type=int,
        help="KPI_BACKFILL_INTERVAL_SECONDS for the daemon (default: its own, 5 s; 30 is Dagster's)",
    )
    parser.add_argument(
        "--event-batch-size",
        type=int,
        help="DAGSTER_EVENT_BATCH_SIZE for every process (0 writes events one by one)",
    )
    parser.add_argument(
        "--subset-planned-events",
        action="store_true",
        help="DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1: one planned event per range run instead of one per "
        "partition (range runs' partitions are then neither in progress nor failed in Dagster's partition status)",
    )
    parser.add_argument(
        "--stock-storage",
        action="store_true",
        help="dagster-postgres's own storage classes (no connection pool) instead of kpi_platform.runtime.pg_storage",
    )
    parser.add_argument("--timeout", type=float, default=1200.0, help="give up after this many seconds")
    parser.add_argument("--logs", help="keep the processes' logs in this folder")
    parser.add_argument("--echo", action="store_true", help="print the processes' output")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Measurement:
    """One backfill's figures: wall times to completion and until the queue drained, the daemon's two
    latencies, in seconds, and the runs the processes created."""

    ok: bool
    wall_s: float
    drain_s: float
    first_start_s: float
    completion_s: float
    runs_caused: int


@dataclass(frozen=True)
class Setup:
    """Where one measurement runs: the processes' environment, the instance folder and the warehouse."""

    env: dict[str, str]
    home: Path
    warehouse_url: str
    embedded: bool


@contextmanager
def production_setup(args: argparse.Namespace, work: Path, admin_url: str) -> Iterator[Setup]:
    """deploy/dagster.yaml with two temporary PostgreSQL databases (Dagster's storage, the warehouse)."""
    with (
        temporary_database(admin_url, "bench_dagster") as dagster_url,
        temporary_database(admin_url, "bench_warehouse") as warehouse_url,
    ):
        home = work / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            instance_config(
                max_concurrent_runs=args.max_concurrent_runs,
                pool_limit=args.pool_limit,
                stock_storage=args.stock_storage,
            ),
            encoding="utf-8",
        )
        env = {
            **os.environ,
            **dagster_pg_env(dagster_url),
            "DAGSTER_HOME": str(home),
            settings.ENV_WAREHOUSE_URL: warehouse_url,
            settings.ENV_DATA_DIR: str(work / "data"),
        }
        yield Setup(env, home, warehouse_url, embedded=False)


@contextmanager
def embedded_setup(args: argparse.Namespace, work: Path) -> Iterator[Setup]:
    """The quickstart's layout: KPI_DATA_DIR with dagster_home/dagster.yaml (the top-level file) and the SQLite
    warehouse; no KPI_META_API_URL, so runs use the in-process simulator."""
    data = work / "data"
    home = data / "dagster_home"
    home.mkdir(parents=True)
    config = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "dagster.yaml").read_text(encoding="utf-8")
    )
    if args.max_concurrent_runs is not None:
        config["concurrency"]["runs"]["max_concurrent_runs"] = args.max_concurrent_runs
    if args.pool_limit is not None:
        config["concurrency"]["pools"]["default_limit"] = args.pool_limit
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "DAGSTER_HOME": str(home), settings.ENV_DATA_DIR: str(data)}
    for name in (settings.ENV_WAREHOUSE_URL, settings.ENV_META_URL):
        env.pop(name, None)
    yield Setup(env, home, f"sqlite:///{data / 'warehouse.sqlite'}", embedded=True)


def measure(args: argparse.Namespace, admin_url: str) -> Measurement:
    clients = bench_clients(args.clients)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=i) for i in reversed(range(args.days))]
    keys = [f"{c.id}|{d.isoformat()}" for c in clients for d in days]
    embedded = args.profile == "embedded"

    with ExitStack() as stack_of_contexts:
        work = Path(stack_of_contexts.enter_context(tempfile.TemporaryDirectory(prefix="ui_backfill_")))
        setup = stack_of_contexts.enter_context(
            embedded_setup(args, work) if embedded else production_setup(args, work, admin_url)
        )
        home, env = setup.home, setup.env
        clients_file, simulator_clients = work / "clients.yaml", work / "simulator_clients.yaml"
        write_clients_file(clients_file, clients)
        write_clients_file(simulator_clients, clients)
        env[settings.ENV_CLIENTS_FILE] = str(clients_file)
        env.pop(settings.ENV_SIMULATOR_FAULTS, None)
        if args.backfill_interval is not None:
            env["KPI_BACKFILL_INTERVAL_SECONDS"] = str(args.backfill_interval)
        if args.event_batch_size is not None:
            env["DAGSTER_EVENT_BATCH_SIZE"] = str(args.event_batch_size)
        if args.subset_planned_events:
            env["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "1"
        os.environ.update({k: v for k, v in env.items() if k.startswith("DAGSTER_")})
        # The platform-activity snapshot reads the agency's application database, as in production: a demo one
        # here, so its scheduled and healing runs do what they do there instead of failing for want of it.
        app_db_url = f"sqlite:///{work / 'app.sqlite'}"
        ensure_demo_app_db(app_db_url, days=args.days + 30, today=yesterday + timedelta(days=1))
        env[settings.ENV_APP_DB_URL] = app_db_url
        warehouse = Warehouse(setup.warehouse_url)
        warehouse.migrate()
        stack = LocalStack(
            env=env,
            with_simulator=not embedded,
            simulator_env={settings.ENV_CLIENTS_FILE: str(simulator_clients)},
            log_dir=Path(args.logs) if args.logs else work / "logs",
            echo=sys.stdout if args.echo else None,
            required_env=EMBEDDED_REQUIRED_ENV if embedded else REQUIRED_ENV,
        )
        instance = dg.DagsterInstance.from_config(str(home))
        # Registered before any process starts, as an operator would: the healer's first tick sees the clients.
        sync_clients(instance=instance, clients=clients, warehouse=warehouse)
        try:
            t_start = time.monotonic()
            stack.start_servers()
            stack.start_daemon(log_level=EMBEDDED_DAEMON_LOG_LEVEL if embedded else None)
            print(f"processes up in {time.monotonic() - t_start:.1f} s; {len(clients)} clients registered")

            launched_at = time.time()
            t0 = time.monotonic()
            cpu_before = {c.spec.name: group_cpu_s(c.pid) for c in stack.supervisor.children}
            machine_before = machine_cpu_s()
            backfill_id = stack.webserver.launch_asset_backfill(
                asset_key=CLIENT_DAILY_KPIS.path,
                partition_keys=keys,
                title=f"benchmark {args.clients}x{args.days}",
            )
            t_launch = time.monotonic() - t0
            status, last_print = "REQUESTED", 0.0
            while time.monotonic() - t0 < args.timeout:
                backfill = stack.webserver.backfill(backfill_id)
                status = backfill["status"]
                if status in BACKFILL_DONE:
                    break
                if time.monotonic() - last_print > 15:
                    last_print = time.monotonic()
                    done = sum(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in backfill["runs"])
                    print(
                        f"  {time.monotonic() - t0:6.1f} s  {status}: {len(backfill['runs'])} runs, {done} finished"
                    )
                # Polled every 0.25 s: the completion latency is measured to this resolution.
                time.sleep(0.25)
            wall = time.monotonic() - t0
            completed_at = launched_at + wall
            # The runs the backfill set off (monthly summaries, checks) and the healer's keep the queue busy.
            drained_at = None
            while time.monotonic() - t0 < args.timeout:
                drained_at = drained(instance, stack)
                if drained_at is not None:
                    break
                time.sleep(1.0)
            drain_wall = (drained_at if drained_at is not None else time.time()) - launched_at
            healer_ticks = sensor_tick_count(stack, GAP_HEALING_SENSOR)
            cpu = {
                c.spec.name: group_cpu_s(c.pid) - cpu_before[c.spec.name] for c in stack.supervisor.children
            }
            machine_busy = machine_cpu_s()[0] - machine_before[0]
        finally:
            report = stack.stop()

        # The instance is the measurement's own: every run on it was caused by the processes started here.
        caused = run_times(instance, backfill_id=backfill_id)
        runs = [r for r in caused if r.kind == "backfill"]
        materialized = instance.get_materialized_partitions(CLIENT_DAILY_KPIS)
        missing = [k for k in keys if k not in materialized]
        with warehouse.engine.connect() as conn:
            campaign_rows = conn.execute(sa.text("select count(*) from campaign_daily_kpis")).scalar_one()
            day_rows = conn.execute(sa.text("select count(*) from client_daily_kpis")).scalar_one()
        instance.dispose()
        warehouse.dispose()
        leftovers = marked_processes(stack.supervisor.marker)

    successes = [r for r in runs if r.status == "SUCCESS"]
    first_start = min((r.started for r in runs if r.started), default=launched_at)
    last_end = max((r.ended for r in runs if r.ended), default=launched_at)
    executing = [r.executing_s for r in runs if r.started]
    queued = [r.queued_s for r in runs]
    n_keys = len(keys)
    first_start_s = first_start - launched_at
    completion_s = completed_at - last_end
    storage = "SQLite (embedded default)" if embedded else "PostgreSQL"
    cores = os.cpu_count() or 1
    print()
    print(
        f"UI backfill {args.clients} clients × {args.days} days = {n_keys} partitions, {storage}, {cores} cores"
    )
    print(f"  launch mutation           {t_launch * 1000:8.0f} ms")
    print(f"  wall (launch → {status})  {wall:8.1f} s{_target(wall, TARGET_WALL_S)}")
    print(
        f"  wall (launch → queue drained) {drain_wall:6.1f} s"
        f"{'' if drained_at is not None else '   (timed out before the queue drained)'}"
    )
    print(
        f"  runs caused               {len(caused):8d}   ({sum(queued_at(r, completed_at) for r in caused)} still "
        "queued when the backfill completed)"
    )
    for kind, label in RUN_KINDS:
        of_kind = [r for r in caused if r.kind == kind]
        print(
            f"    {label:<24}{len(of_kind):6d}   ({sum(queued_at(r, completed_at) for r in of_kind)} queued at "
            f"completion, {sum(r.status != 'SUCCESS' for r in of_kind)} not succeeded)"
        )
    monthly = [r for r in caused if r.kind == "monthly"]
    if monthly:
        sizes = Counter(months_in(r.target) for r in monthly)
        per_client = Counter(r.target.split("|")[0] for r in monthly)
        print(
            "  monthly-summary runs by months summarised: "
            + ", ".join(f"{n} month{'s' if n > 1 else ''} × {count}" for n, count in sorted(sizes.items()))
            + f"; most for one client: {max(per_client.values())}"
        )
    others = Counter(r.target for r in caused if r.kind == "other")
    if others:
        print("  other runs: " + ", ".join(f"{name} × {count}" for name, count in sorted(others.items())))
    print(f"  launch → first run start  {first_start_s:8.1f} s{_target(first_start_s, TARGET_FIRST_START_S)}")
    print(f"  first start → last end    {last_end - first_start:8.1f} s")
    print(f"  last run end → completed  {completion_s:8.1f} s{_target(completion_s, TARGET_COMPLETION_S)}")
    print(
        f"  runs                      {len(runs):8d}   ({len(successes)} succeeded), peak {peak_concurrency(runs)} at once"
    )
    print(f"  partitions materialized   {n_keys - len(missing):8d} / {n_keys}")
    print(f"  partitions/s              {n_keys / wall:8.1f}")
    print(f"  rows                      {campaign_rows:8d} campaign rows, {day_rows} client-day rows")
    print(
        f"  campaign rows/s           {campaign_rows / wall:8.1f}   (client-day rows/s {day_rows / wall:.1f})"
    )
    if runs:
        print(
            f"  queued per run            mean {statistics.mean(queued):6.1f} s  max {max(queued):6.1f} s"
            f"   (sum {sum(queued):.0f} run-s)"
        )
    if executing:
        print(
            f"  executing per run         mean {statistics.mean(executing):6.1f} s  max {max(executing):6.1f} s"
            f"   (sum {sum(executing):.0f} run-s)"
        )
    print(f"  gap-healing sensor ticks  {healer_ticks:8d}")
    by_process = ", ".join(f"{name} {seconds:.0f}" for name, seconds in cpu.items())
    print(f"  CPU seconds by process    {by_process} (code-server includes its run workers)")
    print(
        f"  CPU busy, whole machine   {machine_busy:.0f} s of {cores * drain_wall:.0f} core-s (until the queue drained); ours {sum(cpu.values()):.0f} s, "
        f"the rest is {'' if embedded else 'PostgreSQL and '}anything else running"
    )
    print(
        f"  stop: forced {list(report.forced) or 'none'}, killed with their group "
        f"{sum(len(v) for v in report.group_leftovers.values())}, stragglers {list(report.stragglers) or 'none'}, "
        f"left {leftovers or 'none'}"
    )
    ok = (
        status == "COMPLETED_SUCCESS"
        and drained_at is not None
        and not missing
        and len(runs) == args.clients
        and not leftovers
    )
    return Measurement(ok, wall, drain_wall, first_start_s, completion_s, len(caused))


def _target(seconds: float, target: float) -> str:
    return f"   target < {target:.0f} s: {'met' if seconds < target else 'MISSED'}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    admin_url = os.environ.get(settings.ENV_TEST_PG_URL, DEFAULT_PG_ADMIN_URL)
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    if yesterday - timedelta(days=args.days - 1) < date.fromisoformat(settings.PARTITIONS_START_DATE):
        print(f"error: {args.days} days reach before the first partition", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("error: --repeat must be 1 or more", file=sys.stderr)
        return 2
    results = [measure(args, admin_url) for _ in range(args.repeat)]
    if len(results) > 1:
        print()
        print(
            f"{len(results)} measurements, {args.profile} profile, {args.clients} × {args.days}: median / worst "
            "(a target is met only when the worst measurement meets it)"
        )
        for label, values, target in (
            ("wall", [r.wall_s for r in results], TARGET_WALL_S),
            ("wall until queue drained", [r.drain_s for r in results], None),
            ("launch → first run start", [r.first_start_s for r in results], TARGET_FIRST_START_S),
            ("last run end → completed", [r.completion_s for r in results], TARGET_COMPLETION_S),
        ):
            print(
                f"  {label:<26}{statistics.median(values):8.1f} s / {max(values):.1f} s   "
                f"({', '.join(f'{v:.1f}' for v in values)}){_target(max(values), target) if target else ''}"
            )
        caused = [r.runs_caused for r in results]
        print(
            f"  {'runs caused':<26}{statistics.median(caused):8.0f}   / {max(caused)}     "
            f"({', '.join(str(v) for v in caused)})"
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
