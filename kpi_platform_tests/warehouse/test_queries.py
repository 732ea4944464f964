"""The query API on SQLite and PostgreSQL: grains, recomputed ratios, named gaps (never zeros), clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse.queries import InvalidQueryError, query_activity, query_kpis
from kpi_platform_tests.support.warehouse_data import (
    ACME_ROWS,
    client,
    day_row,
    metric_rows,
    span,
    store_days,
)


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([client("acme"), client("bistro"), client("cafe"), client("closed", active=False)])
    store_days(wh, "acme", ACME_ROWS)
    store_days(
        wh,
        "bistro",
        [
            day_row("bistro", d, currency="EUR" if d.day <= 15 else "PLN")
            for d in span(date(2026, 1, 1), date(2026, 1, 31))
        ],
    )
    yield wh
    wh.dispose()


def reference(rows: list[dict], start: date, end: date) -> dict:
    """Sums over the given rows in [start, end], computed independently of the query code."""
    chosen = [r for r in rows if start <= r["kpi_date"] <= end]
    sums = {
        k: sum(r[k] for r in chosen) for k in ("spend", "impressions", "clicks", "leads", "reservation_value")
    }
    sums["days"] = len(chosen)
    return sums


def test_daily_rows_are_the_stored_days_and_missing_days_are_gaps_not_zeros(warehouse):
    result = query_kpis(warehouse, start="2026-01-05", end="2026-01-10", client_ids=["acme"])
    frame = result.frame
    assert list(frame["period"]) == [date(2026, 1, d) for d in (5, 6, 8, 9, 10)]
    assert (frame["days_present"] == 1).all() and (frame["days_expected"] == 1).all()
    stored = {r["kpi_date"]: r for r in ACME_ROWS}
    for record in result.to_records():
        row = stored[record["period"]]
        assert (record["impressions"], record["clicks"], record["spend"]) == (
            row["impressions"],
            row["clicks"],
            row["spend"],
        )
    assert result.gap_records() == [
        {"client_id": "acme", "gap_start": date(2026, 1, 7), "gap_end": date(2026, 1, 7), "days": 1}
    ]
    idle = result.to_records()[-1]
    assert idle["idle_days"] == 1 and idle["ctr_pct"] is None and idle["cpc"] is None


def test_weekly_periods_are_iso_weeks_clipped_to_the_range_with_ratios_from_sums(warehouse):
    result = query_kpis(
        warehouse, start=date(2026, 1, 1), end=date(2026, 1, 18), grain="weekly", client_ids="acme"
    )
    frame = result.frame.set_index("period")
    assert list(frame.index) == [date(2025, 12, 29), date(2026, 1, 5), date(2026, 1, 12)]
    assert list(frame["period_start"]) == [date(2026, 1, 1), date(2026, 1, 5), date(2026, 1, 12)]
    assert list(frame["period_end"]) == [date(2026, 1, 4), date(2026, 1, 11), date(2026, 1, 18)]
    assert list(frame["days_expected"]) == [4, 7, 7]
    assert list(frame["days_present"]) == [4, 6, 7]
    for period, (first, last) in {date(2026, 1, 5): (date(2026, 1, 5), date(2026, 1, 11))}.items():
        expected = reference(ACME_ROWS, first, last)
        row = frame.loc[period]
        assert row["impressions"] == expected["impressions"] and row["clicks"] == expected["clicks"]
        assert row["spend"] == pytest.approx(expected["spend"])
        assert row["ctr_pct"] == pytest.approx(expected["clicks"] / expected["impressions"] * 100)
        assert row["cpc"] == pytest.approx(round(expected["spend"] / expected["clicks"], 4))
        assert row["idle_days"] == 1
    assert result.gap_records() == [
        {"client_id": "acme", "gap_start": date(2026, 1, 7), "gap_end": date(2026, 1, 7), "days": 1}
    ]


def test_monthly_periods_say_how_many_days_they_hold(warehouse):
    result = query_kpis(warehouse, start="2026-01-15", end="2026-02-10", grain="monthly", client_ids=["acme"])
    records = result.to_records()
    assert [
        (r["period"], r["period_start"], r["period_end"], r["days_present"], r["days_expected"])
        for r in records
    ] == [
        (date(2026, 1, 1), date(2026, 1, 15), date(2026, 1, 31), 15, 17),
        (date(2026, 2, 1), date(2026, 2, 1), date(2026, 2, 10), 10, 10),
    ]
    january = reference(ACME_ROWS, date(2026, 1, 15), date(2026, 1, 31))
    assert records[0]["leads"] == january["leads"]
    assert records[0]["reservation_value"] == pytest.approx(january["reservation_value"])
    assert result.gap_records() == [
        {"client_id": "acme", "gap_start": date(2026, 1, 20), "gap_end": date(2026, 1, 21), "days": 2}
    ]


def test_money_of_two_currencies_is_never_added(warehouse):
    result = query_kpis(
        warehouse, start="2026-01-01", end="2026-01-31", grain="monthly", client_ids=["bistro"]
    )
    assert [(r["currency"], r["days_present"], r["days_expected"]) for r in result.to_records()] == [
        ("EUR", 15, 31),
        ("PLN", 16, 31),
    ]
    assert result.complete


def test_simulated_days_are_never_added_to_real_ones(warehouse):
    real = [
        {**day_row("cafe", d), "source": settings.SOURCE_META}
        for d in span(date(2026, 1, 1), date(2026, 1, 3))
    ]
    simulated = [day_row("cafe", d) for d in span(date(2026, 1, 4), date(2026, 1, 5))]
    store_days(warehouse, "cafe", real + simulated)
    result = query_kpis(warehouse, start="2026-01-01", end="2026-01-05", grain="monthly", client_ids=["cafe"])
    assert [(r["source"], r["days_present"]) for r in result.to_records()] == [
        (settings.SOURCE_META, 3),
        (settings.SOURCE_SIMULATOR, 2),
    ]
    assert result.complete
    daily = query_kpis(warehouse, start="2026-01-03", end="2026-01-04", client_ids=["cafe"])
    assert [r["source"] for r in daily.to_records()] == [settings.SOURCE_META, settings.SOURCE_SIMULATOR]


def test_all_clients_expects_active_ones_and_names_clients_without_data(warehouse):
    result = query_kpis(warehouse, start="2026-01-01", end="2026-01-31", grain="monthly")
    assert sorted(set(result.frame["client_id"])) == ["acme", "bistro"]
    gaps = result.gaps.groupby("client_id")["days"].sum().to_dict()
    assert gaps == {"acme": 3, "cafe": 31}
    assert result.days_missing == 34
    explicit = query_kpis(warehouse, start="2026-01-01", end="2026-01-02", client_ids=["closed"])
    assert explicit.frame.empty
    assert explicit.gap_records() == [
        {"client_id": "closed", "gap_start": date(2026, 1, 1), "gap_end": date(2026, 1, 2), "days": 2}
    ]


def test_unknown_client_is_a_clear_error(warehouse):
    with pytest.raises(InvalidQueryError, match=r"unknown client ids \['nobody'\]"):
        query_kpis(warehouse, start="2026-01-01", end="2026-01-31", client_ids=["acme", "nobody"])


@pytest.mark.parametrize(
    ("start", "end", "grain", "message"),
    [
        ("2026-1-5", "2026-01-31", "daily", r"start must be a date in the form YYYY-MM-DD, got '2026-1-5'"),
        ("2026-02-30", "2026-03-31", "daily", r"start '2026-02-30' is not a valid date"),
        ("2026-01-01", "31.01.2026", "daily", r"end must be a date in the form YYYY-MM-DD"),
        ("2026-02-01", "2026-01-31", "daily", r"start 2026-02-01 is after end 2026-01-31"),
        ("2025-01-01", "2026-01-02", "daily", r"spans 367 days; at most 366"),
        (datetime(2026, 1, 1, tzinfo=UTC), "2026-01-31", "daily", r"got a datetime"),
        ("2026-01-01", "2026-01-31", "hourly", r"grain 'hourly' is not one of daily, weekly, monthly"),
    ],
)
def test_bad_dates_ranges_and_grains_are_clear_errors(warehouse, start, end, grain, message):
    for query in (query_kpis, query_activity):
        with pytest.raises(InvalidQueryError, match=message):
            query(warehouse, start=start, end=end, grain=grain)


def test_long_ranges_only_when_asked_for(warehouse):
    result = query_kpis(
        warehouse,
        start="2025-01-01",
        end="2026-12-31",
        grain="monthly",
        client_ids=["acme"],
        allow_long_range=True,
    )
    assert result.frame["days_present"].sum() == len(ACME_ROWS)
    assert 366 < (result.end - result.start).days + 1


# --- activity ---


@pytest.fixture
def activity(warehouse) -> tuple[Warehouse, list[dict]]:
    rows = metric_rows(
        span(date(2026, 1, 1), date(2026, 1, 14)),
        skip={
            date(2026, 1, 9): set(settings.ACTIVITY_METRIC_TYPES),
            date(2026, 1, 11): {"posts_created", "posts_total"},
        },
    )
    warehouse.record_daily_metrics(rows)
    return warehouse, rows


def stored_value(rows: list[dict], day: date, metric_type: str) -> float:
    return next(r["value"] for r in rows if r["metric_date"] == day and r["metric_type"] == metric_type)


def test_activity_weekly_totals_take_the_last_present_day_and_created_sums(activity):
    warehouse, rows = activity
    result = query_activity(
        warehouse,
        start="2026-01-05",
        end="2026-01-14",
        grain="weekly",
        types=["posts_total", "posts_created"],
    )
    frame = result.frame.set_index(["metric_type", "period"])
    week = date(2026, 1, 5)
    total = frame.loc[("posts_total", week)]
    # Jan 11 (Sunday) lacks posts_total, so the week's total is Saturday's, and says so.
    assert total["as_of"] == date(2026, 1, 10)
    assert total["value"] == stored_value(rows, date(2026, 1, 10), "posts_total")
    assert (total["days_present"], total["days_expected"]) == (5, 7)
    created = frame.loc[("posts_created", week)]
    present = [date(2026, 1, d) for d in (5, 6, 7, 8, 10)]
    assert created["value"] == sum(stored_value(rows, d, "posts_created") for d in present)
    assert result.gap_records() == [
        {
            "metric_category": "platform",
            "metric_type": "posts_created",
            "gap_start": date(2026, 1, 9),
            "gap_end": date(2026, 1, 9),
            "days": 1,
        },
        {
            "metric_category": "platform",
            "metric_type": "posts_created",
            "gap_start": date(2026, 1, 11),
            "gap_end": date(2026, 1, 11),
            "days": 1,
        },
        {
            "metric_category": "platform",
            "metric_type": "posts_total",
            "gap_start": date(2026, 1, 9),
            "gap_end": date(2026, 1, 9),
            "days": 1,
        },
        {
            "metric_category": "platform",
            "metric_type": "posts_total",
            "gap_start": date(2026, 1, 11),
            "gap_end": date(2026, 1, 11),
            "days": 1,
        },
    ]


def test_activity_daily_rows_exist_only_for_stored_days(activity):
    warehouse, _ = activity
    result = query_activity(
        warehouse, start="2026-01-08", end="2026-01-10", categories=["platform"], types="users_total"
    )
    assert [(r["period"], r["value"]) for r in result.to_records()] == [
        (date(2026, 1, 8), 107.0),
        (date(2026, 1, 10), 109.0),
    ]
    assert result.gaps["days"].sum() == 1


def test_activity_monthly_covers_every_metric_by_default(activity):
    warehouse, rows = activity
    result = query_activity(warehouse, start="2026-01-01", end="2026-01-31", grain="monthly")
    assert sorted(result.frame["metric_type"]) == sorted(settings.ACTIVITY_METRIC_TYPES)
    users = result.frame.set_index("metric_type").loc["users_total"]
    assert (users["value"], users["as_of"], users["days_present"], users["days_expected"]) == (
        stored_value(rows, date(2026, 1, 14), "users_total"),
        date(2026, 1, 14),
        13,
        31,
    )


def test_activity_unknown_names_are_clear_errors(activity):
    warehouse, _ = activity
    with pytest.raises(InvalidQueryError, match=r"unknown metric types \['logins'\]; known: \["):
        query_activity(warehouse, start="2026-01-01", end="2026-01-02", types=["logins"])
    with pytest.raises(InvalidQueryError, match=r"unknown metric categories \['ads'\]"):
        query_activity(warehouse, start="2026-01-01", end="2026-01-02", categories=["ads"])
    with pytest.raises(InvalidQueryError, match="empty list of types"):
        query_activity(warehouse, start="2026-01-01", end="2026-01-02", types=[])


def test_records_hold_plain_python_values(activity):
    warehouse, _ = activity
    for record in query_kpis(
        warehouse, start="2026-01-09", end="2026-01-10", client_ids=["acme"]
    ).to_records():
        assert type(record["impressions"]) is int and type(record["spend"]) is float
        assert type(record["period"]) is date and type(record["days_present"]) is int


def test_open_reader_uses_the_reader_url_and_never_creates_a_warehouse(tmp_path, monkeypatch):
    from kpi_platform.warehouse.queries import open_reader
    from kpi_platform.warehouse.readiness import WarehouseNotReadyError

    monkeypatch.setenv("KPI_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'writer.sqlite'}")
    monkeypatch.setenv("KPI_WAREHOUSE_READER_URL", f"sqlite:///{tmp_path / 'reader.sqlite'}")
    with pytest.raises(WarehouseNotReadyError, match="reader.sqlite"):
        open_reader()
    assert not (tmp_path / "reader.sqlite").exists()
    stored = Warehouse(f"sqlite:///{tmp_path / 'reader.sqlite'}")
    stored.migrate()
    stored.dispose()
    reader = open_reader()
    try:
        assert "reader.sqlite" in reader.url_for_display
        assert query_kpis(reader, start="2026-01-01", end="2026-01-02").frame.empty
    finally:
        reader.dispose()
