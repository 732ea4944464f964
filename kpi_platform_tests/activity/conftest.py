"""Fixtures for platform activity tests: application databases on either backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kpi_platform_tests.support.postgres import temp_database


@pytest.fixture(params=["sqlite", "postgresql"])
def app_url(request, tmp_path) -> Iterator[str]:
    """An empty application database on either backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.sqlite'}"
    else:
        with temp_database("kpi_app") as url:
            yield url
