"""The warehouse's reads and writes: `Warehouse`, its row types, the client registry, range writes and locks.

Every write is one transaction. A client × date-range write deletes the range and inserts the new rows, so a
re-run leaves identical rows and a failure leaves the previous ones. Frames are checked before the database is
touched (`frames`); on PostgreSQL rows are loaded with COPY inside the same transaction. Engines and migrations
plumbing live in `engine`.

Writers of one client are serialised here, whoever launched them (schedule, gap healer, UI backfill, CLI): every
transaction that replaces a client's rows first takes that client's lock (`client_lock_key`, a PostgreSQL
transaction-scoped advisory lock; on SQLite the database write lock taken at BEGIN IMMEDIATE), so a second writer
of the same client waits for the first to commit and then replaces its rows, instead of failing on the primary key.
"""

from __future__ import annotations

import calendar
import hashlib
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import command

from kpi_platform import settings
from kpi_platform.warehouse import schema
from kpi_platform.warehouse.engine import (
    SQLITE_BEGIN_OPTION,
    VERSION_TABLE,
    alembic_config,
    head_revision,
    is_sqlite_locked,
    make_engine,
)
from kpi_platform.warehouse.times import as_utc

# pandas, numpy and `frames` (which imports pandas) are imported by the functions that use them: opening the
# warehouse and reading clients or timestamps (the health command) must not pay ~0.25 s for importing pandas.
if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: Attempts of a SQLite migration that still finds the database locked after the busy timeout.
MIGRATE_ATTEMPTS = 5
#: PostgreSQL advisory lock keys (arbitrary, fixed): one serialises migrations, one client registry syncs.
PG_MIGRATION_LOCK_KEY = 7_390_001
PG_CLIENTS_LOCK_KEY = 7_390_002
PG_METRICS_LOCK_KEY = 7_390_003
#: BLAKE2b personalisation of the per-client lock keys (`client_lock_key`); changing it changes every key.
CLIENT_LOCK_PERSON = b"kpi-client-lock"
#: SQLSTATE of PostgreSQL's "permission denied".
PG_INSUFFICIENT_PRIVILEGE = "42501"


CLIENT_FIELDS: tuple[str, ...] = ("name", "ad_account_id", "currency", "timezone", "active", "settings")


class MigrationNotAllowedError(RuntimeError):
    """The warehouse is behind the packaged schema and the connected role may not change the schema."""


@dataclass(frozen=True)
class WriteStats:
    """Rows written by one range replacement and the seconds its transaction took."""

    campaign_rows: int
    day_rows: int
    seconds: float
    #: Forecasts of the written days removed (their errors recorded in forecast_accuracy).
    forecasts_retired: int = 0


@dataclass(frozen=True)
class MetricReplacement:
    """A stored daily metric replaced by a forced correction: old and new value."""

    metric_date: date
    metric_type: str
    metric_category: str
    old_value: float
    new_value: float


MetricKey = tuple[date, str, str]


@dataclass(frozen=True)
class MetricWrite:
    """What `record_daily_metrics` did per (metric_date, metric_type, metric_category) key."""

    inserted: tuple[MetricKey, ...]
    #: Keys already stored and left unchanged (the snapshot is immutable).
    kept: tuple[MetricKey, ...]
    #: Keys already stored and replaced because `force` was given.
    replaced: tuple[MetricReplacement, ...]

    @property
    def days_recorded(self) -> tuple[date, ...]:
        """Days with at least one row written (inserted or replaced)."""
        return tuple(sorted({k[0] for k in self.inserted} | {r.metric_date for r in self.replaced}))

    @property
    def days_already_recorded(self) -> tuple[date, ...]:
        """Days of which nothing was written because every given metric was already stored."""
        written = set(self.days_recorded)
        return tuple(sorted({k[0] for k in self.kept} - written))


@dataclass(frozen=True)
class ClientSync:
    """Client ids inserted, changed, and found identical by `upsert_clients`."""

    added: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: tuple[str, ...]


def client_lock_key(client_id: str) -> int:
    """The PostgreSQL advisory lock key serialising the writers of one client: a signed 64-bit integer from
    BLAKE2b of the client id, the same in every process, host and Python version (Python's `hash()` of a str is
    salted per process, so two runs would lock different keys). Keys of different clients collide with odds of
    about 2^-64; a collision would only make those two clients wait for each other."""
    digest = hashlib.blake2b(client_id.encode("utf-8"), digest_size=8, person=CLIENT_LOCK_PERSON).digest()
    return int.from_bytes(digest, "big", signed=True)


