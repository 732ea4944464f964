"""The `kpi-platform` command: quickstart, the local instance, export, health and the process supervisor."""
