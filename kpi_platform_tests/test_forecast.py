"""Forecasts: the weekday model on a known weekly pattern (close, interval covering), its minimum history, the
refresh that stores forecasts apart from the data, and proof that nothing counts a forecast as data (monthly
summaries, completeness and freshness checks, the missing-client alert, the health report's missing days).

A fixed clock: 2026-03-10 12:00 UTC, local today 2026-03-10 in Warsaw. acme is collected from 2026-01-05 to
yesterday except two days; newbie only for the last 10 days; closed is inactive.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from kpi_platform.clients import Client
from kpi_platform.forecast import (
    HORIZON_DAYS,
    INTERVAL_PCT,
    MIN_HISTORY_DAYS,
    MODEL_NAME,
    ShortHistoryError,
    fit_weekday_model,
    forecast_client,
    refresh_forecasts,
)
from kpi_platform.operations.health import HEALTH_CHECKS, build_health_report
from kpi_platform.operations.missing_clients import missing_client_alerts
from kpi_platform.quality.warehouse_checks import evaluate_warehouse_checks
from kpi_platform.summaries import IncompleteMonthError, build_monthly_summary
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform.warehouse.queries import query_kpis
from kpi_platform_tests.support.forecast_data import BASE, WEEKLY_SHAPE, expected, weekly_rows
from kpi_platform_tests.support.warehouse_data import client, span, store_days

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TODAY = date(2026, 3, 10)
YESTERDAY = TODAY - timedelta(days=1)
ACME_MISSING = {date(2026, 2, 20), date(2026, 3, 3)}


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


# --- the model --------------------------------------------------------------------------------------------------


def test_a_weekly_pattern_is_forecast_close_to_it_and_the_interval_covers_new_days():
    history = frame(weekly_rows("acme", date(2026, 1, 5), date(2026, 3, 1), noise=0.1, seed=3))
    coming = span(date(2026, 3, 2), date(2026, 3, 15))
    forecast = forecast_client(history, coming, generated_at=NOW).set_index("kpi_date")

    for metric in ("spend", "impressions", "clicks", "leads"):
        truth = np.array([expected(d, metric) for d in coming])
        error = np.abs(forecast.loc[coming, metric].to_numpy() - truth) / truth
        # The noise alone is 10 % per day; ignoring the weekdays (a flat mean) would be 32 % off.
        assert error.mean() < 0.1, metric
        # The weekly shape is kept: Wednesday's forecast is 2.6 times Sunday's, as in the data.
        assert forecast.loc[date(2026, 3, 4), metric] / forecast.loc[
            date(2026, 3, 8), metric
        ] == pytest.approx(WEEKLY_SHAPE[2] / WEEKLY_SHAPE[6], rel=0.15)
    assert (forecast["model"] == MODEL_NAME).all() and (forecast["interval_pct"] == INTERVAL_PCT).all()
    assert (forecast["history_days"] == len(history)).all()

    # New days drawn from the same process fall inside the 80 % interval about 80 % of the time.
    inside = total = 0
    for seed in range(10, 20):
        actual = frame(weekly_rows("acme", coming[0], coming[-1], noise=0.1, seed=seed)).set_index("kpi_date")
        for metric in BASE:
            values = actual.loc[coming, metric].to_numpy()
            lower = forecast.loc[coming, f"{metric}_lower"].to_numpy()
            upper = forecast.loc[coming, f"{metric}_upper"].to_numpy()
            assert (lower <= forecast.loc[coming, metric].to_numpy()).all()
            assert (forecast.loc[coming, metric].to_numpy() <= upper).all()
            inside += int(((values >= lower) & (values <= upper)).sum())
            total += len(values)
    assert 0.65 <= inside / total <= 0.95


def test_the_forecast_follows_a_recent_change_of_level():
    rows = weekly_rows("acme", date(2026, 1, 5), date(2026, 2, 15), level=1.0, seed=4)
    rows += weekly_rows("acme", date(2026, 2, 16), date(2026, 3, 1), level=2.0, seed=5)
    model = fit_weekday_model([r["kpi_date"] for r in rows], [r["spend"] for r in rows])
    point, _, _ = model.predict([date(2026, 3, 4)])
    assert point[0] == pytest.approx(expected(date(2026, 3, 4), "spend", level=2.0), rel=0.12)


def test_too_little_history_gives_no_forecast_and_says_why():
    rows = weekly_rows("acme", date(2026, 1, 1), date(2026, 1, 1) + timedelta(days=MIN_HISTORY_DAYS - 2))
    with pytest.raises(
        ShortHistoryError, match=f"{MIN_HISTORY_DAYS - 1} collected days.*needs {MIN_HISTORY_DAYS}"
    ):
        fit_weekday_model([r["kpi_date"] for r in rows], [r["spend"] for r in rows])
    # Four weeks, but only one Monday: no weekday profile for Mondays.
    days = [d for d in span(date(2026, 1, 5), date(2026, 2, 1)) if d.weekday() != 0 or d == date(2026, 1, 5)]
    with pytest.raises(ShortHistoryError, match="1 of the rarest weekday"):
        fit_weekday_model(days, [10.0] * len(days))
    with pytest.raises(ShortHistoryError, match="no collected days"):
        forecast_client(pd.DataFrame(), [TODAY], generated_at=NOW)


def test_an_idle_client_is_forecast_idle():
    days = span(date(2026, 1, 5), date(2026, 3, 1))
    model = fit_weekday_model(days, [0.0] * len(days))
    point, lower, upper = model.predict([TODAY])
    assert (point[0], lower[0], upper[0]) == (0.0, 0.0, 0.0)


def test_bad_history_is_refused():
    with pytest.raises(ValueError, match="given more than once"):
        fit_weekday_model([TODAY, TODAY], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        days = span(date(2026, 1, 5), date(2026, 3, 1))
        fit_weekday_model(days, [float("nan")] * len(days))


# --- the refresh, on the warehouse ------------------------------------------------------------------------------


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([client("acme"), client("newbie"), client("closed", active=False)])
    with wh.engine.begin() as conn:
        conn.execute(schema.clients.update().values(created_at=datetime(2026, 1, 1, tzinfo=UTC)))
    store_days(
        wh,
        "acme",
        [r for r in weekly_rows("acme", date(2026, 1, 5), YESTERDAY) if r["kpi_date"] not in ACME_MISSING],
    )
    store_days(wh, "newbie", weekly_rows("newbie", YESTERDAY - timedelta(days=9), YESTERDAY))
    store_days(wh, "closed", weekly_rows("closed", date(2026, 1, 5), date(2026, 2, 28)))
    yield wh
    wh.dispose()


def clients_of(wh: Warehouse) -> list[Client]:
    return [Client.from_row(row) for row in wh.list_clients()]


def count(wh: Warehouse, table: sa.Table) -> int:
    with wh.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_the_refresh_forecasts_only_days_without_data_in_its_own_table(warehouse):
    # A forecast of the inactive client from before it was deactivated.
    stale = forecast_client(
        warehouse.read_client_days(client_id="closed", start=date(2026, 1, 5), end=date(2026, 2, 28)),
        [date(2026, 3, 1)],
        generated_at=NOW - timedelta(days=9),
    )
    assert warehouse.replace_forecasts(client_id="closed", forecasts=stale) == 1
    days_before = count(warehouse, schema.client_daily_kpis)

    refresh = refresh_forecasts(warehouse, clients_of(warehouse), now_utc=NOW)

    window = span(TODAY, TODAY + timedelta(days=HORIZON_DAYS))
    stored = warehouse.read_forecasts(start=date(2026, 1, 1), end=date(2026, 12, 31))
    assert list(stored["client_id"].unique()) == ["acme"]
    assert list(stored["kpi_date"]) == sorted(ACME_MISSING) + window
    assert refresh.forecast_days == {"acme": len(ACME_MISSING) + len(window)}
    assert set(refresh.skipped) == {"newbie"} and "10 collected days" in refresh.skipped["newbie"]
    assert refresh.cleared == ("closed",)
    assert (stored["history_days"] == 56 - 2).all()
    assert count(warehouse, schema.client_daily_kpis) == days_before, "the data is never touched"

    # Idempotent: a second refresh leaves the same forecasts.
    refresh_forecasts(warehouse, clients_of(warehouse), now_utc=NOW)
    again = warehouse.read_forecasts(start=date(2026, 1, 1), end=date(2026, 12, 31))
    pd.testing.assert_frame_equal(again, stored)


def test_nothing_counts_a_forecast_as_data(warehouse):
    """Forecasts of acme's missing days (2026-02-20, 2026-03-03) and of yesterday (after deleting it) are stored;
    every summary, check and alert still sees exactly the collected days."""
    with warehouse.engine.begin() as conn:
        days = schema.client_daily_kpis
        conn.execute(sa.delete(days).where(days.c.client_id == "acme", days.c.kpi_date == YESTERDAY))
    refresh_forecasts(warehouse, clients_of(warehouse), now_utc=NOW)
    forecast_days = set(warehouse.read_forecasts(start=date(2026, 2, 1), end=YESTERDAY)["kpi_date"])
    assert forecast_days == {*ACME_MISSING, YESTERDAY}

    # Monthly summaries: February still misses a day, and its totals are the collected days alone.
    with pytest.raises(IncompleteMonthError, match="27 of 28 days collected"):
        build_monthly_summary(
            warehouse=warehouse, client_id="acme", month=date(2026, 2, 1), today=TODAY, run_id="r"
        )
    totals = warehouse.monthly_totals_from_days(client_id="acme", month=date(2026, 2, 1))
    real = warehouse.read_client_days(client_id="acme", start=date(2026, 2, 1), end=date(2026, 2, 28))
    assert totals["days_present"] == 27 and totals["clicks"] == int(real["clicks"].sum())

    # Completeness and freshness checks: the missing days and the missing yesterday still count as missing.
    outcomes = {
        o.name: o
        for o in evaluate_warehouse_checks(warehouse=warehouse, clients=clients_of(warehouse), now_utc=NOW)
    }
    assert not outcomes["completeness_meets_target"].passed
    assert "acme" in str(outcomes["completeness_meets_target"].metadata)
    assert not outcomes["fresh_per_client"].passed

    # The missing-client alert: acme has no data for its due day, whatever its forecast.
    alerts = missing_client_alerts(warehouse, now_utc=NOW, escalation_hours=1.0)
    assert len(alerts) == 1 and "Missing clients: acme" in alerts[0].body

    # The health report: the same missing days as without forecasts.
    report = build_health_report(
        warehouse=warehouse,
        instance=None,
        clients=clients_of(warehouse),
        now_utc=NOW,
        checks=[s for s in HEALTH_CHECKS if s.name in ("missing_days", "yesterday_collection")],
    )
    missing = report.check("missing_days").details["per_client"]["acme"]["missing_dates"]
    assert set(missing) == {d.isoformat() for d in (*ACME_MISSING, YESTERDAY)}
    assert report.check("yesterday_collection").details["overdue"] == ["acme"]

    # Queries: no forecast unless asked, and the gaps name the days either way.
    plain = query_kpis(warehouse, start=date(2026, 2, 15), end=YESTERDAY, client_ids="acme")
    asked = query_kpis(
        warehouse, start=date(2026, 2, 15), end=YESTERDAY, client_ids="acme", include_forecast=True
    )
    assert "forecast" not in plain.frame.columns and set(plain.frame["source"]) == {"simulator"}
    assert plain.days_missing == asked.days_missing == 3
    assert int(asked.frame["days_present"].sum()) == int(plain.frame["days_present"].sum())