def _client_row(row: Mapping[str, Any]) -> dict[str, Any]:
    from kpi_platform.warehouse.frames import json_normalized

    unknown = set(row) - {"client_id", *CLIENT_FIELDS}
    if unknown:
        raise ValueError(f"client row {row.get('client_id')!r}: unknown fields {sorted(unknown)}")
    missing = [f for f in ("client_id", "name", "ad_account_id", "currency", "timezone") if not row.get(f)]
    if missing:
        raise ValueError(f"client row {row.get('client_id')!r}: missing fields {missing}")
    active = row.get("active", True)
    if not isinstance(active, bool):
        raise ValueError(f"client row {row['client_id']!r}: active must be true or false, got {active!r}")
    client_settings = row.get("settings") or {}
    if not isinstance(client_settings, Mapping):
        raise ValueError(f"client row {row['client_id']!r}: settings must be a mapping")
    return {
        "client_id": str(row["client_id"]),
        "name": str(row["name"]),
        "ad_account_id": str(row["ad_account_id"]),
        "currency": str(row["currency"]),
        "timezone": str(row["timezone"]),
        "active": active,
        "settings": json_normalized(dict(client_settings)),
    }


def _client_out(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["active"] = bool(out["active"])
    out["settings"] = out["settings"] or {}
    out["created_at"] = as_utc(out["created_at"])
    out["updated_at"] = as_utc(out["updated_at"])
    return out


METRIC_VALUE_PRECISION, METRIC_VALUE_SCALE = schema.METRIC_VALUE_PRECISION, schema.METRIC_VALUE_SCALE


def fits_metric_value(value: float) -> bool:
    """True when `daily_metrics.value` (NUMERIC(20, 4)) stores `value` exactly: at most 4 decimals (as the
    float's shortest decimal form) and 16 integer digits. PostgreSQL would round a fifth decimal silently."""
    exact = Decimal(repr(float(value)))
    return abs(exact) < Decimal(10) ** (
        METRIC_VALUE_PRECISION - METRIC_VALUE_SCALE
    ) and exact == exact.quantize(Decimal(1).scaleb(-METRIC_VALUE_SCALE))


def _metric_rows(rows: Sequence[Mapping[str, Any]]) -> dict[MetricKey, dict[str, Any]]:
    """Checked daily_metrics rows by key; ValueError naming the first bad row."""
    import numpy as np

    from kpi_platform.warehouse.frames import json_normalized

    out: dict[MetricKey, dict[str, Any]] = {}
    fields = ("metric_date", "metric_type", "metric_category", "value", "metadata", "collection_timestamp")
    for row in rows:
        missing = [f for f in fields if row.get(f) is None]
        unknown = set(row) - set(fields)
        if missing or unknown:
            raise ValueError(f"daily metric {dict(row)!r}: missing {missing}, unknown {sorted(unknown)}")
        day = row["metric_date"]
        if isinstance(day, datetime) or not isinstance(day, date):
            raise ValueError(f"daily metric {row['metric_type']!r}: metric_date must be a date, got {day!r}")
        value = row["value"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float | np.number)
            or not math.isfinite(value)
        ):
            raise ValueError(
                f"daily metric {row['metric_category']!r} {day}: value must be a finite number, got {value!r}"
            )
        if not fits_metric_value(float(value)):
            raise ValueError(
                f"daily metric {row['metric_category']!r} {day}: value {value!r} has more than "
                f"{METRIC_VALUE_SCALE} decimals or {METRIC_VALUE_PRECISION - METRIC_VALUE_SCALE} integer digits, "
                "which daily_metrics cannot store exactly"
            )
        if not isinstance(row["metadata"], Mapping):
            raise ValueError(f"daily metric {row['metric_category']!r} {day}: metadata must be a mapping")
        collected = row["collection_timestamp"]
        if not isinstance(collected, datetime) or collected.tzinfo is None:
            raise ValueError(
                f"daily metric {row['metric_category']!r} {day}: collection_timestamp must be timezone-aware"
            )
        key = (day, str(row["metric_type"]), str(row["metric_category"]))
        if key in out:
            raise ValueError(f"daily metric {key[2]} ({key[1]}) {day} given more than once")
        out[key] = {
            "metric_date": day,
            "metric_type": key[1],
            "metric_category": key[2],
            "value": float(value),
            "metadata": json_normalized(dict(row["metadata"])),
            "collection_timestamp": collected.astimezone(UTC),
        }
    return out


def describe_replacements(replaced: Sequence[MetricReplacement]) -> list[str]:
    """One line per day: 'forced replacement of daily metrics for 2026-03-01: posts_total 120 → 118
    (unchanged: users_total 10)' (a metric of another kind than `count` is named with it: 'ratio (pct)')."""
    changed: dict[date, list[str]] = {}
    same: dict[date, list[str]] = {}
    for r in replaced:
        name = r.metric_category if r.metric_type == "count" else f"{r.metric_category} ({r.metric_type})"
        if r.old_value != r.new_value:
            changed.setdefault(r.metric_date, []).append(f"{name} {r.old_value:g} → {r.new_value:g}")
        else:
            same.setdefault(r.metric_date, []).append(f"{name} {r.new_value:g}")
    lines = []
    for day in sorted(changed.keys() | same.keys()):
        parts = ", ".join(changed.get(day, [])) or "no value changed"
        if same.get(day):
            parts += f" (unchanged: {', '.join(same[day])})"
        lines.append(f"forced replacement of daily metrics for {day}: {parts}")
    return lines


