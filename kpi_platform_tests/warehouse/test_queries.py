"""The query API on SQLite and PostgreSQL: grains, recomputed ratios, named gaps (never zeros), clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform.warehouse.queries import FORECAST_COLUMNS, InvalidQueryError, query_activity, query_kpis
from kpi_platform_tests.support.activity import store_snapshots
from kpi_platform_tests.support.forecast_data import forecast_frame
from kpi_platform_tests.support.warehouse_data import (
    ACME_ROWS,
    INDICATORS_NOW,
    client,
    day_row,
    metric_rows,
    scored_rows,
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
            date(2026, 1, 9): set(settings.ACTIVITY_METRICS),
            date(2026, 1, 11): {"posts_created", "posts_total"},
        },
    )
    warehouse.record_daily_metrics(rows)
    return warehouse, rows


def stored_value(rows: list[dict], day: date, metric: str) -> float:
    return next(r["value"] for r in rows if r["metric_date"] == day and r["metric_category"] == metric)


def test_activity_weekly_totals_take_the_last_present_day_and_created_sums(activity):
    warehouse, rows = activity
    result = query_activity(
        warehouse,
        start="2026-01-05",
        end="2026-01-14",
        grain="weekly",
        categories=["posts_total", "posts_created"],
    )
    frame = result.frame.set_index(["metric_category", "period"])
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
            "metric_category": "posts_created",
            "metric_type": "count",
            "gap_start": date(2026, 1, 9),
            "gap_end": date(2026, 1, 9),
            "days": 1,
        },
        {
            "metric_category": "posts_created",
            "metric_type": "count",
            "gap_start": date(2026, 1, 11),
            "gap_end": date(2026, 1, 11),
            "days": 1,
        },
        {
            "metric_category": "posts_total",
            "metric_type": "count",
            "gap_start": date(2026, 1, 9),
            "gap_end": date(2026, 1, 9),
            "days": 1,
        },
        {
            "metric_category": "posts_total",
            "metric_type": "count",
            "gap_start": date(2026, 1, 11),
            "gap_end": date(2026, 1, 11),
            "days": 1,
        },
    ]


def test_activity_daily_rows_exist_only_for_stored_days(activity):
    warehouse, _ = activity
    result = query_activity(
        warehouse, start="2026-01-08", end="2026-01-10", categories=["users_total"], types="count"
    )
    assert [(r["period"], r["value"]) for r in result.to_records()] == [
        (date(2026, 1, 8), 107.0),
        (date(2026, 1, 10), 109.0),
    ]
    assert result.gaps["days"].sum() == 1


def test_activity_monthly_covers_every_metric_by_default(activity):
    warehouse, rows = activity
    result = query_activity(warehouse, start="2026-01-01", end="2026-01-31", grain="monthly")
    assert sorted(result.frame["metric_category"]) == sorted(settings.ACTIVITY_METRICS)
    assert set(result.frame["metric_type"]) == {"count"}
    users = result.frame.set_index("metric_category").loc["users_total"]
    assert (users["value"], users["as_of"], users["days_present"], users["days_expected"]) == (
        stored_value(rows, date(2026, 1, 14), "users_total"),
        date(2026, 1, 14),
        13,
        31,
    )


def test_activity_unknown_names_are_clear_errors(activity):
    warehouse, _ = activity
    with pytest.raises(
        InvalidQueryError, match=r"unknown metric types \['posts_total'\]; known: \['count'\]"
    ):
        query_activity(warehouse, start="2026-01-01", end="2026-01-02", types=["posts_total"])
    # The layout before migration 0007 named every metric's category 'platform': no longer a category.
    with pytest.raises(
        InvalidQueryError, match=r"unknown metric categories \['platform'\]; known: \['comments_created'"
    ):
        query_activity(warehouse, start="2026-01-01", end="2026-01-02", categories=["platform"])
    with pytest.raises(InvalidQueryError, match="empty list of types"):
        query_activity(warehouse, start="2026-01-01", end="2026-01-02", types=[])


def test_a_query_written_from_the_design_answers_each_metric_as_a_count(activity):
    warehouse, rows = activity
    result = query_activity(warehouse, start="2026-01-01", end="2026-01-03", categories=["posts_total"])
    assert [(r["metric_category"], r["metric_type"], r["value"]) for r in result.to_records()] == [
        ("posts_total", "count", stored_value(rows, date(2026, 1, d), "posts_total")) for d in (1, 2, 3)
    ]
    every = query_activity(warehouse, start="2026-01-01", end="2026-01-01", types=["count"])
    assert sorted(every.frame["metric_category"]) == sorted(settings.ACTIVITY_METRICS)


# Snapshots of 2026-02-02..05 taken at 00:30 the next day; the 4th taken two days late. Totals follow the
# creations (support.activity) except posts on the 5th, where one post was deleted between two snapshots.
INDICATOR_NOW = datetime(2026, 2, 6, 3, 0, tzinfo=UTC)


@pytest.fixture
def indicator_activity(warehouse) -> Warehouse:
    for day in span(date(2026, 2, 2), date(2026, 2, 5)):
        late = day == date(2026, 2, 4)
        taken = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(
            days=3 if late else 1, minutes=30
        )
        store_snapshots(warehouse, [day], collected_at=taken, late=late)
    table = schema.daily_metrics
    with warehouse.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.metric_date == date(2026, 2, 5), table.c.metric_category == "posts_total")
            .values(value=table.c.value - 1)
        )
    return warehouse


def test_activity_rows_carry_quality_issues_and_freshness(indicator_activity):
    result = query_activity(
        indicator_activity,
        start="2026-02-03",
        end="2026-02-05",
        categories=["posts_total", "posts_created", "users_total"],
        now=INDICATOR_NOW,
    )
    by_key = {(r["metric_category"], r["period"]): r for r in result.to_records()}
    feb = {d: date(2026, 2, d) for d in (3, 4, 5)}
    # A total and its creations have two checks each (on time; totals match, the previous day being stored),
    # a metric without its pair one: each failed one is an issue, the score the share passed.
    assert by_key[("posts_total", feb[3])]["quality_score"] == 100.0
    assert by_key[("posts_total", feb[3])]["issues"] == []
    assert by_key[("users_total", feb[3])]["issues"] == []
    assert by_key[("posts_total", feb[4])]["issues"] == ["late"]
    assert by_key[("posts_total", feb[4])]["quality_score"] == 50.0
    assert by_key[("users_total", feb[4])]["quality_score"] == 0.0
    assert by_key[("posts_total", feb[5])]["issues"] == ["totals_mismatch"]
    assert by_key[("posts_created", feb[5])]["issues"] == ["totals_mismatch"]
    assert by_key[("users_total", feb[5])]["issues"] == []
    # fetched_at: when the day's snapshot was collected; freshness on the shared scale at `now`.
    fifth = by_key[("posts_total", feb[5])]
    assert fifth["fetched_at"] == datetime(2026, 2, 6, 0, 30, tzinfo=UTC)
    assert fifth["freshness"] == "< 6 h"
    assert by_key[("posts_total", feb[3])]["freshness"] == "older"
    assert by_key[("posts_total", feb[4])]["fetched_at"] == datetime(2026, 2, 7, 0, 30, tzinfo=UTC)
    assert by_key[("posts_total", feb[4])]["freshness"] == "< 1 h"  # taken after `now`: clock skew


def test_coarser_periods_pool_their_days_checks(indicator_activity):
    result = query_activity(
        indicator_activity,
        start="2026-02-02",
        end="2026-02-05",
        grain="monthly",
        categories=["posts_total", "users_total"],
        now=INDICATOR_NOW,
    )
    month = result.frame.set_index("metric_category")
    # posts_total: 4 on-time checks (one late) and 3 totals checks (the 2nd has no previous day; the 5th fails).
    assert month.loc["posts_total", "issues"] == ["late", "totals_mismatch"]
    assert month.loc["posts_total", "quality_score"] == round(100 * 5 / 7, 1)
    assert month.loc["users_total", "issues"] == ["late"]
    assert month.loc["users_total", "quality_score"] == 75.0
    assert month.loc["posts_total", "fetched_at"] == datetime(2026, 2, 7, 0, 30, tzinfo=UTC)


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


# --- Indicators -------------------------------------------------------------------------------------------------


@pytest.fixture
def scored(migrated_warehouse_url) -> Iterator[Warehouse]:
    """`delta` with scores, issues and three fetch times (`scored_rows`); `echo` with neither score nor issues."""
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([client("delta"), client("echo")])
    store_days(wh, "delta", scored_rows("delta"))
    store_days(wh, "echo", [day_row("echo", d) for d in span(date(2026, 1, 25), date(2026, 1, 31))])
    yield wh
    wh.dispose()


def test_daily_rows_carry_their_score_issues_fetch_time_freshness_and_finality(scored):
    result = query_kpis(scored, start="2026-01-27", end="2026-02-05", client_ids="delta", now=INDICATORS_NOW)
    rows = {r["period"]: r for r in result.to_records()}
    jan_28, feb_2 = rows[date(2026, 1, 28)], rows[date(2026, 2, 2)]
    assert (jan_28["quality_score"], feb_2["quality_score"]) == (80.0, 82.0)
    assert jan_28["issues"] == ["no_anomalies"]
    assert feb_2["issues"] == ["no_split_days", "no_anomalies"]
    assert rows[date(2026, 1, 27)]["issues"] == []
    assert rows[date(2026, 1, 30)]["issues"] is None
    assert jan_28["fetched_at"] == INDICATORS_NOW - timedelta(days=2)
    assert type(jan_28["fetched_at"]) is datetime and jan_28["fetched_at"].utcoffset() == timedelta(0)
    assert [rows[date(2026, 2, d)]["freshness"] for d in (1, 3, 4, 5)] == ["< 6 h", "< 6 h", "< 1 h", "< 1 h"]
    assert jan_28["freshness"] == "older"
    # Final through 2026-02-02: 28 days before INDICATORS_NOW.
    assert [rows[date(2026, 2, d)]["days_final"] for d in (1, 2, 3, 4)] == [1, 1, 0, 0]


def test_monthly_rows_carry_mean_score_distinct_issues_latest_fetch_and_final_days(scored):
    result = query_kpis(scored, start="2026-01-01", end="2026-02-28", grain="monthly", now=INDICATORS_NOW)
    rows = {(r["client_id"], r["period"]): r for r in result.to_records()}
    jan, feb = rows[("delta", date(2026, 1, 1))], rows[("delta", date(2026, 2, 1))]
    assert (jan["days_present"], jan["days_final"], feb["days_present"], feb["days_final"]) == (7, 7, 5, 2)
    assert jan["quality_score"] == pytest.approx(sum(80 + d % 7 for d in range(25, 32)) / 7, abs=0.005)
    assert feb["quality_score"] == pytest.approx(sum(80 + d % 7 for d in range(1, 6)) / 5, abs=0.005)
    # Each issue of the period's days, prefixed with its day, in day order (30 January recorded none).
    assert (jan["issues"], feb["issues"]) == (
        ["2026-01-28: no_anomalies"],
        ["2026-02-02: no_split_days", "2026-02-02: no_anomalies"],
    )
    assert (jan["fetched_at"], jan["freshness"]) == (INDICATORS_NOW - timedelta(days=2), "older")
    assert (feb["fetched_at"], feb["freshness"]) == (INDICATORS_NOW - timedelta(minutes=30), "< 1 h")
    echo = rows[("echo", date(2026, 1, 1))]
    assert (echo["quality_score"], echo["issues"], echo["days_final"]) == (None, None, 7)


def test_weekly_rows_carry_the_same_indicators(scored):
    result = query_kpis(
        scored, start="2026-01-26", end="2026-02-08", grain="weekly", client_ids="delta", now=INDICATORS_NOW
    )
    first, second = result.to_records()
    assert (first["period"], first["days_final"], first["issues"]) == (
        date(2026, 1, 26),
        7,
        ["2026-01-28: no_anomalies"],
    )
    assert (second["days_present"], second["days_final"]) == (4, 1)
    assert (second["issues"], second["freshness"]) == (
        ["2026-02-02: no_split_days", "2026-02-02: no_anomalies"],
        "< 1 h",
    )


@pytest.mark.parametrize(
    ("age", "level"),
    [
        (timedelta(minutes=59, seconds=59), "< 1 h"),
        (timedelta(hours=1), "< 6 h"),
        (timedelta(hours=6), "< 24 h"),
        (timedelta(hours=24), "older"),
    ],
)
def test_freshness_levels_at_their_bounds(scored, age, level):
    fetched_at = INDICATORS_NOW - timedelta(minutes=30)  # 4 February's fetch
    for grain in ("daily", "monthly"):
        result = query_kpis(
            scored,
            start="2026-02-04",
            end="2026-02-04",
            grain=grain,
            client_ids="delta",
            now=fetched_at + age,
        )
        assert result.frame["freshness"].tolist() == [level]


def test_an_empty_answer_has_the_indicator_columns(scored):
    frame = query_kpis(scored, start="2026-03-01", end="2026-03-02", client_ids="delta").frame
    assert frame.empty
    assert {"days_final", "quality_score", "issues", "fetched_at", "freshness"} <= set(frame.columns)


# --- forecasts ----------------------------------------------------------------------------------------------------


def test_forecasts_are_shown_only_when_asked_labelled_and_never_over_real_days(warehouse):
    missing = [date(2026, 1, 7), date(2026, 1, 20)]
    warehouse.replace_forecasts(client_id="acme", forecasts=forecast_frame("acme", missing, 1234.4))
    # A forecast of a collected day (as a row left from before the guard would be): real data wins.
    with warehouse.engine.begin() as conn:
        conn.execute(
            schema.kpi_forecasts.insert(), forecast_frame("acme", [date(2026, 1, 8)], 9.0).to_dict("records")
        )
    plain = query_kpis(warehouse, start="2026-01-05", end="2026-01-10", client_ids=["acme"])
    assert not any(name in plain.frame.columns for name in FORECAST_COLUMNS)
    assert list(plain.frame["period"]) == [date(2026, 1, d) for d in (5, 6, 8, 9, 10)]

    result = query_kpis(
        warehouse, start="2026-01-05", end="2026-01-10", client_ids=["acme"], include_forecast=True
    )
    frame = result.frame
    assert list(frame["period"]) == [date(2026, 1, d) for d in (5, 6, 7, 8, 9, 10)]
    assert list(frame["forecast"]) == [False, False, True, False, False, False]
    assert list(frame["source"]) == ["simulator"] * 2 + [settings.SOURCE_FORECAST] + ["simulator"] * 3
    forecast = result.to_records()[2]
    assert (forecast["days_present"], forecast["days_expected"], forecast["idle_days"]) == (0, 1, 0)
    assert (forecast["impressions"], forecast["clicks"], forecast["spend"]) == (1234, 1234, 1234.4)
    assert (forecast["clicks_lower"], forecast["clicks_upper"]) == pytest.approx((987.52, 1481.28))
    assert forecast["ctr_pct"] == pytest.approx(100.0) and forecast["currency"] == "EUR"
    real = frame[~frame["forecast"]]
    assert (
        real["clicks_lower"].isna().all()
        and real["impressions"].tolist() == plain.frame["impressions"].tolist()
    )
    assert frame["impressions"].dtype == "int64"
    # The gap is still a gap: a forecast is not data.
    assert result.gap_records() == plain.gap_records()


def test_forecasts_are_daily(warehouse):
    with pytest.raises(InvalidQueryError, match="forecasts are per day"):
        query_kpis(warehouse, start="2026-01-01", end="2026-01-31", grain="weekly", include_forecast=True)


def test_without_stored_forecasts_the_columns_are_there_and_empty(warehouse):
    result = query_kpis(warehouse, start="2026-01-05", end="2026-01-06", include_forecast=True)
    assert not result.frame["forecast"].any() and result.frame["spend_upper"].isna().all()
    assert len(result.frame) == len(query_kpis(warehouse, start="2026-01-05", end="2026-01-06").frame)


def test_rows_tell_tracking_not_configured_from_zero_conversions(warehouse):
    no_conversions = {name: 0 for name in settings.CONVERSION_COUNT_COLUMNS}
    idle = {"spend": 0.0, "impressions": 0, "clicks": 0, "ctr_pct": None, "cpc": None, "campaign_count": 0}
    rows = [day_row("cafe", d) | no_conversions for d in span(date(2026, 1, 1), date(2026, 3, 15))]
    rows[0] |= {"leads": 2}  # the only conversions: Jan 1
    rows[2] |= idle | {"delivery": "idle", "reservation_value": 0.0}  # Jan 3: nothing delivered
    store_days(warehouse, "cafe", rows)

    def tracking(start: str, end: str, grain: str = "daily") -> list[str]:
        result = query_kpis(warehouse, start=start, end=end, grain=grain, client_ids="cafe")
        return list(result.frame["conversion_tracking"])

    assert tracking("2026-01-01", "2026-01-04") == [
        "converting",
        "zero conversions",
        "no delivery",
        "zero conversions",
    ]
    # Jan 1 is within the 30 days before Jan 31, but not before Feb 20: no conversion reported since.
    assert tracking("2026-01-31", "2026-01-31") == ["zero conversions"]
    assert tracking("2026-02-20", "2026-02-21") == ["tracking not configured"] * 2
    assert tracking("2026-01-01", "2026-02-28", grain="monthly") == ["converting", "zero conversions"]
    assert tracking("2026-03-01", "2026-03-15", grain="monthly") == ["tracking not configured"]
