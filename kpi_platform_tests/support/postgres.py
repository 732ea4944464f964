"""Throw-away PostgreSQL databases for tests, empty or copied from a migrated template.

Tests that need PostgreSQL skip with a reason when no server answers, unless KPI_REQUIRE_POSTGRES=1, which turns a
missing server into a failure (CI sets it). The server is the one at KPI_TEST_POSTGRES_URL (an admin URL), by
default the local one with trust authentication.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from kpi_platform import settings

DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
#: Prefix of the migrated template database made once per test session.
TEMPLATE_PREFIX = "kpi_tmpl"


def admin_url() -> str:
    """The admin URL of the test server (KPI_TEST_POSTGRES_URL, else the local default)."""
    return os.environ.get(settings.ENV_TEST_PG_URL, DEFAULT_ADMIN_URL)


def postgres_or_skip() -> sa.engine.URL:
    """The admin URL if the server answers; otherwise skip the test (fail it when KPI_REQUIRE_POSTGRES=1)."""
    url = sa.make_url(admin_url())
    try:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        reason = (
            f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: {type(exc).__name__}"
        )
        if os.environ.get(settings.ENV_REQUIRE_POSTGRES) == "1":
            pytest.fail(f"KPI_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return url


def create_temp_database(
    prefix: str = "kpi_test", *, template: str | None = None
) -> tuple[str, Callable[[], None]]:
    """Create a database, empty or a copy of `template`; return its URL and a function that drops it.

    A copy of the migrated template (see `create_migrated_template`) is a warehouse at head: `migrate()` on it only
    reads the revision. Tests of migrations, roles or Dagster's own storage need an empty database instead.
    """
    admin = postgres_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"{clause}'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


def create_migrated_template() -> tuple[str, Callable[[], None]]:
    """Create a database with the warehouse migrated to head and no connection left open, to copy with
    `create_temp_database(template=name)`; return its name and a function that drops it."""
    from kpi_platform.warehouse import Warehouse

    url, drop = create_temp_database(TEMPLATE_PREFIX)
    try:
        warehouse = Warehouse(url)
        try:
            warehouse.migrate()
        finally:
            warehouse.dispose()  # CREATE DATABASE ... TEMPLATE refuses a template with open connections
    except BaseException:
        drop()
        raise
    return sa.make_url(url).database, drop


def postgres_storage(url: str) -> dict:
    """Instance `storage` config for the database at `url`, in the `postgres_db` form with the psycopg2 scheme."""
    parsed = sa.make_url(url)
    return {
        "postgres": {
            "postgres_db": {
                "hostname": parsed.host,
                "port": parsed.port or 5432,
                "username": parsed.username,
                "password": parsed.password or "",
                "db_name": parsed.database,
                "scheme": "postgresql+psycopg2",
            }
        }
    }


def pooled_storage_overrides(url: str) -> dict:
    """Instance overrides putting runs, events and schedules on production's pooled storage classes
    (`kpi_platform.runtime.pg_storage`) for the database at `url`."""
    config = postgres_storage(url)["postgres"]
    return {
        key: {"module": "kpi_platform.runtime.pg_storage", "class": cls, "config": config}
        for key, cls in (
            ("run_storage", "PooledPostgresRunStorage"),
            ("event_log_storage", "PooledPostgresEventLogStorage"),
            ("schedule_storage", "PooledPostgresScheduleStorage"),
        )
    }


@contextmanager
def temp_database(prefix: str = "kpi_test", *, template: str | None = None) -> Iterator[str]:
    """`create_temp_database` as a context: the URL inside, the database dropped on the way out."""
    url, drop = create_temp_database(prefix, template=template)
    try:
        yield url
    finally:
        drop()
