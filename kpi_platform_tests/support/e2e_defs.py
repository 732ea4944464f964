"""The code location the end-to-end test's code server loads: production's, with a fast gap-healing sensor whose
horizon is the backfilled days."""

from kpi_platform.definitions import build_defs

#: Days backfilled by the end-to-end test (ending yesterday); the gap-healing horizon covers exactly these.
E2E_DAYS = 10
#: The gap-healing sensor ticks this often in the test (production: 300 s).
E2E_HEALING_INTERVAL_S = 5

#: Without the activity snapshot's sensors: the tests count every run and alert of their instance.
defs = build_defs(
    gap_healing_interval_s=E2E_HEALING_INTERVAL_S, healing_horizon_days=E2E_DAYS, activity_sensors=False
)
