"""Backfill throughput outside Dagster: N clients × D days from the in-process simulator into the warehouse.

Each client is collected with one `collect_range` over the whole range, as a single-run backfill does, through
the asset's own path: the Meta client built the way `MetaApiResource.get_client(accounts=...)` builds it, behind
the warehouse's circuit breakers (`BreakerGuard`), the default contract validation, and a `Warehouse` on a
temporary SQLite file or a temporary PostgreSQL database (dropped at the end).

    .venv/bin/python benchmarks/backfill.py                      # 50 clients × 365 days, both backends, 3 repeats,
                                                                 # 2 worker processes (as 2 concurrent runs)
    .venv/bin/python benchmarks/backfill.py --backend postgres --clients 10 --days 90 --repeat 1
    .venv/bin/python benchmarks/backfill.py --profile            # one cProfile'd repeat per backend, by area
    .venv/bin/python benchmarks/backfill.py --workers 1          # one process, the clients one after another

Targets: ≥ 50,000 campaign rows/s written on PostgreSQL (campaign rows over the seconds spent inside
`Warehouse.replace_client_range`, frame checks included), and 50 clients × 365 days collected in under 30 s wall
(scaled by client-days for other sizes). `--workers N` collects the clients in N processes at once, as concurrent
Dagster runs would; its wall clock starts once the workers are up (imports done, warehouse engine built).
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from kpi_platform import settings, simulator
from kpi_platform.clients import Client
from kpi_platform.collect import CollectionResult, collect_range
from kpi_platform.defs.resources import SIMULATOR_TOKEN, MetaApiResource
from kpi_platform.meta.breaker import BreakerGuard
from kpi_platform.meta.client import MetaInsightsClient
from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse.store import WriteStats

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
TARGET_PG_WRITE_ROWS_PER_S = 50_000
TARGET_WALL_S = 30.0
#: The wall-time target is stated for this many client-days (50 clients × 365 days).
TARGET_CLIENT_DAYS = 50 * 365
CURRENCIES = ("EUR", "PLN", "USD", "GBP")
#: Concurrent runs of the production profile (deploy/dagster.yaml `max_concurrent_runs`): two cores, two runs.
DEFAULT_WORKERS = 2
BACKENDS = ("sqlite", "postgres")


class SleepMeter:
    """The client's `sleep`: sleeps for real and adds up the seconds (async report polls and retry waits)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, seconds: float) -> None:
        self.seconds += seconds
        time.sleep(seconds)


@dataclass(frozen=True)
class ClientRun:
    """One client's collect_range: its result and where its seconds went."""

    result: CollectionResult
    call_s: float
    write_call_s: float
    sleep_s: float
    cpu_s: float


