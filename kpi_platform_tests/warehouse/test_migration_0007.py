"""Migration 0007 moves the activity snapshots to the designed layout value for value, on both backends: rows
written the old way (metric name in metric_type, 'platform' in metric_category) keep their count and a checksum
of every (date, metric, value); the correction function and its grants follow on PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic import command

from kpi_platform.warehouse import Warehouse, schema
from kpi_platform.warehouse.engine import alembic_config, head_revision
from kpi_platform.warehouse.roles import RoleNames, ensure_roles
from kpi_platform_tests.support.postgres import admin_url, create_temp_database

FIRST_DAY = date(2026, 1, 1)
DAYS = 40
#: The metrics as revision 0006 named them, in metric_type.
METRICS = ("users_total", "posts_total", "comments_total", "posts_created", "comments_created")
#: Values a float column may hold that NUMERIC(20, 4) keeps exactly: counts up to 2^53 − 1, binary fractions.
EDGE_VALUES = (0.0, 9_007_199_254_740_991.0, 0.5, 12.25, 0.1, 123_456_789_012.1234)


def _old_rows() -> list[dict]:
    rows = []
    for offset in range(DAYS):
        day = FIRST_DAY + timedelta(days=offset)
        taken = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC) + timedelta(
            minutes=30 + offset
        )
        for index, metric in enumerate(METRICS):
            value = (
                EDGE_VALUES[offset]
                if offset < len(EDGE_VALUES) and index == 0
                else float(1000 + offset * 7 + index)
            )
            metadata = {
                "source": "sqlite:///app.sqlite",
                "taken_at": taken.isoformat(),
                "late": offset % 9 == 0,
                "hours_after_day_end": 0.5,
            }
            rows.append(
                {
                    "metric_date": day,
                    "metric_type": metric,
                    "metric_category": "platform",
                    "value": value,
                    "metadata": json.dumps(metadata),
                    "collected_at": taken,
                }
            )
    return rows


def _canonical(value: object) -> str:
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    return format(number.normalize(), "f")


def _checksum(conn: sa.Connection, metric_column: str) -> tuple[int, str]:
    rows = conn.execute(
        sa.text(f"SELECT metric_date, {metric_column}, value FROM daily_metrics")  # noqa: S608 - fixed names
    ).all()
    lines = sorted(f"{date.fromisoformat(str(d)[:10])}|{m}|{_canonical(v)}" for d, m, v in rows)
    return len(rows), hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _upgrade(url: str, revision: str) -> None:
    warehouse = Warehouse(url)
    try:
        with warehouse.engine.begin() as conn:
            command.upgrade(alembic_config(connection=conn), revision)
    finally:
        warehouse.dispose()


def _downgrade(url: str, revision: str) -> None:
    warehouse = Warehouse(url)
    try:
        with warehouse.engine.begin() as conn:
            command.downgrade(alembic_config(connection=conn), revision)
    finally:
        warehouse.dispose()


def _write_old_layout(url: str) -> None:
    """Snapshots and one correction as revision 0006's code wrote them, in raw SQL of the old layout."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO daily_metrics (metric_date, metric_type, metric_category, value, metadata, "
                    "collected_at) VALUES (:metric_date, :metric_type, :metric_category, :value, :metadata, "
                    ":collected_at)"
                ),
                _old_rows(),
            )
            conn.execute(
                sa.text(
                    "INSERT INTO daily_metrics_corrections (metric_date, metric_type, metric_category, old_value, "
                    "new_value, old_collected_at, new_collected_at, reason, corrected_by, corrected_at) VALUES "
                    "(:d, 'posts_total', 'platform', 1001.0, 1002.0, :t, :t, 'recount', NULL, :t)"
                ),
                {"d": FIRST_DAY, "t": datetime(2026, 1, 3, tzinfo=UTC)},
            )
    finally:
        engine.dispose()


def _old_state(conn: sa.Connection) -> dict:
    rows = conn.execute(
        sa.text("SELECT metric_date, metric_type, value, metadata, collected_at FROM daily_metrics")
    ).all()
    definitions = conn.execute(
        sa.text("SELECT metric_type, format, aggregation FROM metric_definitions")
    ).all()
    return {
        "checksum": _checksum(conn, "metric_type"),
        "rows": {(str(r[0])[:10], r[1]): (r[2], _json(r[3]), _utc(r[4])) for r in rows},
        "definitions": {d[0]: (d[1], d[2]) for d in definitions},
    }


