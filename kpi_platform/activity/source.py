"""Reading the application database (profiles, posts, comments): counts per UTC day, as its rows stand now.

The application deletes rows outright, so a count is only true at the moment it is taken: totals of a past day
are rows still existing with created_at before that day's end. That is why stored snapshots are never rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.activity.metrics import SUBJECT_TABLES, TOTAL, Collector, collector_of

logger = logging.getLogger(__name__)

APP_TABLES: tuple[str, ...] = tuple(SUBJECT_TABLES.values())


class AppDatabaseError(RuntimeError):
    """The application database is missing, or lacks a table or its created_at column."""


@dataclass(frozen=True)
class DayActivity:
    """Metric values of one UTC day (metric → count), as counted at `ActivityCounts.taken_at`."""

    day: date
    values: dict[str, int]


@dataclass(frozen=True)
class ActivityCounts:
    """Counts of every day in [start, end], all read in one statement, so from one consistent state."""

    start: date
    end: date
    taken_at: datetime
    source: str
    days: tuple[DayActivity, ...]


def end_of_day(day: date) -> datetime:
    """The exclusive end of a UTC day: midnight UTC of the next day."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)


def app_engine(url: str | sa.URL) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL application database (PostgreSQL always through psycopg2)."""
    parsed = sa.make_url(url)
    backend = parsed.drivername.split("+", 1)[0]
    if backend == "sqlite":
        return sa.create_engine(parsed)
    if backend in ("postgresql", "postgres"):
        return sa.create_engine(parsed.set(drivername="postgresql+psycopg2"), pool_pre_ping=True)
    raise AppDatabaseError(
        f"unsupported application database URL {parsed.render_as_string(hide_password=True)}: "
        "use sqlite:///<path> or postgresql://user@host/db"
    )


def _app_table(name: str) -> sa.TableClause:
    return sa.table(name, sa.column("created_at", sa.DateTime(timezone=True)))


class AppDatabase:
    """The application database, read only. Construct from its URL; the password is never shown."""

    def __init__(self, url: str | sa.URL) -> None:
        self._engine = app_engine(url)

    def __repr__(self) -> str:
        return f"AppDatabase({self.url_for_display})"

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    @property
    def url_for_display(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def is_postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    def dispose(self) -> None:
        self._engine.dispose()

    def _check_reachable(self, tables: Sequence[str]) -> None:
        database = self._engine.url.database or ""
        if (
            self._engine.dialect.name == "sqlite"
            and database not in ("", ":memory:")
            and not Path(database).exists()
        ):
            # Connecting would create an empty file and then fail on the first table instead.
            raise AppDatabaseError(
                f"application database not found: {database}; set KPI_APP_DB_URL, or run `kpi-platform "
                "quickstart` to create the demo one"
            )
        with self._engine.connect() as conn:
            existing = set(sa.inspect(conn).get_table_names())
            missing = [t for t in tables if t not in existing]
            if missing:
                raise AppDatabaseError(
                    f"application database {self.url_for_display} lacks table(s) {missing}; expected "
                    f"{list(tables)}, each with a created_at column"
                )
            for table in tables:
                columns = {c["name"] for c in sa.inspect(conn).get_columns(table)}
                if "created_at" not in columns:
                    raise AppDatabaseError(
                        f"application database {self.url_for_display}: table {table} has no created_at column"
                    )

    def count_days(
        self,
        *,
        start: date,
        end: date,
        now: datetime | None = None,
        metrics: Sequence[str] = settings.ACTIVITY_METRICS,
    ) -> ActivityCounts:
        """Values of `metrics` for every UTC day in [start, end], counted from the rows existing now.

        `*_created` counts rows with created_at in day d; totals count rows with created_at before the end of d.
        Only the tables the metrics count are read. Raises ValueError for an empty range, a day that has not
        ended yet (its counts would not be final) or a metric no collector counts (`metrics.collector_of`),
        AppDatabaseError when the database or a table is missing. Rows without created_at are not counted.
        """
        taken_at = (now or datetime.now(UTC)).astimezone(UTC)
        collectors: list[Collector] = []
        for metric in metrics:
            collector = collector_of(metric)
            if collector is None:
                raise ValueError(f"no collector counts activity metric {metric!r}")
            collectors.append(collector)
        if not collectors:
            raise ValueError("no activity metric to count")
        tables = tuple(dict.fromkeys(c.table for c in collectors))
        if end < start:
            raise ValueError(f"activity range ends ({end}) before it starts ({start})")
        if end_of_day(end) > taken_at:
            raise ValueError(
                f"day {end} has not ended yet (UTC, now {taken_at:%Y-%m-%d %H:%M}); a snapshot of it would not be final"
            )
        self._check_reachable(tables)
        per_table = self._created_per_day(end=end, tables=tables)
        running = {table: sum(n for day, n in per_table[table].items() if day < start) for table in tables}
        days: list[DayActivity] = []
        day = start
        while day <= end:
            for table in tables:
                running[table] += per_table[table].get(day, 0)
            values = {
                c.metric: running[c.table] if c.kind == TOTAL else per_table[c.table].get(day, 0)
                for c in collectors
            }
            days.append(DayActivity(day=day, values=values))
            day += timedelta(days=1)
        return ActivityCounts(
            start=start, end=end, taken_at=taken_at, source=self.url_for_display, days=tuple(days)
        )

    def _created_per_day(self, *, end: date, tables: Sequence[str]) -> dict[str, dict[date, int]]:
        """Rows per UTC creation day up to `end`, per table, from one UNION ALL statement."""
        selects = []
        for name in tables:
            table = _app_table(name)
            if self.is_postgres:
                # The session time zone is set to UTC below, so the cast yields the UTC day for both
                # `timestamp with time zone` and naive (UTC) `timestamp` columns.
                day_of: sa.ColumnElement[Any] = sa.cast(table.c.created_at, sa.Date)
                in_range = table.c.created_at < end_of_day(end)
            else:
                # SQLite keeps text; date() normalises 'T' separators and UTC offsets to the UTC day.
                day_of = sa.func.date(table.c.created_at)
                in_range = day_of <= end.isoformat()
            selects.append(
                sa.select(
                    sa.literal(name).label("source_table"), day_of.label("day"), sa.func.count().label("n")
                )
                .select_from(table)
                .where(in_range)
                .group_by(day_of)
            )
        per_table: dict[str, dict[date, int]] = {name: {} for name in tables}
        with self._engine.connect() as conn, conn.begin():
            if self.is_postgres:
                conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
            for source_table, day, n in conn.execute(sa.union_all(*selects)):
                if day is None:
                    continue
                key = day if isinstance(day, date) else date.fromisoformat(str(day))
                per_table[source_table][key] = int(n)
        return per_table