@dataclass(frozen=True)
class Repeat:
    """One full backfill of every client on one backend."""

    wall_s: float
    workers: int
    runs: tuple[ClientRun, ...]

    @property
    def campaign_rows(self) -> int:
        return sum(r.result.campaign_rows for r in self.runs)

    @property
    def day_rows(self) -> int:
        return sum(r.result.day_rows for r in self.runs)

    @property
    def api_requests(self) -> int:
        return sum(r.result.api_requests for r in self.runs)

    @property
    def fetch_s(self) -> float:
        return sum(r.result.fetch_seconds for r in self.runs)

    @property
    def sleep_s(self) -> float:
        return sum(r.sleep_s for r in self.runs)

    @property
    def write_s(self) -> float:
        """Seconds inside `replace_client_range`: frame checks, CSV rendering, the transaction."""
        return sum(r.write_call_s for r in self.runs)

    @property
    def transaction_s(self) -> float:
        return sum(r.result.write_seconds for r in self.runs)

    @property
    def prepare_s(self) -> float:
        """Parse, totals, validation, quality scores (everything between the fetch and the write call)."""
        return sum(r.call_s - r.result.fetch_seconds - r.write_call_s for r in self.runs)

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the collecting processes (not of PostgreSQL)."""
        return sum(r.cpu_s for r in self.runs)

    @property
    def rows_per_s(self) -> float:
        return self.campaign_rows / self.wall_s

    @property
    def write_rows_per_s(self) -> float:
        """Campaign rows over the seconds inside `replace_client_range` (day rows are written too, uncounted)."""
        return self.campaign_rows / self.write_s if self.write_s else float("inf")

    @property
    def transaction_rows_per_s(self) -> float:
        return self.campaign_rows / self.transaction_s if self.transaction_s else float("inf")

    @property
    def fetch_parse_s(self) -> float:
        """Everything but the write calls: HTTP and simulator, poll waits, breakers, parsing, totals,
        contract validation, quality scores."""
        return self.fetch_s + self.prepare_s


class WriteMeter:
    """The warehouse as collect_range sees it, adding up the seconds of each whole `replace_client_range` call."""

    def __init__(self, warehouse: Warehouse) -> None:
        self._warehouse = warehouse
        self.seconds = 0.0

    def replace_client_range(self, **kwargs: object) -> WriteStats:
        started = time.perf_counter()
        try:
            return self._warehouse.replace_client_range(**kwargs)  # type: ignore[arg-type]
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> object:
        return getattr(self._warehouse, name)


def bench_clients(count: int) -> list[Client]:
    return [
        Client(
            id=f"bench-{i:03d}",
            name=f"Benchmark client {i}",
            ad_account_id=f"act_{910_000_000_000 + i}",
            currency=CURRENCIES[i % len(CURRENCIES)],
            timezone="Europe/Warsaw",
        )
        for i in range(count)
    ]


def meta_client(*, clients: Sequence[Client], sleep: Callable[[float], None]) -> MetaInsightsClient:
    """What `MetaApiResource.get_client(accounts=...)` returns for the in-process simulator, with `sleep` metered.

    Faults are pinned off ("{}"), whatever KPI_SIMULATOR_FAULTS says.
    """
    resource = MetaApiResource(api_url=settings.SIMULATOR_BASE_URL, simulator_faults_json="{}")
    accounts = {c.ad_account_id: c.currency for c in clients}
    return MetaInsightsClient(
        base_url=resource.resolved_url(),
        access_token=os.environ.get(resource.token_env_var) or SIMULATOR_TOKEN,
        session=resource.build_session(accounts),
        timeout=(resource.connect_timeout_s, resource.read_timeout_s),
        max_attempts=resource.max_attempts,
        sleep=sleep,
    )


def pg_admin_url() -> str:
    return os.environ.get(settings.ENV_TEST_PG_URL, DEFAULT_PG_ADMIN_URL)


@contextmanager
def temporary_warehouse(backend: str, workdir: Path) -> Iterator[Warehouse]:
    """A migrated, empty warehouse on a new SQLite file or a new PostgreSQL database, removed afterwards."""
    if backend == "sqlite":
        path = workdir / f"warehouse-{uuid.uuid4().hex[:8]}.sqlite"
        warehouse = Warehouse(f"sqlite:///{path}")
        try:
            warehouse.migrate()
            yield warehouse
        finally:
            warehouse.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    admin_url = sa.make_url(pg_admin_url())
    name = f"kpi_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    warehouse = Warehouse(admin_url.set(database=name))
    try:
        warehouse.migrate()
        yield warehouse
    finally:
        warehouse.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def collect_client(
    *, warehouse: Warehouse, meta: object, meter: SleepMeter, client: Client, start: date, end: date
) -> ClientRun:
    writes = WriteMeter(warehouse)
    slept, cpu, started = meter.seconds, time.process_time(), time.perf_counter()
    result = collect_range(
        client=client,
        start=start,
        end=end,
        meta=meta,  # type: ignore[arg-type]
        warehouse=writes,  # type: ignore[arg-type]
        run_id="benchmark",
    )
    return ClientRun(
        result=result,
        call_s=time.perf_counter() - started,
        write_call_s=writes.seconds,
        sleep_s=meter.seconds - slept,
        cpu_s=time.process_time() - cpu,
    )


def fresh_simulator_caches() -> None:
    """A fresh run process starts with the simulator's data caches empty."""
    simulator.day_deliveries.cache_clear()
    simulator.campaigns.cache_clear()


def backfill(
    *, warehouse: Warehouse, clients: Sequence[Client], start: date, end: date, workers: int = 1
) -> Repeat:
    """Collect every client over [start, end] with one collect_range each; the warehouse must be empty."""
    warehouse.upsert_clients([c.to_row() for c in clients])
    if workers > 1:
        return backfill_in_pool(warehouse=warehouse, clients=clients, start=start, end=end, workers=workers)
    fresh_simulator_caches()
    meter = SleepMeter()
    runs = []
    started = time.perf_counter()
    with BreakerGuard(warehouse).wrap(meta_client(clients=clients, sleep=meter)) as meta:
        for client in clients:
            runs.append(
                collect_client(
                    warehouse=warehouse, meta=meta, meter=meter, client=client, start=start, end=end
                )
            )
    return Repeat(wall_s=time.perf_counter() - started, workers=1, runs=tuple(runs))


