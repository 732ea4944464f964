"""Completeness over each client's whole history: its start day → its due day, counted in SQL.

A client's history starts on its `start_date` from clients.yaml. Without one it starts on the first day collected
for it (min `kpi_date`); a client with no data at all is expected to have the recent window the gap healer covers
(`default_days` up to its due day).

Three years of 200 clients are 219,000 client-days, so they are never loaded into Python: one query, grouped by
client and block of `BLOCK_DAYS` days, counts each client's present days, finds its first collected day and sums
one bit per stored day, so a block whose count falls short names its missing days from its bitmask. That is one
row per client and month or so (7,000 for 200 × 3 years), the same on SQLite and PostgreSQL, and nothing sorts the
table: listing gaps with a window function over every row took 0.5 s at that size, reading the short blocks' rows
back took longer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.keys import contiguous
from kpi_platform.warehouse import schema

if TYPE_CHECKING:
    from kpi_platform.warehouse import Warehouse

#: Days per block of the grouped count: about a month, and one bit per day of a 64-bit integer to spare.
BLOCK_DAYS = 32
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class ClientHistory:
    """One client's history, `start` → `end` inclusive (empty when `start` > `end`): how many of its days have a
    client_daily_kpis row, and, when some do not, its missing ranges (inclusive, newest first) up to `listed_end`
    (`end` unless only the older part was asked for)."""

    client_id: str
    start: date
    end: date
    #: The first day collected for the client from its `start_date` (if any) to `end`; None when there is none.
    first_collected: date | None
    #: Whether `start` is the client's `start_date` from clients.yaml (else the default rule).
    start_configured: bool
    present_days: int
    missing_ranges: tuple[tuple[date, date], ...] = ()
    #: The last day `missing_ranges` covers.
    listed_end: date | None = None

    @property
    def expected_days(self) -> int:
        return max(0, (self.end - self.start).days + 1)

    @property
    def missing_days(self) -> int:
        return self.expected_days - self.present_days

    @property
    def oldest_missing_day(self) -> date | None:
        """The oldest missing day (up to `listed_end`)."""
        return self.missing_ranges[-1][0] if self.missing_ranges else None

    def is_missing(self, day: date) -> bool:
        """Whether `day` (up to `listed_end`) is one of the missing days; days outside the history are not."""
        return any(start <= day <= end for start, end in self.missing_ranges)


def history_start(client: Client, *, first_collected: date | None, end: date, default_days: int) -> date:
    """The first day `client` is expected to have: its `start_date`, else its first collected day, else (nothing
    collected yet) the first of the `default_days` ending on `end`; never before the first daily partition."""
    if client.start_date is not None:
        start = client.start_date
    elif first_collected is not None:
        start = first_collected
    else:
        start = end - timedelta(days=default_days - 1)
    return max(date.fromisoformat(settings.PARTITIONS_START_DATE), start)


def _windows(rows: Iterable[tuple[str, date, date]], name: str) -> sa.CTE:
    """Client windows (`client_id`, `first_day`, `last_day`) as a small table to join, so one grouped query gives
    every client its own window: `WITH name(...) AS (VALUES ...)`, which SQLite and PostgreSQL both read."""
    return (
        sa.values(
            sa.column("client_id", sa.String()),
            sa.column("first_day", sa.Date()),
            sa.column("last_day", sa.Date()),
            name=name,
        )
        .data(list(rows))
        .cte(name)
    )


def _day_number(column: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """Whole days since 1970-01-01, so that a block is an integer division away."""
    if dialect == "sqlite":
        # julianday() of a date is its midnight, x.5 days: minus 1970-01-01's, a whole number.
        return sa.cast(sa.func.julianday(column) - 2440587.5, sa.Integer)
    return column - sa.literal(_EPOCH, sa.Date())


def _block_days(block: int) -> tuple[date, date]:
    first = _EPOCH + timedelta(days=block * BLOCK_DAYS)
    return first, first + timedelta(days=BLOCK_DAYS - 1)


def _overlap(a: tuple[date, date], b: tuple[date, date]) -> tuple[date, date] | None:
    first, last = max(a[0], b[0]), min(a[1], b[1])
    return (first, last) if first <= last else None


def read_histories(
    warehouse: Warehouse,
    clients: Sequence[Client],
    *,
    ends: Mapping[str, date],
    default_days: int = settings.HEALING_HORIZON_DAYS,
    list_before: Mapping[str, date] | None = None,
) -> dict[str, ClientHistory]:
    """Each client's `ClientHistory` up to its `ends` day, from one query grouped by client and block.

    With `list_before`, missing ranges are listed only before each client's `list_before` day (gap healing reads its
    recent window from Dagster instead); the counts always cover the whole history.
    """
    if not clients:
        return {}
    table = schema.client_daily_kpis
    first_partition = date.fromisoformat(settings.PARTITIONS_START_DATE)
    listed_end = {
        c.id: min(ends[c.id], list_before[c.id] - timedelta(days=1))
        if list_before is not None and c.id in list_before
        else ends[c.id]
        for c in clients
    }
    with warehouse.engine.connect() as conn:
        # Counting from the configured start, or from the first partition when the start is the first collected
        # day: no row precedes that day, so both count the same rows.
        bounds = _windows(((c.id, c.start_date or first_partition, ends[c.id]) for c in clients), "windows")
        day = _day_number(table.c.kpi_date, conn.dialect.name)
        block = (day // BLOCK_DAYS).label("block")
        # One bit per stored day of the block (a client has one row per day, so the sum is a bitwise OR).
        bit = sa.cast(sa.literal(1), sa.BigInteger()).op("<<")(day % BLOCK_DAYS)
        counts = (
            sa.select(
                table.c.client_id, block, sa.func.count(), sa.func.min(table.c.kpi_date), sa.func.sum(bit)
            )
            .select_from(table.join(bounds, bounds.c.client_id == table.c.client_id))
            .where(table.c.kpi_date.between(bounds.c.first_day, bounds.c.last_day))
            .group_by(table.c.client_id, block)
        )
        per_block: dict[str, dict[int, tuple[int, int]]] = {c.id: {} for c in clients}
        firsts: dict[str, date] = {}
        for cid, number, n, first, mask in conn.execute(counts):
            per_block[cid][int(number)] = (int(n), int(mask))
            first = _as_date(first)
            firsts[cid] = min(firsts.get(cid, first), first)

    histories: dict[str, ClientHistory] = {}
    for client in clients:
        end = ends[client.id]
        first = firsts.get(client.id)
        start = history_start(client, first_collected=first, end=end, default_days=default_days)
        blocks = per_block[client.id]
        histories[client.id] = ClientHistory(
            client_id=client.id,
            start=start,
            end=end,
            first_collected=first,
            start_configured=client.start_date is not None,
            present_days=sum(n for n, _ in blocks.values()),
            missing_ranges=_missing_ranges(blocks, start, end, listed_end[client.id]),
            listed_end=listed_end[client.id],
        )
    return histories


def _missing_ranges(
    blocks: Mapping[int, tuple[int, int]], start: date, end: date, listed_end: date
) -> tuple[tuple[date, date], ...]:
    """The missing ranges of [start, listed_end], newest first, from each block's (count, bitmask of stored days)."""
    ranges: list[tuple[date, date]] = []
    if start > listed_end:
        return ()
    for number in range((start - _EPOCH).days // BLOCK_DAYS, (listed_end - _EPOCH).days // BLOCK_DAYS + 1):
        days = _overlap(_block_days(number), (start, end))
        listed = _overlap(_block_days(number), (start, listed_end))
        count, mask = blocks.get(number, (0, 0))
        if days is None or listed is None or count >= (days[1] - days[0]).days + 1:
            continue
        if not count:
            ranges.append(listed)
            continue
        first_of_block = _block_days(number)[0]
        missing = [
            d
            for d in (listed[0] + timedelta(days=i) for i in range((listed[1] - listed[0]).days + 1))
            if not mask >> (d - first_of_block).days & 1
        ]
        ranges += contiguous(missing)
    return _merged_newest_first(ranges)


def _merged_newest_first(ranges: Sequence[tuple[date, date]]) -> tuple[tuple[date, date], ...]:
    """Sorted, disjoint ranges with the adjacent ones joined (a gap crossing a block boundary), newest first."""
    merged: list[tuple[date, date]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(reversed(merged))


def _as_date(value: date | str) -> date:
    # Aggregates over a date column may come back from SQLite as the stored text.
    return date.fromisoformat(value) if isinstance(value, str) else value
