"""The query API of the warehouse: platform activity and client KPIs over a date range at a daily, weekly or
monthly grain, with the missing days named and never filled in.

Weeks are ISO weeks (Monday to Sunday), months calendar months. A period only partly inside the range covers
the days inside it (`period_start`, `period_end`); `days_present` of `days_expected` says how complete it is.
A period without any stored day has no row: `QueryResult.gaps` names it, nothing is invented.

Every KPI row carries its indicators: where it came from (`source`), how good it is (`quality_score`, `issues`),
how fresh (`fetched_at`, `freshness`) and how settled (`days_final`); see `query_kpis`. Activity rows carry
`quality_score`, `issues`, `fetched_at` and `freshness` too; see `query_activity`.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import re
import threading
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.warehouse import conversion_tracking, schema
from kpi_platform.warehouse.indicators import freshness_levels
from kpi_platform.warehouse.readiness import open_warehouse
from kpi_platform.warehouse.store import Warehouse

GRAINS: tuple[str, ...] = ("daily", "weekly", "monthly")
_DATE_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}")

KPI_COLUMNS: tuple[str, ...] = (
    "client_id",
    "period",
    "period_start",
    "period_end",
    "days_present",
    "days_expected",
    "currency",
    "source",
    "spend",
    "impressions",
    "clicks",
    "ctr_pct",
    "cpc",
    *settings.CONVERSION_COLUMNS,
    "idle_days",
    *("days_final", "quality_score", "issues", "fetched_at", "freshness"),
    "conversion_tracking",
)
ACTIVITY_COLUMNS: tuple[str, ...] = (
    "metric_category",
    "metric_type",
    "period",
    "period_start",
    "period_end",
    "days_present",
    "days_expected",
    "value",
    "as_of",
    "aggregation",
    "unit",
    *("quality_score", "issues", "fetched_at", "freshness"),
)
#: Issues of an activity snapshot (a stored day × metric), each a failed check; see `query_activity`.
ACTIVITY_ISSUE_LATE = "late"
ACTIVITY_ISSUE_TOTALS_MISMATCH = "totals_mismatch"
KPI_GAP_COLUMNS: tuple[str, ...] = ("client_id", "gap_start", "gap_end", "days")
ACTIVITY_GAP_COLUMNS: tuple[str, ...] = ("metric_category", "metric_type", "gap_start", "gap_end", "days")


class InvalidQueryError(ValueError):
    """A query argument is malformed or names something the warehouse does not know; the message says which."""


@dataclass(frozen=True, eq=False)
class QueryResult:
    """One answer: `frame` (one row per key × period with data), `gaps` (missing days as contiguous ranges)."""

    kind: str
    start: date
    end: date
    grain: str
    frame: pd.DataFrame
    gaps: pd.DataFrame

    @property
    def complete(self) -> bool:
        return self.gaps.empty

    @property
    def days_missing(self) -> int:
        return int(self.gaps["days"].sum()) if not self.gaps.empty else 0

    def to_records(self) -> list[dict[str, Any]]:
        """Rows of `frame` as plain Python values: int, float, str, date, datetime (UTC), list; None where a value
        is undefined."""
        return _records(self.frame)

    def gap_records(self) -> list[dict[str, Any]]:
        return _records(self.gaps)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    objects = frame.astype(object)
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.DatetimeTZDtype):
            objects[name] = pd.Series(frame[name].array.to_pydatetime(), index=frame.index, dtype=object)
    return objects.where(frame.notna(), None).to_dict("records")  # type: ignore[call-overload]  # pandas-stubs 2.x: `other` lacks None, which pandas accepts


def open_reader() -> Warehouse:
    """The warehouse for queries, as the analysts' read-only role: KPI_WAREHOUSE_READER_URL (KPI_WAREHOUSE_URL
    when unset), checked to exist and to be migrated, never created or changed. Dispose of it when done."""
    return open_warehouse(settings.warehouse_reader_url())


# --- Argument checks --------------------------------------------------------------------------------------------


def parse_date(value: object, *, name: str) -> date:
    """A `date` or a 'YYYY-MM-DD' string as a date; InvalidQueryError for anything else."""
    if isinstance(value, datetime):
        raise InvalidQueryError(
            f"{name} must be a date or 'YYYY-MM-DD', got a datetime ({value.isoformat()})"
        )
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not _DATE_PATTERN.fullmatch(value.strip()):
        raise InvalidQueryError(f"{name} must be a date in the form YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise InvalidQueryError(f"{name} {value!r} is not a valid date ({exc})") from None


def validate_range(
    start: date | str, end: date | str, *, allow_long_range: bool = False
) -> tuple[date, date]:
    """Parsed (start, end): start ≤ end and at most MAX_QUERY_DAYS days unless `allow_long_range`."""
    first, last = parse_date(start, name="start"), parse_date(end, name="end")
    if first > last:
        raise InvalidQueryError(f"start {first} is after end {last}")
    days = (last - first).days + 1
    if days > settings.MAX_QUERY_DAYS and not allow_long_range:
        raise InvalidQueryError(
            f"range {first}..{last} spans {days} days; at most {settings.MAX_QUERY_DAYS} are answered unless a "
            "longer range is asked for explicitly (allow_long_range=True, --allow-long-range)"
        )
    return first, last


def validate_grain(grain: str) -> str:
    if grain not in GRAINS:
        raise InvalidQueryError(f"grain {grain!r} is not one of {', '.join(GRAINS)}")
    return grain


def _names(values: str | Iterable[str] | None, *, what: str) -> list[str] | None:
    """None stays None (no filter); a lone string is one name; an empty list is an error (it selects nothing)."""
    if values is None:
        return None
    names = [values] if isinstance(values, str) else list(values)
    if not names:
        raise InvalidQueryError(f"an empty list of {what} selects nothing; pass None for all")
    return sorted(dict.fromkeys(str(n) for n in names))


# --- Periods ----------------------------------------------------------------------------------------------------


def period_of(day: date, grain: str) -> date:
    """First day of the period holding `day`: the day, its ISO week's Monday, or its month's first day."""
    if grain == "weekly":
        return day - timedelta(days=day.weekday())
    if grain == "monthly":
        return day.replace(day=1)
    return day


def _period_last(first: date, grain: str) -> date:
    if grain == "weekly":
        return first + timedelta(days=6)
    if grain == "monthly":
        following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        return following - timedelta(days=1)
    return first


def _period_table(start: date, end: date, grain: str) -> pd.DataFrame:
    """Every period touching [start, end] with the days of it inside the range."""
    rows = []
    period = period_of(start, grain)
    while period <= end:
        last = _period_last(period, grain)
        first_in, last_in = max(period, start), min(last, end)
        rows.append((period, first_in, last_in, (last_in - first_in).days + 1))
        period = last + timedelta(days=1)
    return pd.DataFrame(rows, columns=["period", "period_start", "period_end", "days_expected"])


def _gap_ranges(missing: Iterable[date]) -> list[tuple[date, date, int]]:
    ranges: list[list[date]] = []
    for day in sorted(missing):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return [(a, b, (b - a).days + 1) for a, b in ranges]


def _missing_days(start: date, end: date, present: set[date]) -> list[date]:
    return [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if start + timedelta(days=i) not in present
    ]


# --- Activity ---------------------------------------------------------------------------------------------------


def query_activity(
    warehouse: Warehouse,
    *,
    start: date | str,
    end: date | str,
    grain: str = "daily",
    categories: str | Iterable[str] | None = None,
    types: str | Iterable[str] | None = None,
    allow_long_range: bool = False,
    now: datetime | None = None,
) -> QueryResult:
    """Platform activity metrics (daily_metrics) in [start, end] at a grain, optionally of some categories (the
    metrics, e.g. 'posts_total') and types (the kinds of figure, e.g. 'count').

    Per metric and period: `value` is the sum of the present days for 'sum' metrics (e.g. posts_created) and
    the value of the last present day for 'last' metrics (totals), which `as_of` names. Unknown categories or
    types raise InvalidQueryError listing the known ones. Inactive definitions are answered like the others:
    their stored days are history; the days since they were switched off are gaps.

    Each row's indicators, as of `now` (default: the current time). Each stored snapshot (day × metric) has
    two checks, counted where they apply:
    - on time: not labelled `late` in its metadata (taken after the day was due, 02:00 UTC the next day, so rows
      deleted since the day ended are not in its counts); issue "late". A row without the label is on time.
    - totals match creations, for a `<x>_total` / `<x>_created` pair of the same kind when the day's two values
      and the previous day's total are stored: total(d) − total(d−1) = created(d); else issue
      "totals_mismatch" on both metrics (rows deleted or backdated between the two snapshots).
    - `quality_score`: the percentage (0-100) of the applicable checks passed over the period's present days.
    - `issues`: the day's failed checks (a list, empty when none), or the distinct ones over the period's days.
    - `fetched_at`: when the day's snapshot was collected (`collection_timestamp`, UTC), the latest over the
      period's days.
    - `freshness`: the age of `fetched_at` on the scale "< 1 h", "< 6 h", "< 24 h", "older".
    """
    first, last = validate_range(start, end, allow_long_range=allow_long_range)
    grain = validate_grain(grain)
    now = datetime.now(UTC) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    wanted_categories = _names(categories, what="categories")
    wanted_types = _names(types, what="types")
    definitions = warehouse.metric_definitions()
    for wanted, field, what in (
        (wanted_categories, "metric_category", "categories"),
        (wanted_types, "metric_type", "types"),
    ):
        known = sorted({d[field] for d in definitions})
        unknown = [n for n in wanted or () if n not in known]
        if unknown:
            raise InvalidQueryError(f"unknown metric {what} {unknown}; known: {known}")
    expected = [
        d
        for d in definitions
        if (wanted_categories is None or d["metric_category"] in wanted_categories)
        and (wanted_types is None or d["metric_type"] in wanted_types)
    ]
    if not expected:
        raise InvalidQueryError(f"no metric is of categories {wanted_categories} and types {wanted_types}")
    # Every metric of the wanted types, and the day before the range: the totals check needs both of a pair.
    stored = warehouse.read_daily_metrics(start=first - timedelta(days=1), end=last, types=wanted_types)
    checks = _activity_checks(stored)
    stored = stored[stored["metric_date"] >= first]
    periods = _period_table(first, last, grain).set_index("period")
    rows: list[dict[str, Any]] = []
    gaps: list[tuple[str, str, date, date, int]] = []
    for definition in expected:
        category, metric_type = definition["metric_category"], definition["metric_type"]
        days = stored[(stored["metric_category"] == category) & (stored["metric_type"] == metric_type)]
        values = dict(zip(days["metric_date"], days["value"], strict=True))
        collected = dict(zip(days["metric_date"], days["collection_timestamp"], strict=True))
        by_period: dict[date, list[date]] = {}
        for day in sorted(values):
            by_period.setdefault(period_of(day, grain), []).append(day)
        for period, present in by_period.items():
            bounds = periods.loc[period]
            is_sum = definition["aggregation"] == "sum"
            outcomes = [checks[(d, metric_type, category)] for d in present]
            applicable = sum(len(o) for o in outcomes)
            failed = [name for o in outcomes for name, passed in o.items() if not passed]
            fetched_at = max(collected[d] for d in present)
            rows.append(
                {
                    "metric_category": category,
                    "metric_type": metric_type,
                    "period": period,
                    "period_start": bounds["period_start"],
                    "period_end": bounds["period_end"],
                    "days_present": len(present),
                    "days_expected": int(bounds["days_expected"]),
                    "value": float(sum(values[d] for d in present)) if is_sum else float(values[present[-1]]),
                    "as_of": present[-1],
                    "aggregation": definition["aggregation"],
                    "unit": definition["unit"],
                    "quality_score": round(100.0 * (applicable - len(failed)) / applicable, 1),
                    "issues": failed if grain == "daily" else sorted(set(failed)),
                    "fetched_at": fetched_at,
                }
            )
        for gap_start, gap_end, count in _gap_ranges(_missing_days(first, last, set(values))):
            gaps.append((category, metric_type, gap_start, gap_end, count))
    frame = pd.DataFrame(rows, columns=list(ACTIVITY_COLUMNS))
    if not frame.empty:
        frame = frame.sort_values(["metric_category", "metric_type", "period"], ignore_index=True)
        frame["days_present"] = frame["days_present"].astype("int64")
        frame["days_expected"] = frame["days_expected"].astype("int64")
        frame["fetched_at"] = pd.to_datetime(frame["fetched_at"], utc=True)
        frame["freshness"] = freshness_levels(frame["fetched_at"], now)
    return QueryResult(
        kind="activity",
        start=first,
        end=last,
        grain=grain,
        frame=frame,
        gaps=pd.DataFrame(gaps, columns=list(ACTIVITY_GAP_COLUMNS)),
    )


def _activity_checks(stored: pd.DataFrame) -> dict[tuple[date, str, str], dict[str, bool]]:
    """The checks of every stored snapshot (day, metric_type, metric_category) → {check: passed}; see
    `query_activity`. `stored` starts a day before the range, so its first day's totals can be checked."""
    values = {
        (d, t, c): float(v)
        for d, t, c, v in zip(
            stored["metric_date"],
            stored["metric_type"],
            stored["metric_category"],
            stored["value"],
            strict=True,
        )
    }
    checks: dict[tuple[date, str, str], dict[str, bool]] = {}
    for key, metadata in zip(values, stored["metadata"], strict=True):
        late = isinstance(metadata, dict) and metadata.get("late") is True
        checks[key] = {ACTIVITY_ISSUE_LATE: not late}
    for day, metric_type, category in values:
        if not category.endswith("_total"):
            continue
        created = category.removesuffix("_total") + "_created"
        keys = ((day - timedelta(days=1), metric_type, category), (day, metric_type, created))
        if not all(k in values for k in keys):
            continue
        previous, made = (values[k] for k in keys)
        passed = values[(day, metric_type, category)] - previous == made
        for key in ((day, metric_type, category), (day, metric_type, created)):
            checks[key][ACTIVITY_ISSUE_TOTALS_MISMATCH] = passed
    return checks


