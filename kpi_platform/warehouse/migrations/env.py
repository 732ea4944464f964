"""Alembic environment of the warehouse: runs migrations on the connection handed over by `Warehouse.migrate`.

`config.attributes["connection"]` carries an open connection inside the caller's transaction (which holds the
migration lock); without one, `sqlalchemy.url` (or KPI_WAREHOUSE_URL) is opened here, for the alembic CLI.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from kpi_platform import settings
from kpi_platform.warehouse.schema import metadata


def _configure(**kwargs) -> None:
    context.configure(target_metadata=metadata, compare_type=True, **kwargs)


def _run_on(connection: sa.Connection) -> None:
    # SQLite cannot ALTER most things in place; batch mode recreates the table for later migrations.
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    config = context.config
    if context.is_offline_mode():
        _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    from kpi_platform.warehouse.engine import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or settings.warehouse_url())
    try:
        with engine.connect() as conn:
            _run_on(conn)
            conn.commit()
    finally:
        engine.dispose()


_main()
