"""Partition definitions: daily date × client for collection, month × client for summaries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg

from kpi_platform import settings

clients_partitions = dg.DynamicPartitionsDefinition(name="clients")
daily_partitions = dg.DailyPartitionsDefinition(start_date=settings.PARTITIONS_START_DATE)
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=settings.PARTITIONS_START_DATE)

#: Keys read `client|date` (dimension names sort alphabetically).
client_daily_partitions = dg.MultiPartitionsDefinition(
    {"date": daily_partitions, "client": clients_partitions}
)
#: Keys read `client|month` with the month's first day, e.g. `acme|2026-10-01`.
client_monthly_partitions = dg.MultiPartitionsDefinition(
    {"month": monthly_partitions, "client": clients_partitions}
)

#: A month depends on each of its days, for the same client.
daily_to_monthly = dg.MultiPartitionMapping(
    {
        "date": dg.DimensionPartitionMapping("month", dg.TimeWindowPartitionMapping()),
        "client": dg.DimensionPartitionMapping("client", dg.IdentityPartitionMapping()),
    }
)


@dataclass(frozen=True)
class ClientRange:
    """One client and one contiguous, inclusive date range."""

    client_id: str
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def client_ranges(partition_keys: list[str], time_dimension: str = "date") -> list[ClientRange]:
    """Split `client|date` keys into one contiguous range per client (gaps split a client's range)."""
    by_client: dict[str, list[date]] = {}
    for key in partition_keys:
        mk = key if isinstance(key, dg.MultiPartitionKey) else None
        if mk is not None:
            client_id, day = mk.keys_by_dimension["client"], mk.keys_by_dimension[time_dimension]
        else:
            client_id, day = key.split("|")
        by_client.setdefault(client_id, []).append(date.fromisoformat(day))
    ranges: list[ClientRange] = []
    for client_id, days in by_client.items():
        days = sorted(set(days))
        start = prev = days[0]
        for day in days[1:]:
            if day != prev + timedelta(days=1):
                ranges.append(ClientRange(client_id, start, prev))
                start = day
            prev = day
        ranges.append(ClientRange(client_id, start, prev))
    return ranges


def client_day_key(client_id: str, day: date) -> str:
    return f"{client_id}|{day.isoformat()}"