# --- Client KPIs ------------------------------------------------------------------------------------------------


def _period_expression(column: sa.ColumnElement, grain: str, dialect: str) -> sa.ColumnElement:
    """SQL for the first day of the period of a date column. The unit is a fixed literal, so the select and the
    GROUP BY render the same expression (a bound parameter in each would differ for PostgreSQL)."""
    if grain == "daily":
        return column
    if dialect == "postgresql":
        unit: sa.ColumnClause[Any] = sa.literal_column("'week'" if grain == "weekly" else "'month'")
        return sa.cast(sa.func.date_trunc(unit, sa.cast(column, sa.DateTime)), sa.Date)
    if grain == "weekly":
        # 'weekday 0' moves forward to Sunday (or stays); six days back is the ISO week's Monday.
        return sa.func.date(column, sa.literal_column("'weekday 0'"), sa.literal_column("'-6 days'"))
    return sa.func.date(column, sa.literal_column("'start of month'"))


_MONEY_COLUMNS = frozenset({"spend", "reservation_value"})
#: Stands for a missing quality score in the COPY stream, whose columns must not be empty (scores are 0-100).
_NO_SCORE = -1.0
#: Memory per sort / hash of a KPI query on PostgreSQL.
QUERY_WORK_MEM = "64MB"


def _indicator_selects(grain: str, dialect: str, final_through: date) -> list[sa.ColumnElement]:
    """quality_score, quality_issues (JSON text), fetched_at and, for periods, issues_recorded and days_final:
    the day's own values, or per period the mean score, its days with issues as `["YYYY-MM-DD", [issues]]`
    pairs joined by commas, the days that recorded issues at all, the latest fetch and the days on or before
    `final_through`.

    Every period aggregate hashes: a DISTINCT aggregate would make PostgreSQL sort the range by the group keys
    instead, which doubled the monthly query's time.

    PostgreSQL sends them through COPY, so none may be NULL: a missing score is `_NO_SCORE`, missing issues an
    empty text, and fetched_at travels as whole epoch seconds (an integer is cheaper to format and to parse than
    a timestamp's text; the query reports fetched_at to the second on both backends).
    """
    table = schema.client_daily_kpis
    postgres = dialect == "postgresql"
    score: sa.ColumnElement = table.c.quality_score
    issues: sa.ColumnElement = sa.cast(table.c.quality_issues, sa.Text)
    fetched: sa.ColumnElement = table.c.fetched_at
    periods: list[sa.ColumnElement] = []
    if grain != "daily":
        score = sa.func.avg(score)
        pair = (
            sa.literal_column("'[\"'")
            .concat(sa.cast(table.c.kpi_date, sa.Text))
            .concat(sa.literal_column("'\",'"))
            .concat(issues)
            .concat(sa.literal_column("']'"))
        )
        listed = sa.case((issues != sa.literal_column("'[]'"), pair))
        separator: sa.ColumnClause[Any] = sa.literal_column("','")
        issues = (sa.func.string_agg if postgres else sa.func.group_concat)(listed, separator)
        fetched = sa.func.max(fetched)
        final = sa.case((table.c.kpi_date <= final_through, 1), else_=0)
        periods = [
            sa.cast(sa.func.count(table.c.quality_issues), sa.Integer).label("issues_recorded"),
            sa.cast(sa.func.sum(final), sa.Integer).label("days_final"),
        ]
    if postgres:
        score = sa.func.coalesce(score, _NO_SCORE)
        issues = sa.func.coalesce(issues, "")
        # date_part, not extract: extract returns numeric, which costs more to compute and to format.
        fetched = sa.func.floor(sa.func.date_part("epoch", fetched))
    return [
        sa.cast(score, sa.Float).label("quality_score"),
        sa.type_coerce(issues, sa.Text).label("quality_issues"),
        (
            sa.cast(fetched, sa.BigInteger) if postgres else sa.type_coerce(fetched, table.c.fetched_at.type)
        ).label("fetched_at"),
        *periods,
    ]


