"""Daily collection planning: local collection hour, lookback window, run keys."""

from __future__ import annotations

from datetime import UTC, date, datetime

from kpi_platform.automation import RANGE_END_TAG, RANGE_START_TAG, lookback_window, plan_daily_collection
from kpi_platform.clients import Client, ClientSettings


def client(cid, tz="Europe/Warsaw", hour=6, lookback=28, active=True):
    return Client(
        cid, cid, "act_1", "EUR", tz, active, ClientSettings(lookback_days=lookback, collection_hour=hour)
    )


def test_lookback_window_is_complete_days_before_today():
    assert lookback_window(date(2026, 11, 23), 28) == (date(2026, 10, 26), date(2026, 11, 22))


def test_each_client_is_due_at_its_local_hour():
    clients = [client("warsaw"), client("ny", tz="America/New_York", hour=7), client("off", active=False)]
    # 05:05 UTC = 06:05 in Warsaw (CET, UTC+1) = 00:05 in New York
    plans = plan_daily_collection(clients, datetime(2026, 11, 23, 5, 5, tzinfo=UTC))
    assert [p.client_id for p in plans] == ["warsaw"]
    (plan,) = plans
    assert (plan.start, plan.end) == (date(2026, 10, 26), date(2026, 11, 22))
    assert plan.run_key == "daily:warsaw:2026-11-23"
    assert plan.tags()[RANGE_START_TAG] == "warsaw|2026-10-26"
    assert plan.tags()[RANGE_END_TAG] == "warsaw|2026-11-22"
    assert plan.tags()["kpi/client"] == "warsaw"
    # 12:05 UTC = 07:05 in New York (EST, UTC-5)
    assert [
        p.client_id for p in plan_daily_collection(clients, datetime(2026, 11, 23, 12, 5, tzinfo=UTC))
    ] == ["ny"]


def test_per_client_lookback_override():
    (plan,) = plan_daily_collection(
        [client("a", tz="UTC", hour=6, lookback=3)], datetime(2026, 11, 23, 6, 5, tzinfo=UTC)
    )
    assert (plan.start, plan.end) == (date(2026, 11, 20), date(2026, 11, 22))
