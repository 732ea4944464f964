"""The private-name door's partition metadata: each partition of a range run gets its own, keys outside the run
are refused, and the guard recognises the installed Dagster."""

from __future__ import annotations

import warnings

import dagster as dg

from kpi_platform.runtime.dagster_private import add_partition_metadata, check_partition_metadata_hook

RANGE_TAGS = {
    "dagster/asset_partition_range_start": "acme|2026-01-01",
    "dagster/asset_partition_range_end": "acme|2026-01-03",
}


def _asset(extra_key: str | None = None) -> dg.AssetsDefinition:
    partitions = dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date="2026-01-01"),
            "client": dg.DynamicPartitionsDefinition(name="clients"),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)

        @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run())
        def days(context) -> dg.MaterializeResult:
            by_key = {
                key: {"day": dg.MetadataValue.text(key), "n": n}
                for n, key in enumerate(context.partition_keys)
            }
            if extra_key:
                by_key[extra_key] = {"day": dg.MetadataValue.text(extra_key)}
            add_partition_metadata(context, by_key)
            return dg.MaterializeResult(metadata={"shared": 1})

    return days


def test_each_partition_of_a_range_run_gets_its_own_metadata_over_the_shared():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("clients", ["acme"])
        result = dg.materialize([_asset()], instance=instance, tags=RANGE_TAGS)
    by_key = {str(m.partition): m.metadata for m in result.asset_materializations_for_node("days")}
    assert sorted(by_key) == ["acme|2026-01-01", "acme|2026-01-02", "acme|2026-01-03"]
    for n, (key, metadata) in enumerate(sorted(by_key.items())):
        assert (metadata["day"].value, metadata["n"].value, metadata["shared"].value) == (key, n, 1)


def test_a_key_outside_the_run_is_refused_by_name():
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("clients", ["acme"])
        result = dg.materialize(
            [_asset(extra_key="acme|2026-01-09")], instance=instance, tags=RANGE_TAGS, raise_on_error=False
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert (
        "keys this run does not materialize: ['acme|2026-01-09']"
        in failure.step_failure_data.error.cause.message
    )


def test_the_guard_recognises_the_installed_dagster():
    check_partition_metadata_hook()