def _kpi_select(grain: str, dialect: str, first: date, final_through: date) -> sa.Select:
    """client_id, period, currency, source, the sums and the indicators per client × period × currency × source,
    unordered.

    The daily grain reads the rows as they are (the primary key already makes client × day unique) with
    `idle_days` (1 for an idle day); the others aggregate in SQL, adding days_present, idle_days and days_final,
    so only one row per client × period × currency × source leaves the database.
    """
    table = schema.client_daily_kpis
    indicators = _indicator_selects(grain, dialect, final_through)
    if grain == "daily":
        # days_present and days_final are derived in pandas: fewer values for the database to format. On
        # PostgreSQL the day travels as its offset from `first` and idleness as 0/1: integers cost less to
        # format and to parse than dates and words, which paid for part of the indicators' columns.
        day: sa.ColumnElement = table.c.kpi_date
        if dialect == "postgresql":
            day = sa.cast(table.c.kpi_date - sa.cast(sa.literal(first), sa.Date), sa.Integer)
        return sa.select(
            table.c.client_id,
            day.label("period"),
            table.c.currency,
            table.c.source,
            *(table.c[name] for name in settings.SUM_COLUMNS),
            sa.cast(sa.case((table.c.delivery == "idle", 1), else_=0), sa.Integer).label("idle_days"),
            *indicators,
        )
    period = _period_expression(table.c.kpi_date, grain, dialect).label("period")
    sums = [
        sa.cast(sa.func.sum(table.c[name]), sa.Float if name in _MONEY_COLUMNS else sa.BigInteger).label(name)
        for name in settings.SUM_COLUMNS
    ]
    return sa.select(
        table.c.client_id,
        period,
        table.c.currency,
        table.c.source,
        sa.cast(sa.func.count(), sa.Integer).label("days_present"),
        *sums,
        sa.cast(sa.func.sum(sa.case((table.c.delivery == "idle", 1), else_=0)), sa.Integer).label(
            "idle_days"
        ),
        *indicators,
    ).group_by(table.c.client_id, period, table.c.currency, table.c.source)