# --- Process pool: one client per task, each worker with its own engine and Meta client ------------------------

_worker: dict[str, object] = {}


def _start_worker(url: str, clients: Sequence[Client]) -> None:
    fresh_simulator_caches()
    warehouse = Warehouse(url)
    meter = SleepMeter()
    meta = BreakerGuard(warehouse).wrap(meta_client(clients=clients, sleep=meter))
    _worker.update(warehouse=warehouse, meter=meter, meta=meta)


def _ready(_task: int) -> int:
    return os.getpid()


def _collect_in_worker(client: Client, start: date, end: date) -> ClientRun:
    return collect_client(
        warehouse=_worker["warehouse"],  # type: ignore[arg-type]
        meta=_worker["meta"],
        meter=_worker["meter"],  # type: ignore[arg-type]
        client=client,
        start=start,
        end=end,
    )


def backfill_in_pool(
    *, warehouse: Warehouse, clients: Sequence[Client], start: date, end: date, workers: int
) -> Repeat:
    url = warehouse.engine.url.render_as_string(hide_password=False)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(url, tuple(clients)),
    ) as pool:
        # Every worker up (imports, engine, Meta client) before the clock starts.
        pids = set()
        while len(pids) < workers:
            pids |= set(pool.map(_ready, range(workers * 4)))
        started = time.perf_counter()
        runs = list(pool.map(_collect_in_worker, clients, [start] * len(clients), [end] * len(clients)))
        wall = time.perf_counter() - started
    return Repeat(wall_s=wall, workers=workers, runs=tuple(runs))


# --- Profile ---------------------------------------------------------------------------------------------------

#: (label, file suffix, function name): cumulative seconds of these calls say where a backfill spends its time.
PROFILE_AREAS: tuple[tuple[str, str, str], ...] = (
    ("fetch (client + simulator + waits)", "meta/client.py", "fetch_campaign_insights"),
    ("  sleep (async poll / retry waits)", "~", "<built-in method time.sleep>"),
    ("  simulator: whole request (WSGI app)", "simulator/app.py", "wsgi_app"),
    ("    simulator: data generation", "simulator/data.py", "day_deliveries"),
    ("    simulator: row rendering", "simulator/data.py", "api_row"),
    ("  client: response.json()", "requests/models.py", "json"),
    ("  breakers: admission reads", "meta/breaker.py", "_admit"),
    ("  breakers: state writes", "meta/breaker.py", "_upsert"),
    ("parse_insights_rows", "meta/parse.py", "parse_insights_rows"),
    ("build_daily_totals", "kpi_platform/collect.py", "build_daily_totals"),
    ("contract validation (pandera)", "kpi_platform/collect.py", "validate_contract"),
    ("quality score and issues", "quality/rules.py", "assess_quality"),
    ("replace_client_range (checks + write)", "warehouse/store.py", "replace_client_range"),
    ("  prepare_frame (checks)", "warehouse/frames.py", "prepare_frame"),
    ("  _insert_frame (COPY / executemany)", "warehouse/store.py", "_insert_frame"),
)


def profile_areas(stats: pstats.Stats) -> list[tuple[str, float]]:
    raw = stats.stats  # type: ignore[attr-defined]
    areas = []
    for label, file_suffix, function in PROFILE_AREAS:
        cumulative = sum(
            ct
            for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in raw.items()
            if name == function and file.endswith(file_suffix)
        )
        areas.append((label, cumulative))
    return areas


def run_profile(*, backend: str, workdir: Path, clients: Sequence[Client], start: date, end: date) -> None:
    with temporary_warehouse(backend, workdir) as warehouse:
        profiler = cProfile.Profile()
        profiler.enable()
        repeat = backfill(warehouse=warehouse, clients=clients, start=start, end=end)
        profiler.disable()
    stats = pstats.Stats(profiler)
    print(f"\nprofile, {backend} (cProfile adds overhead; read shares, not absolute times)")
    print(f"  {'wall under the profiler':<44}{repeat.wall_s:>9.2f} s")
    for label, seconds in profile_areas(stats):
        print(f"  {label:<44}{seconds:>9.2f} s  {seconds / repeat.wall_s:>6.1%}")
    print("  top functions by own time:")
    stats.sort_stats(pstats.SortKey.TIME).print_stats(15)


