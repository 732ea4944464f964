"""Reading the application database (profiles, posts, comments): counts per UTC day, as its rows stand now.

The application deletes rows outright, so a count is only true at the moment it is taken: totals of a past day
are rows still existing with created_at before that day's end. That is why stored snapshots are never rewritten.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from kpi_platform.activity.metrics import TABLE_METRICS

logger = logging.getLogger(__name__)

APP_TABLES: tuple[str, ...] = tuple(table for table, _, _ in TABLE_METRICS)


class AppDatabaseError(RuntimeError):
    """The application database is missing, or lacks a table or its created_at column."""


@dataclass(frozen=True)
class DayActivity:
    """Metric values of one UTC day (metric type → count), as counted at `ActivityCounts.taken_at`."""

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

    def _check_reachable(self) -> None:
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
            missing = [t for t in APP_TABLES if t not in existing]
            if missing:
                raise AppDatabaseError(
                    f"application database {self.url_for_display} lacks table(s) {missing}; expected "
                    f"{list(APP_TABLES)}, each with a created_at column"
                )
            for table in APP_TABLES:
                columns = {c["name"] for c in sa.inspect(conn).get_columns(table)}
                if "created_at" not in columns:
                    raise AppDatabaseError(
                        f"application database {self.url_for_display}: table {table} has no created_at column"
                    )

    def count_days(self, *, start: date, end: date, now: datetime | None = None) -> ActivityCounts:
        """Metric values of every UTC day in [start, end], counted from the rows existing now.

        `*_created` counts rows with created_at in day d; totals count rows with created_at before the end of d.
        Raises ValueError for an empty range or a day that has not ended yet (its counts would not be final),
        AppDatabaseError when the database or a table is missing. Rows without created_at are not counted.
        """
        taken_at = (now or datetime.now(UTC)).astimezone(UTC)
        if end < start:
            raise ValueError(f"activity range ends ({end}) before it starts ({start})")
        if end_of_day(end) > taken_at:
            raise ValueError(
                f"day {end} has not ended yet (UTC, now {taken_at:%Y-%m-%d %H:%M}); a snapshot of it would not be final"
            )
        self._check_reachable()
        per_table = self._created_per_day(end=end)
        running = {
            table: sum(n for day, n in per_table[table].items() if day < start) for table in APP_TABLES
        }
        days: list[DayActivity] = []
        day = start
        while day <= end:
            values: dict[str, int] = {}
            for table, total_type, created_type in TABLE_METRICS:
                created = per_table[table].get(day, 0)
                running[table] += created
                values[total_type] = running[table]
                if created_type is not None:
                    values[created_type] = created
            days.append(DayActivity(day=day, values=values))
            day += timedelta(days=1)
        return ActivityCounts(
            start=start, end=end, taken_at=taken_at, source=self.url_for_display, days=tuple(days)
        )

    def _created_per_day(self, *, end: date) -> dict[str, dict[date, int]]:
        """Rows per UTC creation day up to `end`, per table, from one UNION ALL statement."""
        selects = []
        for name in APP_TABLES:
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
        per_table: dict[str, dict[date, int]] = {name: {} for name in APP_TABLES}
        with self._engine.connect() as conn, conn.begin():
            if self.is_postgres:
                conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")
            for source_table, day, n in conn.execute(sa.union_all(*selects)):
                if day is None:
                    continue
                key = day if isinstance(day, date) else date.fromisoformat(str(day))
                per_table[source_table][key] = int(n)
        return per_table