def _read_frame(conn: sa.Connection, query: sa.Select) -> pd.DataFrame:
    """The rows of `query`, whose columns are all NOT NULL, as a frame: integer columns int64, other numbers
    float64, anything else text (categorical on PostgreSQL) or dates.

    On PostgreSQL the result travels as COPY CSV and pandas parses it column by column with known types:
    building one Python object per value (the DB-API path) costs more than the query itself for tens of
    thousands of rows. A binary COPY is no cheaper for the server to produce (numeric and text fields), and
    aggregating the rows into arrays server-side costs it more than it saves pandas.
    """
    if conn.dialect.name != "postgresql":
        result = conn.execute(query)
        return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    dtypes = {
        column.name: "int64"
        if isinstance(column.type, sa.Integer)
        else "float64"
        if isinstance(column.type, sa.Numeric | sa.Float)
        else "category"
        for column in query.selected_columns
    }
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    driver_connection = conn.connection.driver_connection
    assert driver_connection is not None, "an open Connection has a DB-API connection"
    cursor = driver_connection.cursor()
    try:
        # A month of 1,000 clients sorts in memory instead of spilling to disk (the default is 4 MB); LOCAL
        # ends with the transaction, which the pool rolls back when the connection is returned.
        cursor.execute(f"SET LOCAL work_mem = '{QUERY_WORK_MEM}'")
        # psycopg2 always binds parameters client-side; mogrify is that same quoting step, made visible so
        # the bound statement can be wrapped in COPY.
        statement = cursor.mogrify(compiled.string, compiled.params).decode()
        return _copy_csv(cursor, f"COPY ({statement}) TO STDOUT WITH (FORMAT csv, HEADER)", dtypes)
    finally:
        cursor.close()


