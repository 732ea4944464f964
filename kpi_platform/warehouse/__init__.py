"""The KPI warehouse (SQLAlchemy Core + packaged alembic migrations): `Warehouse` owns every write and the
connection; `queries` reads for analysts, `export` writes query results to files, `roles` manages grants."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kpi_platform.warehouse.engine import make_engine
    from kpi_platform.warehouse.store import (
        ClientSync,
        MetricReplacement,
        MetricWrite,
        Warehouse,
        WriteStats,
    )
    from kpi_platform.warehouse.times import as_utc

__all__ = [
    "ClientSync",
    "MetricReplacement",
    "MetricWrite",
    "Warehouse",
    "WriteStats",
    "as_utc",
    "make_engine",
]

# Exports are resolved on first use (PEP 562), so importing a submodule (`schema`, `times`) or `as_utc` does not
# import the store and what it brings.
_EXPORTED_FROM = {
    "ClientSync": "store",
    "MetricReplacement": "store",
    "MetricWrite": "store",
    "Warehouse": "store",
    "WriteStats": "store",
    "as_utc": "times",
    "make_engine": "engine",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTED_FROM.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
