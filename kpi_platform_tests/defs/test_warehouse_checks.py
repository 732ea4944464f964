"""Warehouse-wide checks through Dagster: results recorded per check, culprits named, numbers in metadata."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.warehouse import schema


def run_checks(platform) -> dict[str, dg.AssetCheckEvaluation]:
    job = platform.defs().resolve_job_def("warehouse_checks_job")
    result = job.execute_in_process(instance=platform.instance, raise_on_error=False)
    assert result.success  # check failures do not fail the run; they are results
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


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
    for name in ("completeness_meets_target", "campaigns_reconcile_to_totals", "months_equal_sum_of_days"):
        assert evaluations[name].passed, name
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
        dg.AssetCheckKey(CLIENT_DAILY_KPIS, "completeness_meets_target")
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
