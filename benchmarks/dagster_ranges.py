"""Cost per day of one range run versus single-day runs through Dagster, on the embedded default and production.

One client and the daily_collection_job; each measurement gets its own Dagster instance and warehouse, and the
in-process simulator (faults off). The client collects D days as ONE run with the range tags a single-run backfill
uses, and N other days as N one-key runs; the ratio says what a day costs alone. Target: a day inside the range run is at least 20 × cheaper than a run of its
own, in the worst measurement of each profile.

- embedded: what `kpi-platform ui` and the quickstart run on: a temporary DAGSTER_HOME holding the top-level
  dagster.yaml (SQLite storage with batched event writes, kpi_platform/runtime/sqlite_storage.py), the
  environment they set (`DAGSTER_TUNING_ENV`), and a SQLite warehouse.
- production: deploy/dagster.yaml (pooled PostgreSQL storage, kpi_platform/runtime/pg_storage.py) with the same
  environment and DAGSTER_PG_* for a temporary PostgreSQL database, and the warehouse in another one; both
  databases are created on KPI_TEST_POSTGRES_URL's server (default postgres@127.0.0.1:5432) and dropped after.

    .venv/bin/python benchmarks/dagster_ranges.py                   # both profiles, 365-day run vs 30 single-day runs
    .venv/bin/python benchmarks/dagster_ranges.py --profile embedded --repeat 3
    .venv/bin/python benchmarks/dagster_ranges.py --days 90 --single-days 10

Dagster writes its run logs to stderr; they are discarded unless `--show-logs` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
from pg_databases import temporary_database

from kpi_platform import settings
from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.cli.supervisor import DAGSTER_TUNING_ENV, dagster_pg_env, deploy_dir
from kpi_platform.clients import Client
from kpi_platform.definitions import build_defs
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.keys import client_day_key
from kpi_platform.operations.plans import CollectionRequest
from kpi_platform.warehouse import Warehouse

JOB_NAME = "daily_collection_job"
ASSET_NODE = "meta_ads__client_daily_kpis"
CLIENT = Client(
    id="bench-ranges",
    name="Range benchmark client",
    ad_account_id="act_920000000001",
    currency="EUR",
    timezone="Europe/Warsaw",
)


@dataclass(frozen=True)
class TimedRun:
    """One execute_in_process call: its wall time and what the asset reported about its own work."""

    days: int
    wall_s: float
    fetch_s: float
    write_s: float
    campaign_rows: int

    @property
    def per_day_s(self) -> float:
        return self.wall_s / self.days


PROFILES = ("embedded", "production")
DEFAULT_PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
TARGET_RATIO = 20.0
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Setup:
    """Where one measurement runs: the Dagster instance and the warehouse URL."""

    instance: dg.DagsterInstance
    warehouse_url: str


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in os.environ (Dagster reads DAGSTER_EVENT_BATCH_SIZE and DAGSTER_PG_* from it), restored after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def embedded_setup(workdir: Path) -> Iterator[Setup]:
    """The quickstart's DAGSTER_HOME (a copy of the top-level dagster.yaml), the SQLite warehouse beside it."""
    home = workdir / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    with environment({**DAGSTER_TUNING_ENV, "DAGSTER_HOME": str(home)}):
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield Setup(instance, f"sqlite:///{workdir / 'warehouse.sqlite'}")


@contextlib.contextmanager
def production_setup(workdir: Path, admin_url: str) -> Iterator[Setup]:
    """deploy/dagster.yaml on a temporary PostgreSQL database, the warehouse in another."""
    with (
        temporary_database(admin_url, "bench_ranges_dagster") as dagster_url,
        temporary_database(admin_url, "bench_ranges_warehouse") as warehouse_url,
    ):
        home = workdir / "dagster_home"
        home.mkdir()
        shutil.copyfile(deploy_dir() / "dagster.yaml", home / "dagster.yaml")
        env = {**DAGSTER_TUNING_ENV, **dagster_pg_env(dagster_url), "DAGSTER_HOME": str(home)}
        with environment(env), dg.DagsterInstance.from_config(str(home)) as instance:
            yield Setup(instance, warehouse_url)


