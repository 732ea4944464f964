"""daily_metrics in the warehouse, on SQLite and PostgreSQL: seeded definitions, insert-only, logged force, and
values kept exactly (NUMERIC)."""

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


def row(metric: str, value: float, day: date = DAY, taken: datetime = TAKEN) -> dict:
    return {
        "metric_date": day,
        "metric_type": "count",
        "metric_category": metric,
        "value": value,
        "metadata": {"source": "sqlite:///app.sqlite", "taken_at": taken.isoformat()},
        "collection_timestamp": taken,
    }


def test_migration_seeds_the_metric_definitions(warehouse):
    stored = warehouse.metric_definitions()
    assert all(isinstance(d.pop("created_at"), datetime) for d in stored)
    assert stored == sorted(
        (d.as_row() for d in METRIC_DEFINITIONS), key=lambda r: (r["metric_category"], r["metric_type"])
    )


def test_inactive_definitions_are_left_out_on_request(warehouse):
    table = schema.metric_definitions
    with warehouse.engine.begin() as conn:
        conn.execute(table.update().where(table.c.metric_category == "posts_created").values(is_active=False))
    active = [d["metric_category"] for d in warehouse.metric_definitions(active_only=True)]
    assert "posts_created" not in active and len(active) == 4
    assert len(warehouse.metric_definitions()) == 5


def test_a_definition_added_in_sql_gets_its_defaults(warehouse):
    with warehouse.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO metric_definitions (metric_type, metric_category, display_name, description, unit, "
                "format_pattern, aggregation) VALUES ('count', 'users_created', 'Users created', 'Profiles "
                "created during the day.', 'users', ',.0f', 'sum')"
            )
        )
    added = next(d for d in warehouse.metric_definitions() if d["metric_category"] == "users_created")
    assert added["is_active"] is True
    assert isinstance(added["created_at"], datetime)


def test_values_are_kept_exactly_and_rows_know_when_they_were_stored(warehouse):
    before = datetime.now(UTC)
    values = {"posts_total": 9_007_199_254_740_991, "users_total": 12.25, "comments_total": 0.1}
    warehouse.record_daily_metrics([row(metric, value) for metric, value in values.items()])
    stored = warehouse.read_daily_metrics(start=DAY, end=DAY).set_index("metric_category")
    assert stored["value"].to_dict() == {k: float(v) for k, v in values.items()}
    assert (stored["created_at"] >= before.replace(microsecond=0)).all()
    assert (stored["collection_timestamp"] == TAKEN).all()


def test_a_value_the_column_would_round_is_refused(warehouse):
    with pytest.raises(ValueError, match="more than 4 decimals or 16 integer digits"):
        warehouse.record_daily_metrics([row("posts_total", 1.23456)])
    with pytest.raises(ValueError, match="more than 4 decimals or 16 integer digits"):
        warehouse.record_daily_metrics([row("posts_total", 1e16)])
    assert warehouse.read_daily_metrics(start=DAY, end=DAY).empty


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
    assert again.kept == ((DAY, "count", "posts_total"), (DAY, "count", "users_total"))
    assert again.inserted == ((DAY, "count", "comments_total"),)
    after = warehouse.read_daily_metrics(start=DAY, end=DAY, categories=["posts_total", "users_total"])
    assert after.equals(stored)
    assert after.set_index("metric_category")["value"].to_dict() == {
        "posts_total": 120.0,
        "users_total": 10.0,
    }


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
    assert [(r.metric_category, r.old_value, r.new_value) for r in write.replaced] == [
        ("posts_total", 120.0, 118.0)
    ]
    assert write.days_recorded == (DAY,)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["forced replacement of daily metrics for 2026-03-01: posts_total 120 → 118"]
    stored = warehouse.read_daily_metrics(start=DAY, end=DAY).set_index("metric_category")
    assert stored.loc["posts_total", "value"] == 118.0
    assert stored.loc["posts_total", "collection_timestamp"] == later
    assert stored.loc["posts_total", "metadata"]["replaces"] == {
        "value": 120.0,
        "collection_timestamp": TAKEN.isoformat(),
    }
    assert stored.loc["users_total", "value"] == 10.0


def test_unique_per_day_type_and_category_in_the_database(warehouse):
    warehouse.record_daily_metrics([row("posts_total", 1)])
    with pytest.raises(sa.exc.IntegrityError), warehouse.engine.begin() as conn:
        conn.execute(schema.daily_metrics.insert(), [{**row("posts_total", 2), "created_at": TAKEN}])


def test_metric_without_definition_is_refused_before_writing(warehouse):
    bad = {**row("logins_total", 3)}
    with pytest.raises(ValueError, match=r"\['logins_total \(count\)'\] have no row in metric_definitions"):
        warehouse.record_daily_metrics([row("posts_total", 1), bad])
    assert warehouse.read_daily_metrics(start=DAY, end=DAY).empty


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": float("nan")}, "finite number"),
        ({"value": "12"}, "finite number"),
        ({"metric_date": datetime(2026, 3, 1, tzinfo=UTC)}, "must be a date"),
        ({"collection_timestamp": datetime(2026, 3, 2)}, "timezone-aware"),
        ({"metadata": "source"}, "metadata must be a mapping"),
    ],
)
def test_malformed_rows_are_refused(warehouse, change, message):
    with pytest.raises(ValueError, match=message):
        warehouse.record_daily_metrics([{**row("posts_total", 1), **change}])


def test_duplicate_rows_are_refused(warehouse):
    with pytest.raises(ValueError, match="more than once"):
        warehouse.record_daily_metrics([row("posts_total", 1), row("posts_total", 2)])
