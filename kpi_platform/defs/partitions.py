"""Partition definitions: daily date × client for collection, month × client for summaries."""

from __future__ import annotations

import dagster as dg

from kpi_platform import settings

#: The dynamic partitions' name as a plain `str` (`DynamicPartitionsDefinition.name` is optional).
CLIENTS_PARTITIONS_NAME = "clients"
clients_partitions = dg.DynamicPartitionsDefinition(name=CLIENTS_PARTITIONS_NAME)
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
