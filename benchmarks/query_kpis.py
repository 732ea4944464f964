"""Latency of the KPI query API on PostgreSQL: a 30-day `query_kpis` over 1,000 clients with 3 years of rows.

Creates a temporary database (dropped at the end), migrates it, registers the clients, COPYs one
client_daily_kpis row per client × day, runs ANALYZE, then times `query_kpis` for every client over the last
30 days at the daily and the monthly grain and prints median / p95 against the 100 ms target.

    .venv/bin/python benchmarks/query_kpis.py
    .venv/bin/python benchmarks/query_kpis.py --clients 200 --years 1 --repeat 50
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
import uuid
from datetime import date, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform.warehouse.queries import query_kpis

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
TARGET_MS = 100.0
WINDOW_DAYS = 30
WARMUP = 3
#: Clients per COPY statement while loading.
LOAD_BATCH_CLIENTS = 100


def _client_rows(count: int) -> list[dict]:
    return [
        {
            "client_id": f"client_{n:04d}",
            "name": f"Client {n}",
            "ad_account_id": f"act_{100_000_000_000 + n}",
            "currency": ("EUR", "PLN", "USD")[n % 3],
            "timezone": "Europe/Warsaw",
            "active": True,
        }
        for n in range(count)
    ]


def _day_frame(clients: list[dict], days: pd.DatetimeIndex, rng: np.random.Generator) -> pd.DataFrame:
    """One row per client × day with plausible, varied KPIs (about one day in ten idle)."""
    n_days = len(days)
    ids = np.repeat([c["client_id"] for c in clients], n_days)
    currencies = np.repeat([c["currency"] for c in clients], n_days)
    size = len(ids)
    idle = rng.random(size) < 0.1
    impressions = np.where(idle, 0, rng.integers(500, 50_000, size))
    clicks = np.where(idle, 0, (impressions * rng.uniform(0.005, 0.03, size)).astype(np.int64))
    spend = np.where(idle, 0.0, np.round(clicks * rng.uniform(0.2, 1.5, size), 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        ctr = np.where(impressions > 0, clicks / impressions * 100, np.nan)
        cpc = np.where(clicks > 0, np.round(spend / clicks, 4), np.nan)
    counts = {
        name: np.where(idle, 0, rng.poisson(lam, size))
        for name, lam in (("calls", 1.0), ("contacts", 0.5), ("leads", 2.0), ("reservations", 0.7))
    }
    return pd.DataFrame(
        {
            "client_id": ids,
            "kpi_date": np.tile(days.strftime("%Y-%m-%d").to_numpy(), len(clients)),
            "spend": spend,
            "impressions": impressions,
            "clicks": clicks,
            "ctr_pct": ctr,
            "cpc": cpc,
            **counts,
            "reservation_value": np.round(counts["reservations"] * rng.uniform(20, 80, size), 2),
            "currency": currencies,
            "campaign_count": np.where(idle, 0, rng.integers(1, 12, size)),
            "delivery": np.where(idle, "idle", "delivered"),
            "quality_score": np.round(rng.uniform(60, 100, size), 1),
            # About one day in twenty with a failed check, as JSON text (the COPY stream's form).
            "quality_issues": np.where(rng.random(size) < 0.05, '["no_anomalies"]', "[]"),
            "source": settings.SOURCE_SIMULATOR,
            # Each day fetched the morning after it, so fetch times differ by day as they do in production.
            "fetched_at": np.tile(
                (days + pd.Timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%S+00:00"), len(clients)
            ),
            "run_id": "benchmark",
        }
    )


def _load(warehouse: Warehouse, clients: list[dict], days: pd.DatetimeIndex) -> float:
    """COPY every client-day row (batches of clients, one transaction); returns seconds."""
    rng = np.random.default_rng(42)
    table = schema.client_daily_kpis
    started = time.perf_counter()
    with warehouse.engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        for i in range(0, len(clients), LOAD_BATCH_CLIENTS):
            frame = _day_frame(clients[i : i + LOAD_BATCH_CLIENTS], days, rng)
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False, na_rep=r"\N")
            buffer.seek(0)
            columns = ", ".join(frame.columns)
            # Identifiers come from the table definition; values travel in the COPY stream.
            cursor.copy_expert(
                f"COPY {table.name} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer
            )
        cursor.close()
        conn.exec_driver_sql(f"ANALYZE {table.name}")
    return time.perf_counter() - started


def _time(fn, repeat: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _report(label: str, samples: list[float], rows: int, gaps: int) -> None:
    median = statistics.median(samples)
    p95 = sorted(samples)[max(0, int(round(0.95 * len(samples))) - 1)]
    print(
        f"{label:<10} rows={rows:>6} gaps={gaps:>3}  median={median:7.1f} ms  p95={p95:7.1f} ms  "
        f"min={min(samples):6.1f} ms  median/target={median / TARGET_MS:.2f}  p95/target={p95 / TARGET_MS:.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--admin-url", default=os.environ.get(settings.ENV_TEST_PG_URL, DEFAULT_PG_ADMIN_URL))
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--years", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    admin = sa.make_url(args.admin_url)
    name = f"kpi_bench_{uuid.uuid4().hex[:10]}"
    admin_engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    warehouse = Warehouse(admin.set(database=name))
    try:
        warehouse.migrate()
        clients = _client_rows(args.clients)
        warehouse.upsert_clients(clients)
        end = date.today() - timedelta(days=1)
        days = pd.date_range(end - timedelta(days=365 * args.years - 1), end, freq="D")
        seconds = _load(warehouse, clients, days)
        print(
            f"PostgreSQL {warehouse.url_for_display}: {args.clients} clients × {len(days)} days = "
            f"{args.clients * len(days):,} client_daily_kpis rows loaded in {seconds:.1f} s (COPY + ANALYZE)"
        )
        start = end - timedelta(days=WINDOW_DAYS - 1)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"query_kpis(all clients, {start}..{end}), {args.repeat} timed runs after {WARMUP} warm-up runs "
            f"(load average {load} on {os.cpu_count()} CPUs):"
        )
        for grain in ("daily", "monthly"):
            result = query_kpis(warehouse, start=start, end=end, grain=grain)
            samples = _time(lambda g=grain: query_kpis(warehouse, start=start, end=end, grain=g), args.repeat)
            _report(grain, samples, len(result.frame), len(result.gaps))
    finally:
        warehouse.dispose()
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin_engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
