"""kpi_platform: daily Meta Ads KPIs per client, collected, validated and healed by Dagster.

Modules stay free of import-time wiring and side effects; `kpi_platform.definitions.defs` is the one entry point.
"""