def _copy_csv(cursor: Any, copy: str, dtypes: Mapping[Hashable, str]) -> pd.DataFrame:
    """The frame of a `COPY ... TO STDOUT (FORMAT csv, HEADER)` statement, parsed while it streams in.

    The server formats rows and pandas parses them at the same time: a thread receives the COPY into a pipe
    (psycopg2 lets go of the GIL while it waits for data) and pandas reads the other end. Receiving everything
    before parsing any of it left one of the two idle, about as long as the other took.
    """
    read_end, write_end = os.pipe()
    failures: list[BaseException] = []
    with open(read_end, "rb") as source, open(write_end, "wb") as sink:

        def receive() -> None:
            try:
                with sink:  # closing it is the end of the stream for the reader
                    cursor.copy_expert(copy, sink)
            except BaseException as exc:  # re-raised in the calling thread below
                failures.append(exc)

        receiver = threading.Thread(target=receive, name="kpi-query-copy", daemon=True)
        receiver.start()
        try:
            frame = pd.read_csv(source, dtype=dtypes, na_filter=False)
        except BaseException:
            # Closing the read end unblocks a receiver waiting on a full pipe: it stops with a broken pipe,
            # which is this error's doing. Any other failure of the receiver (the server's) came first and
            # cut the stream short, so it is the one to report.
            source.close()
            receiver.join()
            server_failures = [f for f in failures if not isinstance(f, BrokenPipeError)]
            if server_failures:
                raise server_failures[0] from None
            raise
        receiver.join()
    if failures:
        raise failures[0]
    return frame


def _issue_lists(raw: pd.Series, recorded: np.ndarray | None) -> np.ndarray:
    """The `issues` column from the JSON text `_indicator_selects` reads.

    A day (`recorded` None): its list as stored; None where not recorded (NULL, an empty text from PostgreSQL).
    A period: each issue of its days prefixed with its day, in day order ("2026-02-02: cpc 72.10 above 50.00
    EUR"); [] when the days that recorded issues had none; None when no day recorded them (`recorded` 0). Each
    distinct text is parsed once (most are "[]" or empty) and spread by position.
    """
    codes, texts = pd.factorize(raw, use_na_sentinel=True)
    none_listed = len(texts)
    lists = np.empty(len(texts) + 2, dtype=object)  # the last slot (code -1: NULL) stays None
    lists[none_listed] = []
    blank = np.zeros(len(texts) + 1, dtype=bool)  # the extra slot answers for code -1
    blank[-1] = True
    for i, text in enumerate(texts):
        if not text:
            blank[i] = True
        elif recorded is None:
            # A JSON null (written as a value rather than as SQL NULL) is "not recorded" too.
            day = json.loads(text)
            lists[i] = None if day is None else list(day)
        else:
            days = sorted((str(day), issues) for day, issues in json.loads(f"[{text}]") if issues)
            lists[i] = [f"{day}: {issue}" for day, issues in days for issue in issues]
    if recorded is not None:
        codes = np.where(recorded == 0, -1, np.where(blank[codes], none_listed, codes))
    return lists[codes]