def _json(value: object) -> object:
    return json.loads(value) if isinstance(value, str) else value


def _utc(value: object) -> datetime:
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


@pytest.fixture
def old_warehouse(warehouse_url) -> str:
    """A warehouse at revision 0006 holding 40 days of snapshots written the old way, and a correction."""
    _upgrade(warehouse_url, "0006")
    _write_old_layout(warehouse_url)
    return warehouse_url


def test_upgrade_moves_every_snapshot_value_for_value(old_warehouse):
    engine = sa.create_engine(old_warehouse)
    try:
        with engine.connect() as conn:
            before = _old_state(conn)
        assert before["checksum"][0] == DAYS * len(METRICS)

        _upgrade(old_warehouse, "head")

        with engine.connect() as conn:
            assert _checksum(conn, "metric_category") == before["checksum"]
            rows = conn.execute(
                sa.text(
                    "SELECT metric_date, metric_type, metric_category, value, metadata, collection_timestamp, "
                    "created_at FROM daily_metrics"
                )
            ).all()
            definitions = conn.execute(
                sa.text(
                    "SELECT metric_type, metric_category, format_pattern, aggregation, is_active, created_at "
                    "FROM metric_definitions"
                )
            ).all()
            correction = conn.execute(
                sa.text(
                    "SELECT metric_type, metric_category, old_value, new_value, old_collection_timestamp "
                    "FROM daily_metrics_corrections"
                )
            ).one()
    finally:
        engine.dispose()

    after = {(str(r[0])[:10], r[2]): r for r in rows}
    assert after.keys() == before["rows"].keys()
    for key, (value, metadata, collected_at) in before["rows"].items():
        row = after[key]
        assert row[1] == schema.METRIC_TYPE_COUNT
        assert float(row[3]) == value, key  # the float read back is the very float stored before
        assert _json(row[4]) == metadata
        assert _utc(row[5]) == collected_at
        assert _utc(row[6]) == collected_at, "existing rows were stored when collected"
    assert {d[1]: (d[2], d[3]) for d in definitions} == before["definitions"]
    assert {d[0] for d in definitions} == {schema.METRIC_TYPE_COUNT}
    assert all(bool(d[4]) for d in definitions)
    assert all(d[5] is not None for d in definitions)
    assert tuple(correction[:2]) == ("count", "posts_total")
    assert (float(correction[2]), float(correction[3])) == (1001.0, 1002.0)
    assert _utc(correction[4]) == datetime(2026, 1, 3, tzinfo=UTC)


def test_upgraded_warehouse_reads_writes_and_corrects_in_the_new_layout(old_warehouse):
    _upgrade(old_warehouse, "head")
    warehouse = Warehouse(old_warehouse)
    try:
        assert warehouse.current_revision() == head_revision()
        stored = warehouse.read_daily_metrics(
            start=FIRST_DAY, end=FIRST_DAY + timedelta(days=DAYS - 1), categories=["posts_total"]
        )
        assert len(stored) == DAYS
        assert set(stored["metric_type"]) == {"count"}
        day = FIRST_DAY + timedelta(days=DAYS)
        taken = datetime(2026, 2, 11, 0, 30, tzinfo=UTC)
        row = {
            "metric_date": day,
            "metric_type": "count",
            "metric_category": "posts_total",
            "value": 5000,
            "metadata": {"source": "test"},
            "collection_timestamp": taken,
        }
        assert warehouse.record_daily_metrics([row]).inserted == ((day, "count", "posts_total"),)
        write = warehouse.record_daily_metrics([{**row, "value": 5001}], force=True, reason="recount")
        assert [(r.old_value, r.new_value) for r in write.replaced] == [(5000.0, 5001.0)]
        table = schema.daily_metrics_corrections
        with warehouse.engine.connect() as conn:
            latest = conn.execute(
                sa.select(table.c.metric_type, table.c.metric_category, table.c.old_value, table.c.new_value)
                .order_by(table.c.id.desc())
                .limit(1)
            ).one()
        assert tuple(latest) == ("count", "posts_total", 5000.0, 5001.0)
    finally:
        warehouse.dispose()


