"""Shared fixtures: a throw-away PostgreSQL database per test module, and warehouse URLs for both backends.

Tests that need PostgreSQL skip with a reason when no server answers, unless KPI_REQUIRE_POSTGRES=1, which
turns a missing server into a failure (CI sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from kpi_platform import settings

DEFAULT_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def _no_current_defs_state_storage(monkeypatch) -> None:
    """Tests build Definitions without Dagster's process-wide "current defs-state storage".

    Entering a DagsterInstance makes its defs-state storage the current one (a ContextVar, PRIVATE in 1.13), which
    holds only a weak reference to the instance. A test process creates and closes hundreds of instances, and
    some are entered by Dagster itself (schedule and sensor contexts, in-process runs) and closed out of order, so
    the current storage can end up pointing at an instance that is gone. The next `Definitions` built then fails
    with "Attempted to resolve undefined DagsterInstance weakref", in whichever test happens to run after a
    garbage collection. Only state-backed components read that storage, and this project has none; the
    production processes (the code server) set it explicitly.
    """
    from dagster._core.storage.defs_state.base import DefsStateStorage

    monkeypatch.setattr(DefsStateStorage, "get", classmethod(lambda cls: None))


def _admin_url() -> str:
    return os.environ.get(settings.ENV_TEST_PG_URL, DEFAULT_ADMIN_URL)


def _postgres_or_skip() -> sa.engine.URL:
    url = sa.make_url(_admin_url())
    try:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server here"
        reason = f"PostgreSQL not reachable at {url.render_as_string(hide_password=True)}: {type(exc).__name__}"
        if os.environ.get(settings.ENV_REQUIRE_POSTGRES) == "1":
            pytest.fail(f"KPI_REQUIRE_POSTGRES=1 but {reason}")
        pytest.skip(reason)
    return url


def create_temp_database(prefix: str = "kpi_test") -> tuple[str, callable]:
    """Create an empty database; return its URL and a function that drops it."""
    admin = _postgres_or_skip()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()

    return admin.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    url, drop = create_temp_database()
    try:
        yield url
    finally:
        drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path) -> Iterator[str]:
    """The warehouse suite runs on both backends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    else:
        url, drop = create_temp_database()
        try:
            yield url
        finally:
            drop()
