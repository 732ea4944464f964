"""The agency's own platform activity: reading the application database, snapshot rows, rules and the demo."""

from kpi_platform.activity.demo import DemoAppDb, ensure_demo_app_db, generate_demo_app_db
from kpi_platform.activity.metrics import METRIC_DEFINITIONS, MetricDefinition
from kpi_platform.activity.snapshot import TotalsMismatch, missing_metrics, snapshot_rows, totals_mismatches
from kpi_platform.activity.source import ActivityCounts, AppDatabase, AppDatabaseError, DayActivity

__all__ = [
    "METRIC_DEFINITIONS",
    "ActivityCounts",
    "AppDatabase",
    "AppDatabaseError",
    "DayActivity",
    "DemoAppDb",
    "MetricDefinition",
    "TotalsMismatch",
    "ensure_demo_app_db",
    "generate_demo_app_db",
    "missing_metrics",
    "snapshot_rows",
    "totals_mismatches",
]
