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
`Warehouse.replace_client_range`, frame checks included), and 50 clients × 365 days collected in under 30 s
wall (scaled by client-days for other sizes). A target is reported met only when the worst of the repeats meets
it; the median and the worst are both printed. `--workers N` collects the clients in N processes at once, as
concurrent Dagster runs would; the wall clock includes starting the workers (spawn, imports, engine, Meta
client), and the start-up is also printed on its own.

The machine's limit for the write: on PostgreSQL each repeat then reloads the very rows it wrote with a bare
`COPY` (psycopg2 `copy_expert` from in-memory CSV, no checks, one transaction per client, one connection) into
the same tables after truncating them, with the campaign rows only and with the campaign and client-day rows
(the faster of two loads each), and prints the project's write rate as a ratio of each: without the contract
validation (the seconds inside `replace_client_range`, which receives frames already validated) and with it
(adding the seconds of the default validator, `collect.validate_contract`, timed around the very calls
`collect_range` makes).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
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
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from pg_databases import temporary_database
from psycopg2 import sql

from kpi_platform import settings, simulator
from kpi_platform.clients import Client
from kpi_platform.collect import CollectionResult, collect_range, validate_contract
from kpi_platform.defs.resources import SIMULATOR_TOKEN, MetaApiResource
from kpi_platform.meta.breaker import BreakerGuard
from kpi_platform.meta.client import MetaInsightsClient
from kpi_platform.warehouse import Warehouse, schema
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


class ValidationMeter:
    """The default contract validator (`validate_contract`), adding up the seconds of its calls."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, *args: object) -> None:
        started = time.perf_counter()
        try:
            validate_contract(*args)  # type: ignore[arg-type]
        finally:
            self.seconds += time.perf_counter() - started


@dataclasses.dataclass(frozen=True)
class ClientRun:
    """One client's collect_range: its result and where its seconds went."""

    result: CollectionResult
    call_s: float
    write_call_s: float
    validate_s: float
    sleep_s: float
    cpu_s: float


@dataclasses.dataclass(frozen=True)
class CopyLimit:
    """Seconds of a bare COPY of the same rows (one transaction per client): campaign rows only, and campaign
    plus client-day rows; the faster of two loads each."""

    campaign_s: float
    campaign_and_day_s: float


@dataclasses.dataclass(frozen=True)
class Repeat:
    """One full backfill of every client on one backend."""

    wall_s: float
    startup_s: float
    workers: int
    runs: tuple[ClientRun, ...]
    copy: CopyLimit | None = None

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
    def validate_s(self) -> float:
        """Seconds inside the default contract validator."""
        return sum(r.validate_s for r in self.runs)

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
    def validated_write_rows_per_s(self) -> float:
        """Campaign rows over the seconds of the contract validation and of `replace_client_range`."""
        seconds = self.validate_s + self.write_s
        return self.campaign_rows / seconds if seconds else float("inf")

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
    with temporary_database(pg_admin_url(), "kpi_bench") as url:
        warehouse = Warehouse(url)
        try:
            warehouse.migrate()
            yield warehouse
        finally:
            warehouse.dispose()


def collect_client(
    *, warehouse: Warehouse, meta: object, meter: SleepMeter, client: Client, start: date, end: date
) -> ClientRun:
    writes = WriteMeter(warehouse)
    validation = ValidationMeter()
    slept, cpu, started = meter.seconds, time.process_time(), time.perf_counter()
    result = collect_range(
        client=client,
        start=start,
        end=end,
        meta=meta,  # type: ignore[arg-type]
        warehouse=writes,  # type: ignore[arg-type]
        run_id="benchmark",
        validate=validation,
    )
    return ClientRun(
        result=result,
        call_s=time.perf_counter() - started,
        write_call_s=writes.seconds,
        validate_s=validation.seconds,
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
    return Repeat(wall_s=time.perf_counter() - started, startup_s=0.0, workers=1, runs=tuple(runs))


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
    # The clock runs from before the pool exists: a run process pays its start-up too.
    started = time.perf_counter()
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(url, tuple(clients)),
    ) as pool:
        # Start-up, timed on its own: every worker up (imports, engine, Meta client) before the first client.
        pids = set()
        while len(pids) < workers:
            pids |= set(pool.map(_ready, range(workers * 4)))
        startup = time.perf_counter() - started
        runs = list(pool.map(_collect_in_worker, clients, [start] * len(clients), [end] * len(clients)))
    wall = time.perf_counter() - started
    return Repeat(wall_s=wall, startup_s=startup, workers=workers, runs=tuple(runs))


