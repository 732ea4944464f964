"""The `client|date` key vocabulary: format, parse, ranges and range tags."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from kpi_platform.keys import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    ClientRange,
    InvalidKeyError,
    client_day_key,
    client_of,
    client_ranges,
    contiguous,
    day_range_from_tags,
    day_range_tags,
    is_client_key,
    keys_of_range,
    parse_key,
)


def test_a_key_round_trips_and_a_multi_partition_key_parses_like_its_string():
    key = client_day_key("acme", date(2026, 11, 30))
    assert key == "acme|2026-11-30"
    assert parse_key(key) == ("acme", date(2026, 11, 30))
    multi = dg.MultiPartitionKey({"client": "acme", "date": "2026-11-30"})
    assert parse_key(multi) == ("acme", date(2026, 11, 30))
    assert client_of(multi) == "acme"


@pytest.mark.parametrize("bad", ["", "acme", "acme|", "|2026-11-30", "acme|2026-13-01", "a|b|2026-11-30"])
def test_anything_else_is_refused_with_the_key_named(bad):
    assert not is_client_key(bad)
    with pytest.raises(InvalidKeyError, match="client\\|YYYY-MM-DD"):
        parse_key(bad)


def test_contiguous_sorts_deduplicates_and_splits_at_gaps():
    days = [date(2026, 1, 3), date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 2), date(2026, 1, 5)]
    assert contiguous(days) == [(date(2026, 1, 1), date(2026, 1, 3)), (date(2026, 1, 5), date(2026, 1, 5))]
    assert contiguous([]) == []


def test_client_ranges_give_one_range_per_client_and_run_of_days():
    keys = ["b|2026-01-02", "a|2026-01-01", "b|2026-01-01", "a|2026-01-03", "a|2026-01-02", "b|2026-01-04"]
    assert client_ranges(keys) == [
        ClientRange("b", date(2026, 1, 1), date(2026, 1, 2)),
        ClientRange("b", date(2026, 1, 4), date(2026, 1, 4)),
        ClientRange("a", date(2026, 1, 1), date(2026, 1, 3)),
    ]


def test_a_range_lists_its_keys_and_round_trips_through_its_tags():
    rng = ClientRange("acme", date(2025, 12, 30), date(2026, 1, 2))
    assert rng.days == 4
    assert (
        rng.keys()
        == keys_of_range("acme", rng.start, rng.end)
        == [
            "acme|2025-12-30",
            "acme|2025-12-31",
            "acme|2026-01-01",
            "acme|2026-01-02",
        ]
    )
    assert rng.tags() == {RANGE_START_TAG: "acme|2025-12-30", RANGE_END_TAG: "acme|2026-01-02"}
    assert ClientRange.from_tags(rng.tags()) == rng


def test_a_run_of_another_job_covers_no_client_days():
    assert ClientRange.from_tags({"dagster/partition": "acme|2026-01-01"}) == ClientRange(
        "acme", date(2026, 1, 1), date(2026, 1, 1)
    )
    assert ClientRange.from_tags({"dagster/partition": "2026-01-01"}) is None
    assert ClientRange.from_tags({RANGE_START_TAG: "2026-01-01", RANGE_END_TAG: "2026-01-31"}) is None
    assert ClientRange.from_tags({}) is None


def test_plain_date_range_tags_round_trip_and_client_keys_are_not_dates():
    first, last = date(2026, 11, 1), date(2026, 11, 3)
    tags = day_range_tags(first, last)
    assert tags == {RANGE_START_TAG: "2026-11-01", RANGE_END_TAG: "2026-11-03"}
    assert day_range_from_tags(tags) == (first, last)
    assert day_range_from_tags({"dagster/partition": "2026-11-02"}) == (date(2026, 11, 2), date(2026, 11, 2))
    assert day_range_from_tags(ClientRange("acme", first, last).tags()) is None
    assert day_range_from_tags({"dagster/partition": "acme|2026-11-02"}) is None
    assert day_range_from_tags(day_range_tags(last, first)) is None
    assert day_range_from_tags({}) is None
