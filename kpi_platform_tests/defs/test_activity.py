"""The snapshot asset through Dagster: a year in one run, immutability after deletions, force, and both checks;
database connection retries, late snapshots, the healing sensor and the activity alerts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
import tenacity

from kpi_platform.activity import AppDatabase, generate_demo_app_db, retry
from kpi_platform.defs.activity import (
    ACTIVITY_ASSETS,
    ACTIVITY_CHECKS,
    DAILY_ACTIVITY_SNAPSHOT,
    activity_failure_alert_sensor,
    activity_snapshot_job,
    all_metrics_present,
    build_activity_alert_sensor,
    build_activity_gap_healing_sensor,
    failure_streak,
    sync_activity_alerts,
)
from kpi_platform.defs.resources import AppDatabaseResource, WarehouseResource
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, day_range_tags
from kpi_platform.operations.activity_watch import (
    HEAL_BASE_COOLDOWN_S,
    MISSING_PREFIX,
    due_window,
)
from kpi_platform.operations.alerts import Notifier
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.activity import snapshot_days, store_snapshots
from kpi_platform_tests.support.sinks import slack_sink

YEAR_START, YEAR_END = date(2025, 1, 1), date(2025, 12, 31)
YEAR_TAGS = {
    "dagster/asset_partition_range_start": YEAR_START.isoformat(),
    "dagster/asset_partition_range_end": YEAR_END.isoformat(),
}
ALL_PRESENT = "daily_activity_snapshot__all_metrics_present"
TOTALS_MATCH = "daily_activity_snapshot__totals_match_created"


@dataclass
class Setup:
    instance: dg.DagsterInstance
    app_url: str
    warehouse: Warehouse
    resources: dict

    def run(self, *, tags=None, partition_key=None, force=False, selection=None) -> dg.ExecuteInProcessResult:
        config = (
            {"ops": {"platform__daily_activity_snapshot": {"config": {"force": True}}}} if force else None
        )
        return dg.materialize(
            [*ACTIVITY_ASSETS, *ACTIVITY_CHECKS],
            instance=self.instance,
            resources=self.resources,
            tags=tags,
            partition_key=partition_key,
            run_config=config,
            selection=selection,
            raise_on_error=False,
        )

    def stored(self):
        return self.warehouse.read_daily_metrics(start=YEAR_START, end=YEAR_END)

    def delete_posts_created_before(self, moment: str) -> int:
        engine = sa.create_engine(self.app_url)
        with engine.begin() as conn:
            deleted = conn.execute(sa.text("DELETE FROM posts WHERE created_at < :m"), {"m": moment}).rowcount
        engine.dispose()
        return deleted


def make_setup(tmp_path, warehouse_url: str) -> Iterator[Setup]:
    app_url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    generate_demo_app_db(app_url, days=365, seed=11, today=date(2026, 1, 1))
    warehouse = Warehouse(warehouse_url)
    warehouse.migrate()
    resources = {
        "app_db": AppDatabaseResource(url=app_url),
        "warehouse": WarehouseResource(url=warehouse_url),
    }
    with dg.instance_for_test() as instance:
        yield Setup(instance, app_url, warehouse, resources)
    warehouse.dispose()


@pytest.fixture
def setup(tmp_path) -> Iterator[Setup]:
    yield from make_setup(tmp_path, f"sqlite:///{tmp_path / 'warehouse.sqlite'}")


@pytest.fixture
def pg_setup(tmp_path, pg_url) -> Iterator[Setup]:
    yield from make_setup(tmp_path, pg_url)


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_definitions_are_loadable_with_the_daily_single_run_policy():
    defs = dg.Definitions(
        assets=ACTIVITY_ASSETS,
        asset_checks=ACTIVITY_CHECKS,
        resources={"app_db": AppDatabaseResource(), "warehouse": WarehouseResource()},
    )
    dg.Definitions.validate_loadable(defs)
    asset = defs.resolve_assets_def(DAILY_ACTIVITY_SNAPSHOT)
    assert asset.backfill_policy == dg.BackfillPolicy.single_run()
    assert isinstance(asset.partitions_def, dg.DailyPartitionsDefinition)
    assert {c.name for spec in ACTIVITY_CHECKS for c in spec.check_specs} == {ALL_PRESENT, TOTALS_MATCH}


def test_a_year_in_one_run_then_deletions_and_reruns_change_nothing(setup):
    year_then_deletions_and_rerun(setup)


def test_a_year_in_one_run_with_a_postgres_warehouse(pg_setup):
    year_then_deletions_and_rerun(pg_setup)


def year_then_deletions_and_rerun(setup: Setup) -> None:
    result = setup.run(tags=YEAR_TAGS)
    assert result.success
    assert len(setup.instance.get_runs()) == 1
    assert len(setup.instance.get_materialized_partitions(DAILY_ACTIVITY_SNAPSHOT)) == 365
    metadata = result.asset_materializations_for_node("platform__daily_activity_snapshot")[-1].metadata
    assert metadata["days_recorded"].value == 365
    assert metadata["days_already_recorded"].value == 0
    expected = AppDatabase(setup.app_url).count_days(start=YEAR_START, end=YEAR_END).days
    assert metadata["posts_total"].value == expected[-1].values["posts_total"]
    stored = setup.stored()
    assert len(stored) == 365 * 5
    by_key = {
        (d, t): v
        for d, t, v in zip(stored["metric_date"], stored["metric_category"], stored["value"], strict=True)
    }
    assert all(by_key[(day.day, t)] == v for day in expected for t, v in day.values.items())
    evaluations = checks(result)
    assert evaluations[ALL_PRESENT].passed
    assert evaluations[TOTALS_MATCH].passed

    assert setup.delete_posts_created_before("2025-07-01") > 0
    rerun = setup.run(tags=YEAR_TAGS)
    assert rerun.success
    rerun_metadata = rerun.asset_materializations_for_node("platform__daily_activity_snapshot")[-1].metadata
    assert rerun_metadata["days_recorded"].value == 0
    assert rerun_metadata["days_already_recorded"].value == 365
    assert setup.stored().equals(stored)
    assert any(
        "already recorded, left unchanged" in (e.message or "") for e in setup.instance.all_logs(rerun.run_id)
    )


def test_force_replaces_a_day_logs_it_and_the_warn_check_shows_the_deletions(setup):
    assert setup.run(tags=YEAR_TAGS).success
    before = setup.stored().set_index(["metric_date", "metric_category"])["value"]
    deleted = setup.delete_posts_created_before("2025-03-10")
    assert deleted > 0

    plain = setup.run(partition_key="2025-03-15")
    assert plain.success
    assert setup.stored().set_index(["metric_date", "metric_category"])["value"].equals(before)

    forced = setup.run(partition_key="2025-03-15", force=True)
    assert forced.success
    after = setup.stored().set_index(["metric_date", "metric_category"])["value"]
    day = date(2025, 3, 15)
    assert after[(day, "posts_total")] == before[(day, "posts_total")] - deleted
    assert after[(day, "posts_created")] == before[(day, "posts_created")]
    assert after.drop(index=day, level="metric_date").equals(before.drop(index=day, level="metric_date"))
    messages = [e.message or "" for e in setup.instance.all_logs(forced.run_id)]
    old, new = int(before[(day, "posts_total")]), int(after[(day, "posts_total")])
    assert any(
        f"forced replacement of daily metrics for 2025-03-15: posts_total {old} → {new}" in m
        for m in messages
    )

    warn = checks(forced)[TOTALS_MATCH]
    assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["removed_posts"].value == deleted
    assert warn.metadata["deletions"].value == [
        {
            "day": "2025-03-15",
            "metric": "posts_total",
            "previous_total": int(before[(date(2025, 3, 14), "posts_total")]),
            "total": new,
            "created": int(before[(day, "posts_created")]),
            "removed": deleted,
        }
    ]
    assert checks(forced)[ALL_PRESENT].passed


def test_missing_metric_fails_the_error_check_naming_the_day(setup):
    assert setup.run(tags=YEAR_TAGS).success
    with setup.warehouse.engine.begin() as conn:
        conn.execute(
            sa.text("DELETE FROM daily_metrics WHERE metric_date = :d AND metric_category = 'users_total'"),
            {"d": date(2025, 6, 1)},
        )
    result = setup.run(selection=dg.AssetSelection.checks(all_metrics_present))
    assert not result.success  # the check is blocking
    evaluation = checks(result)[ALL_PRESENT]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["days_incomplete"].value == 1
    assert evaluation.metadata["missing_metrics"].value == {"2025-06-01": ["users_total"]}
    assert evaluation.metadata["window"].value == "2025-01-01..2025-12-31"


def set_active(setup: Setup, metric: str, *, active: bool) -> None:
    table = schema.metric_definitions
    with setup.warehouse.engine.begin() as conn:
        conn.execute(table.update().where(table.c.metric_category == metric).values(is_active=active))


def test_inactive_and_added_definitions_are_followed_without_code_changes(setup):
    set_active(setup, "comments_created", active=False)
    with setup.warehouse.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO metric_definitions (metric_type, metric_category, display_name, description, unit, "
                "format_pattern, aggregation) VALUES ('count', 'users_created', 'Users created', 'Profiles "
                "created during the day.', 'users', ',.0f', 'sum'), ('count', 'logins_total', 'Logins', "
                "'Sign-ins.', 'logins', ',.0f', 'last')"
            )
        )
    result = setup.run(partition_key="2025-03-15")
    assert result.success
    stored = setup.stored()
    assert sorted(stored["metric_category"]) == sorted(
        ["users_total", "posts_total", "comments_total", "posts_created", "users_created"]
    )
    expected = AppDatabase(setup.app_url).count_days(
        start=date(2025, 3, 15), end=date(2025, 3, 15), metrics=["users_created"]
    )
    assert (
        stored.set_index("metric_category").loc["users_created", "value"]
        == expected.days[0].values["users_created"]
    )
    metadata = result.asset_materializations_for_node("platform__daily_activity_snapshot")[-1].metadata
    assert metadata["metrics_collected"].value == [
        "users_total",
        "posts_total",
        "comments_total",
        "posts_created",
        "users_created",
    ]
    not_collected = metadata["metrics_not_collected"].value
    assert not_collected["comments_created"] == "inactive (is_active = false)"
    assert not_collected["logins_total"].startswith("no collector for this metric")
    messages = run_messages(setup, result)
    assert "activity metric comments_created not collected: inactive (is_active = false)" in messages
    # The day is complete without the inactive metric; the one without collector is listed, never expected.
    evaluation = checks(result)[ALL_PRESENT]
    assert evaluation.passed
    assert "comments_created" not in evaluation.metadata["expected_metrics"].value
    assert set(evaluation.metadata["metrics_not_collected"].value) == {"comments_created", "logins_total"}


def test_a_run_with_every_definition_inactive_fails_saying_why(setup):
    for metric in ("users_total", "posts_total", "comments_total", "posts_created", "comments_created"):
        set_active(setup, metric, active=False)
    result = setup.run(partition_key="2025-03-15")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert failure.description.startswith("no active metric definition has a collector: nothing to snapshot")
    assert setup.stored().empty


def test_missing_application_database_fails_the_run_clearly(setup, tmp_path):
    setup.resources["app_db"] = AppDatabaseResource(url=f"sqlite:///{tmp_path / 'missing.sqlite'}")
    result = setup.run(partition_key="2025-03-15")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "application database not found" in failure.step_failure_data.error.message


# --- database connection retries ------------------------------------------------------------------------------


@pytest.fixture
def no_waits(monkeypatch):
    """Retries without the backoff's seconds of sleep."""
    monkeypatch.setattr(retry, "CONNECTION_WAIT", tenacity.wait_none())


