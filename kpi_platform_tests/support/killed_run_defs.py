"""The code location of the killed-run end-to-end test: the end-to-end defs (fast gap healing over `E2E_DAYS`),
with the healer's cool-down after a non-transient failure shortened to seconds in this code location only
(production: 1 h), so the test sees the healer request a killed run's days again without waiting an hour.

Long enough that Dagster's own run retry of a killed run (created within seconds of the failure) is in progress
before the healer's cool-down ends, so the two never request the same days.
"""

from kpi_platform.operations import plans
from kpi_platform_tests.support.e2e_defs import E2E_DAYS, E2E_HEALING_INTERVAL_S, defs

#: The first non-transient failure's cool-down in this code location (doubling after each further one).
KILLED_RUN_COOLDOWN_S = 45.0

plans.NON_TRANSIENT_BASE_COOLDOWN_S = KILLED_RUN_COOLDOWN_S

__all__ = ["E2E_DAYS", "E2E_HEALING_INTERVAL_S", "KILLED_RUN_COOLDOWN_S", "defs"]
