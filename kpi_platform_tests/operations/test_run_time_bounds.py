"""Every collection run's time bound (`dagster/max_runtime`), scaled to its range: the formula and its documented
figures, and the tags of the runs the schedule and the healer request."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from kpi_platform.keys import ClientRange
from kpi_platform.operations.plans import (
    MAX_RUNTIME_CAP_S,
    MAX_RUNTIME_TAG,
    CollectionRequest,
    max_runtime_seconds,
    missing_max_runtime_tag,
    plan_gap_healing,
)

DAY = date(2026, 11, 30)


@pytest.mark.parametrize(
    ("days", "seconds"),
    [
        (1, 1860),  # a one-day run (the healer's yesterday): 31 min
        (28, 3480),  # the daily lookback window: 58 min
        (90, 7200),  # the healing horizon, a quickstart: 2 h
        (330, 21600),  # the cap is reached at 330 days
        (366, 21600),  # a year's backfill: capped at 6 h
    ],
)
def test_the_bound_grows_with_the_range_up_to_the_cap(days, seconds):
    assert max_runtime_seconds(days) == seconds
    assert max_runtime_seconds(days) <= MAX_RUNTIME_CAP_S


def test_a_longer_range_never_gets_a_shorter_bound():
    bounds = [max_runtime_seconds(days) for days in range(1, 400)]
    assert bounds == sorted(bounds)
    assert bounds[0] < bounds[27] < bounds[89] < bounds[-1]


def test_a_run_covers_at_least_a_day():
    with pytest.raises(ValueError, match="at least one day"):
        max_runtime_seconds(0)


@pytest.mark.parametrize(("days", "seconds"), [(1, "1860"), (28, "3480"), (366, "21600")])
def test_requested_runs_carry_the_bound_of_their_range(days, seconds):
    request = CollectionRequest("acme", DAY - timedelta(days=days - 1), DAY, run_key="k", reason="daily")
    assert request.tags()[MAX_RUNTIME_TAG] == seconds


def test_the_healers_runs_carry_the_bound_of_their_range():
    keys = ClientRange("acme", DAY - timedelta(days=9), DAY).keys()
    plan = plan_gap_healing(
        keys=keys, statuses={}, reserved=set(), failures={}, now_ts=0.0, max_runs=5, tick=1
    )
    (request,) = plan.requests
    assert request.tags()[MAX_RUNTIME_TAG] == str(max_runtime_seconds(10))


def test_a_run_without_a_bound_gets_one_and_a_run_with_one_keeps_it():
    assert missing_max_runtime_tag({}, 3) == {MAX_RUNTIME_TAG: str(max_runtime_seconds(3))}
    assert missing_max_runtime_tag({MAX_RUNTIME_TAG: "99"}, 3) == {}
