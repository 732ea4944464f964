"""Data quality of the KPI frames: pandera contracts (`schemas`) and pure rule functions (`rules`), free of Dagster."""
