"""The monthly summary's automation: any complete month closes, a restated day re-opens it, incomplete months wait."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from kpi_platform.defs.assets import CLIENT_MONTHLY_SUMMARY
from kpi_platform.summaries import month_status

NOW = datetime(2026, 11, 23, 12, 0)


def requested(platform, defs, cursor):
    result = dg.evaluate_automation_conditions(
        defs=defs, instance=platform.instance, evaluation_time=NOW, cursor=cursor
    )
    return set(result.get_requested_partitions(CLIENT_MONTHLY_SUMMARY)), result.cursor


def summarise(platform, defs, keys):
    job = defs.resolve_job_def("monthly_summary_job")
    for key in keys:
        assert job.execute_in_process(instance=platform.instance, partition_key=key).success


def test_months_close_when_complete_and_reopen_when_restated(platform):
    defs = platform.defs()
    cursor = None
    keys, cursor = requested(platform, defs, cursor)
    assert keys == set()

    # Two complete months for acme (September is not the latest month window: it must close too),
    # and October minus its last day for globex.
    assert platform.collect("acme", date(2026, 9, 1), date(2026, 10, 31)).success
    assert platform.collect("globex", date(2026, 10, 1), date(2026, 10, 30)).success
    keys, cursor = requested(platform, defs, cursor)
    assert keys == {"acme|2026-09-01", "acme|2026-10-01"}

    summarise(platform, defs, sorted(keys))
    keys, cursor = requested(platform, defs, cursor)
    assert keys == set()
    monthly = platform.warehouse.read_monthly(client_id="acme")
    assert list(monthly["days_present"]) == [30, 31]
    days = platform.warehouse.read_client_days(
        client_id="acme", start=date(2026, 10, 1), end=date(2026, 10, 31)
    )
    october = monthly[monthly["month"] == date(2026, 10, 1)].iloc[0]
    assert abs(october["spend"] - days["spend"].sum()) < 0.01
    assert october["clicks"] == days["clicks"].sum()

    # globex's last October day arrives: its October closes.
    assert platform.collect("globex", date(2026, 10, 31), date(2026, 10, 31)).success
    keys, cursor = requested(platform, defs, cursor)
    assert keys == {"globex|2026-10-01"}
    summarise(platform, defs, sorted(keys))
    keys, cursor = requested(platform, defs, cursor)

    # A restated October day for acme re-materializes acme's October only.
    assert platform.collect("acme", date(2026, 10, 15), date(2026, 10, 15)).success
    keys, cursor = requested(platform, defs, cursor)
    assert keys == {"acme|2026-10-01"}


def test_provisional_until_28_days_after_month_end():
    october = date(2026, 10, 1)
    assert month_status(october, date(2026, 11, 27)) == "provisional"
    assert month_status(october, date(2026, 11, 28)) == "final"
