"""The query API of the warehouse: platform activity and client KPIs over a date range at a daily, weekly or
monthly grain, with the missing days named and never filled in.

Weeks are ISO weeks (Monday to Sunday), months calendar months. A period only partly inside the range covers
the days inside it (`period_start`, `period_end`); `days_present` of `days_expected` says how complete it is.
A period without any stored day has no row: `QueryResult.gaps` names it, nothing is invented.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.warehouse import schema
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
)
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
        """Rows of `frame` as plain Python values: int, float, str, date; None where a value is undefined."""
        return _records(self.frame)

    def gap_records(self) -> list[dict[str, Any]]:
        return _records(self.gaps)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    if frame.empty:
        return []
    objects = frame.astype(object)
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
) -> QueryResult:
    """Platform activity metrics (daily_metrics) in [start, end] at a grain, optionally of some categories/types.

    Per metric and period: `value` is the sum of the present days for 'sum' metrics (e.g. posts_created) and
    the value of the last present day for 'last' metrics (totals), which `as_of` names. Unknown categories or
    types raise InvalidQueryError listing the known ones.
    """
    first, last = validate_range(start, end, allow_long_range=allow_long_range)
    grain = validate_grain(grain)
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
    stored = warehouse.read_daily_metrics(
        start=first, end=last, categories=wanted_categories, types=wanted_types
    )
    periods = _period_table(first, last, grain).set_index("period")
    rows: list[dict[str, Any]] = []
    gaps: list[tuple[str, str, date, date, int]] = []
    for definition in expected:
        category, metric_type = definition["metric_category"], definition["metric_type"]
        days = stored[(stored["metric_category"] == category) & (stored["metric_type"] == metric_type)]
        values = dict(zip(days["metric_date"], days["value"], strict=True))
        by_period: dict[date, list[date]] = {}
        for day in sorted(values):
            by_period.setdefault(period_of(day, grain), []).append(day)
        for period, present in by_period.items():
            bounds = periods.loc[period]
            is_sum = definition["aggregation"] == "sum"
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
                }
            )
        for gap_start, gap_end, count in _gap_ranges(_missing_days(first, last, set(values))):
            gaps.append((category, metric_type, gap_start, gap_end, count))
    frame = pd.DataFrame(rows, columns=list(ACTIVITY_COLUMNS))
    if not frame.empty:
        frame = frame.sort_values(["metric_category", "metric_type", "period"], ignore_index=True)
        frame["days_present"] = frame["days_present"].astype("int64")
        frame["days_expected"] = frame["days_expected"].astype("int64")
    return QueryResult(
        kind="activity",
        start=first,
        end=last,
        grain=grain,
        frame=frame,
        gaps=pd.DataFrame(gaps, columns=list(ACTIVITY_GAP_COLUMNS)),
    )


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
#: Memory per sort / hash of a KPI query on PostgreSQL.
QUERY_WORK_MEM = "64MB"


def _kpi_select(grain: str, dialect: str) -> sa.Select:
    """client_id, period, currency, source and the sums per client × period × currency × source, unordered.

    The daily grain reads the rows as they are (the primary key already makes client × day unique) with
    `delivery`; the others aggregate in SQL, adding days_present and idle_days, so only one row per
    client × period × currency × source leaves the database.
    """
    table = schema.client_daily_kpis
    if grain == "daily":
        # days_present and idle_days are derived in pandas: fewer values for the database to format.
        return sa.select(
            table.c.client_id,
            table.c.kpi_date.label("period"),
            table.c.currency,
            table.c.source,
            *(table.c[name] for name in settings.SUM_COLUMNS),
            table.c.delivery,
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
    ).group_by(table.c.client_id, period, table.c.currency, table.c.source)


def _read_frame(conn: sa.Connection, query: sa.Select) -> pd.DataFrame:
    """The rows of `query`, whose columns are all NOT NULL, as a frame: integer columns int64, other numbers
    float64, anything else text (categorical on PostgreSQL) or dates.

    On PostgreSQL the result travels as COPY CSV and pandas parses it column by column with known types:
    building one Python object per value (the DB-API path) costs more than the query itself for tens of
    thousands of rows.
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
    buffer = io.StringIO()
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
        cursor.copy_expert(f"COPY ({statement}) TO STDOUT WITH (FORMAT csv, HEADER)", buffer)
    finally:
        cursor.close()
    buffer.seek(0)
    return pd.read_csv(buffer, dtype=dtypes, na_filter=False)


