"""Contract-breaking data is refused before it is stored; the check names client, days and rules; partitions stay failed."""

from __future__ import annotations

import dataclasses
from datetime import date

import dagster as dg

from kpi_platform.definitions import build_defs
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS, CONTRACT_CHECK
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.operations.plans import CollectionRequest

OCT_1, OCT_5 = date(2026, 10, 1), date(2026, 10, 5)


class _Tampering:
    """Wraps the real client and breaks one day's rows: more clicks than impressions."""

    def __init__(self, inner, bad_day: str, bad_client: str | None = None):
        self.inner, self.bad_day, self.bad_client = inner, bad_day, bad_client

    def fetch_campaign_insights(self, **kwargs):
        fetch = self.inner.fetch_campaign_insights(**kwargs)
        if self.bad_client is not None and kwargs["client_id"] != self.bad_client:
            return fetch
        rows = []
        for row in fetch.rows:
            if row["date_start"] == self.bad_day:
                row = {**row, "clicks": str(int(row["impressions"]) * 2)}
            rows.append(row)
        return dataclasses.replace(fetch, rows=tuple(rows))

    def close(self):
        self.inner.close()


class TamperingMetaApi(MetaApiResource):
    bad_day: str = "2026-10-03"
    bad_client: str | None = None

    def get_client(self, *, accounts=None, pacing_store=None):
        inner = super().get_client(accounts=accounts, pacing_store=pacing_store)
        return _Tampering(inner, self.bad_day, self.bad_client)


def run(platform, meta_api):
    defs = build_defs(
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url), "meta_api": meta_api}
    )
    tags = CollectionRequest("acme", OCT_1, OCT_5, run_key="", reason="test").tags()
    return defs.resolve_job_def("daily_collection_job").execute_in_process(
        instance=platform.instance, tags=tags, raise_on_error=False
    )


def test_bad_day_refuses_the_whole_range_and_reports_the_check(platform_any):
    platform = platform_any
    result = run(platform, TamperingMetaApi())
    assert not result.success
    # Nothing of the rejected range is in the warehouse.
    assert platform.warehouse.read_client_days(client_id="acme", start=OCT_1, end=OCT_5).empty
    assert platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_5).empty
    # No materialization: every partition of the run is FAILED, so gap healing will find them.
    assert not platform.instance.get_materialized_partitions(CLIENT_DAILY_KPIS)
    keys = [f"acme|2026-10-0{d}" for d in range(1, 6)]
    partitions_def = build_defs().resolve_assets_def(CLIENT_DAILY_KPIS).partitions_def
    status = platform.instance.get_status_by_partition(CLIENT_DAILY_KPIS, keys, partitions_def)
    assert set(status.values()) == {dg.AssetPartitionStatus.FAILED}
    # The check result is recorded with severity ERROR and names client, day and rule.
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CONTRACT_CHECK
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["client"] == "acme"
    assert "clicks_le_impressions" in meta["failed_rules"]
    assert meta["failed_days"] == ["2026-10-03"]
    assert 0 < len(meta["sample"]) <= 20
    record = platform.instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(CLIENT_DAILY_KPIS, CONTRACT_CHECK)
    )
    assert record.status.value == "FAILED"


def test_bad_data_never_replaces_good_rows(platform):
    assert run(platform, MetaApiResource()).success
    before = platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_5)
    assert not run(platform, TamperingMetaApi()).success
    after = platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_5)
    assert after.equals(before)


def test_good_data_passes_the_check_and_stores_quality_scores(platform):
    result = run(platform, MetaApiResource())
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed
    days = platform.warehouse.read_client_days(client_id="acme", start=OCT_1, end=OCT_5)
    assert days["quality_score"].between(0, 100).all()


def test_a_run_of_several_clients_stores_all_of_them_or_none(platform):
    """A rectangle run (acme and globex, launched by hand with range tags) where only globex's data breaks the
    contract stores nothing for acme either: every range is validated before any is written."""
    from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG

    defs = build_defs(
        resources={
            "warehouse": WarehouseResource(url=platform.warehouse_url),
            "meta_api": TamperingMetaApi(bad_client="globex"),
        }
    )
    tags = {RANGE_START_TAG: "acme|2026-10-01", RANGE_END_TAG: "globex|2026-10-05"}
    result = defs.resolve_job_def("daily_collection_job").execute_in_process(
        instance=platform.instance, tags=tags, raise_on_error=False
    )
    assert not result.success
    for client_id in ("acme", "globex"):
        assert platform.warehouse.read_client_days(client_id=client_id, start=OCT_1, end=OCT_5).empty
    assert not platform.instance.get_materialized_partitions(CLIENT_DAILY_KPIS)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.metadata["client"].value == "globex"


class _HugeCount:
    """Wraps the real client and gives one campaign-day 31 digits of impressions, more than BIGINT holds."""

    def __init__(self, inner):
        self.inner = inner

    def fetch_campaign_insights(self, **kwargs):
        fetch = self.inner.fetch_campaign_insights(**kwargs)
        rows = list(fetch.rows)
        first = next(i for i, row in enumerate(rows) if row["date_start"] == "2026-10-02")
        # Without `ctr`, which Meta would have computed from that count: the CTR is derived from it.
        rows[first] = {k: v for k, v in rows[first].items() if k != "ctr"} | {"impressions": "9" * 31}
        return dataclasses.replace(fetch, rows=tuple(rows))

    def close(self):
        self.inner.close()


class HugeCountMetaApi(MetaApiResource):
    def get_client(self, *, accounts=None, pacing_store=None):
        return _HugeCount(super().get_client(accounts=accounts, pacing_store=pacing_store))


def test_a_count_too_large_for_its_column_fails_the_contract_by_name(platform_any):
    platform = platform_any
    result = run(platform, HugeCountMetaApi())
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    assert "OverflowError" not in str(failure.step_failure_data.error)
    assert "fits_bigint" in failure.step_failure_data.user_failure_data.description
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CONTRACT_CHECK and not evaluation.passed
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["failed_rules"] == ["fits_bigint"]
    assert meta["failed_days"] == ["2026-10-02"]
    campaign_rows = [s for s in meta["sample"] if s["schema"] == "CampaignDaySchema"]
    assert len(campaign_rows) == 1
    assert campaign_rows[0]["column"] == "impressions" and campaign_rows[0]["failure_value"] == int("9" * 31)
    assert campaign_rows[0]["campaign_id"]  # the row is named
    # Nothing stored, nothing materialized.
    assert platform.warehouse.read_client_days(client_id="acme", start=OCT_1, end=OCT_5).empty
    assert platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_5).empty
    assert not platform.instance.get_materialized_partitions(CLIENT_DAILY_KPIS)
