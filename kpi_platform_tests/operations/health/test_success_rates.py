"""The roadmap's success rates: each rate per window on a known run history (a real SQLite Dagster instance) and
warehouse, the targets, freshness at the deadline, the report's table and metrics, and the collections entry (next
scheduled collection, failed collections)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from dagster._core.remote_origin import (  # PRIVATE: a schedule's stored state names its origin
    RegisteredCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.scheduler.instigation import InstigatorState, ScheduleInstigatorData  # PRIVATE: as above

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.keys import ClientRange
from kpi_platform.operations.health import (
    HEALTH_CHECKS,
    HealthContext,
    build_health_report,
    clients_from_warehouse,
)
from kpi_platform.operations.health.success_rates import (
    TARGETS_BY_NAME,
    CollectionRun,
    Rate,
    data_rates,
    first_countable_days,
    fresh_days,
    rates_finding,
    run_rates,
)
from kpi_platform.runtime.dagster_private import InstigatorStatus, InstigatorType
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.platform import Platform, make_platform
from kpi_platform_tests.support.postgres import temp_database
from kpi_platform_tests.support.warehouse_data import client, day_row, span, store_days

pytestmark = pytest.mark.usefixtures("no_current_defs_state_storage")

# 12:00 UTC is 13:00 in Warsaw (UTC+1 in November): past the 09:00 deadline (08:00 UTC), so the due day is 11-19.
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DUE = date(2026, 11, 19)
WINDOW_30 = span(DUE - timedelta(days=29), DUE)
ACME_MISSING = {date(2026, 10, 25), date(2026, 11, 1)}
GLOBEX_IDLE = DUE


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def finished_run(
    instance: dg.DagsterInstance,
    client_id: str,
    start: date,
    end: date,
    *,
    ended_at: datetime,
    succeeded: bool = True,
    reason: str | None = "daily",
    backfill: str | None = None,
    will_retry: bool = False,
    job_name: str = "daily_collection_job",
) -> dg.DagsterRun:
    """A collection run stored as Dagster stores one, finished at `ended_at` (its end and update time)."""
    tags = {**ClientRange(client_id, start, end).tags(), settings.CLIENT_TAG: client_id}
    if reason:
        tags["kpi/reason"] = reason
    if backfill:
        tags["dagster/backfill"] = backfill
    if will_retry:
        tags["dagster/will_retry"] = "true"
    selection = frozenset({CLIENT_DAILY_KPIS}) if job_name == "__ASSET_JOB" else None
    run = instance.add_run(
        dg.DagsterRun(
            job_name=job_name, tags=tags, status=dg.DagsterRunStatus.STARTED, asset_selection=selection
        )
    )
    outcome = dg.DagsterEventType.RUN_SUCCESS if succeeded else dg.DagsterEventType.RUN_FAILURE
    # The run storage records the end and update time from the event's time, as the run worker reports it.
    instance.run_storage.handle_run_event(
        run.run_id, dg.DagsterEvent(outcome.value, job_name=job_name), update_timestamp=ended_at
    )
    return run


def daily(instance: dg.DagsterInstance, client_id: str, day: date, *, ended_at: datetime | None = None, **kw):
    """The schedule's run for `day`: the 28-day lookback ending on it, by default finished at 05:10 UTC (06:10 in
    Warsaw) the next day, 2 h 50 min before the deadline."""
    ended = ended_at or at(day + timedelta(days=1), 5, 10)
    return finished_run(instance, client_id, day - timedelta(days=27), day, ended_at=ended, **kw)


@pytest.fixture
def platform(request, tmp_path, monkeypatch, dagster_instance_template) -> Iterator[Platform]:
    if getattr(request, "param", "sqlite") == "postgresql":
        with temp_database(template=request.getfixturevalue("pg_template")) as url:
            yield from make_platform(tmp_path, monkeypatch, url, instance_template=dagster_instance_template)
    else:
        url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
        yield from make_platform(tmp_path, monkeypatch, url, instance_template=dagster_instance_template)


def set_scores(wh: Warehouse, client_id: str, score: float) -> None:
    table = schema.client_daily_kpis
    with wh.engine.begin() as conn:
        conn.execute(table.update().where(table.c.client_id == client_id).values(quality_score=score))


@pytest.fixture
def history(platform) -> Platform:
    """30 due days of both clients, with known gaps, scores, and runs (see the test for what each one makes).

    acme: rows for every day but 10-25 and 11-01, score 90; a daily run per day, where the one for 11-14 failed and
    was healed after its deadline, the one for 11-17 failed and was healed 1 h before it, and the one for 11-10
    failed once and Dagster's retry succeeded; a backfill run failed on 11-19.
    globex: every day stored, score 100, 11-19 idle; every daily run succeeded, the one for 11-19 exactly 6 h before
    its deadline, the one for 11-18 6.5 h before it (too early to be fresh).
    """
    wh, instance = platform.warehouse, platform.instance
    store_days(wh, "acme", [day_row("acme", d) for d in WINDOW_30 if d not in ACME_MISSING])
    store_days(wh, "globex", [day_row("globex", d) for d in WINDOW_30])
    set_scores(wh, "acme", 90.0)
    set_scores(wh, "globex", 100.0)
    table = schema.client_daily_kpis
    with wh.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.client_id == "globex", table.c.kpi_date == GLOBEX_IDLE)
            .values(delivery="idle", quality_score=0.0)
        )
    for day in WINDOW_30:
        if day == date(2026, 11, 14):
            daily(instance, "acme", day, succeeded=False)
            finished_run(instance, "acme", day, day, reason="heal", ended_at=at(date(2026, 11, 15), 9))
        elif day == date(2026, 11, 17):
            daily(instance, "acme", day, succeeded=False)
            finished_run(instance, "acme", day, day, reason="heal", ended_at=at(date(2026, 11, 18), 7))
        elif day == date(2026, 11, 10):
            daily(instance, "acme", day, succeeded=False, will_retry=True)
            daily(instance, "acme", day, ended_at=at(date(2026, 11, 11), 5, 20))
        else:
            daily(instance, "acme", day)
        if day == DUE:
            daily(instance, "globex", day, ended_at=at(DUE + timedelta(days=1), 2))
        elif day == date(2026, 11, 18):
            daily(instance, "globex", day, ended_at=at(date(2026, 11, 19), 1, 30))
        else:
            daily(instance, "globex", day)
    finished_run(
        instance,
        "acme",
        date(2026, 6, 1),
        date(2026, 6, 30),
        reason=None,
        backfill="bkf1",
        job_name="__ASSET_JOB",
        succeeded=False,
        ended_at=at(DUE, 20),
    )
    # Not counted: a run of another job tagged with the client, and a run that ended after the report's time.
    finished_run(
        instance, "acme", DUE, DUE, job_name="monthly_summary_job", succeeded=False, ended_at=at(DUE, 21)
    )
    finished_run(instance, "acme", DUE, DUE, succeeded=False, ended_at=NOW + timedelta(hours=1))
    return platform


def rates_of(platform: Platform) -> dict[tuple[str, int], float | None]:
    result = build_health_report(
        warehouse=platform.warehouse,
        instance=platform.instance,
        clients=clients_from_warehouse(platform.warehouse),
        now_utc=NOW,
        checks=[spec for spec in HEALTH_CHECKS if spec.name == "success_rates"],
    )
    rates = result.check("success_rates").details["rates"]
    return {(r["rate"], r["window_days"]): r["value"] for r in rates}


@pytest.mark.parametrize("platform", ["sqlite", "postgresql"], indirect=True)
def test_each_rate_per_day_and_over_7_and_30_days(history):
    rates = rates_of(history)
    # Daily runs by end time: 1 d both succeeded; 7 d acme 5/7 (11-14, 11-17 failed), globex 7/7; 30 d 58/60 (the
    # run Dagster retried counts once, as its retry).
    assert [rates[("collection_success", d)] for d in (1, 7, 30)] == [100.0, 85.71, 96.67]
    # Repairs: 1 d the failed backfill run alone; 7 and 30 d the two healing runs besides it.
    assert [rates[("backfill_healing_success", d)] for d in (1, 7, 30)] == [0.0, 66.67, 66.67]
    # acme misses 10-25 and 11-01, both older than 7 days.
    assert [rates[("completeness", d)] for d in (1, 7, 30)] == [100.0, 100.0, 96.67]
    # Delivered days only: 1 d acme's 90 (globex's 11-19 is idle); 7 d (7 × 90 + 6 × 100) / 13; 30 d 28 × 90 and
    # 29 × 100 over 57 days.
    assert [rates[("quality_avg", d)] for d in (1, 7, 30)] == [90.0, 94.62, 95.09]
    # Not fresh: acme 11-14 (healed an hour after its deadline), globex 11-18 (collected 6.5 h before it).
    assert [rates[("freshness", d)] for d in (1, 7, 30)] == [100.0, 85.71, 96.67]


def test_the_report_shows_rates_against_targets_as_a_table_and_plottable_metrics(history):
    result = build_health_report(
        warehouse=history.warehouse,
        instance=history.instance,
        clients=clients_from_warehouse(history.warehouse),
        now_utc=NOW,
        checks=[spec for spec in HEALTH_CHECKS if spec.name == "success_rates"],
    )
    check = result.check("success_rates")
    assert check.weight == 0 and result.score == 100.0
    assert check.details["below_target"] == [
        "collection_success",
        "backfill_healing_success",
        "quality_avg",
        "freshness",
    ]
    assert check.summary.endswith("; 4 below target")
    assert check.table[0] == ("rate", "target", "1 d", "7 d", "30 d")
    assert check.table[1] == ("collection success", "≥ 99 %", "100 %", "85.71 % (below)", "96.67 % (below)")
    assert check.table[2][:2] == ("backfill/healing success", "100 %")
    assert check.table[4] == ("average quality", "> 95", "90 (below)", "94.62 (below)", "95.09")
    metrics = result.metrics()
    assert metrics["collection_success_pct_7d"] == 85.71
    assert metrics["quality_avg_30d"] == 95.09
    assert metrics["freshness_pct_1d"] == 100.0
    assert metrics["success_rates_below_target"] == 4
    text = result.to_text()
    assert "collection success" in text and "85.71 % (below)" in text
    markdown = result.to_markdown()
    assert "**success_rates**" in markdown
    assert "| completeness | ≥ 99.5 % | 100 % | 100 % | 96.67 % (below) |" in markdown
    assert result.to_dict()["checks"][0]["details"]["rates"][0] == {
        "rate": "collection_success",
        "window_days": 1,
        "value": 100.0,
        "good": 2,
        "total": 2,
        "target": "≥ 99 %",
        "met": True,
    }


def test_targets():
    def met(name: str, value: float) -> bool:
        return TARGETS_BY_NAME[name].met(value)

    assert met("collection_success", 99.0) and not met("collection_success", 98.99)
    assert met("backfill_healing_success", 100.0) and not met("backfill_healing_success", 99.99)
    assert met("completeness", 99.5) and not met("completeness", 99.49)
    # Average quality must be above 95, not at it.
    assert met("quality_avg", 95.01) and not met("quality_avg", 95.0)
    assert met("freshness", 95.0) and not met("freshness", 94.99)
    assert Rate("freshness", 7, None, 0, 0).met is None


def run(client_id: str, start: date, end: date, ended_at: datetime, *, ok: bool = True, kind: str = "daily"):
    return CollectionRun(f"r-{client_id}-{ended_at:%d%H%M}", client_id, start, end, ok, ended_at, kind)


def test_run_rates_count_windows_by_end_time_and_split_repairs():
    runs = [
        run("acme", DUE, DUE, NOW - timedelta(hours=1)),
        run("acme", DUE, DUE, NOW - timedelta(hours=30), ok=False),
        run("acme", DUE, DUE, NOW - timedelta(days=8), kind="manual"),
        run(
            "acme",
            DUE - timedelta(days=40),
            DUE - timedelta(days=35),
            NOW - timedelta(hours=2),
            kind="heal",
            ok=False,
        ),
        run("acme", DUE, DUE, NOW - timedelta(days=31), ok=False),  # before every window
    ]
    rates = {(r.name, r.window_days): (r.value, r.good, r.total) for r in run_rates(runs, now_utc=NOW)}
    assert rates[("collection_success", 1)] == (100.0, 1, 1)
    assert rates[("collection_success", 7)] == (50.0, 1, 2)
    assert rates[("collection_success", 30)] == (66.67, 2, 3)
    assert rates[("backfill_healing_success", 1)] == (0.0, 0, 1)
    # Nothing to count is no value, neither met nor missed.
    assert run_rates([], now_utc=NOW)[0].value is None


def test_a_failed_repair_counts_once_later_runs_stored_its_whole_range():
    old = (DUE - timedelta(days=40), DUE - timedelta(days=35))
    failed = run("acme", *old, NOW - timedelta(hours=5), kind="backfill", ok=False)

    def healing_1d(*later: CollectionRun) -> tuple[float | None, float, float]:
        rate = next(
            r
            for r in run_rates([failed, *later], now_utc=NOW)
            if (r.name, r.window_days) == ("backfill_healing_success", 1)
        )
        return rate.value, rate.good, rate.total

    assert healing_1d() == (0.0, 0, 1)
    # Half the range stored later (the half run itself counts: 1 of 2), another client's run, or a run that
    # ended before the failure: still a hole.
    first_half = run("acme", old[0], old[0] + timedelta(days=2), NOW - timedelta(hours=4), kind="heal")
    assert healing_1d(first_half) == (50.0, 1, 2)
    assert healing_1d(run("globex", *old, NOW - timedelta(hours=3), kind="heal")) == (50.0, 1, 2)
    assert healing_1d(run("acme", *old, NOW - timedelta(hours=6), kind="heal")) == (50.0, 1, 2)
    # Two later runs that together cover the range (the daily lookback needs no repair tag) close it.
    second_half = run("acme", old[0] + timedelta(days=3), old[1], NOW - timedelta(hours=3))
    assert healing_1d(first_half, second_half) == (100.0, 2, 2)
    # Nothing to count is no value, neither met nor missed.
    assert run_rates([], now_utc=NOW)[0].value is None


def test_fresh_means_under_6_hours_old_at_the_local_deadline():
    warsaw = Client("acme", "Acme", "act_1", "EUR", "Europe/Warsaw")
    new_york = Client("globex", "Globex", "act_2", "USD", "America/New_York")
    clients = {"acme": warsaw, "globex": new_york}
    hours = {"acme": 9, "globex": 9}
    day = date(2026, 11, 18)  # due at 08:00 UTC on 11-19 in Warsaw, 14:00 UTC in New York
    runs = [
        run("acme", day - timedelta(days=27), day, at(day + timedelta(days=1), 2)),  # exactly 6 h: fresh
        run("acme", day, day, at(day, 23)),  # 9 h before the deadline of 11-18: too old
        run("globex", day, day, at(day + timedelta(days=1), 14, 30)),  # 30 min after the deadline: late
        run("globex", day, day, at(day + timedelta(days=2), 10)),  # before 11-19's deadline, but covers 11-18
    ]
    assert fresh_days(runs, clients, deadline_hours=hours) == {("acme", day)}
    failed = [run("globex", day, day, at(day + timedelta(days=1), 12), ok=False)]
    assert fresh_days(failed, clients, deadline_hours=hours) == set()
    ok = [run("globex", day, day, at(day + timedelta(days=1), 12))]
    assert fresh_days(ok, clients, deadline_hours=hours) == {("globex", day)}
    # A later deadline hour moves the 6-hour span with it.
    assert fresh_days(ok, clients, deadline_hours={"acme": 9, "globex": 15}) == set()


def test_data_rates_group_clients_by_due_day_in_one_query(migrated_warehouse_url):
    """Warsaw is past its deadline (due 11-19), Los Angeles is at 04:00 (due 11-18): two groups, two windows."""
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    try:
        wh.upsert_clients([client("acme"), {**client("initech"), "timezone": "America/Los_Angeles"}])
        store_days(wh, "acme", [day_row("acme", d) for d in span(DUE - timedelta(days=6), DUE)])
        # initech stores 11-19 too, which is not due for it yet: it must not count.
        store_days(wh, "initech", [day_row("initech", d) for d in span(DUE - timedelta(days=7), DUE)])
        set_scores(wh, "acme", 100.0)
        set_scores(wh, "initech", 80.0)
        ctx = HealthContext(warehouse=wh, instance=None, clients=clients_from_warehouse(wh), now_utc=NOW)
        statements: list[str] = []
        sa.event.listen(wh.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        rates = {(r.name, r.window_days): r for r in data_rates(ctx, fresh={("initech", DUE - timedelta(1))})}
        assert len([s for s in statements if "client_daily_kpis" in s]) == 1
        assert (rates[("completeness", 1)].good, rates[("completeness", 1)].total) == (2, 2)
        assert (rates[("completeness", 7)].good, rates[("completeness", 7)].total) == (14, 14)
        assert rates[("completeness", 30)].value == round(100 * 14 / 60, 2)
        assert rates[("quality_avg", 1)].value == 90.0
        assert rates[("quality_avg", 7)].value == 90.0
        assert (rates[("freshness", 1)].good, rates[("freshness", 1)].total) == (1, 2)
    finally:
        wh.dispose()


def test_rates_finding_without_anything_to_measure():
    finding = rates_finding([Rate(t, d, None, 0, 0) for t in TARGETS_BY_NAME for d in (1, 7, 30)])
    assert finding.summary == "7 d: nothing to measure yet; all on target"
    assert finding.metrics == {"success_rates_below_target": 0}
    assert finding.table[1] == ("collection success", "≥ 99 %", "–", "–", "–")


# --- next scheduled collection and failed collections ------------------------------------------------------------


def collections(platform: Platform, now: datetime = NOW):
    result = build_health_report(
        warehouse=platform.warehouse,
        instance=platform.instance,
        clients=clients_from_warehouse(platform.warehouse),
        now_utc=now,
        checks=[spec for spec in HEALTH_CHECKS if spec.name == "collections"],
    )
    return result.check("collections")


def test_collections_lists_the_next_scheduled_collection_and_failed_runs(history):
    check = collections(history)
    # Both clients collect at 06:00 in Warsaw: 05:05 UTC, the schedule's tick after NOW is on 11-21.
    assert check.details["next_collection_at"] == datetime(2026, 11, 21, 5, 5, tzinfo=UTC)
    assert check.details["next_collection_clients"] == ["acme", "globex"]
    assert check.metrics["hours_to_next_collection"] == 17.08
    assert check.status.value == "healthy"
    # In the 24 h before NOW: the backfill run that failed at 20:00 (the monthly job's run is no collection).
    [failed] = check.details["failed_collections"]
    assert (failed["client"], failed["range"], failed["kind"]) == (
        "acme",
        "2026-06-01..2026-06-30",
        "backfill",
    )
    # acme's daily run succeeded after it (the backfill's June is not re-collected by it, but the client is).
    assert failed["client_collected_since"] is True
    assert failed["error"] == "RunFailure"
    assert check.metrics["failed_collections_24h"] == 1
    assert check.summary == (
        "next collection 2026-11-21 05:05 UTC (2: acme, globex); "
        "1 failed in 24 h: acme 2026-06-01..2026-06-30 (backfill, client collected since)"
    )
    assert check.table[0][:3] == ("failed at (UTC)", "client", "range")
    assert check.table[1][:4] == ("2026-11-19 20:00", "acme", "2026-06-01..2026-06-30", "backfill")

    # Earlier: the failed daily run of 11-17, healed at 07:00 before 11-18 12:00.
    check = collections(history, now=at(date(2026, 11, 18), 12))
    [failed] = check.details["failed_collections"]
    assert (failed["range"], failed["kind"]) == ("2026-10-21..2026-11-17", "daily")
    assert failed["client_collected_since"] is True
    # The failed daily run of 11-14 at 11-15 06:00, before its healing run.
    [failed] = collections(history, now=at(date(2026, 11, 15), 6)).details["failed_collections"]
    assert (failed["range"], failed["client_collected_since"]) == ("2026-10-18..2026-11-14", False)


def test_a_stopped_daily_schedule_is_degraded_with_no_next_collection(platform):
    # What the UI stores when someone stops the schedule.
    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("kpi"), "__repository__"),
        "daily_collection_schedule",
    )
    platform.instance.add_instigator_state(
        InstigatorState(
            origin, InstigatorType.SCHEDULE, InstigatorStatus.STOPPED, ScheduleInstigatorData("5 * * * *")
        )
    )
    check = collections(platform)
    assert check.status.value == "degraded"
    assert check.details["next_collection_at"] is None
    assert check.details["schedule"]["running"] is False
    assert check.summary.startswith("daily_collection_schedule is stopped: no daily collection")


def test_no_day_before_a_clients_start_date_is_expected(migrated_warehouse_url):
    """A client that started 5 days ago and has all 5 days is complete over 7 and 30 days; one without a
    start_date, with the same 5 days, is not."""
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    try:
        started = DUE - timedelta(days=4)
        wh.upsert_clients(
            [{**client("acme"), "settings": {"start_date": started.isoformat()}}, client("globex")]
        )
        for client_id in ("acme", "globex"):
            store_days(wh, client_id, [day_row(client_id, d) for d in span(started, DUE)])
        clients = clients_from_warehouse(wh)
        assert {c.id: c.start_date for c in clients} == {"acme": started, "globex": None}
        ctx = HealthContext(warehouse=wh, instance=None, clients=clients, now_utc=NOW)
        rates = {(r.name, r.window_days): r for r in data_rates(ctx, fresh=set())}
        assert (rates[("completeness", 7)].good, rates[("completeness", 7)].total) == (10, 5 + 7)
        assert (rates[("completeness", 30)].good, rates[("completeness", 30)].total) == (10, 5 + 30)
    finally:
        wh.dispose()


def test_freshness_counts_only_days_due_after_the_clients_first_run():
    """Warsaw's deadline is 09:00 local (08:00 UTC): a first run ending 11-15 07:00 UTC makes 11-14 (due 11-15 08:00)
    its first countable day; one ending at 09:00 UTC is too late for 11-14, so 11-15 is. A client without runs has
    none, and the freshness rate counts only the countable days."""
    warsaw = Client("acme", "Acme", "act_1", "EUR", "Europe/Warsaw")
    clients = {"acme": warsaw}
    hours = {"acme": 9}
    early = run("acme", date(2026, 11, 14), date(2026, 11, 14), at(date(2026, 11, 15), 7))
    late = run("acme", date(2026, 11, 14), date(2026, 11, 14), at(date(2026, 11, 15), 9))
    assert first_countable_days([late, early], clients, deadline_hours=hours) == {"acme": date(2026, 11, 14)}
    assert first_countable_days([late], clients, deadline_hours=hours) == {"acme": date(2026, 11, 15)}
    assert first_countable_days([], clients, deadline_hours=hours) == {}