def _timestamps(raw: pd.Series) -> pd.DatetimeIndex:
    """fetched_at as UTC timestamps to the second: epoch seconds from PostgreSQL, datetimes (naive, in UTC) from
    SQLite."""
    if pd.api.types.is_integer_dtype(raw.dtype):
        seconds = raw.to_numpy(dtype="int64").astype("datetime64[s]").astype("datetime64[ns]")
        return pd.DatetimeIndex(seconds).tz_localize(UTC)
    return pd.DatetimeIndex(pd.to_datetime(raw, utc=True)).floor("s")


def _finish_kpi_frame(
    frame: pd.DataFrame,
    periods: pd.DataFrame,
    *,
    final_through: date,
    now: datetime,
    window_conversions: Mapping[str, float],
) -> pd.DataFrame:
    """The output frame: ordered by client, period and currency (code point order on both backends, and no
    sort in the database), the period's bounds inside the range, ctr_pct / cpc recomputed from the sums, and
    the indicators (days_final from `final_through`, freshness at `now`).

    Built column by column from arrays in one go; distinct keys (few periods, a thousand clients) are parsed
    and sorted once and spread by position.
    """
    client_codes, clients = pd.factorize(frame["client_id"], sort=True)
    period_codes, period_keys = pd.factorize(frame["period"], sort=True)
    currency_codes, currencies = pd.factorize(frame["currency"], sort=True)
    source_codes, sources = pd.factorize(frame["source"], sort=True)
    order = np.lexsort((source_codes, currency_codes, period_codes, client_codes))
    period_codes = period_codes[order]
    daily = "days_present" not in frame.columns
    first = periods["period_start"].iloc[0]
    parsed = [
        u if isinstance(u, date) else first + timedelta(days=int(u)) if daily else date.fromisoformat(str(u))
        for u in period_keys
    ]
    bounds = periods.set_index("period").loc[parsed]

    def column(name: str, dtype: str) -> np.ndarray:
        return frame[name].to_numpy(dtype=dtype)[order]

    out: dict[str, Any] = {
        "client_id": np.asarray(clients, dtype=object)[client_codes[order]],
        "period": np.array(parsed, dtype=object)[period_codes],
        "period_start": bounds["period_start"].to_numpy(dtype=object)[period_codes],
        "period_end": bounds["period_end"].to_numpy(dtype=object)[period_codes],
    }
    out["days_present"] = np.ones(len(frame), dtype="int64") if daily else column("days_present", "int64")
    out["idle_days"] = column("idle_days", "int64")
    out["days_expected"] = bounds["days_expected"].to_numpy(dtype="int64")[period_codes]
    if "days_final" in frame.columns:
        out["days_final"] = column("days_final", "int64")
    else:
        out["days_final"] = np.array([p <= final_through for p in parsed], dtype="int64")[period_codes]
    scores = column("quality_score", "float64")
    out["quality_score"] = np.round(np.where(scores == _NO_SCORE, np.nan, scores), 2)
    recorded = None if daily else frame["issues_recorded"].to_numpy(dtype="int64")
    out["issues"] = _issue_lists(frame["quality_issues"], recorded)[order]
    out["fetched_at"] = _timestamps(frame["fetched_at"])[order]
    out["freshness"] = freshness_levels(pd.Series(out["fetched_at"]), now).array
    out["currency"] = np.asarray(currencies, dtype=object)[currency_codes[order]]
    out["source"] = np.asarray(sources, dtype=object)[source_codes[order]]
    for name in settings.SUM_COLUMNS:
        out[name] = np.round(column(name, "float64"), 2) if name in _MONEY_COLUMNS else column(name, "int64")
    impressions, clicks = out["impressions"], out["clicks"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ctr_pct"] = np.where(impressions > 0, clicks / impressions * 100, np.nan)
        out["cpc"] = np.where(clicks > 0, np.round(out["spend"] / clicks, 4), np.nan)
    window = np.array([window_conversions.get(c, 0.0) for c in clients], dtype="float64")
    out["conversion_tracking"] = conversion_tracking.classify(
        sum(out[name] for name in settings.CONVERSION_COUNT_COLUMNS),
        (impressions > 0) | (out["spend"] > 0),
        window[client_codes[order]],
    )
    # Every array above is new (taken by position), so the frame adopts them as they are: copy=False skips
    # copying them into 2-D blocks by dtype, about a quarter of the assembly's time for 30,000 rows.
    return pd.DataFrame({name: out[name] for name in KPI_COLUMNS}, copy=False)


def _window_conversions(
    conn: sa.Connection, frame: pd.DataFrame, *, start: date, end: date
) -> dict[str, float]:
    """Conversions (the count columns) per client over [start - TRACKING_WINDOW_DAYS, end]: what tells a query's
    rows without conversions apart, "zero conversions" or "tracking not configured" (`conversion_tracking`).

    The range's own conversions come from `frame` (the rows just read); only clients without any there are looked
    up in the database, and only over the days before `start`: a client converting in the range is tracked, and
    reading the whole window for every client would cost a second scan of the range on every query.
    """
    if frame.empty:
        return {}
    in_range = sum(frame[name].to_numpy(dtype="float64") for name in settings.CONVERSION_COUNT_COLUMNS)
    codes, client_ids = pd.factorize(frame["client_id"])
    totals = np.bincount(codes, weights=in_range, minlength=len(client_ids))
    window = {str(client_id): float(value) for client_id, value in zip(client_ids, totals, strict=True)}
    unknown = sorted(client_id for client_id, value in window.items() if value <= 0)
    if not unknown:
        return window
    table = schema.client_daily_kpis
    counts = [table.c[name] for name in settings.CONVERSION_COUNT_COLUMNS]
    total = sa.cast(sa.func.sum(functools.reduce(operator.add, counts)), sa.Float)
    since = start - timedelta(days=conversion_tracking.TRACKING_WINDOW_DAYS)
    query = (
        sa.select(table.c.client_id, total)
        .where(table.c.kpi_date.between(since, start - timedelta(days=1)))
        .where(table.c.client_id.in_(unknown))
        .group_by(table.c.client_id)
    )
    for client_id, value in conn.execute(query):
        window[client_id] += float(value or 0.0)
    return window


def query_kpis(
    warehouse: Warehouse,
    *,
    start: date | str,
    end: date | str,
    grain: str = "daily",
    client_ids: str | Iterable[str] | None = None,
    allow_long_range: bool = False,
    include_forecast: bool = False,
    now: datetime | None = None,
) -> QueryResult:
    """Client KPIs (client_daily_kpis) in [start, end] at a grain, for some clients or all.

    Counts and money are summed over the present days; ctr_pct and cpc are recomputed from the sums (None
    without impressions / clicks). Money of different currencies is never added: a client whose currency
    changed within a period has one row per currency, and simulated days are never added to real ones: each
    row carries its `source` (`simulator` or `meta_api`), one row per source. Without `client_ids`, the clients expected to have
    data are the active ones plus any with rows in the range. Unknown client ids raise InvalidQueryError.

    Each row's indicators, as of `now` (default: the current time):
    - `quality_score`: the day's score (0-100), or the mean over the period's scored days; None if none is.
    - `issues`: the day's failed quality checks (a list, empty when none), or for a period each issue of its
      days prefixed with the day ("2026-02-02: cpc 72.10 above 50.00 EUR"), in day order; None where no day
      recorded them (rows stored before issues were).
    - `fetched_at`: when the day was last fetched (UTC), or the latest over the period's days.
    - `freshness`: the age of `fetched_at` on the scale "< 1 h", "< 6 h", "< 24 h", "older".
    - `days_final`: how many of `days_present` are final, i.e. past Meta's restatement window: a day is final
      once settings.MONTH_FINAL_AFTER_DAYS days have passed since it (day <= today - 28, UTC), the rule that
      makes a month `final` in the monthly summaries; a monthly row with days_final == days_expected is settled.
    - `conversion_tracking`: "converting" (the period has conversions), "zero conversions" (none, though the
      client reported conversions within the range or the TRACKING_WINDOW_DAYS (30) before it), "tracking not
      configured" (it delivered, and no conversion was reported at all in that window) or "no delivery"
      (`warehouse.conversion_tracking.classify`).

    `include_forecast=True` (daily grain only) appends the stored forecasts of the days without data
    (`with_forecasts`): rows with `source='forecast'`, `forecast` true and each KPI's bounds; the gaps still name
    those days, since a forecast is not data.
    """
    first, last = validate_range(start, end, allow_long_range=allow_long_range)
    grain = validate_grain(grain)
    now = datetime.now(UTC) if now is None else now if now.tzinfo else now.replace(tzinfo=UTC)
    final_through = now.astimezone(UTC).date() - timedelta(days=settings.MONTH_FINAL_AFTER_DAYS)
    if include_forecast and grain != "daily":
        raise InvalidQueryError(
            f"forecasts are per day: ask for grain 'daily', not {grain!r}, with forecasts"
        )
    wanted = _names(client_ids, what="client ids")
    clients = schema.clients
    query = _kpi_select(grain, warehouse.engine.dialect.name, first, final_through).where(
        schema.client_daily_kpis.c.kpi_date.between(first, last)
    )
    with warehouse.engine.connect() as conn:
        if wanted is not None:
            known = set(
                conn.execute(sa.select(clients.c.client_id).where(clients.c.client_id.in_(wanted))).scalars()
            )
            unknown = [c for c in wanted if c not in known]
            if unknown:
                raise InvalidQueryError(f"unknown client ids {unknown}; see `kpi-platform clients validate`")
            query = query.where(schema.client_daily_kpis.c.client_id.in_(wanted))
            expected_clients = set(wanted)
        else:
            expected_clients = set(
                conn.execute(sa.select(clients.c.client_id).where(clients.c.active.is_(True))).scalars()
            )
        frame = _read_frame(conn, query)
        window_conversions = _window_conversions(conn, frame, start=first, end=last)

    if frame.empty:
        frame = pd.DataFrame(columns=list(KPI_COLUMNS))
    else:
        frame = _finish_kpi_frame(
            frame,
            _period_table(first, last, grain),
            final_through=final_through,
            now=now,
            window_conversions=window_conversions,
        )
    expected_clients |= set(frame["client_id"].unique())
    gaps = _kpi_gaps(warehouse, frame=frame, clients=expected_clients, start=first, end=last, grain=grain)
    if include_forecast:
        frame = with_forecasts(warehouse, frame, start=first, end=last, client_ids=wanted)
    return QueryResult(kind="kpis", start=first, end=last, grain=grain, frame=frame, gaps=gaps)


#: Columns `include_forecast=True` adds: the flag, then each forecast KPI's interval bounds.
FORECAST_COLUMNS: tuple[str, ...] = (
    "forecast",
    *(f"{name}_{bound}" for name in schema.FORECAST_METRICS for bound in ("lower", "upper")),
)


def with_forecasts(
    warehouse: Warehouse, frame: pd.DataFrame, *, start: date, end: date, client_ids: Iterable[str] | None
) -> pd.DataFrame:
    """The daily KPI frame with `FORECAST_COLUMNS` (false / empty on its rows) and the stored forecasts of the
    client-days it has no row for, ordered by client and day.

    A forecast row is labelled twice (`source='forecast'`, `forecast` true) and counts no day: days_present 0,
    idle_days 0. Counts are rounded to whole numbers, ctr_pct and cpc follow from the forecast values, and the
    bounds are the model's interval (`kpi_forecasts.interval_pct`). Columns the frame has beyond these (row
    indicators) are empty on forecast rows. Real data always wins: a day with a row shows no forecast.
    """
    stored = warehouse.read_forecasts(start=start, end=end, client_ids=client_ids)
    out = frame.copy()
    out["forecast"] = False
    for name in FORECAST_COLUMNS[1:]:
        out[name] = np.nan
    if stored.empty:
        return out
    real = set(zip(frame["client_id"], frame["period"], strict=True))
    stored = stored[[key not in real for key in zip(stored["client_id"], stored["kpi_date"], strict=True)]]
    if stored.empty:
        return out
    days = list(stored["kpi_date"])
    forecast: dict[str, Any] = {
        "client_id": list(stored["client_id"]),
        "period": days,
        "period_start": days,
        "period_end": days,
        "days_present": 0,
        "days_expected": 1,
        "days_final": 0,
        "idle_days": 0,
        "currency": list(stored["currency"]),
        "source": settings.SOURCE_FORECAST,
        "forecast": True,
    }
    for name in schema.FORECAST_METRICS:
        values = stored[name].to_numpy(dtype="float64")
        forecast[name] = np.round(values, 2) if name in _MONEY_COLUMNS else np.rint(values).astype("int64")
        for bound in ("lower", "upper"):
            forecast[f"{name}_{bound}"] = stored[f"{name}_{bound}"].to_numpy(dtype="float64")
    impressions, clicks = forecast["impressions"], forecast["clicks"]
    with np.errstate(divide="ignore", invalid="ignore"):
        forecast["ctr_pct"] = np.where(impressions > 0, clicks / impressions * 100, np.nan)
        forecast["cpc"] = np.where(clicks > 0, np.round(forecast["spend"] / clicks, 4), np.nan)
    rows = pd.DataFrame(forecast).reindex(columns=out.columns)
    for name in out.columns:
        # Columns of real rows only (row indicators) stay empty here, of the real rows' type: a timestamp column
        # stays a timestamp column (pandas would otherwise type an all-empty column by itself in the concat).
        if name not in forecast and not pd.api.types.is_integer_dtype(out[name].dtype):
            rows[name] = pd.Series(index=rows.index, dtype=out[name].dtype)
    combined = pd.concat([out, rows], ignore_index=True) if not out.empty else rows
    combined["forecast"] = combined["forecast"].astype(bool)
    # Stable: a day's real rows (several sources) keep their order; a forecast day has no real row.
    return combined.sort_values(["client_id", "period"], kind="stable", ignore_index=True)


def _kpi_gaps(
    warehouse: Warehouse,
    *,
    frame: pd.DataFrame,
    clients: set[str],
    start: date,
    end: date,
    grain: str,
) -> pd.DataFrame:
    """Missing client-days as ranges. Only clients with an incomplete period have their days read back."""
    total_days = (end - start).days + 1
    present_days = frame.groupby("client_id")["days_present"].sum().to_dict() if not frame.empty else {}
    incomplete = sorted(c for c in clients if int(present_days.get(c, 0)) < total_days)
    if not incomplete:
        return pd.DataFrame(columns=list(KPI_GAP_COLUMNS))
    present: dict[str, set[date]] = {c: set() for c in incomplete}
    if grain == "daily":
        rows = frame[frame["client_id"].isin(incomplete)]
        for client_id, day in zip(rows["client_id"], rows["period"], strict=True):
            present[client_id].add(day)
    else:
        present.update(warehouse.present_days(start=start, end=end, client_ids=incomplete))
    gaps = [
        (client_id, gap_start, gap_end, days)
        for client_id in incomplete
        for gap_start, gap_end, days in _gap_ranges(_missing_days(start, end, present[client_id]))
    ]
    return pd.DataFrame(gaps, columns=list(KPI_GAP_COLUMNS))
