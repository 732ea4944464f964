"""Fixtures every test directory may use: PostgreSQL databases (empty, or copied from a warehouse template migrated
once per session), warehouse URLs on both backends, an initialised Dagster instance home to copy, the guard
against Dagster's current defs-state storage, and DAGSTER_EVENT_BATCH_SIZE unset in every test unless it sets it. The helpers behind them live in `kpi_platform_tests.support`.

Also the markers: every test that uses a PostgreSQL database is marked `postgres` here, so
`pytest -m "not postgres and not e2e"` runs the unit layer without a server; tests under `e2e/` are marked `e2e`.
A fixture that creates a PostgreSQL database requests `pg_admin_url` (or a fixture that does), or is parametrized
with "postgresql", and its tests are marked through that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kpi_platform_tests.support.dagster_instance import create_instance_template
from kpi_platform_tests.support.postgres import create_migrated_template, postgres_or_skip, temp_database

E2E_DIR = Path(__file__).parent / "e2e"
#: The parameter value of backend-parametrized fixtures (`warehouse_url`, `platform_any`, ...) that means PostgreSQL.
POSTGRESQL = "postgresql"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `postgres` every test that reaches a PostgreSQL database, `e2e` every test under e2e/ (before `-m`
    selects)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_postgresql = any(isinstance(value, str) and value == POSTGRESQL for value in params.values())
        if on_postgresql or "pg_admin_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
        if E2E_DIR in item.path.parents and item.get_closest_marker("e2e") is None:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The test server's admin URL; skips (or fails, with KPI_REQUIRE_POSTGRES=1) when no server answers.

    Every fixture that creates a PostgreSQL database requests it, which is what marks its tests `postgres`."""
    return postgres_or_skip().render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url) -> Iterator[str]:
    """Name of a database with the warehouse migrated to head, made once per session (per xdist worker) and
    dropped at its end; copy it with `temp_database(template=pg_template)`."""
    name, drop = create_migrated_template()
    try:
        yield name
    finally:
        drop()


@pytest.fixture
def pg_url(pg_admin_url) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    with temp_database() as url:
        yield url


@pytest.fixture
def migrated_pg_url(pg_template) -> Iterator[str]:
    """URL of a fresh PostgreSQL database with the warehouse already at head (a copy of the template), dropped
    after the test: `Warehouse(url).migrate()` on it only reads the revision."""
    with temp_database(template=pg_template) as url:
        yield url


@pytest.fixture(params=["sqlite", POSTGRESQL])
def warehouse_url(request, tmp_path) -> Iterator[str]:
    """An empty warehouse database on each backend, for tests of migrations themselves."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    else:
        with temp_database() as url:
            yield url


@pytest.fixture(params=["sqlite", POSTGRESQL])
def migrated_warehouse_url(request, tmp_path) -> Iterator[str]:
    """A warehouse database on each backend for tests that migrate it first thing: on PostgreSQL a copy of the
    migrated template (so that `migrate()` only reads the revision), on SQLite a new file."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    else:
        with temp_database(template=request.getfixturevalue("pg_template")) as url:
            yield url


@pytest.fixture(scope="session")
def dagster_instance_template(tmp_path_factory) -> Path:
    """An initialised, empty test instance home, made once per session: `support.platform.make_platform` opens
    its instances on copies of it."""
    return create_instance_template(tmp_path_factory.mktemp("dagster_instance_template") / "home")


@pytest.fixture
def no_current_defs_state_storage(monkeypatch) -> None:
    """The test builds Definitions without Dagster's process-wide "current defs-state storage".

    Entering a DagsterInstance makes its defs-state storage the current one (a ContextVar, PRIVATE in 1.13), which
    holds only a weak reference to the instance. A test process creates and closes hundreds of instances, and
    some are entered by Dagster itself (schedule and sensor contexts, in-process runs) and closed out of order, so
    the current storage can end up pointing at an instance that is gone. The next `Definitions` built then fails
    with "Attempted to resolve undefined DagsterInstance weakref", in whichever test happens to run after a
    garbage collection. Only state-backed components read that storage, and this project has none; the
    production processes (the code server) set it explicitly.

    Used by the tests that build Definitions or Dagster instances: autouse in the conftest of the directories
    whose tests all do, `pytest.mark.usefixtures("no_current_defs_state_storage")` elsewhere.
    """
    from dagster._core.storage.defs_state.base import DefsStateStorage

    monkeypatch.setattr(DefsStateStorage, "get", classmethod(lambda cls: None))


@pytest.fixture(autouse=True)
def dagster_event_batch_size_restored(monkeypatch) -> None:
    """Every test starts without DAGSTER_EVENT_BATCH_SIZE (tests of batching set it), and the environment is restored
    after it: the CLI's `ensure_dagster_home` sets the variable in os.environ for the embedded default (the
    quickstart's runs batch their events), which must not carry over into later tests."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "")
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE")
