"""The production event-log storage writes a range run's "materialization planned" events in one batch, with the
same outcome as dagster-postgres's one-by-one path: the partitions' status, the events and the asset's last run."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from kpi_platform.runtime.pg_storage import PooledPostgresEventLogStorage
from kpi_platform_tests.support.postgres import (
    create_temp_database,
    pooled_storage_overrides,
    postgres_storage,
)

# Runs on Dagster instances of its own.
pytestmark = pytest.mark.usefixtures("no_current_defs_state_storage")

DAYS = dg.DailyPartitionsDefinition(start_date="2026-10-01", end_date="2026-10-11")
RANGE = {
    "dagster/asset_partition_range_start": "2026-10-01",
    "dagster/asset_partition_range_end": "2026-10-10",
}
KEYS = DAYS.get_partition_keys()
SHOULD_FAIL = {"now": True}


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def ranged(context) -> None:
    if SHOULD_FAIL["now"]:
        raise dg.Failure("the source is down")
    context.log.info(f"{len(context.partition_keys)} days")


@pytest.fixture(params=["pooled", "stock"])
def instance(request, monkeypatch, pg_admin_url) -> Iterator[dg.DagsterInstance]:
    # As deploy.py sets it for the production processes.
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    url, drop = create_temp_database("kpi_dagster")
    storage = postgres_storage(url)
    overrides: dict = {"storage": storage}
    if request.param == "pooled":
        overrides = pooled_storage_overrides(url)
    try:
        with dg.instance_for_test(overrides=overrides) as inst:
            assert isinstance(inst.event_log_storage, PooledPostgresEventLogStorage) == (
                request.param == "pooled"
            )
            yield inst
    finally:
        drop()


def _status(instance: dg.DagsterInstance) -> set[str]:
    statuses = instance.get_status_by_partition(ranged.key, KEYS, DAYS) or {}
    return {str(getattr(s, "value", s)) for s in statuses.values()} | (
        {"NONE"} if len(statuses) < len(KEYS) else set()
    )


def test_pooled_storage_matches_stock_storage_upgrade_gate(instance, monkeypatch):
    """The upgrade gate of `runtime/pg_storage.py`: run on the pooled and the stock storage alike, a range run's
    planned events give failed then materialized partitions. Run it first after any Dagster upgrade."""
    one_by_one: list[str] = []
    storage = instance.event_log_storage
    store_event = storage.store_event

    def counting_store_event(event):
        if (
            event.dagster_event
            and event.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
        ):
            one_by_one.append(event.dagster_event.partition)
        store_event(event)

    monkeypatch.setattr(storage, "store_event", counting_store_event)
    SHOULD_FAIL["now"] = True
    failed = dg.materialize([ranged], instance=instance, tags=RANGE, raise_on_error=False)
    # The batch path replaces dagster-postgres's event-by-event writes; the stock storage shows what it replaces.
    assert sorted(one_by_one) == ([] if isinstance(storage, PooledPostgresEventLogStorage) else KEYS)
    assert not failed.success
    assert _status(instance) == {"FAILED"}

    planned = instance.fetch_planned_materializations(ranged.key, limit=100).records
    assert sorted(r.partition_key for r in planned) == KEYS
    assert {r.run_id for r in planned} == {failed.run_id}
    (record,) = instance.get_asset_records([ranged.key])
    assert record.asset_entry.last_run_id == failed.run_id

    SHOULD_FAIL["now"] = False
    healed = dg.materialize([ranged], instance=instance, tags=RANGE)
    assert _status(instance) == {"MATERIALIZED"}
    assert instance.get_materialized_partitions(ranged.key) == set(KEYS)
    assert len(instance.fetch_planned_materializations(ranged.key, limit=100).records) == 2 * len(KEYS)
    (record,) = instance.get_asset_records([ranged.key])
    assert record.asset_entry.last_run_id == healed.run_id