def timed_run(
    job: dg.JobDefinition, *, instance: dg.DagsterInstance, days: int, show_logs: bool, **run: object
) -> TimedRun:
    """Execute `job` in process with `run` (tags or partition_key); raises if the run fails."""
    sink = contextlib.nullcontext() if show_logs else contextlib.redirect_stderr(io.StringIO())
    with sink:
        started = time.perf_counter()
        result = job.execute_in_process(instance=instance, raise_on_error=False, **run)
        wall = time.perf_counter() - started
    if not result.success:
        raise RuntimeError(f"run {result.run_id} failed; rerun with --show-logs to see why")
    materializations = result.asset_materializations_for_node(ASSET_NODE)
    if len(materializations) != days:
        raise RuntimeError(f"run {result.run_id} materialized {len(materializations)} partitions, not {days}")
    # Each partition carries its own day; the run's totals are on its one contract check result.
    (check,) = result.get_asset_check_evaluations()
    metadata = check.metadata
    return TimedRun(
        days=days,
        wall_s=wall,
        fetch_s=float(metadata["run_fetch_seconds"].value),
        write_s=float(metadata["run_write_seconds"].value),
        campaign_rows=int(metadata["run_rows"].value),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--profile", choices=PROFILES, help="measure one profile only (default: both, embedded first)"
    )
    parser.add_argument("--days", type=int, default=365, help="days of the one range run (default: 365)")
    parser.add_argument("--single-days", type=int, default=30, help="number of one-key runs (default: 30)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="measure each profile this many times; print median and worst"
    )
    parser.add_argument("--show-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.days < 1 or args.single_days < 1 or args.repeat < 1:
        parser.error("--days, --single-days and --repeat must be at least 1")
    return args


@dataclass(frozen=True)
class Measurement:
    """One profile's range run and single-day runs on a fresh instance and warehouse."""

    profile: str
    #: The instance's event-log storage class and DAGSTER_EVENT_BATCH_SIZE, as the runs saw them.
    event_log: str
    range_start: date
    range_end: date
    ranged: TimedRun
    singles: list[TimedRun]

    @property
    def single_mean_s(self) -> float:
        return statistics.mean(r.wall_s for r in self.singles)

    @property
    def ratio(self) -> float:
        return self.single_mean_s / self.ranged.per_day_s


def measure(profile: str, args: argparse.Namespace, admin_url: str) -> Measurement:
    range_end = datetime.now(UTC).date() - timedelta(days=1)
    range_start = range_end - timedelta(days=args.days - 1)
    # The single days precede the range and a warm-up day precedes them: every run writes days nobody wrote yet.
    single_days = [range_start - timedelta(days=i) for i in range(args.single_days, 0, -1)]
    warm_up_day = single_days[0] - timedelta(days=1)

    with tempfile.TemporaryDirectory(prefix="kpi-bench-dagster-") as tmp:
        workdir = Path(tmp)
        setup_context = (
            embedded_setup(workdir) if profile == "embedded" else production_setup(workdir, admin_url)
        )
        with setup_context as setup:
            instance = setup.instance
            warehouse = Warehouse(setup.warehouse_url)
            warehouse.migrate()
            defs = build_defs(
                resources={
                    "warehouse": WarehouseResource(url=setup.warehouse_url),
                    # Faults pinned off ("{}"), whatever KPI_SIMULATOR_FAULTS says.
                    "meta_api": MetaApiResource(
                        api_url=settings.SIMULATOR_BASE_URL, simulator_faults_json="{}"
                    ),
                }
            )
            job = defs.resolve_job_def(JOB_NAME)
            sync_clients(instance=instance, clients=[CLIENT], warehouse=warehouse)

            def one_day(day: date) -> TimedRun:
                key = client_day_key(CLIENT.id, day)
                return timed_run(job, instance=instance, days=1, show_logs=args.show_logs, partition_key=key)

            one_day(warm_up_day)
            singles = [one_day(day) for day in single_days]
            tags = CollectionRequest(CLIENT.id, range_start, range_end, run_key="", reason="benchmark").tags()
            ranged = timed_run(job, instance=instance, days=args.days, show_logs=args.show_logs, tags=tags)
            warehouse.dispose()
            event_log = (
                f"{type(instance.event_log_storage).__name__}, "
                f"DAGSTER_EVENT_BATCH_SIZE={os.environ.get('DAGSTER_EVENT_BATCH_SIZE', 'unset')}"
            )
    return Measurement(profile, event_log, range_start, range_end, ranged, singles)


def print_measurement(m: Measurement) -> None:
    ranged, singles = m.ranged, m.singles
    storage = (
        "embedded default: dagster.yaml, SQLite storage and warehouse"
        if m.profile == "embedded"
        else "production: deploy/dagster.yaml, PostgreSQL storage and warehouse"
    )
    print(f"[{m.profile}] {storage} ({m.event_log})")
    print(f"range run     {m.range_start}..{m.range_end} ({ranged.days} days, 1 run)")
    print(f"  wall time                 {ranged.wall_s:9.2f} s")
    print(f"  seconds per day           {ranged.per_day_s:9.4f} s")
    print(f"  fetch (incl. async wait)  {ranged.fetch_s:9.2f} s")
    print(f"  write transaction         {ranged.write_s:9.2f} s")
    print(f"  rest (Dagster, parse)     {ranged.wall_s - ranged.fetch_s - ranged.write_s:9.2f} s")
    print(f"  campaign rows             {ranged.campaign_rows:9,d}")
    print(
        f"single-day runs {m.range_start - timedelta(days=len(singles))}..{m.range_start - timedelta(days=1)} "
        f"({len(singles)} runs, one key each)"
    )
    print(
        f"  mean per run (= per day)  {m.single_mean_s:9.4f} s   "
        f"(median {statistics.median(r.wall_s for r in singles):.4f}, "
        f"min {min(r.wall_s for r in singles):.4f}, max {max(r.wall_s for r in singles):.4f})"
    )
    print(
        f"  mean fetch / write        {statistics.mean(r.fetch_s for r in singles):9.4f} s / "
        f"{statistics.mean(r.write_s for r in singles):.4f} s"
    )
    print(f"ratio per day (single-day cost / range cost)   {m.ratio:.1f}×{_target(m.ratio)}")
    print()


def _target(ratio: float) -> str:
    return f"   target ≥ {TARGET_RATIO:.0f}×: {'met' if ratio >= TARGET_RATIO else 'MISSED'}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    first_partition = date.fromisoformat(settings.PARTITIONS_START_DATE)
    earliest = datetime.now(UTC).date() - timedelta(days=args.days + args.single_days + 1)
    if earliest < first_partition:
        raise SystemExit(f"--days + --single-days reach before the first partition ({first_partition})")
    admin_url = os.environ.get(settings.ENV_TEST_PG_URL, DEFAULT_PG_ADMIN_URL)
    profiles = [args.profile] if args.profile else list(PROFILES)
    print(
        f"daily_collection_job, client {CLIENT.id}, in-process simulator, {os.cpu_count()} cores; "
        f"Python {sys.version.split()[0]}, Dagster {dg.__version__}"
    )
    print()
    results: dict[str, list[Measurement]] = {profile: [] for profile in profiles}
    for _ in range(args.repeat):
        for profile in profiles:
            measurement = measure(profile, args, admin_url)
            print_measurement(measurement)
            results[profile].append(measurement)
    print(
        f"ratio per day, {args.days}-day range run vs {args.single_days} single-day runs, {args.repeat} "
        f"measurement{'s' if args.repeat > 1 else ''} per profile: median / worst (a target is met only when the "
        "worst measurement meets it)"
    )
    for profile, measurements in results.items():
        ratios = [m.ratio for m in measurements]
        walls = [m.ranged.wall_s for m in measurements]
        print(
            f"  {profile:<11}{statistics.median(ratios):6.1f}× / {min(ratios):.1f}×   "
            f"({', '.join(f'{r:.1f}' for r in ratios)}; range run {statistics.median(walls):.2f} s / "
            f"{max(walls):.2f} s){_target(min(ratios))}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