# --- Report ----------------------------------------------------------------------------------------------------


def median(repeats: Sequence[Repeat], value: Callable[[Repeat], float]) -> float:
    return statistics.median(value(r) for r in repeats)


def report(*, backend: str, repeats: Sequence[Repeat], clients: int, days: int) -> str:
    wall_limit = TARGET_WALL_S * clients * days / TARGET_CLIENT_DAYS
    wall = median(repeats, lambda r: r.wall_s)
    waits = median(repeats, lambda r: r.sleep_s)
    write_rate = median(repeats, lambda r: r.write_rows_per_s)
    last = repeats[-1]
    workers = f"{last.workers} worker process{'es' if last.workers > 1 else ''}"
    lines = [
        f"{backend}: {clients} clients × {days} days, {workers}, median of {len(repeats)}",
        f"  wall time                     {wall:10.2f} s   (runs: {', '.join(f'{r.wall_s:.2f}' for r in repeats)})",
        f"  campaign rows                 {last.campaign_rows:10,d}",
        f"  client-day rows               {last.day_rows:10,d}",
        f"  api requests                  {last.api_requests:10,d}",
        f"  campaign rows/s overall       {median(repeats, lambda r: r.rows_per_s):10,.0f}",
        f"  CPU of the collecting processes {median(repeats, lambda r: r.cpu_s):8.2f} s   (PostgreSQL's not included)",
        f"  inside replace_client_range   {median(repeats, lambda r: r.write_s):10.2f} s   (frame checks + transaction)",
        f"    of which transactions       {median(repeats, lambda r: r.transaction_s):10.2f} s",
        f"  campaign rows/s written       {write_rate:10,.0f}   (rows / seconds inside replace_client_range)",
        f"    per transaction only        {median(repeats, lambda r: r.transaction_rows_per_s):10,.0f}",
        f"  fetch + parse                 {median(repeats, lambda r: r.fetch_parse_s):10.2f} s",
        f"    fetch (HTTP, sim., breakers){median(repeats, lambda r: r.fetch_s):10.2f} s",
        f"      of which sleeping         {waits:10.2f} s   (async report polls, retry waits)",
        f"    parse, validate, scores     {median(repeats, lambda r: r.prepare_s):10.2f} s",
        f"  target wall ≤ {wall_limit:.1f} s           {wall / wall_limit:10.2f} × the limit "
        f"({'met' if wall <= wall_limit else 'missed'})",
    ]
    if last.workers > 1:
        lines.insert(-1, "  (seconds other than wall and CPU are summed over the workers)")
    if backend == "postgres":
        lines.append(
            f"  target ≥ {TARGET_PG_WRITE_ROWS_PER_S:,} rows/s written {write_rate / TARGET_PG_WRITE_ROWS_PER_S:7.2f} × "
            f"the target ({'met' if write_rate >= TARGET_PG_WRITE_ROWS_PER_S else 'missed'})"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="one cProfile'd repeat per backend instead")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"worker processes, one client per task (default {DEFAULT_WORKERS}: the runs deploy/dagster.yaml "
        "runs at once)",
    )
    args = parser.parse_args(argv)
    if args.clients < 1 or args.days < 1 or args.repeat < 1 or args.workers < 1:
        parser.error("--clients, --days, --repeat and --workers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    end = datetime.now(UTC).date() - timedelta(days=1)
    start = end - timedelta(days=args.days - 1)
    clients = bench_clients(args.clients)
    print(f"range {start}..{end}; simulator in process; Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="kpi-bench-") as tmp:
        workdir = Path(tmp)
        for backend in backends:
            if args.profile:
                run_profile(backend=backend, workdir=workdir, clients=clients, start=start, end=end)
                continue
            repeats = []
            for _ in range(args.repeat):
                with temporary_warehouse(backend, workdir) as warehouse:
                    repeats.append(
                        backfill(
                            warehouse=warehouse, clients=clients, start=start, end=end, workers=args.workers
                        )
                    )
            print(report(backend=backend, repeats=repeats, clients=args.clients, days=args.days))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