def _finish_kpi_frame(frame: pd.DataFrame, periods: pd.DataFrame) -> pd.DataFrame:
    """The output frame: ordered by client, period and currency (code point order on both backends, and no
    sort in the database), the period's bounds inside the range, ctr_pct / cpc recomputed from the sums.

    Built column by column from arrays in one go; distinct keys (few periods, a thousand clients) are parsed
    and sorted once and spread by position.
    """
    client_codes, clients = pd.factorize(frame["client_id"], sort=True)
    period_codes, period_keys = pd.factorize(frame["period"], sort=True)
    currency_codes, currencies = pd.factorize(frame["currency"], sort=True)
    source_codes, sources = pd.factorize(frame["source"], sort=True)
    order = np.lexsort((source_codes, currency_codes, period_codes, client_codes))
    period_codes = period_codes[order]
    parsed = [u if isinstance(u, date) else date.fromisoformat(str(u)) for u in period_keys]
    bounds = periods.set_index("period").loc[parsed]

    def column(name: str, dtype: str) -> np.ndarray:
        return frame[name].to_numpy(dtype=dtype)[order]

    out: dict[str, Any] = {
        "client_id": np.asarray(clients, dtype=object)[client_codes[order]],
        "period": np.array(parsed, dtype=object)[period_codes],
        "period_start": bounds["period_start"].to_numpy(dtype=object)[period_codes],
        "period_end": bounds["period_end"].to_numpy(dtype=object)[period_codes],
    }
    if "delivery" in frame.columns:
        out["days_present"] = np.ones(len(frame), dtype="int64")
        out["idle_days"] = (frame["delivery"].to_numpy(dtype=object)[order] == "idle").astype("int64")
    else:
        out["days_present"] = column("days_present", "int64")
        out["idle_days"] = column("idle_days", "int64")
    out["days_expected"] = bounds["days_expected"].to_numpy(dtype="int64")[period_codes]
    out["currency"] = np.asarray(currencies, dtype=object)[currency_codes[order]]
    out["source"] = np.asarray(sources, dtype=object)[source_codes[order]]
    for name in settings.SUM_COLUMNS:
        out[name] = np.round(column(name, "float64"), 2) if name in _MONEY_COLUMNS else column(name, "int64")
    impressions, clicks = out["impressions"], out["clicks"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ctr_pct"] = np.where(impressions > 0, clicks / impressions * 100, np.nan)
        out["cpc"] = np.where(clicks > 0, np.round(out["spend"] / clicks, 4), np.nan)
    return pd.DataFrame({name: out[name] for name in KPI_COLUMNS})


def query_kpis(
    warehouse: Warehouse,
    *,
    start: date | str,
    end: date | str,
    grain: str = "daily",
    client_ids: str | Iterable[str] | None = None,
    allow_long_range: bool = False,
) -> QueryResult:
    """Client KPIs (client_daily_kpis) in [start, end] at a grain, for some clients or all.

    Counts and money are summed over the present days; ctr_pct and cpc are recomputed from the sums (None
    without impressions / clicks). Money of different currencies is never added: a client whose currency
    changed within a period has one row per currency, and simulated days are never added to real ones: each
    row carries its `source` (`simulator` or `meta_api`), one row per source. Without `client_ids`, the clients expected to have
    data are the active ones plus any with rows in the range. Unknown client ids raise InvalidQueryError.
    """
    first, last = validate_range(start, end, allow_long_range=allow_long_range)
    grain = validate_grain(grain)
    wanted = _names(client_ids, what="client ids")
    clients = schema.clients
    query = _kpi_select(grain, warehouse.engine.dialect.name).where(
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

    if frame.empty:
        frame = pd.DataFrame(columns=list(KPI_COLUMNS))
    else:
        frame = _finish_kpi_frame(frame, _period_table(first, last, grain))
    expected_clients |= set(frame["client_id"])
    gaps = _kpi_gaps(warehouse, frame=frame, clients=expected_clients, start=first, end=last, grain=grain)
    return QueryResult(kind="kpis", start=first, end=last, grain=grain, frame=frame, gaps=gaps)


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
