"""The embedded default's SQLite storage writes a range run's events in batches, with the same outcome as Dagster's
own SQLite storage writing them one by one: partition statuses (in progress, failed, materialized), each
partition's own metadata, the planned events and the asset's last run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

import kpi_platform
from kpi_platform.runtime.sqlite_storage import BatchedSqliteEventLogStorage, BatchedSqliteStorage

# Runs on Dagster instances of its own.
pytestmark = pytest.mark.usefixtures("no_current_defs_state_storage")

REPO = Path(kpi_platform.__file__).resolve().parents[1]
DAYS = dg.DailyPartitionsDefinition(start_date="2026-10-01", end_date="2026-10-11")
RANGE = {
    "dagster/asset_partition_range_start": "2026-10-01",
    "dagster/asset_partition_range_end": "2026-10-10",
}
KEYS = DAYS.get_partition_keys()
SHOULD_FAIL = {"now": True}


@dg.asset(partitions_def=DAYS, backfill_policy=dg.BackfillPolicy.single_run())
def ranged(context) -> dg.MaterializeResult:
    if SHOULD_FAIL["now"]:
        raise dg.Failure("the source is down")
    for key in context.partition_keys:
        context.add_asset_metadata({"day": key}, partition_key=key)
    return dg.MaterializeResult(metadata={"days": len(context.partition_keys)})


@pytest.fixture(params=["batched", "stock"])
def instance(request, monkeypatch, tmp_path) -> Iterator[dg.DagsterInstance]:
    # As `kpi-platform ui`, the quickstart and the other commands set it for the embedded default.
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "1000")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    if request.param == "batched":
        # The top-level dagster.yaml, as the quickstart seeds DAGSTER_HOME with it.
        shutil.copyfile(REPO / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        assert isinstance(inst.event_log_storage, BatchedSqliteEventLogStorage) == (
            request.param == "batched"
        )
        yield inst


def _status(instance: dg.DagsterInstance) -> set[str]:
    statuses = instance.get_status_by_partition(ranged.key, KEYS, DAYS) or {}
    return {str(getattr(s, "value", s)) for s in statuses.values()} | (
        {"NONE"} if len(statuses) < len(KEYS) else set()
    )


def test_batched_storage_matches_stock_storage_upgrade_gate(instance, monkeypatch):
    """The upgrade gate of `runtime/sqlite_storage.py`: on the batched and the stock SQLite storage alike, a range
    run's partitions are in progress once it is created, failed after it fails, then materialized each with its
    own metadata. Run it first after any Dagster upgrade."""
    one_by_one: list[str] = []
    storage = instance.event_log_storage
    store_event = storage.store_event

    def counting_store_event(event):
        if event.dagster_event and event.dagster_event.event_type in (
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            dg.DagsterEventType.ASSET_MATERIALIZATION,
        ):
            one_by_one.append(event.dagster_event.partition)
        store_event(event)

    monkeypatch.setattr(storage, "store_event", counting_store_event)
    job = dg.Definitions(assets=[ranged]).resolve_implicit_global_asset_job_def()
    queued = instance.create_run_for_job(job_def=job, tags=RANGE)
    assert _status(instance) == {"IN_PROGRESS"}
    instance.report_run_canceled(queued)

    SHOULD_FAIL["now"] = True
    failed = dg.materialize([ranged], instance=instance, tags=RANGE, raise_on_error=False)
    assert not failed.success
    assert _status(instance) == {"FAILED"}
    (record,) = instance.get_asset_records([ranged.key])
    assert record.asset_entry.last_run_id == failed.run_id

    SHOULD_FAIL["now"] = False
    healed = dg.materialize([ranged], instance=instance, tags=RANGE)
    # The batch path replaces the event-by-event writes; the stock storage shows what it replaces.
    assert len(one_by_one) == (0 if isinstance(storage, BatchedSqliteEventLogStorage) else 4 * len(KEYS))
    assert _status(instance) == {"MATERIALIZED"}
    assert instance.get_materialized_partitions(ranged.key) == set(KEYS)
    planned = instance.fetch_planned_materializations(ranged.key, limit=100).records
    assert len(planned) == 3 * len(KEYS)
    assert {r.run_id for r in planned} == {queued.run_id, failed.run_id, healed.run_id}
    materialized = instance.fetch_materializations(ranged.key, limit=100).records
    assert {r.partition_key: r.asset_materialization.metadata["day"].value for r in materialized} == {
        key: key for key in KEYS
    }
    assert {r.run_id for r in materialized} == {healed.run_id}
    # Each record can be read back by its own id, in the run's own log as in the index.
    (latest,) = instance.fetch_materializations(ranged.key, limit=1).records
    assert latest.partition_key == KEYS[-1]
    by_run = instance.all_logs(healed.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert [e.dagster_event.partition for e in by_run] == KEYS
    (record,) = instance.get_asset_records([ranged.key])
    assert record.asset_entry.last_run_id == healed.run_id
    assert record.asset_entry.last_materialization_record.storage_id == latest.storage_id
    assert instance.get_latest_materialization_event(ranged.key).dagster_event.partition == KEYS[-1]


def test_the_storage_keeps_dagsters_folders(tmp_path):
    """An instance folder written by Dagster's own SQLite storage is the batched storage's, and back."""
    with dg.instance_for_test(temp_dir=str(tmp_path)) as stock:
        stock.add_dynamic_partitions("clients", ["acme"])
    storage = BatchedSqliteStorage.from_local(str(tmp_path))
    try:
        assert storage.event_log_storage.get_dynamic_partitions("clients") == ["acme"]
    finally:
        storage.dispose()
