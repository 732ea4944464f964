"""The domain's key vocabulary: `client|date` partition keys, client ranges, and the tags that name a range run.

Every partition of the daily asset is a client and a day (`acme|2026-11-30`), every partition of the monthly
summary a client and a month's first day (`acme|2026-11-01`): Dagster's multi-partition keys, whose dimensions
sort alphabetically, so the client comes first. A run over several days of one client carries the range tags
(`dagster/asset_partition_range_start|end`) with the first and last key, the way a single-run backfill does.
The activity snapshot's plain date partitions (`2026-11-30`) use the same range tags (`day_range_tags`).
This module is the only place that builds or splits those strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta

SEPARATOR = "|"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"


class InvalidKeyError(ValueError):
    """A string that is not a `client|YYYY-MM-DD` key."""


def client_day_key(client_id: str, day: date) -> str:
    """`acme|2026-11-30`; a month's key is the key of its first day."""
    return f"{client_id}{SEPARATOR}{day.isoformat()}"


def parse_key(key: object) -> tuple[str, date]:
    """(client_id, day) of a `client|date` key, a Dagster MultiPartitionKey included (it is a str)."""
    text = str(key)
    client_id, sep, day = text.partition(SEPARATOR)
    if not sep or not client_id or SEPARATOR in day:
        raise InvalidKeyError(f"{text!r} is not a client|YYYY-MM-DD key")
    try:
        return client_id, date.fromisoformat(day)
    except ValueError:
        raise InvalidKeyError(f"{text!r} is not a client|YYYY-MM-DD key") from None


def client_of(key: object) -> str:
    """The client of a `client|date` key."""
    return parse_key(key)[0]


def is_client_key(key: object) -> bool:
    """True for a `client|date` key; False for a single-dimension key or an empty string."""
    try:
        parse_key(key)
    except InvalidKeyError:
        return False
    return True


def contiguous(days: Iterable[date]) -> list[tuple[date, date]]:
    """Sorted, de-duplicated days as inclusive (first, last) runs of consecutive days."""
    spans: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if spans and day == spans[-1][1] + timedelta(days=1):
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    return spans


@dataclass(frozen=True)
class ClientRange:
    """One client and one contiguous, inclusive date range."""

    client_id: str
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def keys(self) -> list[str]:
        """Every `client|date` key of the range, in order."""
        return [client_day_key(self.client_id, self.start + timedelta(days=i)) for i in range(self.days)]

    def tags(self) -> dict[str, str]:
        """The range tags that make one run over the whole range (as a single-run backfill does)."""
        return {
            RANGE_START_TAG: client_day_key(self.client_id, self.start),
            RANGE_END_TAG: client_day_key(self.client_id, self.end),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ClientRange | None:
        """The range a run covers, from its range tags or its single `client|date` partition tag; None for a run
        that covers no client-days (another job)."""
        return cls.from_tag_values(
            tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG), tags.get(PARTITION_TAG)
        )

    @classmethod
    def from_tag_values(cls, start: str | None, end: str | None, partition: str | None) -> ClientRange | None:
        """`from_tags` from the values of the range start, range end and partition tags (None where a run has no
        such tag), as a query of the run storage returns them."""
        # Each key parsed once: the health report reads a month of a thousand clients' runs through here.
        try:
            if start and end:
                (client_id, first), (_, last) = parse_key(start), parse_key(end)
                return cls(client_id, first, last)
            client_id, day = parse_key(partition or "")
        except InvalidKeyError:
            return None
        return cls(client_id, day, day)


def keys_of_range(client_id: str, start: date, end: date) -> list[str]:
    """Every `client|date` key from `start` to `end` inclusive."""
    return ClientRange(client_id, start, end).keys()


def client_ranges(partition_keys: Iterable[object]) -> list[ClientRange]:
    """`client|date` keys as one range per client and run of consecutive days (a gap splits a client's range),
    clients in the order they first appear."""
    by_client: dict[str, list[date]] = {}
    for key in partition_keys:
        client_id, day = parse_key(key)
        by_client.setdefault(client_id, []).append(day)
    return [
        ClientRange(client_id, first, last)
        for client_id, days in by_client.items()
        for first, last in contiguous(days)
    ]


# --- Plain date partitions (the activity snapshot) ----------------------------------------------------------------


def day_range_tags(start: date, end: date) -> dict[str, str]:
    """The range tags of one run over the days `start`..`end` of a date-partitioned asset."""
    return {RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: end.isoformat()}


def day_range_from_tags(tags: Mapping[str, str]) -> tuple[date, date] | None:
    """(first, last) day a run of a date-partitioned asset covers, from its range tags or its partition tag; None
    for a run without plain `YYYY-MM-DD` tags (a client-day run, an unpartitioned job)."""
    start, end = tags.get(RANGE_START_TAG), tags.get(RANGE_END_TAG)
    if not (start and end):
        start = end = tags.get(PARTITION_TAG)
    if not (start and end):
        return None
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        return None
    return (first, last) if first <= last else None