def test_indexes_are_descending_as_designed(old_warehouse):
    _upgrade(old_warehouse, "head")
    engine = sa.create_engine(old_warehouse)
    expected = {
        "ix_daily_metrics_date_type_category": [
            ("metric_date", True),
            ("metric_type", False),
            ("metric_category", False),
        ],
        "ix_daily_metrics_category_date": [("metric_category", False), ("metric_date", True)],
        "ix_daily_metrics_collection_timestamp": [("collection_timestamp", True)],
    }
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # SQLAlchemy does not reflect SQLite's sort order (nor does alembic compare it there): ask SQLite.
                found = {
                    name: [
                        (r[2], bool(r[3]))
                        for r in conn.exec_driver_sql(f"PRAGMA index_xinfo('{name}')")
                        if r[5]  # key columns only
                    ]
                    for name in expected
                }
            else:
                found = {
                    index["name"]: [
                        (column, "desc" in index.get("column_sorting", {}).get(column, ()))
                        for column in index["column_names"]
                    ]
                    for index in sa.inspect(conn).get_indexes("daily_metrics")
                    if index["name"] in expected
                }
    finally:
        engine.dispose()
    assert found == expected


def test_a_value_numeric_cannot_keep_stops_the_migration_before_anything_changes(old_warehouse):
    engine = sa.create_engine(old_warehouse)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE daily_metrics SET value = 0.12345 WHERE metric_date = :d AND metric_type = :t"
                ),
                {"d": FIRST_DAY + timedelta(days=20), "t": "posts_created"},
            )
        with engine.connect() as conn:
            before = _old_state(conn)
        with pytest.raises(RuntimeError, match=r"do not fit NUMERIC\(20, 4\) exactly.*0\.12345"):
            _upgrade(old_warehouse, "head")
        with engine.connect() as conn:
            assert _old_state(conn) == before
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "0006"
    finally:
        engine.dispose()


def test_downgrade_restores_the_old_layout_value_for_value(old_warehouse):
    engine = sa.create_engine(old_warehouse)
    try:
        with engine.connect() as conn:
            before = _old_state(conn)
        _upgrade(old_warehouse, "head")
        _downgrade(old_warehouse, "0006")
        with engine.connect() as conn:
            assert _old_state(conn) == before
    finally:
        engine.dispose()


# --- PostgreSQL: run as the owner, the writer keeps its correction right ---------------------------------------


@pytest.fixture
def owned_old_warehouse(pg_admin_url) -> Iterator[tuple[str, RoleNames]]:
    """A warehouse at 0006 migrated and granted as documented (roles, migrations as the owner, roles again)."""
    url, drop = create_temp_database("kpi_m0007")
    suffix = uuid.uuid4().hex[:8]
    names = RoleNames(
        owner=f"kpi_owner_{suffix}", writer=f"kpi_writer_{suffix}", reader=f"kpi_reader_{suffix}"
    )
    passwords = {"owner": "o", "writer": "w", "reader": "r"}
    try:
        ensure_roles(url=url, names=names, passwords=passwords)
        owner_url = (
            sa.make_url(url).set(username=names.owner, password="o").render_as_string(hide_password=False)
        )
        _upgrade(owner_url, "0006")
        ensure_roles(url=url, names=names, passwords=passwords)
        _write_old_layout(owner_url)
        yield url, names
    finally:
        drop()
        engine = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for _, name in reversed(names.items()):
                conn.execute(sa.text(f'DROP ROLE IF EXISTS "{name}"'))
        engine.dispose()


def test_owner_migrates_and_the_writer_still_corrects_through_the_function(owned_old_warehouse):
    url, names = owned_old_warehouse

    def as_role(role: str, password: str) -> str:
        return sa.make_url(url).set(username=role, password=password).render_as_string(hide_password=False)

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            before = _checksum(conn, "metric_type")
        _upgrade(as_role(names.owner, "o"), "head")
        with engine.connect() as conn:
            assert _checksum(conn, "metric_category") == before
            owner = conn.execute(
                sa.text("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = :n"),
                {"n": schema.CORRECT_DAILY_METRIC_FUNCTION},
            ).scalar_one()
        assert owner == names.owner
    finally:
        engine.dispose()

    writer = Warehouse(as_role(names.writer, "w"))
    try:
        row = {
            "metric_date": FIRST_DAY + timedelta(days=3),
            "metric_type": "count",
            "metric_category": "comments_total",
            "value": 77,
            "metadata": {"source": "test"},
            "collection_timestamp": datetime(2026, 2, 1, tzinfo=UTC),
        }
        write = writer.record_daily_metrics([row], force=True, reason="recount after restore")
        assert [r.new_value for r in write.replaced] == [77.0]
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            with writer.engine.begin() as conn:
                conn.execute(sa.text("UPDATE daily_metrics SET value = 1"))
    finally:
        writer.dispose()
