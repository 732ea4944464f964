"""The gap-healing sensor, ticked with its cursor: gaps requested once and only once, cool-down for hard failures."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from kpi_platform import settings
from kpi_platform.automation import RANGE_END_TAG, RANGE_START_TAG, CollectionRequest
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.defs.sensors import gap_healing_sensor


def tick(platform, defs, cursor):
    context = dg.build_sensor_context(
        instance=platform.instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url)},
    )
    result = gap_healing_sensor(context)
    return result, context.cursor if result.cursor is None else result.cursor


def ranges(result) -> set[tuple[str, str]]:
    return {(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in (result.run_requests or [])}


def test_gaps_are_requested_once_and_in_progress_days_never_twice(platform):
    defs = platform.defs()
    today = datetime.now(UTC).date()
    first = today - timedelta(days=settings.HEALING_HORIZON_DAYS)
    yesterday = today - timedelta(days=1)
    hole_start, hole_end = today - timedelta(days=10), today - timedelta(days=8)
    # acme: the whole horizon except a 3-day hole, collected in two runs around it.
    assert platform.collect("acme", first, hole_start - timedelta(days=1)).success
    assert platform.collect("acme", hole_end + timedelta(days=1), yesterday).success
    # globex: nothing yet, but its last 5 days are queued (a run created, not started).
    queued = CollectionRequest("globex", yesterday - timedelta(days=4), yesterday, run_key="", reason="test")
    platform.instance.create_run_for_job(
        job_def=defs.resolve_job_def("daily_collection_job"), tags=queued.tags()
    )

    result, cursor = tick(platform, defs, None)
    assert ranges(result) == {
        (f"acme|{hole_start}", f"acme|{hole_end}"),
        (f"globex|{first}", f"globex|{yesterday - timedelta(days=5)}"),
    }
    for request in result.run_requests:
        assert request.tags["kpi/client"] in ("acme", "globex")
        assert request.tags["kpi/reason"] == "heal"

    # The requested runs are created (as the daemon would): the next tick requests nothing again.
    for request in result.run_requests:
        platform.instance.create_run_for_job(
            job_def=defs.resolve_job_def("daily_collection_job"), tags=request.tags
        )
    result, cursor = tick(platform, defs, cursor)
    assert not result.run_requests
    assert result.skip_reason is not None


def test_a_hard_failure_cools_down_and_is_reported(platform, monkeypatch):
    defs = platform.defs()
    today = datetime.now(UTC).date()
    yesterday = today - timedelta(days=1)
    first = today - timedelta(days=settings.HEALING_HORIZON_DAYS)
    assert platform.collect("acme", first, yesterday).success
    assert platform.collect("globex", first, yesterday - timedelta(days=2)).success
    # globex's last two days fail with an invalid token: non-transient.
    monkeypatch.setenv("META_ACCESS_TOKEN", "invalid-token")
    assert not platform.collect("globex", yesterday - timedelta(days=1), yesterday).success
    monkeypatch.delenv("META_ACCESS_TOKEN")

    result, cursor = tick(platform, defs, None)
    assert not result.run_requests  # cooling down after the first failure
    state = json.loads(cursor)
    memory = state["failures"][f"globex|{yesterday}"]
    assert memory[0] == 1 and memory[2] is True and "access token" in memory[3]

    # Once the cool-down has passed, the days are requested again.
    state["failures"] = {k: [v[0], time.time() - 2 * 3600, v[2], v[3]] for k, v in state["failures"].items()}
    result, cursor = tick(platform, defs, json.dumps(state))
    assert ranges(result) == {(f"globex|{yesterday - timedelta(days=1)}", f"globex|{yesterday}")}

    # A third failure makes the cool-down longer (4 h) and the day is reported.
    state = json.loads(cursor)
    state["failures"] = {k: [3, time.time() - 2 * 3600, True, v[3]] for k, v in state["failures"].items()}
    result, cursor = tick(platform, defs, json.dumps(state))
    assert not result.run_requests