# --- The machine's limit: a bare COPY of the same rows ---------------------------------------------------------


def dump_rows(cursor: object, table: sa.Table, client_id: str) -> str:
    """The client's rows of `table` as COPY CSV text, held in memory."""
    buffer = io.StringIO()
    statement = sql.SQL("COPY (SELECT * FROM {} WHERE client_id = %s) TO STDOUT WITH (FORMAT csv)")
    query = cursor.mogrify(statement.format(sql.Identifier(table.name)), (client_id,))  # type: ignore[attr-defined]
    cursor.copy_expert(query, buffer)  # type: ignore[attr-defined]
    return buffer.getvalue()


def bare_copy(connection: object, tables: Sequence[sa.Table], dumps: Sequence[dict[sa.Table, str]]) -> float:
    """Truncate `tables`, then load each client's dumps with COPY, one transaction per client; the seconds of the
    loads (CSV already in memory; no frame checks, no validation)."""
    cursor = connection.cursor()  # type: ignore[attr-defined]
    cursor.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(sql.Identifier(t.name) for t in tables)))
    connection.commit()  # type: ignore[attr-defined]
    started = time.perf_counter()
    for dump in dumps:
        for table in tables:
            statement = sql.SQL("COPY {} FROM STDIN WITH (FORMAT csv)").format(sql.Identifier(table.name))
            cursor.copy_expert(statement, io.StringIO(dump[table]))
        connection.commit()  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    cursor.close()
    return seconds


def copy_limit(warehouse: Warehouse, clients: Sequence[Client]) -> CopyLimit:
    """Reload the rows just written with bare COPYs into the same (truncated) tables, and time the loads."""
    campaigns, days = schema.campaign_daily_kpis, schema.client_daily_kpis
    connection = warehouse.engine.raw_connection()
    try:
        cursor = connection.cursor()
        dumps = [{t: dump_rows(cursor, t, c.id) for t in (campaigns, days)} for c in clients]
        cursor.close()
        connection.commit()
        # Each load twice, alternating, the faster counting: the first load after the backfill also meets the
        # server's deferred work from it (checkpoint, autovacuum), which is not the limit being measured.
        loads = [(bare_copy(connection, [campaigns], dumps), bare_copy(connection, [campaigns, days], dumps))]
        loads.append(
            (bare_copy(connection, [campaigns], dumps), bare_copy(connection, [campaigns, days], dumps))
        )
        return CopyLimit(
            campaign_s=min(load[0] for load in loads), campaign_and_day_s=min(load[1] for load in loads)
        )
    finally:
        connection.close()


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


def spread(repeats: Sequence[Repeat], value: Callable[[Repeat], float], *, fmt: str, worst: str) -> str:
    """Median, worst (`worst`: "min" or "max") and every repeat's value, formatted with `fmt`."""
    values = [value(r) for r in repeats]
    bad = min(values) if worst == "min" else max(values)
    runs = ", ".join(format(v, fmt) for v in values)
    return f"median {format(statistics.median(values), fmt)}, worst {format(bad, fmt)} (runs: {runs})"


def verdict(met: bool) -> str:
    return "met: the worst run meets it" if met else "missed: the worst run does not meet it"


def copy_lines(repeats: Sequence[Repeat]) -> list[str]:
    """The bare-COPY limit of each repeat and the project's write rate as a ratio of it."""
    limited = [r for r in repeats if r.copy is not None]
    if not limited:
        return []

    def limit_campaign(r: Repeat) -> float:
        return r.campaign_rows / r.copy.campaign_s  # type: ignore[union-attr]

    def limit_both(r: Repeat) -> float:
        return r.campaign_rows / r.copy.campaign_and_day_s  # type: ignore[union-attr]

    def ratio(rate: Callable[[Repeat], float], limit: Callable[[Repeat], float]) -> str:
        return spread(limited, lambda r: rate(r) / limit(r), fmt=".2f", worst="min")

    rates = (
        ("without validation", lambda r: r.write_rows_per_s),
        ("with validation   ", lambda r: r.validated_write_rows_per_s),
    )
    limits = (("campaign rows only", limit_campaign), ("+ client-day rows ", limit_both))
    return [
        "  bare COPY of the same rows (no checks, CSV in memory, one transaction per client, one connection, "
        "faster of 2 loads):",
        f"    campaign rows only, campaign rows/s  {spread(limited, limit_campaign, fmt=',.0f', worst='min')}",
        f"    + client-day rows, campaign rows/s   {spread(limited, limit_both, fmt=',.0f', worst='min')}",
        "  project's write rate as a ratio of that limit (each repeat against its own COPY):",
        *(
            f"    {rate_name} / {limit_name}  {ratio(rate, limit)}"
            for rate_name, rate in rates
            for limit_name, limit in limits
        ),
    ]


