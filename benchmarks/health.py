"""Health report time for N clients × D days (default 1,000 × 90; target < 1.5 s wall for `kpi-platform health`).

Builds a temporary warehouse and Dagster instance, both on PostgreSQL (the instance with production's pooled
dagster-postgres storage, as deploy/dagster.yaml), both dropped at the end. The warehouse gets the clients and one
client_daily_kpis row per client × day (a few split days among them); the instance gets the run history of a
platform that has run for `--run-days` days: one daily collection run per client per day with the tags the schedule's
runs carry (`plans.CollectionRequest.tags()` plus the schedule's own), its 28-day lookback range, a few failures
and a few gap-healing runs, written in bulk into the run storage tables (setup only), and the health report
asset's recorded scores over the last day (what `--alert` reads). Then it measures

* `build_health_report(...)` in-process, `--repeat` times (median / worst, and each check's median), and
* `kpi-platform health` as a subprocess, `--repeat` times with a cold interpreter each time (wall median / worst),
  with the CPU of its two processes (the worker evaluating the warehouse checks runs beside the one importing
  Dagster), the interpreter start (`python -c pass`) and the imports of both (`-X importtime`, one extra run).

Targets are met only when the worst run meets them.

    .venv/bin/python benchmarks/health.py [--clients 1000] [--days 90] [--run-days 35] [--repeat 5]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

# Setup only: the run storage's own tables, written in bulk (what `add_historical_run` writes one run at a time).
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.defs.health import HEALTH_REPORT, catalogue_check_keys
from kpi_platform.operations.health import HEALTH_CHECKS, build_health_report, clients_from_warehouse
from kpi_platform.operations.plans import DAILY_COLLECTION_JOB, DAILY_COLLECTION_SCHEDULE, CollectionRequest
from kpi_platform.warehouse import Warehouse, schema

PG_ADMIN = os.environ.get(settings.ENV_TEST_PG_URL, "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
TARGET_COMMAND_S = 1.5
ROOT = Path(__file__).resolve().parent.parent
COMMAND = ROOT / ".venv" / "bin" / "kpi-platform"
#: Share of daily runs that fail, and gap-healing runs per day (a fifth of them failing).
FAILED_SHARE = 0.003
HEAL_RUNS_PER_DAY = 5
#: Rows per INSERT batch while writing the run history.
INSERT_BATCH = 2000


def _clients(n: int) -> list[Client]:
    """Half in Warsaw, half in UTC, so the due days and deadlines differ between clients."""
    zones = ("Europe/Warsaw", "UTC")
    return [
        Client(f"client-{i:04d}", f"Client {i}", f"act_{10**11 + i}", "EUR", zones[i % 2]) for i in range(n)
    ]


def _day_frame(clients: list[Client], days: list[date], rng: np.random.Generator) -> pd.DataFrame:
    """One client_daily_kpis row per client × day, about one day in ten idle and one in 500 split."""
    ids = np.repeat([c.id for c in clients], len(days))
    size = len(ids)
    idle = rng.random(size) < 0.1
    impressions = np.where(idle, 0, rng.integers(500, 50_000, size))
    clicks = np.where(idle, 0, (impressions * rng.uniform(0.005, 0.03, size)).astype(np.int64))
    spend = np.where(idle, 0.0, np.round(clicks * rng.uniform(0.2, 1.5, size) + 1.0, 2))
    split = ~idle & (rng.random(size) < 0.002)
    counts = {
        name: np.where(idle | split, 0, rng.poisson(lam, size) + (name == "leads") * 8)
        for name, lam in (("calls", 1.0), ("contacts", 0.5), ("leads", 2.0), ("reservations", 0.7))
    }
    fetched = [
        datetime.combine(d + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=3) for d in days
    ]
    return pd.DataFrame(
        {
            "client_id": ids,
            "kpi_date": np.tile([d.isoformat() for d in days], len(clients)),
            "spend": spend,
            "impressions": impressions,
            "clicks": clicks,
            "ctr_pct": np.where(impressions > 0, clicks / np.maximum(impressions, 1) * 100, np.nan),
            "cpc": np.where(clicks > 0, np.round(spend / np.maximum(clicks, 1), 4), np.nan),
            **counts,
            "reservation_value": np.round(counts["reservations"] * 50.0, 2),
            "currency": "EUR",
            "campaign_count": np.where(idle, 0, rng.integers(1, 12, size)),
            "delivery": np.where(idle, "idle", "delivered"),
            "quality_score": np.round(rng.uniform(90, 100, size), 1),
            "quality_issues": "[]",
            "source": settings.SOURCE_SIMULATOR,
            "fetched_at": np.tile([f.isoformat() for f in fetched], len(clients)),
            "run_id": "benchmark",
        }
    )


def load_warehouse(warehouse: Warehouse, clients: list[Client], first: date, last: date) -> None:
    """COPY every client-day of first..last (clients in batches of 100, one transaction), then ANALYZE."""
    warehouse.upsert_clients([c.to_row() for c in clients])
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    rng = np.random.default_rng(42)
    table = schema.client_daily_kpis
    with warehouse.engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        for i in range(0, len(clients), 100):
            frame = _day_frame(clients[i : i + 100], days, rng)
            buffer = io.StringIO()
            frame.to_csv(buffer, index=False, header=False, na_rep=r"\N")
            buffer.seek(0)
            # Identifiers come from the table definition; values travel in the COPY stream.
            cursor.copy_expert(
                f"COPY {table.name} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')",
                buffer,
            )
        cursor.close()
        conn.exec_driver_sql(f"ANALYZE {table.name}")


def _run_rows(storage, run: dg.DagsterRun, created: datetime, ended: datetime) -> tuple[dict, list[dict]]:
    values = storage._get_run_insertion_values(run, created)
    values.update(update_timestamp=ended, start_time=created.timestamp() + 5, end_time=ended.timestamp())
    return values, [{"run_id": run.run_id, "key": k, "value": v} for k, v in run.tags_for_storage().items()]


def write_run_history(
    instance: dg.DagsterInstance, clients: list[Client], *, days: int, now: datetime
) -> tuple[int, int]:
    """One daily collection run per client per day over the last `days` days (the schedule's tags, the 28-day
    lookback), a few failing, plus a few gap-healing runs a day; written in batches straight into the run storage's
    tables (what `add_historical_run` writes, without a round trip per run). Returns (runs, failed runs)."""
    storage = instance.run_storage
    rng = random.Random(7)
    runs: list[dict] = []
    tags: list[dict] = []
    failed = 0
    today = now.date()
    for back in range(days, 0, -1):
        day = today - timedelta(days=back)
        tick = datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC) + timedelta(hours=2)
        requests = [
            (
                CollectionRequest(
                    c.id, day - timedelta(days=settings.DEFAULT_LOOKBACK_DAYS - 1), day, "", "daily"
                ),
                {
                    "dagster/schedule_name": DAILY_COLLECTION_SCHEDULE,
                    "dagster/tick": uuid.uuid4().hex[:12],
                },
            )
            for c in clients
        ]
        for c in rng.sample(clients, HEAL_RUNS_PER_DAY):
            gap = day - timedelta(days=rng.randint(30, 80))
            requests.append(
                (CollectionRequest(c.id, gap, gap, "", "heal"), {"dagster/sensor_name": "gap_healing"})
            )
        for request, extra in requests:
            fails = rng.random() < (FAILED_SHARE if request.reason == "daily" else 0.2)
            failed += fails
            created = tick + timedelta(seconds=rng.uniform(0, 3000))
            ended = created + timedelta(seconds=rng.uniform(20, 240))
            if ended > now:
                continue
            run = dg.DagsterRun(
                job_name=DAILY_COLLECTION_JOB,
                run_id=str(uuid.uuid4()),
                status=dg.DagsterRunStatus.FAILURE if fails else dg.DagsterRunStatus.SUCCESS,
                tags={**request.tags(), **extra},
                asset_selection=frozenset({dg.AssetKey(["meta_ads", "client_daily_kpis"])}),
            )
            values, run_tags = _run_rows(storage, run, created, ended)
            runs.append(values)
            tags.extend(run_tags)
    with storage.connect() as conn:
        for i in range(0, len(runs), INSERT_BATCH):
            conn.execute(RunsTable.insert(), runs[i : i + INSERT_BATCH])
        for i in range(0, len(tags), INSERT_BATCH * 8):
            conn.execute(RunTagsTable.insert(), tags[i : i + INSERT_BATCH * 8])
        if conn.in_transaction():
            conn.commit()
    return len(runs), failed


def record_scores(instance: dg.DagsterInstance, count: int) -> None:
    """The health report asset's materializations with a `score` (what `health --alert` reads)."""
    for i in range(count):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(HEALTH_REPORT, metadata={"score": float(95 + i % 5)})
        )