def connection_lost(statement: str = "SELECT 1") -> sa.exc.OperationalError:
    return sa.exc.OperationalError(
        statement, {}, ConnectionError("server closed the connection unexpectedly")
    )


def run_messages(setup: Setup, result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.message or "" for e in setup.instance.all_logs(result.run_id)]


def test_app_database_connection_errors_are_retried_and_the_snapshot_stored(setup, monkeypatch, no_waits):
    count_days = AppDatabase.count_days
    calls: list[int] = []

    def flaky(self, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise connection_lost()
        return count_days(self, **kwargs)

    monkeypatch.setattr(AppDatabase, "count_days", flaky)
    result = setup.run(partition_key="2025-03-15")
    assert result.success
    assert len(calls) == 3
    retried = [m for m in run_messages(setup, result) if "database connection failed" in m]
    assert len(retried) == 2
    assert retried[0].startswith("reading the application database sqlite:///")
    assert "(attempt 1/3), retrying in" in retried[0] and "(attempt 2/3)" in retried[1]
    assert len(setup.stored()) == 5


def test_a_warehouse_that_stays_unreachable_fails_the_run_after_three_attempts(setup, monkeypatch, no_waits):
    calls: list[int] = []

    def down(self, rows, **kwargs):
        calls.append(1)
        raise connection_lost("INSERT INTO daily_metrics")

    monkeypatch.setattr(Warehouse, "record_daily_metrics", down)
    result = setup.run(partition_key="2025-03-15")
    assert not result.success
    assert len(calls) == 3
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert failure.metadata["error"].value == "DatabaseUnavailableError"
    assert failure.metadata["attempts"].value == 3
    assert failure.description == (
        "storing the activity snapshot in the warehouse: database connection failed 3 times in a row, giving up: "
        "OperationalError: server closed the connection unexpectedly"
    )


def test_other_database_errors_fail_the_run_at_once(setup, monkeypatch, no_waits):
    calls: list[int] = []

    def refused(self, rows, **kwargs):
        calls.append(1)
        raise sa.exc.IntegrityError("INSERT INTO daily_metrics", {}, ValueError("duplicate key"))

    monkeypatch.setattr(Warehouse, "record_daily_metrics", refused)
    assert not setup.run(partition_key="2025-03-15").success
    assert len(calls) == 1


# --- late snapshots ---------------------------------------------------------------------------------------------


def test_a_day_snapshotted_after_it_was_due_is_labelled_late(setup):
    result = setup.run(partition_key="2025-03-15")
    assert result.success
    stored = setup.stored()
    assert all(meta["late"] is True for meta in stored["metadata"])
    assert all(meta["hours_after_day_end"] > 24 for meta in stored["metadata"])
    metadata = result.asset_materializations_for_node("platform__daily_activity_snapshot")[-1].metadata
    assert metadata["days_late"].value == 1
    assert any(
        m.startswith("late snapshot of 2025-03-15 (stored with metadata late=true)")
        for m in run_messages(setup, result)
    )


# --- the healing sensor -----------------------------------------------------------------------------------------


def snapshot_job(setup: Setup, **resources) -> dg.JobDefinition:
    defs = dg.Definitions(
        assets=ACTIVITY_ASSETS,
        asset_checks=ACTIVITY_CHECKS,
        jobs=[activity_snapshot_job],
        resources={**setup.resources, **resources},
    )
    return defs.resolve_job_def("activity_snapshot_job")


def run_job(setup: Setup, tags: dict[str, str], **resources) -> dg.ExecuteInProcessResult:
    return snapshot_job(setup, **resources).execute_in_process(
        instance=setup.instance, tags=tags, raise_on_error=False
    )


def broken_app_db(tmp_path) -> AppDatabaseResource:
    return AppDatabaseResource(url=f"sqlite:///{tmp_path / 'missing.sqlite'}")


def sensor_context(setup: Setup, cursor: str | None = None) -> dg.SensorEvaluationContext:
    return dg.build_sensor_context(
        instance=setup.instance, cursor=cursor, resources={"warehouse": setup.resources["warehouse"]}
    )


def tick(setup: Setup, sensor: dg.SensorDefinition, cursor: str | None = None):
    with sensor_context(setup, cursor) as context:
        result = sensor(context)
    return result, result.cursor


def requested(result) -> list[tuple[str, str]]:
    return [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in (result.run_requests or [])]


def test_the_healer_requests_missing_due_days_as_ranges_until_they_are_stored(setup):
    now = datetime.now(UTC)
    start, end = due_window(now)
    gaps = {end, end - timedelta(days=5), end - timedelta(days=4)}
    store_snapshots(
        setup.warehouse,
        [d for d in snapshot_days(start, end) if d not in gaps],
        collected_at=now - timedelta(hours=1),
    )
    sensor = build_activity_gap_healing_sensor(clock=lambda: now)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds == 300

    result, cursor = tick(setup, sensor)
    four, five = (end - timedelta(days=4)).isoformat(), (end - timedelta(days=5)).isoformat()
    assert requested(result) == [(end.isoformat(), end.isoformat()), (five, four)]
    assert all(r.tags["kpi/reason"] == "activity_heal" for r in result.run_requests)
    assert result.run_requests[0].run_key == f"activity-heal:{end}:{end}:1"

    for request in result.run_requests:
        healed = run_job(setup, request.tags)
        assert healed.success
    # Taken after the days were due: stored, and labelled late.
    late = setup.warehouse.read_daily_metrics(start=end - timedelta(days=5), end=end - timedelta(days=4))
    assert len(late) == 10 and all(meta["late"] is True for meta in late["metadata"])

    result, _ = tick(setup, sensor, cursor)
    assert requested(result) == []
    assert isinstance(result.skip_reason, dg.SkipReason)


def test_a_failed_day_cools_down_before_it_is_requested_again(setup, tmp_path):
    now = datetime.now(UTC)
    start, end = due_window(now)
    store_snapshots(setup.warehouse, snapshot_days(start, end - timedelta(days=1)), collected_at=now)
    failed = run_job(setup, day_range_tags(end, end), app_db=broken_app_db(tmp_path))
    assert not failed.success

    clock = [datetime.now(UTC)]
    sensor = build_activity_gap_healing_sensor(clock=lambda: clock[0])
    result, cursor = tick(setup, sensor)
    assert requested(result) == []  # cooling down
    assert cursor is not None and end.isoformat() in cursor

    clock[0] += timedelta(seconds=HEAL_BASE_COOLDOWN_S + 60)
    result, cursor = tick(setup, sensor, cursor)
    # The failed day again, with the next one when the cool-down crossed its due time (one contiguous range).
    _, due_then = due_window(clock[0])
    assert requested(result) == [(end.isoformat(), due_then.isoformat())]


# --- the alerts -------------------------------------------------------------------------------------------------


def texts(sink) -> list[str]:
    return [body["text"] for body in sink.bodies("/slack")]


def failure_tick(setup: Setup, result: dg.ExecuteInProcessResult):
    run = setup.instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="activity_failure_alert_sensor",
        dagster_event=failure,
        dagster_instance=setup.instance,
        dagster_run=run,
        resources={"warehouse": setup.resources["warehouse"]},
    ).for_run_failure()
    return activity_failure_alert_sensor(context)


