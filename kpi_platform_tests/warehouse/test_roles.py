"""Least-privilege roles on PostgreSQL: the reader only reads, the writer cannot change the schema or rewrite a
snapshot except through the audited function, the platform runs with the writer, and `db roles` is idempotent.

Roles are cluster-wide: every fixture uses its own role names and drops them after its database.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects import postgresql

from kpi_platform import settings
from kpi_platform.cli import command as cli
from kpi_platform.clients import load_clients
from kpi_platform.collect import collect_range
from kpi_platform.defs.resources import MetaApiResource
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform.warehouse.engine import VERSION_TABLE, alembic_config, head_revision
from kpi_platform.warehouse.export import export
from kpi_platform.warehouse.readiness import open_warehouse
from kpi_platform.warehouse.roles import (
    READER_TABLE_PRIVILEGES,
    WRITER_TABLE_PRIVILEGES,
    RoleNames,
    RolesError,
    ensure_roles,
)
from kpi_platform.warehouse.store import PG_INSUFFICIENT_PRIVILEGE, MigrationNotAllowedError
from kpi_platform_tests.support.platform import make_platform
from kpi_platform_tests.support.postgres import admin_url, create_temp_database

PASSWORDS = {"owner": "owner-secret", "writer": "writer-secret", "reader": "reader-secret"}
DAY = date(2026, 3, 1)
TAKEN = datetime(2026, 3, 2, 0, 5, tzinfo=UTC)


@dataclass(frozen=True)
class RoleDb:
    admin_url: str
    names: RoleNames

    def url(self, role: str) -> str:
        return (
            sa.make_url(self.admin_url).set(username=role, password="x").render_as_string(hide_password=False)
        )

    @property
    def owner_url(self) -> str:
        return self.url(self.names.owner)

    @property
    def writer_url(self) -> str:
        return self.url(self.names.writer)

    @property
    def reader_url(self) -> str:
        return self.url(self.names.reader)


def unique_names() -> RoleNames:
    suffix = uuid.uuid4().hex[:8]
    return RoleNames(
        owner=f"kpi_owner_{suffix}", writer=f"kpi_writer_{suffix}", reader=f"kpi_reader_{suffix}"
    )


def drop_roles(names: RoleNames) -> None:
    engine = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for _, name in reversed(names.items()):
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


def migrate(url: str) -> None:
    warehouse = Warehouse(url)
    try:
        warehouse.migrate()
    finally:
        warehouse.dispose()


@pytest.fixture
def empty_db(pg_admin_url) -> Iterator[RoleDb]:
    """An empty database and unused role names; the roles are dropped after the database."""
    url, drop = create_temp_database("kpi_roles")
    names = unique_names()
    try:
        yield RoleDb(url, names)
    finally:
        drop()
        drop_roles(names)


@pytest.fixture
def roles_db(empty_db) -> RoleDb:
    """The documented order: roles, migrations as the owner, roles again (grants on the new tables)."""
    ensure_roles(url=empty_db.admin_url, names=empty_db.names, passwords=PASSWORDS)
    migrate(empty_db.owner_url)
    ensure_roles(url=empty_db.admin_url, names=empty_db.names, passwords=PASSWORDS)
    return empty_db


def assert_refused(url: str, statement: str, params: dict | None = None) -> None:
    engine = sa.create_engine(url)
    try:
        with pytest.raises(sa.exc.ProgrammingError) as info, engine.begin() as conn:
            conn.execute(sa.text(statement), params or {})
        assert info.value.orig.pgcode == PG_INSUFFICIENT_PRIVILEGE, statement
    finally:
        engine.dispose()


def snapshot(metric: str, value: float, *, taken: datetime = TAKEN) -> dict:
    return {
        "metric_date": DAY,
        "metric_type": settings.ACTIVITY_METRIC_TYPE,
        "metric_category": metric,
        "value": value,
        "metadata": {"source": "test", "run_id": "run-1"},
        "collection_timestamp": taken,
    }


def owners(url: str) -> dict[str, str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                sa.text("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = current_schema()")
            )
            found = {name: owner for name, owner in tables}
            found["function"] = conn.execute(
                sa.text("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = :name"),
                {"name": schema.CORRECT_DAILY_METRIC_FUNCTION},
            ).scalar_one()
        return found
    finally:
        engine.dispose()


# --- the policy and the command -------------------------------------------------------------------------------


def test_policy_names_every_table_and_keeps_snapshots_append_only():
    assert set(WRITER_TABLE_PRIVILEGES) == {*schema.metadata.tables, VERSION_TABLE}
    assert WRITER_TABLE_PRIVILEGES["daily_metrics"] == {"SELECT", "INSERT"}
    assert WRITER_TABLE_PRIVILEGES["daily_metrics_corrections"] == {"SELECT"}
    assert WRITER_TABLE_PRIVILEGES[VERSION_TABLE] == {"SELECT"}
    assert READER_TABLE_PRIVILEGES == {"SELECT"}
    assert not any("TRUNCATE" in privileges for privileges in WRITER_TABLE_PRIVILEGES.values())


def test_roles_need_postgresql(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    with pytest.raises(RolesError, match="need PostgreSQL"):
        ensure_roles(url=url)
    assert cli.main(["db", "roles", "--url", url]) == 2
    assert "need PostgreSQL" in capsys.readouterr().err


def test_second_run_changes_nothing_and_the_command_says_so(roles_db, monkeypatch, capsys):
    again = ensure_roles(url=roles_db.admin_url, names=roles_db.names, passwords=PASSWORDS)
    assert (again.created, again.passwords_set, again.changes, again.missing) == ((), (), (), ())
    assert not again.changed

    for kind, variable in (
        ("owner", settings.ENV_DB_OWNER_PASSWORD),
        ("writer", settings.ENV_DB_WRITER_PASSWORD),
        ("reader", settings.ENV_DB_READER_PASSWORD),
    ):
        monkeypatch.setenv(variable, PASSWORDS[kind])
    names = roles_db.names
    argv = ["db", "roles", "--url", roles_db.admin_url, "--owner", names.owner, "--writer", names.writer]
    assert cli.main([*argv, "--reader", names.reader]) == 0
    out = capsys.readouterr().out
    assert "no change" in out
    assert "secret" not in out


def test_first_run_creates_roles_and_a_role_without_password_cannot_log_in(empty_db):
    report = ensure_roles(url=empty_db.admin_url, names=empty_db.names, passwords={"writer": "w"})
    assert report.created == (empty_db.names.owner, empty_db.names.writer, empty_db.names.reader)
    assert report.passwords_set == (empty_db.names.writer,)
    assert report.nologin == (empty_db.names.owner, empty_db.names.reader)
    assert "NOLOGIN" in report.render()
    assert "function kpi_correct_daily_metric" in report.missing
    with pytest.raises(sa.exc.OperationalError, match="not permitted to log in"):
        migrate(empty_db.owner_url)


def test_tables_migrated_by_an_admin_are_handed_to_the_owner(empty_db):
    migrate(empty_db.admin_url)
    assert set(owners(empty_db.admin_url).values()) == {"postgres"}

    report = ensure_roles(url=empty_db.admin_url, names=empty_db.names, passwords=PASSWORDS)

    assert set(owners(empty_db.admin_url).values()) == {empty_db.names.owner}
    assert "table daily_metrics: owner postgres → " + empty_db.names.owner in report.changes
    assert not ensure_roles(url=empty_db.admin_url, names=empty_db.names, passwords=PASSWORDS).changed


# --- the reader -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO clients (client_id, name, ad_account_id, currency, timezone, active, settings, created_at, "
        "updated_at) VALUES ('x', 'x', 'act_1', 'EUR', 'UTC', true, '{}', now(), now())",
        "UPDATE client_daily_kpis SET spend = 0",
        "DELETE FROM daily_metrics",
        "INSERT INTO daily_metrics (metric_date, metric_type, metric_category, value, metadata, "
        "collection_timestamp) VALUES ('2026-03-01', 'count', 'posts_total', 1, '{}', now())",
        "TRUNCATE client_monthly_kpis",
        "SELECT kpi_correct_daily_metric('2026-03-01', 'count', 'posts_total', 1, '{}', now(), 'why')",
    ],
)
def test_reader_cannot_write(roles_db, statement):
    assert_refused(roles_db.reader_url, statement)


def test_reader_serves_exports(roles_db):
    writer = Warehouse(roles_db.writer_url)
    writer.record_daily_metrics([snapshot("posts_total", 120)])
    writer.dispose()

    reader = open_warehouse(roles_db.reader_url)
    try:
        out = io.StringIO()
        summary = export(reader, kind="activity", start=DAY, end=DAY, categories=["posts_total"], out=out)
    finally:
        reader.dispose()
    assert summary.rows == 1
    assert "posts_total" in out.getvalue()


# --- the writer -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE daily_metrics",
        "ALTER TABLE daily_metrics ADD COLUMN note text",
        "TRUNCATE daily_metrics",
        "TRUNCATE client_daily_kpis",
        "UPDATE daily_metrics SET value = 0",
        "DELETE FROM daily_metrics",
        "INSERT INTO daily_metrics_corrections (metric_date, metric_type, metric_category, old_value, new_value, "
        "old_collection_timestamp, new_collection_timestamp, reason, corrected_by, corrected_at) "
        "VALUES ('2026-03-01', 'count', 'posts_total', 1, 2, now(), now(), 'forged', 'x', now())",
        "UPDATE alembic_version SET version_num = '0001'",
        "CREATE TABLE scratch (i integer)",
        "INSERT INTO metric_definitions VALUES ('count', 'x', 'x', 'x', 'x', ',.0f', 'sum', true, now())",
    ],
)
def test_writer_cannot_change_the_schema_or_rewrite_snapshots(roles_db, statement):
    writer = Warehouse(roles_db.writer_url)
    writer.record_daily_metrics([snapshot("posts_total", 120)])
    writer.dispose()

    assert_refused(roles_db.writer_url, statement)

    reader = Warehouse(roles_db.reader_url)
    stored = reader.read_daily_metrics(start=DAY, end=DAY)
    reader.dispose()
    assert stored["value"].tolist() == [120.0]


def test_writer_appends_snapshots_and_on_conflict_do_nothing_keeps_them(roles_db):
    writer = Warehouse(roles_db.writer_url)
    try:
        first = writer.record_daily_metrics([snapshot("posts_total", 120), snapshot("users_total", 10)])
        again = writer.record_daily_metrics([snapshot("posts_total", 999)])
        table = schema.daily_metrics
        statement = (
            postgresql.insert(table)
            .values(**snapshot("posts_total", 555))
            .on_conflict_do_nothing(index_elements=["metric_date", "metric_type", "metric_category"])
        )
        with writer.engine.begin() as conn:
            assert conn.execute(statement).rowcount == 0
        stored = writer.read_daily_metrics(start=DAY, end=DAY).set_index("metric_category")["value"].to_dict()
    finally:
        writer.dispose()
    assert len(first.inserted) == 2
    assert again.kept and not again.inserted
    assert stored == {"posts_total": 120.0, "users_total": 10.0}


def test_writer_forces_a_correction_only_through_the_audited_function(roles_db):
    writer = Warehouse(roles_db.writer_url)
    try:
        writer.record_daily_metrics([snapshot("posts_total", 120)])
        later = datetime(2026, 3, 9, tzinfo=UTC)
        write = writer.record_daily_metrics(
            [snapshot("posts_total", 118, taken=later)], force=True, reason="app backfill restored 2 posts"
        )
        write_default = writer.record_daily_metrics([snapshot("posts_total", 117, taken=later)], force=True)
        stored = writer.read_daily_metrics(start=DAY, end=DAY)
        with writer.engine.connect() as conn:
            audit = conn.execute(
                sa.select(schema.daily_metrics_corrections).order_by(schema.daily_metrics_corrections.c.id)
            ).all()
    finally:
        writer.dispose()
    assert [(r.old_value, r.new_value) for r in write.replaced + write_default.replaced] == [
        (120.0, 118.0),
        (118.0, 117.0),
    ]
    assert stored["value"].tolist() == [117.0]
    assert [(a.old_value, a.new_value, a.reason, a.corrected_by) for a in audit] == [
        (120.0, 118.0, "app backfill restored 2 posts", roles_db.names.writer),
        (118.0, 117.0, "forced snapshot replacement by run run-1", roles_db.names.writer),
    ]
    assert audit[0].old_collection_timestamp == TAKEN


@pytest.mark.usefixtures("no_current_defs_state_storage")
def test_the_platform_runs_end_to_end_with_the_writer(roles_db, tmp_path, monkeypatch):
    with contextmanager(make_platform)(tmp_path, monkeypatch, roles_db.writer_url) as platform:
        first = platform.collect("acme", date(2026, 1, 1), date(2026, 1, 31))
        assert first.success
        days = platform.warehouse.read_client_days(
            client_id="acme", start=date(2026, 1, 1), end=date(2026, 1, 31)
        )
        assert len(days) == 31

        # The asset's own collection path again, straight: the range is replaced, not appended to.
        client = next(c for c in load_clients(settings.clients_file()) if c.id == "acme")
        meta = MetaApiResource().get_client(accounts={client.ad_account_id: client.currency})
        result = collect_range(
            client=client,
            start=date(2026, 1, 1),
            end=date(2026, 1, 31),
            meta=meta,
            warehouse=platform.warehouse,
            run_id="rerun",
        )
        again = platform.warehouse.read_client_days(
            client_id="acme", start=date(2026, 1, 1), end=date(2026, 1, 31)
        )
        assert result.day_rows == 31
        assert len(again) == 31
        assert set(again["run_id"]) == {"rerun"}

        totals = platform.warehouse.monthly_totals_from_days(client_id="acme", month=date(2026, 1, 1))
        platform.warehouse.upsert_monthly_summary(
            {**totals, "status": "final", "source": "simulator", "run_id": "rerun"}
        )
        platform.warehouse.upsert_monthly_summary(
            {**totals, "status": "final", "source": "simulator", "run_id": "rerun-2"}
        )
        assert platform.warehouse.read_monthly(client_id="acme")["run_id"].tolist() == ["rerun-2"]


def test_writer_behind_head_is_told_to_migrate_as_the_owner(roles_db):
    command.downgrade(alembic_config(url=roles_db.owner_url), "0003")
    writer = Warehouse(roles_db.writer_url)
    try:
        with pytest.raises(MigrationNotAllowedError, match=settings.ENV_WAREHOUSE_OWNER_URL):
            writer.migrate()
        assert writer.current_revision() == "0003"
    finally:
        writer.dispose()
    migrate(roles_db.owner_url)
    writer = Warehouse(roles_db.writer_url)
    try:
        assert writer.current_revision() == head_revision()
        writer.migrate()  # at head: a read, allowed to the writer
    finally:
        writer.dispose()
