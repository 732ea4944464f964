"""Warehouse-wide checks through Dagster: results recorded per check, culprits named, numbers in metadata; they
live on the external KPI warehouse asset, so collection runs (a UI backfill's among them) never run or fail them,
and they follow new data once."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.definitions import build_defs
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS, CONTRACT_CHECK
from kpi_platform.defs.monthly import CLIENT_MONTHLY_SUMMARY
from kpi_platform.defs.quality_checks import KPI_WAREHOUSE
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, client_day_key
from kpi_platform.operations import check_catalogue
from kpi_platform.warehouse import schema

WAREHOUSE_CHECKS = frozenset(
    dg.AssetCheckKey(KPI_WAREHOUSE, e.name) for e in check_catalogue.warehouse_wide()
)
#: Every collection fails on its first page with an invalid token (not transient: no retry).
BROKEN_API = {"simulator_faults_json": '{"fail_page": 1, "fail_page_error": 190}', "max_attempts": 1}


def run_checks(platform) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in checks_run(platform).get_asset_check_evaluations()}


def checks_run(platform) -> dg.ExecuteInProcessResult:
    job = platform.defs().resolve_job_def("warehouse_checks_job")
    result = job.execute_in_process(instance=platform.instance, raise_on_error=False)
    assert result.success  # check failures do not fail the run; they are results
    return result


def backfill_run_job(defs: dg.Definitions, asset_key: dg.AssetKey) -> dg.JobDefinition:
    """The job a UI backfill's run of `asset_key` executes, built as the backfill daemon builds it
    (`submit_asset_runs`): the implicit asset job subset to the asset, with no check selection, which Dagster
    reads as every check of the selected assets."""
    return defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={asset_key})


def latest(platform, key: dg.AssetCheckKey) -> tuple[str, str] | None:
    """(run id, status) of the check's latest execution record, None if it has none."""
    record = platform.instance.get_latest_asset_check_evaluation_record(key)
    return (record.run_id, record.status.value) if record is not None else None


def test_checks_pass_on_complete_data_and_name_a_missing_day(platform_any):
    platform = platform_any
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=35), today - timedelta(days=1)
    for client_id in ("acme", "globex"):
        assert platform.collect(client_id, start, end).success

    evaluations = run_checks(platform)
    assert set(evaluations) == {
        "completeness_meets_target",
        "no_split_days",
        "quality_score_acceptable",
        "no_anomalies",
        "campaigns_reconcile_to_totals",
        "fresh_per_client",
        "months_equal_sum_of_days",
    }
    # All seven on the KPI warehouse asset, and on this complete data every one of them passes.
    assert {e.asset_key for e in evaluations.values()} == {KPI_WAREHOUSE}
    assert [name for name, e in evaluations.items() if not e.passed] == []
    completeness = evaluations["completeness_meets_target"].metadata
    assert completeness["completeness_30d_pct"].value == 100.0
    assert evaluations["no_anomalies"].severity == dg.AssetCheckSeverity.WARN

    # Remove one stored day: completeness fails with ERROR and names the client and the date.
    gone = end - timedelta(days=3)
    with platform.warehouse.engine.begin() as conn:
        for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
            conn.execute(sa.delete(table).where(table.c.client_id == "globex", table.c.kpi_date == gone))
    evaluations = run_checks(platform)
    failed = evaluations["completeness_meets_target"]
    assert not failed.passed
    assert failed.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in failed.metadata.items()}
    assert meta["clients_below_target"] == ["globex"]
    assert any(c["client_id"] == "globex" and c["kpi_date"] == gone.isoformat() for c in meta["culprits"])
    assert meta["completeness_7d_pct"] < 100.0
    record = platform.instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(KPI_WAREHOUSE, "completeness_meets_target")
    )
    assert record.status.value == "FAILED"


def test_each_clients_deadline_hour_reaches_the_freshness_check(platform):
    # The job reads the clients from the warehouse, where a clients.yaml sync stores their settings.
    (globex,) = [
        Client.from_row(row) for row in platform.warehouse.list_clients() if row["client_id"] == "globex"
    ]
    late = replace(globex, settings=replace(globex.settings, freshness_deadline_hour=23))
    platform.warehouse.upsert_clients([late.to_row()])

    fresh = run_checks(platform)["fresh_per_client"]
    assert fresh.severity == dg.AssetCheckSeverity.WARN
    assert fresh.metadata["deadline_hour_by_client"].value == {
        "acme": settings.FRESHNESS_DEADLINE_HOUR,
        "globex": 23,
    }


