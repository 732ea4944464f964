"""Every collection run of one client carries the `kpi/client` tag, whoever launched it: a run launched without it
(a UI backfill's range run, a single partition materialized from the UI, `dagster asset materialize`) adds it
when it starts, so the runbook's "filter runs by tag kpi/client" finds it."""

from __future__ import annotations

from datetime import date

import dagster as dg

from kpi_platform import settings
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, ClientRange

OCT_1, OCT_3 = date(2026, 10, 1), date(2026, 10, 3)


def run_tags(platform, result: dg.ExecuteInProcessResult) -> dict[str, str]:
    run = platform.instance.get_run_by_id(result.run_id)
    assert run is not None
    return dict(run.tags)


def collection_job(platform) -> dg.JobDefinition:
    return platform.defs().resolve_job_def("daily_collection_job")


def test_a_range_run_launched_like_a_ui_backfill_tags_itself_with_its_client(platform):
    # A UI backfill's run of a single-run asset carries the range tags (and dagster/backfill), not kpi/client.
    tags = ClientRange("acme", OCT_1, OCT_3).tags()
    result = collection_job(platform).execute_in_process(
        instance=platform.instance, tags=tags, raise_on_error=False
    )
    assert result.success
    assert run_tags(platform, result)[settings.CLIENT_TAG] == "acme"
    assert (
        platform.instance.get_runs(dg.RunsFilter(tags={settings.CLIENT_TAG: "acme"}))[0].run_id
        == result.run_id
    )


def test_a_single_partition_run_tags_itself_with_its_client(platform):
    result = collection_job(platform).execute_in_process(
        instance=platform.instance, partition_key="globex|2026-10-01", raise_on_error=False
    )
    assert result.success
    assert run_tags(platform, result)[settings.CLIENT_TAG] == "globex"


def test_a_scheduled_runs_tag_is_left_as_it_is(platform):
    result = platform.collect("acme", OCT_1, OCT_3)
    assert result.success
    tags = run_tags(platform, result)
    assert tags[settings.CLIENT_TAG] == "acme"
    assert tags["kpi/reason"] == "test"


def test_a_run_over_several_clients_stays_untagged(platform):
    # Launched by hand with range tags spanning clients: a rectangle acme..globex × 3 days, one run.
    tags = {RANGE_START_TAG: "acme|2026-10-01", RANGE_END_TAG: "globex|2026-10-03"}
    result = collection_job(platform).execute_in_process(
        instance=platform.instance, tags=tags, raise_on_error=False
    )
    assert result.success
    assert settings.CLIENT_TAG not in run_tags(platform, result)
    stored = platform.warehouse.read_client_days(start=OCT_1, end=OCT_3)
    assert sorted(set(stored["client_id"])) == ["acme", "globex"]
