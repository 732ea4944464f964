"""The KPI warehouse (SQLAlchemy Core + packaged alembic migrations): `Warehouse` owns every write and the
connection; `queries` reads for analysts, `export` writes query results to files, `roles` manages grants."""

from kpi_platform.warehouse.engine import make_engine
from kpi_platform.warehouse.store import (
    ClientSync,
    MetricReplacement,
    MetricWrite,
    Warehouse,
    WriteStats,
    as_utc,
)

__all__ = [
    "ClientSync",
    "MetricReplacement",
    "MetricWrite",
    "Warehouse",
    "WriteStats",
    "as_utc",
    "make_engine",
]
