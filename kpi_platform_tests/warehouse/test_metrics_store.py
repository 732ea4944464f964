"""daily_metrics in the warehouse, on SQLite and PostgreSQL: seeded definitions, insert-only, logged force."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from kpi_platform.activity import METRIC_DEFINITIONS
from kpi_platform.warehouse import Warehouse, schema

DAY = date(2026, 3, 1)
TAKEN = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    yield wh
    wh.dispose()


def row(metric_type: str, value: float, day: date = DAY, taken: datetime = TAKEN) -> dict:
    return {
        "metric_date": day,
        "metric_type": metric_type,
        "metric_category": "platform",
        "value": value,
        "metadata": {"source": "sqlite:///app.sqlite", "taken_at": taken.isoformat()},
        "collected_at": taken,
    }


def test_migration_seeds_the_metric_definitions(warehouse):
    assert warehouse.metric_definitions() == sorted(
        (d.as_row() for d in METRIC_DEFINITIONS), key=lambda r: (r["metric_category"], r["metric_type"])
    )


def test_stored_snapshot_is_never_overwritten(warehouse):
    first = warehouse.record_daily_metrics([row("posts_total", 120), row("users_total", 10)])
    assert first.days_recorded == (DAY,) and first.days_already_recorded == ()
    stored = warehouse.read_daily_metrics(start=DAY, end=DAY)

    later = datetime(2026, 3, 9, tzinfo=UTC)
    again = warehouse.record_daily_metrics(
        [
            row("posts_total", 118, taken=later),
            row("users_total", 9, taken=later),
            row("comments_total", 5, taken=later),
        ]
    )
    assert again.kept == ((DAY, "posts_total", "platform"), (DAY, "users_total", "platform"))
    assert again.inserted == ((DAY, "comments_total", "platform"),)
    after = warehouse.read_daily_metrics(start=DAY, end=DAY, types=["posts_total", "users_total"])
    assert after.equals(stored)
    assert after.set_index("metric_type")["value"].to_dict() == {"posts_total": 120.0, "users_total": 10.0}


def test_a_day_with_every_metric_stored_is_reported_as_already_recorded(warehouse):
    warehouse.record_daily_metrics([row("posts_total", 1), row("posts_total", 2, day=date(2026, 3, 2))])
    write = warehouse.record_daily_metrics(
        [row("posts_total", 7), row("posts_total", 8, day=date(2026, 3, 3))]
    )
    assert write.days_already_recorded == (DAY,)
    assert write.days_recorded == (date(2026, 3, 3),)


def test_force_replaces_and_logs_old_and_new_values(warehouse, caplog):
    warehouse.record_daily_metrics([row("posts_total", 120), row("users_total", 10)])
    later = datetime(2026, 3, 9, tzinfo=UTC)
    with caplog.at_level(logging.WARNING, logger="kpi_platform.warehouse.store"):
        write = warehouse.record_daily_metrics([row("posts_total", 118, taken=later)], force=True)
    assert [(r.metric_type, r.old_value, r.new_value) for r in write.replaced] == [
        ("posts_total", 120.0, 118.0)
    ]
    assert write.days_recorded == (DAY,)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["forced replacement of daily metrics for 2026-03-01: platform/posts_total 120 → 118"]
    stored = warehouse.read_daily_metrics(start=DAY, end=DAY).set_index("metric_type")
    assert stored.loc["posts_total", "value"] == 118.0
    assert stored.loc["posts_total", "collected_at"] == later
    assert stored.loc["posts_total", "metadata"]["replaces"] == {
        "value": 120.0,
        "collected_at": TAKEN.isoformat(),
    }
    assert stored.loc["users_total", "value"] == 10.0


def test_unique_per_day_type_and_category_in_the_database(warehouse):
    warehouse.record_daily_metrics([row("posts_total", 1)])
    with pytest.raises(sa.exc.IntegrityError), warehouse.engine.begin() as conn:
        conn.execute(schema.daily_metrics.insert(), [row("posts_total", 2)])


def test_metric_without_definition_is_refused_before_writing(warehouse):
    bad = {**row("logins_total", 3)}
    with pytest.raises(ValueError, match=r"\['platform/logins_total'\] have no row in metric_definitions"):
        warehouse.record_daily_metrics([row("posts_total", 1), bad])
    assert warehouse.read_daily_metrics(start=DAY, end=DAY).empty


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": float("nan")}, "finite number"),
        ({"value": "12"}, "finite number"),
        ({"metric_date": datetime(2026, 3, 1, tzinfo=UTC)}, "must be a date"),
        ({"collected_at": datetime(2026, 3, 2)}, "timezone-aware"),
        ({"metadata": "source"}, "metadata must be a mapping"),
    ],
)
def test_malformed_rows_are_refused(warehouse, change, message):
    with pytest.raises(ValueError, match=message):
        warehouse.record_daily_metrics([{**row("posts_total", 1), **change}])


def test_duplicate_rows_are_refused(warehouse):
    with pytest.raises(ValueError, match="more than once"):
        warehouse.record_daily_metrics([row("posts_total", 1), row("posts_total", 2)])
