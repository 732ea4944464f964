"""Opening the warehouse for reading: it must exist and be migrated to this version's schema; nothing here
creates, migrates or changes it (read-only commands and the analysts' queries use this)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from kpi_platform.warehouse.engine import head_revision
from kpi_platform.warehouse.store import Warehouse


class WarehouseNotReadyError(RuntimeError):
    """The warehouse to export from does not exist or is not migrated to this version's schema."""


def open_warehouse(url: str) -> Warehouse:
    """The warehouse at `url`, for reading: never created or migrated here.

    Raises WarehouseNotReadyError when an SQLite file is missing, the server cannot be reached, or the schema
    is not at the packaged head revision (the message names the fix).
    """
    parsed = sa.make_url(url)
    display = parsed.render_as_string(hide_password=True)
    database = parsed.database or ""
    if (
        parsed.drivername.startswith("sqlite")
        and database not in ("", ":memory:")
        and not Path(database).exists()
    ):
        raise WarehouseNotReadyError(
            f"no warehouse at {database}; run `kpi-platform quickstart`, or set KPI_WAREHOUSE_URL"
        )
    warehouse = Warehouse(url)
    try:
        revision = warehouse.current_revision()
    except sa.exc.SQLAlchemyError as exc:
        warehouse.dispose()
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise WarehouseNotReadyError(f"cannot read the warehouse at {display}: {reason}") from None
    if revision != head_revision():
        warehouse.dispose()
        raise WarehouseNotReadyError(
            f"the warehouse at {display} is at migration {revision or 'none'}, this version needs "
            f"{head_revision()}; run `kpi-platform migrate`"
        )
    return warehouse