def test_failed_runs_alert_at_once_critical_from_the_third_and_resolve_after_a_success(
    setup, tmp_path, monkeypatch
):
    now = datetime.now(UTC)
    start, end = due_window(now)
    store_snapshots(setup.warehouse, snapshot_days(start, end), collected_at=now - timedelta(hours=1))
    with slack_sink(monkeypatch, min_severity="MEDIUM") as sink:
        for attempt in (1, 2, 3):
            failed = run_job(setup, day_range_tags(end, end), app_db=broken_app_db(tmp_path))
            assert not failed.success
            failure_tick(setup, failed)
            if attempt == 1:
                (first,) = texts(sink)
                assert first.startswith("*[MEDIUM] Activity snapshot failed 1 time in a row*")
                assert "AppDatabaseError: application database not found" in first
            if attempt == 2:
                assert len(texts(sink)) == 1  # the same problem, no worse: nothing new
        messages = texts(sink)
        assert len(messages) == 2
        assert messages[1].startswith("*[CRITICAL] Activity snapshot failed 3 times in a row*")

        assert run_job(setup, day_range_tags(end, end)).success
        alert_sensor = build_activity_alert_sensor(clock=lambda: datetime.now(UTC))
        with sensor_context(setup) as context:
            skip = alert_sensor(context)
        assert "0 open, 0 new, 1 resolved" in skip.skip_message
        messages = texts(sink)
        assert len(messages) == 3
        assert messages[2].startswith("*[RESOLVED] Activity snapshot failed")


