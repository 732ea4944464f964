"""Forced corrections of activity snapshots leave one audit row each, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from kpi_platform.warehouse import Warehouse, schema

DAY = date(2026, 3, 1)
TAKEN = datetime(2026, 3, 2, 0, 5, tzinfo=UTC)
LATER = datetime(2026, 3, 9, tzinfo=UTC)


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    yield wh
    wh.dispose()


def snapshot(value: float, *, taken: datetime, run_id: str = "run-1") -> dict:
    return {
        "metric_date": DAY,
        "metric_type": "count",
        "metric_category": "posts_total",
        "value": value,
        "metadata": {"source": "test", "run_id": run_id},
        "collection_timestamp": taken,
    }


def utc(value: datetime) -> datetime:
    """SQLite hands timestamps back naive (stored in UTC), PostgreSQL aware."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def audit_rows(warehouse: Warehouse) -> list[sa.Row]:
    table = schema.daily_metrics_corrections
    with warehouse.engine.connect() as conn:
        return conn.execute(sa.select(table).order_by(table.c.id)).all()


def test_each_forced_replacement_appends_an_audit_row(warehouse):
    warehouse.record_daily_metrics([snapshot(120, taken=TAKEN)])
    warehouse.record_daily_metrics([snapshot(118, taken=LATER, run_id="run-2")], force=True, reason="recount")
    warehouse.record_daily_metrics([snapshot(117, taken=LATER, run_id="run-3")], force=True)

    rows = audit_rows(warehouse)
    assert [
        (r.metric_date, r.metric_type, r.metric_category, r.old_value, r.new_value, r.reason) for r in rows
    ] == [
        (DAY, "count", "posts_total", 120.0, 118.0, "recount"),
        (DAY, "count", "posts_total", 118.0, 117.0, "forced snapshot replacement by run run-3"),
    ]
    assert utc(rows[0].old_collection_timestamp) == TAKEN
    assert utc(rows[0].new_collection_timestamp) == LATER
    if warehouse.is_postgres:
        assert rows[0].corrected_by == warehouse.engine.url.username
    else:
        assert rows[0].corrected_by is None


def test_inserts_and_kept_snapshots_leave_no_audit_row(warehouse):
    warehouse.record_daily_metrics([snapshot(120, taken=TAKEN)])
    warehouse.record_daily_metrics([snapshot(999, taken=LATER)])
    assert audit_rows(warehouse) == []
