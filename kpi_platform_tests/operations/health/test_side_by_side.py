"""The health command's two halves: the warehouse checks evaluated in a forked worker give the same report as one
process evaluating every check, in report order; a worker that dies or cannot be forked costs time, not the report;
a warehouse that cannot be read is the finding."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from kpi_platform.operations.health import HEALTH_CHECKS, build_health_report, clients_from_warehouse
from kpi_platform.operations.health.checks import WAREHOUSE_CHECKS
from kpi_platform.operations.health.instance_checks import INSTANCE_CHECKS, catalogue_check_keys
from kpi_platform.operations.health.side_by_side import (
    WarehouseFindings,
    WarehouseHalf,
    combined_report,
    read_warehouse_half,
)
from kpi_platform_tests.support.platform import Platform, make_platform

pytestmark = pytest.mark.usefixtures("no_current_defs_state_storage")


@pytest.fixture
def collected(tmp_path, monkeypatch) -> Iterator[Platform]:
    """acme and globex collected over the last ten days, one of them failing on a split day."""
    for platform in make_platform(tmp_path, monkeypatch, f"sqlite:///{tmp_path / 'warehouse.sqlite'}"):
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        assert platform.collect("acme", yesterday - timedelta(days=9), yesterday).success
        yield platform


def _dies(url: str, now_utc: datetime) -> WarehouseFindings:
    """A worker that ends without an answer, as one the kernel killed would."""
    os._exit(3)


def _summary(checks) -> list[tuple[str, str, float, str]]:
    return [(c.name, c.status.value, c.score, c.summary) for c in checks]


def test_the_two_halves_make_the_report_one_process_makes_in_report_order(collected):
    now = datetime.now(UTC)
    whole = build_health_report(
        warehouse=collected.warehouse,
        instance=collected.instance,
        clients=clients_from_warehouse(collected.warehouse),
        now_utc=now,
        check_keys=catalogue_check_keys(),
    )
    with WarehouseHalf(collected.warehouse_url, now) as half:
        found = half.result()
    assert found.not_ready is None
    assert {c.name for c in found.checks} == {s.name for s in HEALTH_CHECKS if not s.needs_instance}
    part = build_health_report(
        warehouse=collected.warehouse,
        instance=collected.instance,
        clients=clients_from_warehouse(collected.warehouse),
        now_utc=now,
        check_keys=catalogue_check_keys(),
        checks=INSTANCE_CHECKS,
    )
    report = combined_report(found, part.checks, now)
    assert [c.name for c in report.checks] == [s.name for s in HEALTH_CHECKS]
    assert _summary(report.checks) == _summary(whole.checks)
    assert (report.status, report.score) == (whole.status, whole.score)
    # globex was never collected: the warehouse half found it (evaluated in the worker).
    assert report.check("missing_days").status.value != "healthy"


def test_instance_checks_are_every_check_that_needs_the_instance():
    assert [s.name for s in INSTANCE_CHECKS] == [s.name for s in HEALTH_CHECKS if s.needs_instance]
    assert not any(s.needs_instance for s in WAREHOUSE_CHECKS)


def test_a_worker_that_dies_or_cannot_start_leaves_the_reads_to_this_process(collected, monkeypatch):
    now = datetime.now(UTC)
    expected = _summary(read_warehouse_half(collected.warehouse_url, now).checks)
    with WarehouseHalf(collected.warehouse_url, now, read=_dies) as half:
        assert _summary(half.result().checks) == expected

    def no_fork(method: str):
        raise ValueError(f"cannot find context for {method!r}")

    monkeypatch.setattr(multiprocessing, "get_context", no_fork)
    with WarehouseHalf(collected.warehouse_url, now) as half:
        assert _summary(half.result().checks) == expected


def test_a_warehouse_that_cannot_be_read_is_the_finding(tmp_path):
    missing = f"sqlite:///{tmp_path / 'nowhere.sqlite'}"
    with WarehouseHalf(missing, datetime.now(UTC)) as half:
        found = half.result()
    assert found.not_ready is not None and "no warehouse at" in found.not_ready
    assert found.checks == []