def test_a_materialization_by_any_run_ends_the_failure_streak(setup, tmp_path):
    assert failure_streak(setup.instance).count == 0
    for _ in range(2):
        assert not run_job(
            setup, day_range_tags(date(2025, 3, 15), date(2025, 3, 15)), app_db=broken_app_db(tmp_path)
        ).success
    streak = failure_streak(setup.instance)
    assert streak.count == 2 and streak.error == "AppDatabaseError"
    # A failed run that Dagster's run retries re-run is judged by its retry: neither counted nor alerted.
    retried = run_job(
        setup,
        {**day_range_tags(date(2025, 3, 15), date(2025, 3, 15)), "dagster/will_retry": "true"},
        app_db=broken_app_db(tmp_path),
    )
    assert not retried.success
    assert failure_streak(setup.instance).count == 2
    assert failure_tick(setup, retried) is None  # logged "Dagster re-runs this run", nothing raised
    # A run outside the job (a UI backfill, `dagster asset materialize`) that stores the asset ends it too.
    assert setup.run(partition_key="2025-03-15").success
    assert failure_streak(setup.instance).count == 0


def test_a_failed_run_of_another_job_is_not_an_activity_run(setup):
    @dg.op
    def boom():
        raise RuntimeError("not activity")

    @dg.job
    def other_job():
        boom()

    failed = other_job.execute_in_process(instance=setup.instance, raise_on_error=False)
    # Nothing returned (a SkipReason beside another run's reaction would fail the whole tick) and no alert.
    assert failure_tick(setup, failed) is None
    with setup.warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(schema.alert_state)).scalar_one() == 0