def report(*, backend: str, repeats: Sequence[Repeat], clients: int, days: int) -> str:
    wall_limit = TARGET_WALL_S * clients * days / TARGET_CLIENT_DAYS
    worst_wall = max(r.wall_s for r in repeats)
    worst_write = min(r.write_rows_per_s for r in repeats)
    last = repeats[-1]
    workers = f"{last.workers} worker process{'es' if last.workers > 1 else ''}"
    lines = [
        f"{backend}: {clients} clients × {days} days, {workers}, {len(repeats)} repeat(s); figures are medians",
        f"  wall time, start-up included  {spread(repeats, lambda r: r.wall_s, fmt='.2f', worst='max')} s",
        f"    of which worker start-up    {spread(repeats, lambda r: r.startup_s, fmt='.2f', worst='max')} s",
        f"  campaign rows                 {last.campaign_rows:10,d}",
        f"  client-day rows               {last.day_rows:10,d}",
        f"  api requests                  {last.api_requests:10,d}",
        f"  campaign rows/s overall       {median(repeats, lambda r: r.rows_per_s):10,.0f}",
        f"  CPU of the collecting processes {median(repeats, lambda r: r.cpu_s):8.2f} s   (PostgreSQL's not included)",
        f"  inside replace_client_range   {median(repeats, lambda r: r.write_s):10.2f} s   (frame checks + transaction)",
        f"    of which transactions       {median(repeats, lambda r: r.transaction_s):10.2f} s",
        f"  contract validation           {median(repeats, lambda r: r.validate_s):10.2f} s   (collect.validate_contract)",
        f"  campaign rows/s written       {spread(repeats, lambda r: r.write_rows_per_s, fmt=',.0f', worst='min')}",
        "                                (rows / seconds inside replace_client_range: without validation)",
        f"    with validation             {spread(repeats, lambda r: r.validated_write_rows_per_s, fmt=',.0f', worst='min')}",
        f"    per transaction only        {median(repeats, lambda r: r.transaction_rows_per_s):10,.0f}",
        *copy_lines(repeats),
        f"  fetch + parse                 {median(repeats, lambda r: r.fetch_parse_s):10.2f} s",
        f"    fetch (HTTP, sim., breakers){median(repeats, lambda r: r.fetch_s):10.2f} s",
        f"      of which sleeping         {median(repeats, lambda r: r.sleep_s):10.2f} s   (async report polls, retry waits)",
        f"    parse, validate, scores     {median(repeats, lambda r: r.prepare_s):10.2f} s",
        f"  target wall ≤ {wall_limit:.1f} s: worst {worst_wall / wall_limit:.2f} × the limit "
        f"({verdict(worst_wall <= wall_limit)})",
    ]
    if last.workers > 1:
        lines.insert(-1, "  (seconds other than wall, start-up and CPU are summed over the workers)")
    if backend == "postgres":
        lines.append(
            f"  target ≥ {TARGET_PG_WRITE_ROWS_PER_S:,} rows/s written: worst "
            f"{worst_write / TARGET_PG_WRITE_ROWS_PER_S:.2f} × the target "
            f"({verdict(worst_write >= TARGET_PG_WRITE_ROWS_PER_S)})"
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
                    repeat = backfill(
                        warehouse=warehouse, clients=clients, start=start, end=end, workers=args.workers
                    )
                    if warehouse.is_postgres:
                        repeat = dataclasses.replace(repeat, copy=copy_limit(warehouse, clients))
                    repeats.append(repeat)
            print(report(backend=backend, repeats=repeats, clients=args.clients, days=args.days))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
