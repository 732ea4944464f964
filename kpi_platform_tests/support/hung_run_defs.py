"""The code location of the hung-run end-to-end test: the end-to-end defs (fast gap healing over `E2E_DAYS`), with
the time bound of collection runs and the healer's cool-down after a non-transient failure scaled down to seconds
in this code location only (production: 30 min + 1 min per day, and 1 h).

A healer's run over the `E2E_DAYS` horizon is then allowed `HUNG_RUN_MAX_RUNTIME_S`: long enough for the run to
start and reach its first Meta call, short enough for the test to see run monitoring end it.
"""

from kpi_platform.operations import plans
from kpi_platform_tests.support.e2e_defs import E2E_DAYS, E2E_HEALING_INTERVAL_S, defs

#: The collection runs' time bound in this code location: base + per day (× E2E_DAYS).
HUNG_RUN_BASE_S = 10.0
HUNG_RUN_PER_DAY_S = 1.0
HUNG_RUN_MAX_RUNTIME_S = int(HUNG_RUN_BASE_S + HUNG_RUN_PER_DAY_S * E2E_DAYS)
#: The first non-transient failure's cool-down in this code location (a run past its bound is non-transient).
HUNG_RUN_COOLDOWN_S = 5.0

plans.MAX_RUNTIME_BASE_S = HUNG_RUN_BASE_S
plans.MAX_RUNTIME_PER_DAY_S = HUNG_RUN_PER_DAY_S
plans.NON_TRANSIENT_BASE_COOLDOWN_S = HUNG_RUN_COOLDOWN_S

__all__ = ["E2E_DAYS", "E2E_HEALING_INTERVAL_S", "HUNG_RUN_COOLDOWN_S", "HUNG_RUN_MAX_RUNTIME_S", "defs"]