def _timed(spec, times: dict[str, list[float]]):
    def evaluate(ctx):
        t0 = time.perf_counter()
        try:
            return spec.evaluate(ctx)
        finally:
            times.setdefault(spec.name, []).append(time.perf_counter() - t0)

    return replace(spec, evaluate=evaluate)


def _wall(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - t0, done


def _cpu_of_children() -> float:
    """User + system CPU seconds of every child process waited for so far (the command and its worker)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _import_seconds(stderr: str) -> float:
    """The sum of the top-level imports' cumulative times in `-X importtime` output."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line.split("|", 2)
            if not name[1:].startswith(" ") and cumulative.strip().isdigit():
                total += int(cumulative)
    return total / 1e6


def _figures(label: str, samples: list[float], target: float | None = None) -> str:
    text = (
        f"{label}: median {statistics.median(samples):.3f} s, worst {max(samples):.3f} s over {len(samples)}"
    )
    if target is not None:
        text += (
            f"; worst / target {max(samples) / target:.2f} ({'met' if max(samples) < target else 'MISSED'})"
        )
    return text


def measure(warehouse_url: str, home: Path, instance: dg.DagsterInstance, repeat: int, now: datetime) -> None:
    warehouse = Warehouse(warehouse_url)
    try:
        clients = clients_from_warehouse(warehouse)
        per_check: dict[str, list[float]] = {}
        timed = [_timed(spec, per_check) for spec in HEALTH_CHECKS]
        report_s: list[float] = []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            report = build_health_report(
                warehouse=warehouse,
                instance=instance,
                clients=clients_from_warehouse(warehouse),
                now_utc=datetime.now(UTC),
                check_keys=catalogue_check_keys(),
                checks=timed,
            )
            report_s.append(time.perf_counter() - t0)
        # The first call warms the connection pools; it is printed apart.
        print(f"report: status {report.status.value}, score {report.score:g}, {len(clients)} active clients")
        print(f"build_health_report, first call (connections opened): {report_s[0]:.3f} s")
        print(_figures("build_health_report (in-process)", report_s[1:]))
        costs = sorted(
            ((statistics.median(v[1:]), max(v[1:]), k) for k, v in per_check.items()), reverse=True
        )
        print("  per check (median / worst): " + ", ".join(f"{k} {m:.3f}/{w:.3f}" for m, w, k in costs))
    finally:
        warehouse.dispose()

    env = {**os.environ, "DAGSTER_HOME": str(home), settings.ENV_WAREHOUSE_URL: warehouse_url}
    python = str(ROOT / ".venv" / "bin" / "python")
    interpreter = [_wall([python, "-c", "pass"], env)[0] for _ in range(repeat)]
    walls: list[float] = []
    cpu: list[float] = []
    codes: set[int] = set()
    for _ in range(repeat):
        before = _cpu_of_children()
        seconds, done = _wall([str(COMMAND), "health"], env)
        cpu.append(_cpu_of_children() - before)
        if done.returncode not in (0, 1, 2):
            raise RuntimeError(f"kpi-platform health exited {done.returncode}: {done.stderr[-2000:]}")
        walls.append(seconds)
        codes.add(done.returncode)
    _, traced = _wall([python, "-X", "importtime", str(COMMAND), "health"], env)
    imports = _import_seconds(traced.stderr)
    print(_figures("kpi-platform health (wall, cold interpreter)", walls, TARGET_COMMAND_S))
    lines = done.stdout.splitlines()
    print(f"  exit codes {sorted(codes)}; {lines[2] if len(lines) > 2 else done.stdout.strip()}")
    print(
        f"  CPU of the command's two processes: median {statistics.median(cpu):.3f} s "
        f"({statistics.median(cpu) / statistics.median(walls):.2f} × its wall: the warehouse checks' worker runs beside "
        f"the Dagster import)"
    )
    print(
        f"  split (medians): interpreter {statistics.median(interpreter):.3f} s; imports {imports:.3f} s of CPU "
        "(-X importtime, one run, both processes summed); code location 0 (check names from the check catalogue)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90, help="days of client_daily_kpis rows per client")
    parser.add_argument("--run-days", type=int, default=35, help="days of daily collection runs")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"kpi_bench_health_{uuid.uuid4().hex[:8]}"
    dagster_db, warehouse_db = f"{name}_dagster", f"{name}_wh"
    with admin.connect() as conn:
        for db in (dagster_db, warehouse_db):
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    base = sa.make_url(PG_ADMIN)
    warehouse_url = base.set(database=warehouse_db).render_as_string(hide_password=False)
    home = Path(tempfile.mkdtemp(prefix="kpi_bench_health_"))
    storage = "\n".join(
        f"{key}:\n  module: kpi_platform.runtime.pg_storage\n  class: {cls}\n  config:\n"
        f"    postgres_url: {base.set(database=dagster_db).render_as_string(hide_password=False)}"
        for key, cls in (
            ("run_storage", "PooledPostgresRunStorage"),
            ("event_log_storage", "PooledPostgresEventLogStorage"),
            ("schedule_storage", "PooledPostgresScheduleStorage"),
        )
    )
    (home / "dagster.yaml").write_text(storage + "\ntelemetry:\n  enabled: false\n", encoding="utf-8")
    try:
        now = datetime.now(UTC)
        clients = _clients(args.clients)
        warehouse = Warehouse(warehouse_url)
        warehouse.migrate()
        t0 = time.perf_counter()
        last = now.date() - timedelta(days=1)
        load_warehouse(warehouse, clients, last - timedelta(days=args.days - 1), last)
        warehouse_s = time.perf_counter() - t0
        warehouse.dispose()
        with dg.DagsterInstance.from_config(str(home)) as instance:
            t0 = time.perf_counter()
            n_runs, n_failed = write_run_history(instance, clients, days=args.run_days, now=now)
            record_scores(instance, 96)
            runs_s = time.perf_counter() - t0
            with instance.run_storage.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
            print(
                f"setup: {args.clients} clients × {args.days} days in the warehouse ({warehouse_s:.1f} s); "
                f"{n_runs} collection runs over {args.run_days} days, {n_failed} failed, and 96 recorded scores "
                f"in the Dagster instance ({runs_s:.1f} s); both on PostgreSQL (pooled dagster-postgres storage)"
            )
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"load average {load} on {os.cpu_count()} CPUs (shared machine: figures are noisy)")
            measure(warehouse_url, home, instance, args.repeat, now)
    finally:
        with admin.connect() as conn:
            for db in (dagster_db, warehouse_db):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
