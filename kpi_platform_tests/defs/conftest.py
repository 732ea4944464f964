"""Fixtures for Dagster-level tests: a temporary instance, clients file and warehouse, all under tmp_path.

Every test here builds Definitions or a Dagster instance, so all of them run without Dagster's current defs-state
storage (see `no_current_defs_state_storage` in the top-level conftest).
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from kpi_platform_tests.support.platform import Platform, make_platform
from kpi_platform_tests.support.postgres import temp_database


@pytest.fixture(autouse=True)
def _defs_state_storage(no_current_defs_state_storage) -> None:
    """`no_current_defs_state_storage` for every test in this directory."""


@pytest.fixture
def platform(tmp_path, monkeypatch, dagster_instance_template) -> Iterator[Platform]:
    yield from make_platform(
        tmp_path,
        monkeypatch,
        f"sqlite:///{tmp_path / 'warehouse.sqlite'}",
        instance_template=dagster_instance_template,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def platform_any(request, tmp_path, monkeypatch, dagster_instance_template) -> Iterator[Platform]:
    """The same platform with the warehouse on SQLite and on PostgreSQL (a copy of the migrated template)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
        yield from make_platform(tmp_path, monkeypatch, url, instance_template=dagster_instance_template)
        return
    with temp_database(template=request.getfixturevalue("pg_template")) as url:
        yield from make_platform(tmp_path, monkeypatch, url, instance_template=dagster_instance_template)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """An ephemeral Dagster instance of its own, for tests of run history that need no code location."""
    with dg.instance_for_test() as instance:
        yield instance
