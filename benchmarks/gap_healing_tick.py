"""Gap-healing sensor tick time for N clients × D days of history (default 200 × 3 years; target < 10 s per tick).

Builds a temporary Dagster instance (production's pooled dagster-postgres storage, `--sqlite` for SQLite) and
warehouse (PostgreSQL, or SQLite with `--sqlite`), registers the clients (every other one with a `start_date`, the
rest starting on their first collected day), records materializations for most client-days with one range run over
the rectangle (a stand-in asset with the real asset key and partitions, so no API is called) and stores the same
client-days in the warehouse, all but `--old-gaps` scattered days per client older than the healing horizon. The last
week is missing everywhere. Then it ticks the real gap-healing sensor, built with production's horizon and per-tick
history cap, with its cursor, and prints the median and max tick time. D is clipped to the first daily partition.

    .venv/bin/python benchmarks/gap_healing_tick.py [--clients 200] [--days 1095] [--old-gaps 10] [--ticks 7] [--sqlite] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.cli.quickstart import QUIET
from kpi_platform.clients import Client
from kpi_platform.definitions import build_defs
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS, build_gap_healing_sensor
from kpi_platform.defs.partitions import client_daily_partitions
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, contiguous
from kpi_platform.warehouse import Warehouse

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@dg.asset(
    key=CLIENT_DAILY_KPIS,
    partitions_def=client_daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def stand_in(context) -> dg.MaterializeResult:
    return dg.MaterializeResult()


def idle_days(client_id: str, days: list[date]) -> pd.DataFrame:
    """Client-day rows as a collection stores them for days without delivery (zero counts, no ratios)."""
    n = len(days)
    zeros = [0] * n
    return pd.DataFrame(
        {
            "client_id": [client_id] * n,
            "kpi_date": days,
            "spend": [0.0] * n,
            "impressions": zeros,
            "clicks": zeros,
            "ctr_pct": [None] * n,
            "cpc": [None] * n,
            **{name: zeros for name in ("calls", "contacts", "leads", "reservations")},
            "reservation_value": [0.0] * n,
            "currency": ["EUR"] * n,
            "campaign_count": zeros,
            "delivery": ["idle"] * n,
            "quality_score": [100.0] * n,
            "quality_issues": [[] for _ in range(n)],
            "source": [settings.SOURCE_SIMULATOR] * n,
            "fetched_at": [datetime.now(UTC)] * n,
            "run_id": ["benchmark"] * n,
        }
    )


def store_history(warehouse: Warehouse, client_id: str, first: date, last: date, gaps: set[date]) -> None:
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    for start, end in contiguous([d for d in days if d not in gaps]):
        frame = idle_days(client_id, [start + timedelta(days=i) for i in range((end - start).days + 1)])
        warehouse.replace_client_range(
            client_id=client_id, start=start, end=end, campaign_rows=pd.DataFrame(), daily_totals=frame
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--days", type=int, default=1095, help="days of history per client (3 years)")
    parser.add_argument(
        "--old-gaps",
        type=int,
        default=10,
        help="missing days per client older than the healing horizon (scattered; the warehouse has no row for "
        "them, Dagster shows them materialized)",
    )
    parser.add_argument("--ticks", type=int, default=7)
    parser.add_argument(
        "--profile", action="store_true", help="print where the first and the last tick spent their time"
    )
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="Dagster storage on SQLite (the embedded default) instead of production's pooled dagster-postgres "
        "storage; recording the setup's materializations takes about 13 ms per partition there",
    )
    args = parser.parse_args()
    # Production's sensor: the 90-day horizon read from Dagster, the older history from the warehouse.
    gap_healing_sensor = build_gap_healing_sensor()

    tmp = Path(tempfile.mkdtemp(prefix="kpi_bench_heal_"))
    warehouse_url = f"sqlite:///{tmp / 'warehouse.sqlite'}"
    overrides = {}
    admin = db_name = warehouse_db = None
    if not args.sqlite:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        db_name = f"kpi_bench_{uuid.uuid4().hex[:8]}"
        warehouse_db = f"{db_name}_wh"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{warehouse_db}"'))
        warehouse_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{warehouse_db}"
        config = {"postgres_url": PG_ADMIN.rsplit("/", 1)[0] + f"/{db_name}"}
        # The storage classes deploy/dagster.yaml uses in production.
        overrides = {
            key: {"module": "kpi_platform.runtime.pg_storage", "class": cls, "config": config}
            for key, cls in (
                ("run_storage", "PooledPostgresRunStorage"),
                ("event_log_storage", "PooledPostgresEventLogStorage"),
                ("schedule_storage", "PooledPostgresScheduleStorage"),
            )
        }
    try:
        warehouse = Warehouse(warehouse_url)
        warehouse.migrate()
        ids = [f"client-{i:04d}" for i in range(args.clients)]
        today = datetime.now(UTC).date()
        first = max(date.fromisoformat(settings.PARTITIONS_START_DATE), today - timedelta(days=args.days))
        days = (today - first).days
        clients = [
            Client(cid, cid, f"act_{10**11 + i}", "EUR", "UTC", start_date=first if i % 2 == 0 else None)
            for i, cid in enumerate(ids)
        ]
        warehouse.upsert_clients([c.to_row() for c in clients])
        t0 = time.perf_counter()
        rng = random.Random(7)
        horizon_start = today - timedelta(days=settings.HEALING_HORIZON_DAYS + 1)
        old_days = [first + timedelta(days=i) for i in range(1, (horizon_start - first).days)]
        for cid in ids:
            gaps = set(rng.sample(old_days, min(args.old_gaps, len(old_days))))
            store_history(warehouse, cid, first, today - timedelta(days=8), gaps)
        warehouse_s = time.perf_counter() - t0
        with dg.instance_for_test(overrides=overrides) as instance:
            instance.add_dynamic_partitions("clients", ids)
            t0 = time.perf_counter()
            # One rectangle run: every client × every day but the last week (the gaps the sensor must find).
            # Setup only, not what is measured: one planned event for the run and its materializations written
            # 1,000 at a time, instead of two events one by one per partition (hours for 73,000 on SQLite).
            os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")
            os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
            dg.materialize(
                [stand_in],
                instance=instance,
                run_config=QUIET,  # one DEBUG line per materialization would be tens of thousands of lines
                tags={
                    RANGE_START_TAG: f"{ids[0]}|{first}",
                    RANGE_END_TAG: f"{ids[-1]}|{today - timedelta(days=8)}",
                },
            )
            setup_s = time.perf_counter() - t0
            for name in ("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "DAGSTER_EVENT_BATCH_SIZE"):
                os.environ.pop(name, None)
            defs = build_defs(resources={"warehouse": WarehouseResource(url=warehouse_url)})
            cursor = None
            times, requested = [], []
            for _ in range(args.ticks):
                context = dg.build_sensor_context(
                    instance=instance,
                    cursor=cursor,
                    repository_def=defs.get_repository_def(),
                    resources={"warehouse": WarehouseResource(url=warehouse_url)},
                )
                profiler = cProfile.Profile() if args.profile and len(times) in (0, args.ticks - 1) else None
                t0 = time.perf_counter()
                if profiler is not None:
                    profiler.enable()
                result = gap_healing_sensor(context)
                times.append(time.perf_counter() - t0)
                if profiler is not None:
                    profiler.disable()
                    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
                requested.append(len(result.run_requests or []))
                cursor = result.cursor
        keys = args.clients * days
        storage = (
            "sqlite" if args.sqlite else "postgres (pooled, as deploy/dagster.yaml; warehouse on postgres)"
        )
        print(f"storage: {storage}; {args.clients} clients × {days} days from {first} = {keys} client-days")
        print(
            f"missing: the last 7 days of every client, and {args.old_gaps} older days per client "
            f"({args.clients * args.old_gaps} client-days; ≤ {settings.HEALING_HISTORY_DAYS_PER_TICK} per tick)"
        )
        print(f"setup: warehouse rows {warehouse_s:.1f} s, materializations recorded {setup_s:.1f} s")
        print(f"tick times: {', '.join(f'{t:.2f}' for t in times)} s")
        print(
            f"tick: median {statistics.median(times):.2f} s, max {max(times):.2f} s over {args.ticks} ticks"
        )
        print(f"runs requested per tick: {requested} (bounded by {settings.HEALING_MAX_RUNS_PER_TICK})")
        print(f"target < 10 s: median is {statistics.median(times) / 10:.2f} × the target")
    finally:
        if admin is not None:
            with admin.connect() as conn:
                for name in (db_name, warehouse_db):
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
