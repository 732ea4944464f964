"""Gap-healing sensor tick time for N clients × D days of partitions (default 200 × 365; target < 10 s per tick).

Builds a temporary Dagster instance (production's pooled dagster-postgres storage, `--sqlite` for SQLite) and warehouse, registers
the clients, records materializations for most client-days with one range run over the rectangle (a stand-in asset
with the real asset key and partitions, so no API is called), leaves some days missing, then ticks the real
gap-healing sensor, built with a D-day horizon, with its cursor and prints the median and max tick time.

    .venv/bin/python benchmarks/gap_healing_tick.py [--clients 200] [--days 365] [--ticks 5] [--sqlite]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.cli.quickstart import QUIET
from kpi_platform.clients import Client
from kpi_platform.definitions import build_defs
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS, build_gap_healing_sensor
from kpi_platform.defs.partitions import client_daily_partitions
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG
from kpi_platform.warehouse import Warehouse

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@dg.asset(
    key=CLIENT_DAILY_KPIS,
    partitions_def=client_daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
)
def stand_in(context) -> dg.MaterializeResult:
    return dg.MaterializeResult()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument(
        "--sqlite",
        action="store_true",
        help="Dagster storage on SQLite (the embedded default) instead of production's pooled dagster-postgres "
        "storage; recording the setup's materializations takes about 13 ms per partition there",
    )
    args = parser.parse_args()
    # The horizon is fixed when the sensor is built, so the D days measured are the D days the sensor reads.
    gap_healing_sensor = build_gap_healing_sensor(horizon_days=args.days)

    tmp = Path(tempfile.mkdtemp(prefix="kpi_bench_heal_"))
    warehouse_url = f"sqlite:///{tmp / 'warehouse.sqlite'}"
    overrides = {}
    admin = db_name = None
    if not args.sqlite:
        admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        db_name = f"kpi_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
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
        clients = [Client(cid, cid, f"act_{10**11 + i}", "EUR", "UTC") for i, cid in enumerate(ids)]
        warehouse.upsert_clients([c.to_row() for c in clients])
        today = datetime.now(UTC).date()
        first = today - timedelta(days=args.days)
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
                t0 = time.perf_counter()
                result = gap_healing_sensor(context)
                times.append(time.perf_counter() - t0)
                requested.append(len(result.run_requests or []))
                cursor = result.cursor
        keys = args.clients * args.days
        print(
            f"storage: {'sqlite' if args.sqlite else 'postgres (pooled, as deploy/dagster.yaml)'}; {args.clients} clients × {args.days} days = {keys} keys"
        )
        print(f"setup (materializations recorded): {setup_s:.1f} s")
        print(
            f"tick: median {statistics.median(times):.2f} s, max {max(times):.2f} s over {args.ticks} ticks"
        )
        print(f"runs requested per tick: {requested} (bounded by {settings.HEALING_MAX_RUNS_PER_TICK})")
        print(f"target < 10 s: median is {statistics.median(times) / 10:.2f} × the target")
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
