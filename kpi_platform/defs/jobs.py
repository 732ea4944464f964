"""Asset jobs: what schedules, sensors and the quickstart launch."""

from __future__ import annotations

import dagster as dg

from kpi_platform.defs.assets import CLIENT_DAILY_KPIS, CLIENT_MONTHLY_SUMMARY, CONTRACT_CHECK

# Collection runs carry only the in-asset contract check; the warehouse-wide checks run in their own job.
daily_collection_job = dg.define_asset_job(
    "daily_collection_job",
    selection=dg.AssetSelection.assets(CLIENT_DAILY_KPIS).without_checks()
    | dg.AssetSelection.checks(dg.AssetCheckKey(CLIENT_DAILY_KPIS, CONTRACT_CHECK)),
    description="Collect client-day KPIs from the Meta API for one client and one contiguous date range.",
)

monthly_summary_job = dg.define_asset_job(
    "monthly_summary_job",
    selection=dg.AssetSelection.assets(CLIENT_MONTHLY_SUMMARY).without_checks(),
    description="Summarise complete months per client.",
)
