"""The KPI warehouse (SQLAlchemy Core + packaged alembic migrations): `Warehouse` is its only entry point."""

from kpi_platform.warehouse.store import (
    ClientSync,
    MetricReplacement,
    MetricWrite,
    Warehouse,
    WriteStats,
    make_engine,
)

__all__ = ["ClientSync", "MetricReplacement", "MetricWrite", "Warehouse", "WriteStats", "make_engine"]