def _default_correction_reason(row: Mapping[str, Any]) -> str:
    run_id = row["metadata"].get("run_id")
    return f"forced snapshot replacement by run {run_id}" if run_id else "forced snapshot replacement"


#: Money KPIs: a forecast and a collected day in different currencies are not compared on them.
_MONEY_METRICS = frozenset({"spend", "reservation_value"})


def forecast_errors(
    forecasts: Iterable[sa.Row], days: pd.DataFrame, *, recorded_at: datetime
) -> list[dict[str, Any]]:
    """forecast_accuracy rows: one per forecast day (kpi_forecasts rows) × KPI, compared with the collected day
    of `days` (client_daily_kpis rows). The absolute percentage error is undefined (NULL) where the actual value
    is 0; money is skipped when the forecast's currency is not the day's."""
    actual = {row["kpi_date"]: row for row in days.to_dict("records")}
    rows: list[dict[str, Any]] = []
    for forecast in forecasts:
        day = actual[forecast.kpi_date]
        for metric in schema.FORECAST_METRICS:
            if metric in _MONEY_METRICS and day["currency"] != forecast.currency:
                continue
            predicted, value = float(forecast._mapping[metric]), float(day[metric])
            rows.append(
                {
                    "client_id": forecast.client_id,
                    "kpi_date": forecast.kpi_date,
                    "metric": metric,
                    "forecast": predicted,
                    "lower": float(forecast._mapping[f"{metric}_lower"]),
                    "upper": float(forecast._mapping[f"{metric}_upper"]),
                    "actual": value,
                    "abs_pct_error": abs(predicted - value) / abs(value) * 100 if value else None,
                    "generated_at": as_utc(forecast.generated_at),
                    "recorded_at": recorded_at,
                }
            )
    return rows


def _month_bounds(month: date) -> tuple[date, date]:
    first = month.replace(day=1)
    return first, first.replace(day=calendar.monthrange(first.year, first.month)[1])


# --- The warehouse ----------------------------------------------------------------------------------------------


