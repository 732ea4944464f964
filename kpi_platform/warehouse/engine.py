"""Warehouse engines (SQLite hooks, PostgreSQL via psycopg2) and the packaged alembic migrations' plumbing."""

from __future__ import annotations

import logging
import sqlite3
import time
from functools import cache
from pathlib import Path

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
WAL_SWITCH_ATTEMPTS = 20
VERSION_TABLE = "alembic_version"
#: Connection execution option naming the SQLite BEGIN mode (DEFERRED or IMMEDIATE).
SQLITE_BEGIN_OPTION = "kpi_sqlite_begin"


def make_engine(url: str | sa.URL) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL warehouse URL.

    SQLite: the parent folder is created; WAL, foreign keys and a busy timeout are enabled on every connection,
    because several run processes write to the same file. PostgreSQL: always psycopg2 (COPY needs it), with
    pre-ping so connections dropped by the server are replaced.
    """
    parsed = sa.make_url(url)
    backend = parsed.drivername.split("+", 1)[0]
    if backend == "sqlite":
        engine = _sqlite_engine(parsed)
    elif backend in ("postgresql", "postgres"):
        engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg2"), pool_pre_ping=True)
    else:
        raise ValueError(
            f"unsupported warehouse URL {parsed.render_as_string(hide_password=True)}: "
            "use sqlite:///<path> or postgresql://user@host/db"
        )
    logger.debug("warehouse engine for %s", engine.url.render_as_string(hide_password=True))
    return engine


def _sqlite_engine(url: sa.URL) -> sa.Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # pysqlite's own implicit BEGIN skips DDL and cannot take the write lock up front; BEGIN is emitted below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # synchronous=NORMAL is crash-safe in WAL mode; only a power loss can drop the last commits.
            for pragma in (f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys=ON", "synchronous=NORMAL"):
                cursor.execute(f"PRAGMA {pragma}")
            _enable_wal(cursor)
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _enable_wal(cursor) -> None:
    """Switch the file to WAL (persistent, so usually already on).

    The switch needs an exclusive lock and fails at once, without the busy handler, while another connection
    is switching a new file at the same moment; hence the short retry.
    """
    for attempt in range(1, WAL_SWITCH_ATTEMPTS + 1):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == WAL_SWITCH_ATTEMPTS:
                raise
            time.sleep(0.05 * attempt)


def alembic_config(*, connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """Alembic configuration of the packaged migrations; no alembic.ini is involved.

    With `connection`, migrations run on it inside the caller's transaction; otherwise on `url`
    (or KPI_WAREHOUSE_URL / the embedded SQLite file).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def head_revision() -> str:
    """The newest migration revision shipped with the package."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def is_sqlite_locked(exc: sa.exc.OperationalError) -> bool:
    return "database is locked" in str(exc.orig) or "database is busy" in str(exc.orig)
