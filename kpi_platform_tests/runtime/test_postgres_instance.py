"""The daily asset on a Dagster instance whose storage is PostgreSQL (dagster-postgres), warehouse on PostgreSQL.

The instance is configured the way production's dagster.yaml does it: `postgres_db` with
`scheme: postgresql+psycopg2`, because SQLAlchemy 2.1 otherwise picks psycopg 3 for `postgresql://`, which
dagster-postgres 0.29 cannot use.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.clients import load_clients
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.warehouse import Warehouse
from kpi_platform_tests.support.platform import CLIENTS_YAML, Platform
from kpi_platform_tests.support.postgres import create_temp_database, postgres_storage

# Runs on Dagster instances of its own.
pytestmark = pytest.mark.usefixtures("no_current_defs_state_storage")

OCT_1, OCT_5 = date(2026, 10, 1), date(2026, 10, 5)
COMPARED = [
    "client_id",
    "kpi_date",
    "campaign_id",
    "spend",
    "impressions",
    "clicks",
    "leads",
    "reservation_value",
]


@pytest.fixture(scope="module")
def dagster_db_url(pg_admin_url) -> Iterator[str]:
    """An empty database for Dagster's own storage."""
    url, drop = create_temp_database("kpi_dagster")
    try:
        yield url
    finally:
        drop()


@pytest.fixture(scope="module")
def pg_platform(dagster_db_url, pg_template, tmp_path_factory) -> Iterator[Platform]:
    """acme and globex registered; each test collects its own client, so tests do not depend on each other."""
    warehouse_url, drop_warehouse = create_temp_database("kpi_warehouse", template=pg_template)
    clients_file = tmp_path_factory.mktemp("clients") / "clients.yaml"
    clients_file.write_text(CLIENTS_YAML, encoding="utf-8")
    warehouse = Warehouse(warehouse_url)
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("KPI_DATA_DIR", str(tmp_path_factory.mktemp("data")))
            env.delenv("KPI_META_API_URL", raising=False)
            env.delenv("KPI_SIMULATOR_FAULTS", raising=False)
            env.delenv("META_ACCESS_TOKEN", raising=False)
            warehouse.migrate()
            with dg.instance_for_test(overrides={"storage": postgres_storage(dagster_db_url)}) as instance:
                sync_clients(instance=instance, clients=load_clients(clients_file), warehouse=warehouse)
                yield Platform(instance, warehouse, warehouse_url)
    finally:
        warehouse.dispose()
        drop_warehouse()


def client_partitions(instance: dg.DagsterInstance, client_id: str) -> set[str]:
    return {
        k for k in instance.get_materialized_partitions(CLIENT_DAILY_KPIS) if k.startswith(f"{client_id}|")
    }


def run_status_in_postgres(url: str, run_id: str) -> str | None:
    """The status column of the run's row, read from the Dagster database itself, not through the instance."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                sa.text("SELECT status FROM runs WHERE run_id = :run_id"), {"run_id": run_id}
            ).scalar()
    finally:
        engine.dispose()


def test_range_run_is_recorded_in_postgres_storage(pg_platform, dagster_db_url):
    instance = pg_platform.instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

    result = pg_platform.collect("acme", OCT_1, OCT_5)

    assert result.success
    assert run_status_in_postgres(dagster_db_url, result.run_id) == "SUCCESS"
    assert client_partitions(instance, "acme") == {f"acme|2026-10-0{d}" for d in range(1, 6)}
    days = pg_platform.warehouse.read_client_days(client_id="acme", start=OCT_1, end=OCT_5)
    campaigns = pg_platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_5)
    assert len(days) == 5
    assert set(days["run_id"]) == {result.run_id}
    assert len(campaigns) == days["campaign_count"].sum() > 0
    # Each partition's materialization carries its own day's figures, through the batched event write too.
    rows_by_key = {
        str(m.partition): m.metadata["rows"].value
        for m in result.asset_materializations_for_node("meta_ads__client_daily_kpis")
    }
    assert rows_by_key == {
        f"acme|{day:%Y-%m-%d}": count
        for day, count in zip(days["kpi_date"], days["campaign_count"], strict=True)
    }
    stored = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=CLIENT_DAILY_KPIS, asset_partitions=["acme|2026-10-02"]),
        limit=1,
    ).records[0]
    assert stored.asset_materialization.metadata["spend"].value == days.iloc[1]["spend"]


def test_rerun_leaves_the_same_rows(pg_platform, dagster_db_url):
    warehouse = pg_platform.warehouse
    first = pg_platform.collect("globex", OCT_1, OCT_5)
    before_campaigns = warehouse.read_campaign_days(client_id="globex", start=OCT_1, end=OCT_5)
    before_days = warehouse.read_client_days(client_id="globex", start=OCT_1, end=OCT_5)

    second = pg_platform.collect("globex", OCT_1, OCT_5)

    assert first.success and second.success
    assert run_status_in_postgres(dagster_db_url, second.run_id) == "SUCCESS"
    after_campaigns = warehouse.read_campaign_days(client_id="globex", start=OCT_1, end=OCT_5)
    after_days = warehouse.read_client_days(client_id="globex", start=OCT_1, end=OCT_5)
    assert after_campaigns[COMPARED].equals(before_campaigns[COMPARED])
    day_columns = [c for c in after_days.columns if c not in ("run_id", "fetched_at")]
    assert after_days[day_columns].equals(before_days[day_columns])
    assert set(after_campaigns["run_id"]) == set(after_days["run_id"]) == {second.run_id}
    assert client_partitions(pg_platform.instance, "globex") == {f"globex|2026-10-0{d}" for d in range(1, 6)}


def test_the_production_storage_pools_its_connections_and_records_runs(dagster_db_url):
    """deploy/dagster.yaml's storage: dagster-postgres's classes with a small pool per process, so a run's many
    event writes reuse connections instead of opening one per statement."""
    from pathlib import Path

    import yaml

    from kpi_platform.runtime.pg_storage import (
        PooledPostgresEventLogStorage,
        PooledPostgresRunStorage,
        PooledPostgresScheduleStorage,
    )

    production = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml").read_text(encoding="utf-8")
    )
    postgres_db = postgres_storage(dagster_db_url)["postgres"]["postgres_db"]
    overrides = {}
    for key in ("run_storage", "event_log_storage", "schedule_storage"):
        section = production[key]
        assert section["module"] == "kpi_platform.runtime.pg_storage"
        assert set(section["config"]["postgres_db"]) == set(postgres_db)
        overrides[key] = {**section, "config": {"postgres_db": postgres_db}}

    @dg.asset
    def probe() -> None:
        return None

    with dg.instance_for_test(overrides=overrides) as instance:
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PooledPostgresScheduleStorage)
        engine = instance.event_log_storage._engine  # noqa: SLF001 - the pool is the point of the test
        assert not isinstance(engine.pool, sa.pool.NullPool)
        result = dg.materialize([probe], instance=instance)
        assert result.success
        assert run_status_in_postgres(dagster_db_url, result.run_id) == "SUCCESS"
        assert instance.get_latest_materialization_event(dg.AssetKey("probe")) is not None
        # Connections were reused: after a whole run the pool holds at most its size plus overflow.
        assert engine.pool.checkedout() == 0
        assert engine.pool.size() == 1
