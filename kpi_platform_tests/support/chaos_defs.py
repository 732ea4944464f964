"""The code location of the chaos end-to-end test: production's, with a gap-healing sensor that ticks every few
seconds over exactly the backfilled days (`CHAOS_DAYS`), and the healer's cool-down after a non-transient failure
shortened to seconds in this code location only (production: 1 h), so a run that failed on the warehouse is
requested again within the test's deadline. Only the code server imports this module (the test takes
`CHAOS_DAYS` from `support.chaos`), so the shortened cool-down never reaches the test process.

The days of a run Dagster retries (a killed worker) stay reserved by their backfill until the retry has finished,
so the short cool-down never makes the healer and the retry request the same days.
"""

from kpi_platform.definitions import build_defs
from kpi_platform.operations import plans
from kpi_platform_tests.support.chaos import CHAOS_DAYS

#: The gap-healing sensor ticks this often in the test (production: 300 s).
CHAOS_HEALING_INTERVAL_S = 5
#: The first non-transient failure's cool-down in this code location (doubling after each further one).
CHAOS_COOLDOWN_S = 10.0

plans.NON_TRANSIENT_BASE_COOLDOWN_S = CHAOS_COOLDOWN_S

#: Without the activity snapshot's sensors: the test counts every run and alert of its instance.
defs = build_defs(
    gap_healing_interval_s=CHAOS_HEALING_INTERVAL_S, healing_horizon_days=CHAOS_DAYS, activity_sensors=False
)

__all__ = ["CHAOS_COOLDOWN_S", "CHAOS_DAYS", "CHAOS_HEALING_INTERVAL_S", "defs"]
