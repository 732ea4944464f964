"""The freshness scale of stored rows: bounds, naive timestamps and bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pandas as pd
import pytest

from kpi_platform.warehouse.indicators import FRESHNESS_LEVELS, freshness_level, freshness_levels

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (timedelta(0), "< 1 h"),
        (timedelta(minutes=59, seconds=59), "< 1 h"),
        (timedelta(hours=1), "< 6 h"),
        (timedelta(hours=5, minutes=59), "< 6 h"),
        (timedelta(hours=6), "< 24 h"),
        (timedelta(hours=23, minutes=59), "< 24 h"),
        (timedelta(hours=24), "older"),
        (timedelta(days=40), "older"),
        (timedelta(minutes=-5), "< 1 h"),
    ],
)
def test_levels_by_age(age: timedelta, expected: str) -> None:
    assert freshness_level(NOW - age, NOW) == expected
    assert expected in FRESHNESS_LEVELS


def test_naive_timestamps_are_utc_and_zones_compare_as_instants() -> None:
    naive = datetime(2026, 3, 10, 6, 30)
    assert freshness_level(naive, NOW) == "< 6 h"
    paris = timezone(timedelta(hours=1))
    assert freshness_level(datetime(2026, 3, 10, 12, 30, tzinfo=paris), NOW) == "< 1 h"


def test_levels_are_the_published_labels() -> None:
    assert FRESHNESS_LEVELS == ("< 1 h", "< 6 h", "< 24 h", "older")


def test_a_non_datetime_is_refused() -> None:
    with pytest.raises(TypeError, match="fetched_at must be a datetime"):
        freshness_level("2026-03-10", NOW)  # type: ignore[arg-type]


def test_a_column_gets_the_same_levels_at_the_bounds_without_a_row_loop() -> None:
    ages = [timedelta(minutes=59, seconds=59), timedelta(hours=1), timedelta(hours=6), timedelta(hours=24)]
    stamps = pd.Series([NOW - age for age in ages] + [None], index=[10, 11, 12, 13, 14])
    levels = freshness_levels(stamps, NOW)
    assert list(levels.index) == [10, 11, 12, 13, 14]
    assert levels.tolist()[:4] == [freshness_level(NOW - age, NOW) for age in ages]
    assert levels.tolist()[:4] == ["< 1 h", "< 6 h", "< 24 h", "older"]
    assert levels.isna().tolist() == [False, False, False, False, True]
    # Ordered freshest first, so a column sorts and compares by level.
    assert levels.iloc[0] < levels.iloc[3] and levels.max() == "older"


def test_a_naive_column_is_utc() -> None:
    naive = pd.Series([datetime(2026, 3, 10, 6, 30), datetime(2026, 3, 10, 11, 30)])
    assert freshness_levels(naive, NOW).tolist() == ["< 6 h", "< 1 h"]
    assert freshness_levels(pd.Series([], dtype="datetime64[ns, UTC]"), NOW).tolist() == []