def test_a_backfill_run_of_the_daily_asset_carries_the_contract_check_only():
    defs = build_defs()
    daily = backfill_run_job(defs, CLIENT_DAILY_KPIS)
    assert daily.asset_layer.asset_graph.asset_check_keys == {
        dg.AssetCheckKey(CLIENT_DAILY_KPIS, CONTRACT_CHECK)
    }
    assert "warehouse_checks" not in daily.graph.node_names()
    # The monthly asset's runs (its automation, the finalizing schedule, a backfill) carry no check at all.
    assert backfill_run_job(defs, CLIENT_MONTHLY_SUMMARY).asset_layer.asset_graph.asset_check_keys == set()
    # The checks sit on the external warehouse asset, downstream of both, which nothing materializes.
    graph = defs.resolve_asset_graph()
    warehouse = graph.get(KPI_WAREHOUSE)
    assert not warehouse.is_materializable
    assert warehouse.parent_keys == {CLIENT_DAILY_KPIS, CLIENT_MONTHLY_SUMMARY}
    assert {key for key in graph.asset_check_keys if key.asset_key == KPI_WAREHOUSE} == WAREHOUSE_CHECKS
    assert (
        defs.resolve_job_def("warehouse_checks_job").asset_layer.asset_graph.asset_check_keys
        == WAREHOUSE_CHECKS
    )


def test_a_failed_backfill_run_leaves_no_record_on_a_warehouse_check(platform):
    today = datetime.now(UTC).date()
    start, end = today - timedelta(days=35), today - timedelta(days=1)
    # The run a UI backfill of acme's last 35 days makes (range tags, no client tag), against a broken API.
    tags = {RANGE_START_TAG: client_day_key("acme", start), RANGE_END_TAG: client_day_key("acme", end)}
    broken = backfill_run_job(platform.defs(**BROKEN_API), CLIENT_DAILY_KPIS)

    failed = broken.execute_in_process(instance=platform.instance, tags=tags, raise_on_error=False)
    assert not failed.success
    assert failed.dagster_run.job_name == "__ASSET_JOB"
    assert [e.check_name for e in failed.get_asset_check_evaluations()] == []
    assert {key: latest(platform, key) for key in WAREHOUSE_CHECKS} == dict.fromkeys(WAREHOUSE_CHECKS)

    # Once evaluated, the checks keep their own results through the next failed run: none turns PLANNED (the UI's
    # "Execution failed" once that run ends) or FAILED.
    for client_id in ("acme", "globex"):
        assert platform.collect(client_id, start, end).success
    evaluated = checks_run(platform)
    before = {key: latest(platform, key) for key in WAREHOUSE_CHECKS}
    assert before == dict.fromkeys(WAREHOUSE_CHECKS, (evaluated.run_id, "SUCCEEDED"))
    assert not broken.execute_in_process(instance=platform.instance, tags=tags, raise_on_error=False).success
    assert {key: latest(platform, key) for key in WAREHOUSE_CHECKS} == before


def test_the_checks_follow_new_data_once(platform):
    defs = platform.defs()
    sensor = defs.get_sensor_def("checks_after_collection_sensor")
    assert sensor.job_name == "warehouse_checks_job"

    def tick(cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
        context = dg.build_sensor_context(
            instance=platform.instance, repository_def=defs.get_repository_def(), cursor=cursor
        )
        data = sensor.evaluate_tick(context)
        return list(data.run_requests or []), data.cursor

    requests, cursor = tick(None)
    assert requests == []
    end = datetime.now(UTC).date() - timedelta(days=1)
    collected = platform.collect("acme", end - timedelta(days=4), end)
    assert collected.success
    requests, cursor = tick(cursor)
    assert [r.run_key for r in requests] == [f"after:{collected.run_id}"]
    assert tick(cursor)[0] == []  # nothing new, no second run
    # A failed collection stores nothing new: no checks run for it either.
    assert not platform.collect("globex", end - timedelta(days=4), end, **BROKEN_API).success
    assert tick(cursor)[0] == []


def test_collection_runs_between_two_ticks_make_one_checks_run(platform):
    """The checks judge the warehouse as a whole: a backfill's many collection runs make one checks run per tick,
    not one per collection run."""
    defs = platform.defs()
    sensor = defs.get_sensor_def("checks_after_collection_sensor")
    repository = defs.get_repository_def()
    first = sensor.evaluate_tick(
        dg.build_sensor_context(instance=platform.instance, repository_def=repository)
    )
    end = datetime.now(UTC).date() - timedelta(days=1)
    runs = [platform.collect(client_id, end - timedelta(days=2), end) for client_id in ("acme", "globex")]
    assert all(run.success for run in runs)
    data = sensor.evaluate_tick(
        dg.build_sensor_context(instance=platform.instance, repository_def=repository, cursor=first.cursor)
    )
    assert [r.run_key for r in data.run_requests or []] == [f"after:{runs[-1].run_id}"]
