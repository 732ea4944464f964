"""Migrations: idempotent, concurrent-safe, and creating exactly the tables of schema.py on both backends."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from kpi_platform.warehouse import Warehouse, make_engine, schema
from kpi_platform.warehouse.engine import alembic_config, head_revision


def _tables(warehouse: Warehouse) -> set[str]:
    return set(sa.inspect(warehouse.engine).get_table_names())


def test_head_is_the_newest_packaged_revision():
    script = ScriptDirectory.from_config(alembic_config())
    newest = max(rev.revision for rev in script.walk_revisions())  # revisions are zero-padded numbers
    assert head_revision() == script.get_current_head() == newest
    assert len(script.get_heads()) == 1


def test_migrate_twice_changes_nothing(warehouse_url, monkeypatch):
    warehouse = Warehouse(warehouse_url)
    try:
        assert warehouse.current_revision() is None
        warehouse.migrate()
        tables = _tables(warehouse)
        assert tables == {*schema.metadata.tables, "alembic_version"}
        with warehouse.engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()

        upgrades = []
        monkeypatch.setattr(command, "upgrade", lambda *args, **kwargs: upgrades.append(args))
        warehouse.migrate()
        assert upgrades == [], "a warehouse already at head must not run alembic again"
        assert warehouse.current_revision() == head_revision()
        assert _tables(warehouse) == tables
    finally:
        warehouse.dispose()


def _compared(dialect: str):
    """Every object but, on PostgreSQL, the foreign keys checked by triggers there (tested below instead)."""

    def include_object(_obj, name, type_, _reflected, _compare_to) -> bool:
        trigger_checked = (
            type_ == "foreign_key_constraint" and name in schema.POSTGRES_TRIGGER_CHECKED_FOREIGN_KEYS
        )
        return not (dialect == "postgresql" and trigger_checked)

    return include_object


def test_migrated_schema_matches_schema_module(warehouse_url):
    warehouse = Warehouse(warehouse_url)
    try:
        warehouse.migrate()
        with warehouse.engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": _compared(conn.dialect.name)}
            )
            assert compare_metadata(context, schema.metadata) == []
    finally:
        warehouse.dispose()


def test_concurrent_migrations_both_succeed(warehouse_url):
    warehouses = [Warehouse(warehouse_url) for _ in range(3)]
    barrier = threading.Barrier(len(warehouses))
    errors: list[BaseException] = []

    def run(warehouse: Warehouse) -> None:
        barrier.wait()
        try:
            warehouse.migrate()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in warehouses]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert errors == []
        assert warehouses[0].current_revision() == head_revision()
        with warehouses[0].engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        for warehouse in warehouses:
            warehouse.dispose()


def test_sqlite_engine_creates_folder_and_enables_wal_and_foreign_keys(tmp_path):
    path = tmp_path / "nested" / "deeper" / "warehouse.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
        assert path.exists()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url", ["postgresql://kpi:s3cret@db.invalid/kpi", "postgresql+pg8000://kpi:s3cret@db.invalid/kpi"]
)
def test_postgres_urls_use_psycopg2_and_never_show_the_password(url):
    warehouse = Warehouse(url)  # engines connect lazily: nothing is contacted here
    assert warehouse.engine.url.drivername == "postgresql+psycopg2"
    assert warehouse.is_postgres
    assert "s3cret" not in warehouse.url_for_display
    assert "s3cret" not in repr(warehouse)
    assert warehouse.url_for_display == "postgresql+psycopg2://kpi:***@db.invalid/kpi"
    warehouse.dispose()


def test_unsupported_backend_is_refused():
    with pytest.raises(ValueError, match="unsupported warehouse URL"):
        make_engine("mysql://u:pw@host/db")


def test_postgres_checks_the_daily_client_reference_with_statement_triggers(warehouse_url):
    warehouse = Warehouse(warehouse_url)
    try:
        warehouse.migrate()
        inspector = sa.inspect(warehouse.engine)
        foreign_keys = {
            fk["name"]
            for table in ("campaign_daily_kpis", "client_daily_kpis", "client_monthly_kpis")
            for fk in inspector.get_foreign_keys(table)
        }
        if not warehouse.is_postgres:
            assert foreign_keys >= schema.POSTGRES_TRIGGER_CHECKED_FOREIGN_KEYS
            return
        assert foreign_keys == {"fk_client_monthly_kpis_client_id_clients"}
        with warehouse.engine.connect() as conn:
            triggers = set(
                conn.execute(
                    sa.text(
                        "SELECT c.relname || ':' || t.tgname FROM pg_trigger t "
                        "JOIN pg_class c ON c.oid = t.tgrelid WHERE NOT t.tgisinternal"
                    )
                ).scalars()
            )
        assert triggers == {
            "campaign_daily_kpis:kpi_campaign_daily_kpis_client_reference_insert",
            "campaign_daily_kpis:kpi_campaign_daily_kpis_client_reference_update",
            "client_daily_kpis:kpi_client_daily_kpis_client_reference_insert",
            "client_daily_kpis:kpi_client_daily_kpis_client_reference_update",
            "clients:kpi_clients_referenced",
        }
    finally:
        warehouse.dispose()
