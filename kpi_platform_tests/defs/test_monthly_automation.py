"""The monthly summary's sensor: any complete month closes, a restated day re-opens it, incomplete months wait, and
the months one collection run completes for a client are summarised in one run."""

from __future__ import annotations

from datetime import date, datetime

import dagster as dg

from kpi_platform.defs.monthly import monthly_summary_sensor
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, parse_key
from kpi_platform.summaries import month_status


def tick(platform, defs, cursor) -> tuple[list[tuple[str, str]], str | None]:
    """One tick of the sensor: its runs as (range start, range end) keys, and the new cursor."""
    context = dg.build_sensor_context(instance=platform.instance, cursor=cursor, definitions=defs)
    result = monthly_summary_sensor.evaluate_tick(context)
    return [
        (r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in result.run_requests or []
    ], result.cursor


def months_between(start: str, end: str) -> set[str]:
    client_id, first = parse_key(start)
    _, last = parse_key(end)
    months = set()
    month = first
    while month <= last:
        months.add(f"{client_id}|{month.isoformat()}")
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return months


def requested(platform, defs, cursor):
    runs, cursor = tick(platform, defs, cursor)
    return {key for start, end in runs for key in months_between(start, end)}, cursor


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


def test_months_one_run_completes_are_summarised_in_one_run_per_client(platform):
    """Three clients each collected for two whole months: one summary run per client covering both months. Dagster's
    own automation planned a single-run backfill of such a request by whichever dimension had fewer distinct keys,
    here the months, which made one run per month (a year's backfill of 50 clients: hundreds of one-month runs)."""
    from kpi_platform import settings
    from kpi_platform.cli.quickstart import sync_clients
    from kpi_platform.clients import load_clients
    from kpi_platform_tests.support.platform import CLIENTS_YAML

    clients_file = settings.clients_file()
    clients_file.write_text(
        CLIENTS_YAML + "  - {id: initech, name: Initech, ad_account_id: act_100000000003, currency: EUR, "
        "timezone: Europe/Warsaw}\n",
        encoding="utf-8",
    )
    sync_clients(instance=platform.instance, clients=load_clients(clients_file), warehouse=platform.warehouse)
    defs = platform.defs()
    _, cursor = tick(platform, defs, None)
    for client_id in ("acme", "globex", "initech"):
        assert platform.collect(client_id, date(2026, 9, 1), date(2026, 10, 31)).success
    runs, cursor = tick(platform, defs, cursor)
    assert sorted(runs) == [
        (f"{client_id}|2026-09-01", f"{client_id}|2026-10-01") for client_id in ("acme", "globex", "initech")
    ]

    job = defs.resolve_job_def("monthly_summary_job")
    for start, end in runs:
        assert job.execute_in_process(
            instance=platform.instance, tags={RANGE_START_TAG: start, RANGE_END_TAG: end}
        ).success
    assert tick(platform, defs, cursor)[0] == []
    monthly = platform.warehouse.read_monthly()
    assert len(monthly) == 6 and monthly.groupby("client_id")["run_id"].nunique().eq(1).all()


def test_a_gap_between_months_makes_two_runs_and_an_incomplete_month_waits(platform):
    defs = platform.defs()
    _, cursor = tick(platform, defs, None)
    assert platform.collect("acme", date(2026, 6, 1), date(2026, 6, 30)).success
    assert platform.collect("acme", date(2026, 8, 1), date(2026, 9, 30)).success
    assert platform.collect("acme", date(2026, 10, 1), date(2026, 10, 30)).success
    runs, cursor = tick(platform, defs, cursor)
    assert sorted(runs) == [("acme|2026-06-01", "acme|2026-06-01"), ("acme|2026-08-01", "acme|2026-09-01")]
    # October waits in the cursor until its last day arrives, with no new October event needed in between.
    assert tick(platform, defs, cursor)[0] == []
    assert platform.collect("acme", date(2026, 10, 31), date(2026, 10, 31)).success
    assert tick(platform, defs, cursor)[0] == [("acme|2026-10-01", "acme|2026-10-01")]


def test_a_client_still_being_collected_waits_with_all_its_months():
    """A range run's days turn materialized a batch of events at a time: while any day of a client's changed months
    is in progress, none of its months is summarised, so the months of one run go together."""
    from kpi_platform.defs.monthly import IN_PROGRESS, MATERIALIZED, day_keys_of, ready_months, summary_runs

    september, october = ("acme", date(2026, 9, 1)), ("acme", date(2026, 10, 1))
    globex = ("globex", date(2026, 9, 1))
    statuses = dict.fromkeys(day_keys_of([september, october, globex]), MATERIALIZED)
    statuses["acme|2026-10-20"] = IN_PROGRESS
    ready, waiting = ready_months(
        [september, october, globex], day_status=statuses, summary_status={}, today=date(2026, 12, 5)
    )
    assert ready == {globex} and waiting == {september, october}

    statuses["acme|2026-10-20"] = MATERIALIZED
    ready, waiting = ready_months(
        [september, october, globex],
        day_status=statuses,
        summary_status={"globex|2026-09-01": IN_PROGRESS},
        today=date(2026, 12, 5),
    )
    assert ready == {september, october} and waiting == {globex}
    assert summary_runs(ready) == [("acme", date(2026, 9, 1), date(2026, 10, 1))]
    # The current month is never ready, whatever its days' statuses.
    assert (
        ready_months([october], day_status=statuses, summary_status={}, today=date(2026, 10, 31))[0] == set()
    )


def test_summary_runs_group_consecutive_months_per_client_across_years():
    from kpi_platform.defs.monthly import summary_runs

    months = [
        ("b", date(2025, 12, 1)),
        ("b", date(2026, 1, 1)),
        ("a", date(2026, 3, 1)),
        ("b", date(2026, 3, 1)),
    ]
    assert summary_runs(months) == [
        ("a", date(2026, 3, 1), date(2026, 3, 1)),
        ("b", date(2025, 12, 1), date(2026, 1, 1)),
        ("b", date(2026, 3, 1), date(2026, 3, 1)),
    ]


def test_a_client_a_backfill_has_still_to_collect_waits(platform):
    """A UI backfill creates its runs a chunk at a time: days it has not collected yet are not in progress in
    Dagster's partition status, yet the client's months wait for them, and close in one run once it is done."""
    import time

    from dagster._core.execution.backfill import (  # PRIVATE: no public way to add a backfill
        BulkActionStatus,
        PartitionBackfill,
    )

    from kpi_platform.defs.collection import CLIENT_DAILY_KPIS

    defs = platform.defs()
    _, cursor = tick(platform, defs, None)
    assert platform.collect("acme", date(2026, 9, 1), date(2026, 10, 31)).success
    assert platform.collect("globex", date(2026, 9, 1), date(2026, 9, 30)).success
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id="acmeoctober",
        asset_graph=defs.get_repository_def().asset_graph,
        partition_names=["acme|2026-10-01", "acme|2026-10-02"],
        asset_selection=[CLIENT_DAILY_KPIS],
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=platform.instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    platform.instance.add_backfill(backfill)
    runs, cursor = tick(platform, defs, cursor)
    assert runs == [("globex|2026-09-01", "globex|2026-09-01")]

    platform.instance.update_backfill(backfill.with_status(BulkActionStatus.COMPLETED_SUCCESS))
    assert tick(platform, defs, cursor)[0] == [("acme|2026-09-01", "acme|2026-10-01")]
