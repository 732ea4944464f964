"""The monthly summary's automation: any complete month closes, a restated day re-opens it, incomplete months wait."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from kpi_platform.defs.monthly import CLIENT_MONTHLY_SUMMARY
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


def test_a_provisional_month_turns_final_once_its_restatement_window_has_passed(platform):
    """A month summarised while Meta could still restate it is re-summarised as final by the daily schedule
    once 28 days have passed since it ended, even when none of its days changes again."""
    from datetime import UTC, timedelta

    from kpi_platform.defs.monthly import month_finalizing_schedule
    from kpi_platform.summaries import build_monthly_summary, month_end

    today = datetime.now(UTC).date()
    month = (today.replace(day=1) - timedelta(days=1)).replace(day=1)
    month = (month - timedelta(days=1)).replace(day=1)  # two months back: its window has always passed
    assert platform.collect("acme", month, month_end(month)).success
    # Summarised on the month's last day, as a collection ending that day would have done.
    build_monthly_summary(
        warehouse=platform.warehouse, client_id="acme", month=month, today=month_end(month), run_id="early"
    )
    assert list(platform.warehouse.read_monthly(client_id="acme")["status"]) == ["provisional"]

    defs = platform.defs()
    resources = {"warehouse": defs.resources["warehouse"]}
    before = dg.build_schedule_context(
        instance=platform.instance,
        scheduled_execution_time=datetime.combine(
            month_end(month) + timedelta(days=27), datetime.min.time(), tzinfo=UTC
        ),
        resources=resources,
    )
    assert isinstance(month_finalizing_schedule(before), dg.SkipReason)

    context = dg.build_schedule_context(
        instance=platform.instance,
        scheduled_execution_time=datetime.combine(today, datetime.min.time(), tzinfo=UTC),
        resources=resources,
    )
    requests = month_finalizing_schedule(context)
    key = f"acme|{month.isoformat()}"
    assert [r.partition_key for r in requests] == [key]

    job = defs.resolve_job_def("monthly_summary_job")
    assert job.execute_in_process(instance=platform.instance, partition_key=key).success
    assert list(platform.warehouse.read_monthly(client_id="acme")["status"]) == ["final"]
    assert isinstance(month_finalizing_schedule(context), dg.SkipReason)


def test_a_month_breaking_its_contract_is_refused_and_the_stored_summary_stays(platform):
    import pytest
    import sqlalchemy as sa

    from kpi_platform.quality.schemas import ContractViolation
    from kpi_platform.summaries import build_monthly_summary
    from kpi_platform.warehouse import schema

    october = date(2026, 10, 1)
    assert platform.collect("acme", october, date(2026, 10, 31)).success
    build_monthly_summary(
        warehouse=platform.warehouse, client_id="acme", month=october, today=date(2026, 12, 1), run_id="good"
    )
    before = platform.warehouse.read_monthly(client_id="acme")
    table = schema.client_daily_kpis
    with platform.warehouse.engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.client_id == "acme", table.c.kpi_date == date(2026, 10, 15))
            .values(clicks=10**9)
        )
    with pytest.raises(ContractViolation, match="acme"):
        build_monthly_summary(
            warehouse=platform.warehouse,
            client_id="acme",
            month=october,
            today=date(2026, 12, 1),
            run_id="bad",
        )
    after = platform.warehouse.read_monthly(client_id="acme")
    assert list(after["run_id"]) == ["good"] and after["clicks"].equals(before["clicks"])


def test_complete_months_of_a_client_are_summarised_in_one_run(platform):
    """The automation sensor's backfill of several complete months runs as one run per client (single-run
    backfill policy): the asset summarises every month of its range."""
    from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG

    assert platform.collect("acme", date(2026, 9, 1), date(2026, 10, 31)).success
    job = platform.defs().resolve_job_def("monthly_summary_job")
    result = job.execute_in_process(
        instance=platform.instance,
        tags={RANGE_START_TAG: "acme|2026-09-01", RANGE_END_TAG: "acme|2026-10-01"},
    )
    assert result.success
    monthly = platform.warehouse.read_monthly(client_id="acme")
    assert [m.isoformat() for m in monthly["month"]] == ["2026-09-01", "2026-10-01"]
    assert list(monthly["run_id"]) == [result.run_id] * 2
