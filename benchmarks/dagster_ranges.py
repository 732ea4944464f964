"""Cost per day of one range run versus single-day runs through Dagster: one client, the daily_collection_job.

A temporary Dagster instance (SQLite storage in a temp DAGSTER_HOME, or `--instance ephemeral` for in-memory), a
temporary SQLite warehouse and the in-process simulator. The client collects D days as ONE run with the range
tags a single-run backfill uses, and N other days as N one-key runs; the ratio says what a day costs alone.

    .venv/bin/python benchmarks/dagster_ranges.py                 # 365-day range run vs 30 single-day runs
    .venv/bin/python benchmarks/dagster_ranges.py --days 90 --single-days 10 --instance ephemeral

Dagster writes its run logs to stderr; they are discarded unless `--show-logs` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg

from kpi_platform import settings
from kpi_platform.cli.quickstart import sync_clients
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


@contextlib.contextmanager
def temporary_instance(kind: str, workdir: Path) -> Iterator[dg.DagsterInstance]:
    if kind == "ephemeral":
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance
        return
    home = workdir / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
        yield instance


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
    parser.add_argument("--days", type=int, default=365, help="days of the one range run")
    parser.add_argument("--single-days", type=int, default=30, help="number of one-key runs")
    parser.add_argument("--instance", choices=("sqlite", "ephemeral"), default="sqlite")
    parser.add_argument("--show-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.days < 1 or args.single_days < 1:
        parser.error("--days and --single-days must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    range_end = datetime.now(UTC).date() - timedelta(days=1)
    range_start = range_end - timedelta(days=args.days - 1)
    # The single days precede the range and a warm-up day precedes them: every run writes days nobody wrote yet.
    single_days = [range_start - timedelta(days=i) for i in range(args.single_days, 0, -1)]
    warm_up_day = single_days[0] - timedelta(days=1)
    first_partition = date.fromisoformat(settings.PARTITIONS_START_DATE)
    if warm_up_day < first_partition:
        raise SystemExit(f"--days + --single-days reach before the first partition ({first_partition})")

    with tempfile.TemporaryDirectory(prefix="kpi-bench-dagster-") as tmp:
        workdir = Path(tmp)
        warehouse_url = f"sqlite:///{workdir / 'warehouse.sqlite'}"
        warehouse = Warehouse(warehouse_url)
        warehouse.migrate()
        defs = build_defs(
            resources={
                "warehouse": WarehouseResource(url=warehouse_url),
                # Faults pinned off ("{}"), whatever KPI_SIMULATOR_FAULTS says.
                "meta_api": MetaApiResource(api_url=settings.SIMULATOR_BASE_URL, simulator_faults_json="{}"),
            }
        )
        job = defs.resolve_job_def(JOB_NAME)
        with temporary_instance(args.instance, workdir) as instance:
            sync_clients(instance=instance, clients=[CLIENT], warehouse=warehouse)

            def one_day(day: date) -> TimedRun:
                key = client_day_key(CLIENT.id, day)
                return timed_run(job, instance=instance, days=1, show_logs=args.show_logs, partition_key=key)

            one_day(warm_up_day)
            singles = [one_day(day) for day in single_days]
            tags = CollectionRequest(CLIENT.id, range_start, range_end, run_key="", reason="benchmark").tags()
            ranged = timed_run(job, instance=instance, days=args.days, show_logs=args.show_logs, tags=tags)
        warehouse.dispose()

    single_mean = statistics.mean(r.wall_s for r in singles)
    ratio = single_mean / ranged.per_day_s
    print(
        f"daily_collection_job, client {CLIENT.id}, {args.instance} Dagster instance, SQLite warehouse, "
        f"in-process simulator; Python {sys.version.split()[0]}"
    )
    print(f"range run     {range_start}..{range_end} ({args.days} days, 1 run)")
    print(f"  wall time                 {ranged.wall_s:9.2f} s")
    print(f"  seconds per day           {ranged.per_day_s:9.4f} s")
    print(f"  fetch (incl. async wait)  {ranged.fetch_s:9.2f} s")
    print(f"  write transaction         {ranged.write_s:9.2f} s")
    print(f"  rest (Dagster, parse)     {ranged.wall_s - ranged.fetch_s - ranged.write_s:9.2f} s")
    print(f"  campaign rows             {ranged.campaign_rows:9,d}")
    print(f"single-day runs {single_days[0]}..{single_days[-1]} ({len(singles)} runs, one key each)")
    print(
        f"  mean per run (= per day)  {single_mean:9.4f} s   "
        f"(median {statistics.median(r.wall_s for r in singles):.4f}, "
        f"min {min(r.wall_s for r in singles):.4f}, max {max(r.wall_s for r in singles):.4f})"
    )
    print(
        f"  mean fetch / write        {statistics.mean(r.fetch_s for r in singles):9.4f} s / "
        f"{statistics.mean(r.write_s for r in singles):.4f} s"
    )
    print(f"ratio per day (single-day cost / range cost)   {ratio:.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
