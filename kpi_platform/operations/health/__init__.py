"""The platform health report: named checks over the warehouse and the Dagster instance, each with a status, a
0–100 score, a one-line summary and details, rolled up into one status, score and exit code.

Plain Python; the CLI (`kpi-platform health`) and the asset `platform/health_report` (every 15 minutes) both call
`build_health_report`. The instance is only read.

Scoring. Each check rates itself `healthy`, `degraded` or `unhealthy` by the thresholds below and scores itself
0–100. The report's **status is the worst check status** (one unhealthy check makes the platform unhealthy, however
good the rest), and its **score is the weighted mean of the check scores** (`HEALTH_CHECKS` weights), a number to
plot over time. Exit codes: 0 healthy, 1 degraded, 2 unhealthy.

Adding a check: write a function `(HealthContext) -> Finding`, add one `CheckSpec` to `WAREHOUSE_CHECKS`
(`checks.py`) or, when it reads the Dagster instance, to `INSTANCE_CHECKS` (`instance_checks.py`), and its name to
`REPORT_ORDER` (`report.py`). `HEALTH_CHECKS` is every check in that order.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kpi_platform.operations.health.checks import build_health_report
    from kpi_platform.operations.health.report import (
        DAEMON_HEARTBEAT_UNHEALTHY_S,
        CheckSpec,
        Finding,
        HealthCheck,
        HealthContext,
        HealthReport,
        HealthStatus,
        clients_from_warehouse,
        worst,
    )

    HEALTH_CHECKS: tuple[CheckSpec, ...]

__all__ = [
    "DAEMON_HEARTBEAT_UNHEALTHY_S",
    "HEALTH_CHECKS",
    "CheckSpec",
    "Finding",
    "HealthCheck",
    "HealthContext",
    "HealthReport",
    "HealthStatus",
    "build_health_report",
    "clients_from_warehouse",
    "worst",
]

# Names are resolved on first use (PEP 562): importing one submodule (`instance_checks`, `report`) must not import
# the warehouse checks and their pandas, which `kpi-platform health` keeps out of the process that opens the
# Dagster instance. `HEALTH_CHECKS` and `build_health_report` come from `checks.py`, the rest from `report.py`.


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "HEALTH_CHECKS":
        value: Any = importlib.import_module(f"{__name__}.checks").health_checks()
    else:
        module = "checks" if name == "build_health_report" else "report"
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
