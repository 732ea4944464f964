"""The snapshot asset through Dagster: a year in one run, immutability after deletions, force, and both checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

import dagster as dg
import pytest
import sqlalchemy as sa

from kpi_platform.activity import AppDatabase, generate_demo_app_db
from kpi_platform.defs.activity import (
    ACTIVITY_ASSETS,
    ACTIVITY_CHECKS,
    DAILY_ACTIVITY_SNAPSHOT,
    all_metrics_present,
)
from kpi_platform.defs.resources import AppDatabaseResource, WarehouseResource
from kpi_platform.warehouse import Warehouse

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
        for d, t, v in zip(stored["metric_date"], stored["metric_type"], stored["value"], strict=True)
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
    before = setup.stored().set_index(["metric_date", "metric_type"])["value"]
    deleted = setup.delete_posts_created_before("2025-03-10")
    assert deleted > 0

    plain = setup.run(partition_key="2025-03-15")
    assert plain.success
    assert setup.stored().set_index(["metric_date", "metric_type"])["value"].equals(before)

    forced = setup.run(partition_key="2025-03-15", force=True)
    assert forced.success
    after = setup.stored().set_index(["metric_date", "metric_type"])["value"]
    day = date(2025, 3, 15)
    assert after[(day, "posts_total")] == before[(day, "posts_total")] - deleted
    assert after[(day, "posts_created")] == before[(day, "posts_created")]
    assert after.drop(index=day, level="metric_date").equals(before.drop(index=day, level="metric_date"))
    messages = [e.message or "" for e in setup.instance.all_logs(forced.run_id)]
    old, new = int(before[(day, "posts_total")]), int(after[(day, "posts_total")])
    assert any(
        f"forced replacement of daily metrics for 2025-03-15: platform/posts_total {old} → {new}" in m
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
            sa.text("DELETE FROM daily_metrics WHERE metric_date = :d AND metric_type = 'users_total'"),
            {"d": date(2025, 6, 1)},
        )
    result = setup.run(selection=dg.AssetSelection.checks(all_metrics_present))
    assert not result.success  # the check is blocking
    evaluation = checks(result)[ALL_PRESENT]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["days_incomplete"].value == 1
    assert evaluation.metadata["missing_metrics"].value == {"2025-06-01": ["users_total"]}
    assert evaluation.metadata["window"].value == "2025-01-01..2025-12-31"


def test_missing_application_database_fails_the_run_clearly(setup, tmp_path):
    setup.resources["app_db"] = AppDatabaseResource(url=f"sqlite:///{tmp_path / 'missing.sqlite'}")
    result = setup.run(partition_key="2025-03-15")
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "application database not found" in failure.step_failure_data.error.message