class Warehouse:
    """The KPI warehouse on SQLite (embedded default) or PostgreSQL.

    Construct from a URL, or from an engine made by `make_engine` (the SQLite locking relies on its hooks).
    Safe to share between threads; each call checks a connection out of the engine's pool.
    """

    def __init__(self, url_or_engine: str | sa.URL | sa.Engine) -> None:
        if isinstance(url_or_engine, sa.Engine):
            self._engine = url_or_engine
            self._owns_engine = False
        else:
            self._engine = make_engine(url_or_engine)
            self._owns_engine = True
        if self._engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported warehouse backend {self._engine.dialect.name!r}")

    def __repr__(self) -> str:
        return f"Warehouse({self.url_for_display})"

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    @property
    def url_for_display(self) -> str:
        """The URL with any password masked: the only form that may be logged."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def is_postgres(self) -> bool:
        return self._engine.dialect.name == "postgresql"

    def dispose(self) -> None:
        """Close pooled connections (only of an engine this warehouse created)."""
        if self._owns_engine:
            self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """One write transaction, committed on success and rolled back on any exception.

        On SQLite the write lock is taken at BEGIN (IMMEDIATE), so concurrent writers wait for the busy
        timeout instead of failing halfway when a read lock cannot be upgraded.
        """
        with self._engine.connect() as conn:
            if not self.is_postgres:
                conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with conn.begin():
                yield conn

    def _lock(self, conn: sa.Connection, key: int) -> None:
        """Serialise against other processes until the transaction ends (SQLite already holds its write lock)."""
        if self.is_postgres:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))

    def _lock_client(self, conn: sa.Connection, client_id: str) -> None:
        """Take the client's write lock until the transaction ends; the first statement of every transaction that
        replaces a client's rows.

        PostgreSQL: a transaction-scoped advisory lock on `client_lock_key(client_id)`; a second writer of the same
        client waits here (no timeout: the first writer's transaction is bounded) and logs that it waits. Without it,
        two writers of one client × range both delete and both insert, and the later commit fails on the primary
        key. SQLite: nothing more to take, `_write` began with the database write lock (BEGIN IMMEDIATE, waiting
        up to the busy timeout).
        """
        if not self.is_postgres:
            return
        key = client_lock_key(client_id)
        if conn.execute(sa.select(sa.func.pg_try_advisory_xact_lock(key))).scalar():
            return
        logger.info("waiting for another writer of client %s to commit (advisory lock %d)", client_id, key)
        started = time.perf_counter()
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
        logger.info("client %s: lock taken after %.1f s", client_id, time.perf_counter() - started)

    # --- migrations ---

    def current_revision(self) -> str | None:
        """The migration revision the database is at; None for an empty database."""
        # Read directly: a MigrationContext per call would log its setup on every run.
        with self._engine.connect() as conn:
            if not sa.inspect(conn).has_table(VERSION_TABLE):
                return None
            return conn.execute(
                sa.select(sa.column("version_num")).select_from(sa.table(VERSION_TABLE))
            ).scalar()

    def migrate(self) -> None:
        """Upgrade the schema to the newest migration; two cheap reads and no lock when already there.

        Concurrent callers are serialised (PostgreSQL advisory lock, SQLite write lock plus retries), and the
        upgrade runs in one transaction, so a second process finds the schema already at head. At head this only
        reads, so a role without DDL rights (the writer) may call it; behind head such a role gets
        MigrationNotAllowedError and nothing changes.
        """
        head = head_revision()
        current = self.current_revision()
        if current == head:
            return
        for attempt in range(1, MIGRATE_ATTEMPTS + 1):
            try:
                with self._write() as conn:
                    self._lock(conn, PG_MIGRATION_LOCK_KEY)
                    command.upgrade(alembic_config(connection=conn), "head")
                break
            except sa.exc.OperationalError as exc:
                if self.is_postgres or not is_sqlite_locked(exc) or attempt == MIGRATE_ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
            except sa.exc.ProgrammingError as exc:
                if getattr(exc.orig, "pgcode", None) != PG_INSUFFICIENT_PRIVILEGE:
                    raise
                raise MigrationNotAllowedError(
                    f"the warehouse at {self.url_for_display} is at migration {current or 'none'}, this version "
                    f"needs {head}, and role {self._engine.url.username!r} may not change the schema: run "
                    f"`kpi-platform migrate` with {settings.ENV_WAREHOUSE_OWNER_URL} set to the owner role"
                ) from None
        logger.info("warehouse %s migrated to %s", self.url_for_display, head)

    # --- clients ---

    def upsert_clients(self, rows: Sequence[Mapping[str, Any]]) -> ClientSync:
        """Insert new clients and update changed ones by client_id, in one transaction; never deletes.

        A client missing from `rows` keeps its row: deactivate a client by passing it with active=False.
        """
        from kpi_platform.warehouse.frames import json_normalized

        incoming = [_client_row(row) for row in rows]
        ids = [row["client_id"] for row in incoming]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"client ids given more than once: {duplicates}")
        if not incoming:
            return ClientSync(added=(), updated=(), unchanged=())
        table = schema.clients
        now = datetime.now(UTC)
        added: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        with self._write() as conn:
            self._lock(conn, PG_CLIENTS_LOCK_KEY)
            existing = {
                row.client_id: row._mapping
                for row in conn.execute(sa.select(table).where(table.c.client_id.in_(ids)))
            }
            inserts = []
            for row in incoming:
                old = existing.get(row["client_id"])
                if old is None:
                    inserts.append({**row, "created_at": now, "updated_at": now})
                    added.append(row["client_id"])
                elif any(json_normalized(old[f]) != row[f] for f in CLIENT_FIELDS):
                    values = {f: row[f] for f in CLIENT_FIELDS}
                    conn.execute(
                        table.update()
                        .where(table.c.client_id == row["client_id"])
                        .values(**values, updated_at=now)
                    )
                    updated.append(row["client_id"])
                else:
                    unchanged.append(row["client_id"])
            if inserts:
                conn.execute(table.insert(), inserts)
        return ClientSync(added=tuple(added), updated=tuple(updated), unchanged=tuple(unchanged))

    def list_clients(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """Client rows ordered by client_id; timestamps UTC-aware, settings a dict."""
        table = schema.clients
        query = sa.select(table).order_by(table.c.client_id)
        if active_only:
            query = query.where(table.c.active.is_(True))
        with self._engine.connect() as conn:
            return [_client_out(row._asdict()) for row in conn.execute(query)]

    def get_client(self, client_id: str) -> dict[str, Any] | None:
        table = schema.clients
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.client_id == client_id)).first()
        return None if row is None else _client_out(row._asdict())

    # --- daily KPIs ---

    def replace_client_range(
        self,
        *,
        client_id: str,
        start: date,
        end: date,
        campaign_rows: pd.DataFrame,
        daily_totals: pd.DataFrame,
    ) -> WriteStats:
        """Replace one client's campaign rows and daily totals in [start, end], all or nothing.

        Idempotency key: (client_id, [start, end]). One transaction deletes the range in both tables and
        inserts the given rows, so re-running with the same frames leaves identical rows, a restatement drops
        campaigns that disappeared, and any failure leaves the previous rows. Rows of another client or outside
        the range are rejected with ValueError before the database is touched. The client must be registered.
        Concurrent writers of the same client wait for each other (`_lock_client`), so two runs over the same
        range both succeed and leave the rows of the one that committed last.
        """
        if end < start:
            raise ValueError(f"range for client {client_id!r} ends ({end}) before it starts ({start})")
        from kpi_platform.warehouse.frames import prepare_frame

        campaigns = prepare_frame(
            campaign_rows,
            schema.campaign_daily_kpis,
            name="campaign_rows",
            client_id=client_id,
            start=start,
            end=end,
        )
        days = prepare_frame(
            daily_totals,
            schema.client_daily_kpis,
            name="daily_totals",
            client_id=client_id,
            start=start,
            end=end,
        )
        started = time.perf_counter()
        with self._write() as conn:
            self._lock_client(conn, client_id)
            for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
                conn.execute(
                    sa.delete(table).where(
                        table.c.client_id == client_id, table.c.kpi_date.between(start, end)
                    )
                )
            self._insert_frame(conn, schema.campaign_daily_kpis, campaigns)
            self._insert_frame(conn, schema.client_daily_kpis, days)
            retired = self._retire_forecasts(conn, client_id=client_id, days=days)
        seconds = time.perf_counter() - started
        logger.debug(
            "replaced %s %s..%s: %d campaign rows, %d day rows in %.3fs",
            client_id,
            start,
            end,
            len(campaigns),
            len(days),
            seconds,
        )
        return WriteStats(
            campaign_rows=len(campaigns), day_rows=len(days), seconds=seconds, forecasts_retired=retired
        )

    def _retire_forecasts(self, conn: sa.Connection, *, client_id: str, days: pd.DataFrame) -> int:
        """Real data replaces a forecast: delete the client's forecasts of the days just written and record each
        one's error per KPI in forecast_accuracy (replacing an earlier record of the day), on the caller's
        transaction. A forecast of a day in the range but not written stays: that day is still missing.

        Without a forecast of those days, the usual case for the daily re-collection of a lookback window, this
        is one DELETE on the primary key that finds nothing (benchmarked in the README).
        """
        if days.empty:
            return 0
        table = schema.kpi_forecasts
        written = sorted(set(days["kpi_date"]))
        retired = conn.execute(
            sa.delete(table)
            .where(
                table.c.client_id == client_id,
                table.c.kpi_date.between(written[0], written[-1]),
                table.c.kpi_date.in_(written),
            )
            .returning(*table.c)
        ).all()
        if not retired:
            return 0
        rows = forecast_errors(retired, days, recorded_at=datetime.now(UTC))
        accuracy = schema.forecast_accuracy
        conn.execute(
            sa.delete(accuracy).where(
                accuracy.c.client_id == client_id, accuracy.c.kpi_date.in_([f.kpi_date for f in retired])
            )
        )
        if rows:
            conn.execute(accuracy.insert(), rows)
        logger.debug("client %s: %d forecast day(s) replaced by collected data", client_id, len(retired))
        return len(retired)

    def _insert_frame(self, conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        from kpi_platform.warehouse.frames import holds_copy_null, records

        if self.is_postgres and not holds_copy_null(frame):
            self._copy_frame(conn, table, frame)
        else:
            conn.execute(table.insert(), records(frame))

    def _copy_frame(self, conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
        """COPY the frame into `table` on the connection's own transaction (psycopg2 `copy_expert`)."""
        from kpi_platform.warehouse.frames import COPY_NULL, COPY_READ_SIZE, CsvStream, is_json

        preparer = conn.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(name) for name in frame.columns)
        # Identifiers come from the table metadata; the values travel in the COPY stream, never in the SQL.
        statement = f"COPY {preparer.format_table(table)} ({columns}) FROM STDIN WITH (FORMAT csv, NULL '{COPY_NULL}')"
        dbapi_error = conn.dialect.loaded_dbapi.Error
        driver_connection = conn.connection.driver_connection
        assert driver_connection is not None, "an open Connection has a DB-API connection"
        cursor = driver_connection.cursor()
        try:
            json_columns = [c.name for c in table.columns if is_json(c) and c.name in frame.columns]
            stream = CsvStream(frame, json_columns=json_columns)
            cursor.copy_expert(statement, stream, size=COPY_READ_SIZE)
        except dbapi_error as exc:
            # Same exception types as the executemany path (e.g. sa.exc.IntegrityError), whichever path ran.
            raise sa.exc.DBAPIError.instance(statement, None, exc, dbapi_error, dialect=conn.dialect) from exc
        finally:
            cursor.close()

    def read_client_days(self, *, client_id: str | None = None, start: date, end: date) -> pd.DataFrame:
        """client_daily_kpis rows in [start, end] (all clients when client_id is None), by client and day."""
        table = schema.client_daily_kpis
        query = sa.select(table).where(table.c.kpi_date.between(start, end))
        if client_id is not None:
            query = query.where(table.c.client_id == client_id)
        return self._read(query.order_by(table.c.client_id, table.c.kpi_date), table)

    def read_campaign_days(self, *, client_id: str, start: date, end: date) -> pd.DataFrame:
        """campaign_daily_kpis rows of one client in [start, end], by day and campaign."""
        table = schema.campaign_daily_kpis
        query = (
            sa.select(table)
            .where(table.c.client_id == client_id, table.c.kpi_date.between(start, end))
            .order_by(table.c.kpi_date, table.c.campaign_id)
        )
        return self._read(query, table)

    def present_days(
        self, *, start: date, end: date, client_ids: Iterable[str] | None = None
    ) -> dict[str, set[date]]:
        """Days in [start, end] that have a client_daily_kpis row (idle days included), per client.

        Every requested client is a key, with an empty set when nothing was collected; without
        `client_ids`, every registered client is.
        """
        table = schema.client_daily_kpis
        query = sa.select(table.c.client_id, table.c.kpi_date).where(table.c.kpi_date.between(start, end))
        with self._engine.connect() as conn:
            if client_ids is None:
                ids = list(conn.execute(sa.select(schema.clients.c.client_id)).scalars())
            else:
                ids = list(client_ids)
                if not ids:
                    return {}
                query = query.where(table.c.client_id.in_(ids))
            present: dict[str, set[date]] = {client_id: set() for client_id in ids}
            for client_id, kpi_date in conn.execute(query):
                present.setdefault(client_id, set()).add(kpi_date)
        return present

    # --- forecasts ---

    def replace_forecasts(self, *, client_id: str, forecasts: pd.DataFrame) -> int:
        """Replace every stored forecast of one client with `forecasts` (kpi_forecasts rows; empty: remove them
        all), in one transaction under the client's write lock. Days that have a client_daily_kpis row by then
        are dropped, so a forecast never stands beside collected data: a collection writing one of its days
        either committed before (the day is read here) or waits for this transaction and then retires the
        forecast. Returns the forecast days stored.
        """
        table = schema.kpi_forecasts
        frame = forecasts
        if not frame.empty:
            import pandas as pd

            from kpi_platform.warehouse.frames import prepare_frame

            dates = pd.to_datetime(frame["kpi_date"]).dt.date
            frame = prepare_frame(
                frame, table, name="forecasts", client_id=client_id, start=min(dates), end=max(dates)
            )
        with self._write() as conn:
            self._lock_client(conn, client_id)
            conn.execute(sa.delete(table).where(table.c.client_id == client_id))
            if frame.empty:
                return 0
            days = schema.client_daily_kpis
            collected = set(
                conn.execute(
                    sa.select(days.c.kpi_date).where(
                        days.c.client_id == client_id,
                        days.c.kpi_date.between(min(frame["kpi_date"]), max(frame["kpi_date"])),
                    )
                ).scalars()
            )
            frame = frame[~frame["kpi_date"].isin(collected)]
            self._insert_frame(conn, table, frame)
        return len(frame)

    def read_forecasts(
        self, *, start: date, end: date, client_ids: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """kpi_forecasts rows in [start, end] (some clients, or all), by client and day."""
        table = schema.kpi_forecasts
        query = sa.select(table).where(table.c.kpi_date.between(start, end))
        if client_ids is not None:
            query = query.where(table.c.client_id.in_(list(client_ids)))
        return self._read(query.order_by(table.c.client_id, table.c.kpi_date), table)

    def read_forecast_accuracy(self, *, start: date, end: date) -> pd.DataFrame:
        """forecast_accuracy rows of the forecast days in [start, end], by client, day and metric."""
        table = schema.forecast_accuracy
        query = (
            sa.select(table)
            .where(table.c.kpi_date.between(start, end))
            .order_by(table.c.client_id, table.c.kpi_date, table.c.metric)
        )
        return self._read(query, table)

    def newest_forecast_at(self) -> datetime | None:
        """When the newest stored forecast was made (UTC); None without forecasts."""
        table = schema.kpi_forecasts
        with self._engine.connect() as conn:
            return as_utc(conn.execute(sa.select(sa.func.max(table.c.generated_at))).scalar())

    # --- monthly KPIs ---

    def monthly_totals_from_days(self, *, client_id: str, month: date) -> dict[str, Any]:
        """Sums over the client-day rows of the month containing `month`.

        Keys: client_id, month (first day), the settings.SUM_COLUMNS, ctr_pct and cpc recomputed from the sums (None
        without impressions / clicks), days_present, days_in_month, idle_days, currency (None without rows).
        Raises ValueError if the month's rows carry more than one currency.
        """
        first, last = _month_bounds(month)
        table = schema.client_daily_kpis
        in_month = (table.c.client_id == client_id, table.c.kpi_date.between(first, last))
        query = sa.select(
            *(sa.func.coalesce(sa.func.sum(table.c[name]), 0).label(name) for name in settings.SUM_COLUMNS),
            sa.func.count().label("days_present"),
            sa.func.coalesce(sa.func.sum(sa.case((table.c.delivery == "idle", 1), else_=0)), 0).label(
                "idle_days"
            ),
        ).where(*in_month)
        with self._engine.connect() as conn:
            sums = conn.execute(query).one()._mapping
            currencies = sorted(
                conn.execute(sa.select(table.c.currency).where(*in_month).distinct()).scalars()
            )
        if len(currencies) > 1:
            raise ValueError(
                f"client {client_id!r} has days in {currencies} during {first:%Y-%m}; cannot sum them"
            )
        from kpi_platform.warehouse.frames import is_integer

        totals: dict[str, Any] = {"client_id": client_id, "month": first}
        for name in settings.SUM_COLUMNS:
            column = table.c[name]
            totals[name] = int(sums[name]) if is_integer(column) else round(float(sums[name]), 2)
        totals["ctr_pct"] = totals["clicks"] / totals["impressions"] * 100 if totals["impressions"] else None
        totals["cpc"] = round(totals["spend"] / totals["clicks"], 4) if totals["clicks"] else None
        totals["days_present"] = int(sums["days_present"])
        totals["days_in_month"] = (last - first).days + 1
        totals["idle_days"] = int(sums["idle_days"])
        totals["currency"] = currencies[0] if currencies else None
        return totals

    def upsert_monthly_summary(self, row: Mapping[str, Any]) -> None:
        """Insert or replace one client_monthly_kpis row by (client_id, month) in one transaction.

        `month` must be the first day of the month; NaN becomes NULL; computed_at defaults to now. Serialised
        with the client's other writers (`_lock_client`), so two summaries of one month never collide.
        """
        table = schema.client_monthly_kpis
        unknown = set(row) - set(table.columns.keys())
        if unknown:
            raise ValueError(f"monthly summary: columns {sorted(unknown)} are not in table {table.name}")
        import numpy as np

        values = {"computed_at": datetime.now(UTC), **row}
        month = values.get("month")
        if not isinstance(month, date) or isinstance(month, datetime) or month.day != 1:
            raise ValueError(
                f"monthly summary of {values.get('client_id')!r}: month must be a first-of-month date, got {month!r}"
            )
        for name, value in list(values.items()):
            if isinstance(value, float) and math.isnan(value):
                values[name] = None
            elif isinstance(value, np.generic):
                values[name] = value.item()
        missing = [c.name for c in table.columns if not c.nullable and values.get(c.name) is None]
        if missing:
            raise ValueError(
                f"monthly summary of {values.get('client_id')!r} {month}: required columns {missing} missing"
            )
        with self._write() as conn:
            self._lock_client(conn, values["client_id"])
            conn.execute(
                sa.delete(table).where(table.c.client_id == values["client_id"], table.c.month == month)
            )
            conn.execute(table.insert(), [values])

    def read_monthly(self, *, client_id: str | None = None) -> pd.DataFrame:
        """client_monthly_kpis rows (one client, or all), by client and month."""
        table = schema.client_monthly_kpis
        query = sa.select(table).order_by(table.c.client_id, table.c.month)
        if client_id is not None:
            query = query.where(table.c.client_id == client_id)
        return self._read(query, table)

    # --- platform activity metrics ---

    def metric_definitions(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """Rows of metric_definitions (`is_active` a bool), by category and type; only active ones if asked."""
        table = schema.metric_definitions
        query = sa.select(table).order_by(table.c.metric_category, table.c.metric_type)
        if active_only:
            query = query.where(table.c.is_active.is_(True))
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def record_daily_metrics(
        self, rows: Sequence[Mapping[str, Any]], *, force: bool = False, reason: str | None = None
    ) -> MetricWrite:
        """Store daily metric snapshots; a key already stored is left alone and reported in `kept`.

        Rows carry metric_date, metric_type (the kind, `count`), metric_category (the metric, `posts_total`),
        value (at most 4 decimals, exact up to 2^53), metadata (a dict) and collection_timestamp (aware); the
        warehouse adds created_at, when the row was stored.
        Snapshots are immutable: only `force=True` replaces a stored value, for corrections, with a WARNING log
        line per day naming the old and new values; the replaced value is kept in the row's metadata under
        `replaces`, and each replacement appends a daily_metrics_corrections row with `reason` (default: the
        run id of the rows' metadata). On PostgreSQL the replacement goes through the owner's function
        `kpi_correct_daily_metric`, so it works for a writer without UPDATE on daily_metrics. Inserts never
        update or delete. One transaction, serialised against concurrent writers. Raises ValueError before
        touching the database for a malformed or duplicate row, or a metric without a metric_definitions row.
        """
        incoming = _metric_rows(rows)
        if not incoming:
            return MetricWrite(inserted=(), kept=(), replaced=())
        table = schema.daily_metrics
        keys = list(incoming)
        first, last = min(k[0] for k in keys), max(k[0] for k in keys)
        metrics = sorted({(k[1], k[2]) for k in keys})
        inserted: list[MetricKey] = []
        kept: list[MetricKey] = []
        replaced: list[MetricReplacement] = []
        with self._write() as conn:
            self._lock(conn, PG_METRICS_LOCK_KEY)
            defined = {
                (row.metric_type, row.metric_category)
                for row in conn.execute(
                    sa.select(
                        schema.metric_definitions.c.metric_type, schema.metric_definitions.c.metric_category
                    )
                )
            }
            undefined = [
                f"{category} ({metric_type})"
                for metric_type, category in metrics
                if (metric_type, category) not in defined
            ]
            if undefined:
                raise ValueError(
                    f"metrics {undefined} have no row in metric_definitions; add their definitions first"
                )
            existing = {
                (row.metric_date, row.metric_type, row.metric_category): row
                for row in conn.execute(
                    sa.select(
                        table.c.id,
                        table.c.metric_date,
                        table.c.metric_type,
                        table.c.metric_category,
                        table.c.value,
                        table.c.collection_timestamp,
                    ).where(
                        table.c.metric_date.between(first, last),
                        table.c.metric_type.in_({m for m, _ in metrics}),
                        table.c.metric_category.in_({c for _, c in metrics}),
                    )
                )
            }
            inserts = []
            stored_at = datetime.now(UTC)
            for key, row in incoming.items():
                old = existing.get(key)
                if old is None:
                    inserts.append({**row, "created_at": stored_at})
                    inserted.append(key)
                elif not force:
                    kept.append(key)
                else:
                    replaces = {
                        "value": float(old.value),
                        "collection_timestamp": as_utc(old.collection_timestamp).isoformat(),
                    }
                    self._correct_daily_metric(
                        conn,
                        old=old,
                        row={**row, "metadata": {**row["metadata"], "replaces": replaces}},
                        reason=reason or _default_correction_reason(row),
                    )
                    replaced.append(
                        MetricReplacement(*key, old_value=float(old.value), new_value=row["value"])
                    )
            if inserts:
                conn.execute(table.insert(), inserts)
        for line in describe_replacements(replaced):
            logger.warning("%s", line)
        return MetricWrite(inserted=tuple(inserted), kept=tuple(kept), replaced=tuple(replaced))

    def _correct_daily_metric(
        self, conn: sa.Connection, *, old: sa.Row, row: Mapping[str, Any], reason: str
    ) -> None:
        """Replace one stored snapshot and append its audit row, on the caller's transaction."""
        if self.is_postgres:
            correct = getattr(sa.func, schema.CORRECT_DAILY_METRIC_FUNCTION)
            conn.execute(
                sa.select(
                    correct(
                        sa.bindparam("metric_date", row["metric_date"], type_=sa.Date()),
                        sa.bindparam("metric_type", row["metric_type"], type_=sa.String()),
                        sa.bindparam("metric_category", row["metric_category"], type_=sa.String()),
                        sa.bindparam("value", row["value"], type_=schema.daily_metrics.c.value.type),
                        sa.bindparam("metadata", row["metadata"], type_=sa.JSON()),
                        sa.bindparam(
                            "collection_timestamp",
                            row["collection_timestamp"],
                            type_=sa.DateTime(timezone=True),
                        ),
                        sa.bindparam("reason", reason, type_=sa.Text()),
                    )
                )
            )
            return
        table = schema.daily_metrics
        conn.execute(
            table.update()
            .where(table.c.id == old.id)
            .values(
                value=row["value"], metadata=row["metadata"], collection_timestamp=row["collection_timestamp"]
            )
        )
        conn.execute(
            schema.daily_metrics_corrections.insert().values(
                metric_date=old.metric_date,
                metric_type=old.metric_type,
                metric_category=old.metric_category,
                old_value=old.value,
                new_value=row["value"],
                old_collection_timestamp=as_utc(old.collection_timestamp),
                new_collection_timestamp=row["collection_timestamp"],
                reason=reason,
                corrected_by=None,
                corrected_at=datetime.now(UTC),
            )
        )

    def daily_metric_bounds(self, *, metric_type: str) -> tuple[date, date] | None:
        """First and last metric_date stored for a kind of figure (e.g. `count`); None when it has no rows."""
        table = schema.daily_metrics
        query = sa.select(sa.func.min(table.c.metric_date), sa.func.max(table.c.metric_date)).where(
            table.c.metric_type == metric_type
        )
        with self._engine.connect() as conn:
            first, last = conn.execute(query).one()
        if first is None:
            return None
        return first, last

    def read_daily_metrics(
        self,
        *,
        start: date,
        end: date,
        categories: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """daily_metrics rows in [start, end], optionally of some categories (metrics, e.g. `posts_total`) / types
        (kinds of figure, e.g. `count`), by day, category, type."""
        table = schema.daily_metrics
        query = sa.select(table).where(table.c.metric_date.between(start, end))
        if categories is not None:
            query = query.where(table.c.metric_category.in_(list(categories)))
        if types is not None:
            query = query.where(table.c.metric_type.in_(list(types)))
        query = query.order_by(table.c.metric_date, table.c.metric_category, table.c.metric_type)
        return self._read(query, table)

    def _read(self, query: sa.Select, table: sa.Table) -> pd.DataFrame:
        from kpi_platform.warehouse.frames import typed_frame

        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return typed_frame(rows, table)