def test_missing_days_and_no_recent_snapshot_alert_and_resolve_once_stored(setup, monkeypatch):
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    gone = date(2026, 11, 18)
    start, end = due_window(now)
    store_snapshots(
        setup.warehouse,
        [d for d in snapshot_days(start, end) if d != gone],
        collected_at=now - timedelta(hours=50),
    )
    sensor = build_activity_alert_sensor(clock=lambda: now)
    with slack_sink(monkeypatch, min_severity="MEDIUM") as sink, sensor_context(setup) as context:
        sensor(context)
        sensor(context)  # the same problems: nothing new
        messages = sorted(texts(sink))
        assert len(messages) == 2
        assert messages[0].startswith("*[CRITICAL] No platform activity snapshot for 50 h*")
        assert messages[1].startswith("*[MEDIUM] Activity snapshot missing for 2026-11-18*")

        store_snapshots(setup.warehouse, [gone], collected_at=now - timedelta(hours=1))
        skip = sensor(context)
        assert "0 open, 0 new, 2 resolved" in skip.skip_message
        resolved = sorted(m for m in texts(sink) if m.startswith("*[RESOLVED]"))
        assert len(resolved) == 2
        assert resolved[0].startswith("*[RESOLVED] Activity snapshot missing for 2026-11-18*")
        assert resolved[1].startswith("*[RESOLVED] No platform activity snapshot for 50 h*")


def test_a_missing_day_out_of_the_horizon_stays_open_until_it_is_stored(setup):
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    gone = date(2026, 11, 18)
    start, end = due_window(now)
    store_snapshots(setup.warehouse, [d for d in snapshot_days(start, end) if d != gone], collected_at=now)
    notifier = Notifier(setup.warehouse, channels=())

    def open_days(at: datetime) -> set[str]:
        with sensor_context(setup) as context:
            sync_activity_alerts(setup.instance, setup.warehouse, log=context.log, now_utc=at)
        return {p.key for p in notifier.open_problems(scope_prefix=MISSING_PREFIX)}

    assert open_days(now) == {f"{MISSING_PREFIX}2026-11-18"}
    later = now + timedelta(days=40)  # 2026-11-18 is before the window now
    assert f"{MISSING_PREFIX}2026-11-18" in open_days(later)
    store_snapshots(setup.warehouse, [gone], collected_at=later)
    assert f"{MISSING_PREFIX}2026-11-18" not in open_days(later)
