"""Dagster's PostgreSQL storage with a small connection pool, for the production instance (deploy/dagster.yaml).

dagster-postgres 0.29 opens a new PostgreSQL connection for every statement it runs outside the webserver
(`NullPool`), and PostgreSQL forks a backend for each. Creating one range run of a single-run backfill writes one
"materialization planned" event per partition (365 for a year), each with two connections: measured on this
2-core machine, 22 ms per event without a pool and 6 ms with one (`benchmarks/ui_backfill.py` shows what it does
to a whole backfill). dagster-postgres has no setting for it outside the webserver, so these subclasses call its
public `optimize_for_webserver(...)` (the pool the webserver gets) after the storage is built, with no statement
timeout; everything else is dagster-postgres's own code.

The pool is per process (the webserver, the daemon, the code server, each run worker) and small: `pool_size`
connections stay open, `max_overflow` more are opened while threads (the daemon's) need them at once. A
connection unused for `POOL_RECYCLE_S` is replaced, and `pool_pre_ping` is off: a connection that PostgreSQL
dropped fails one statement, SQLAlchemy then discards the whole pool, and dagster-postgres retries.

The event-log class also writes a batch of "materialization planned" events (DAGSTER_EVENT_BATCH_SIZE) in one
INSERT, as dagster-postgres already does for materializations, instead of one transaction per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEventType, EventLogEntry
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from kpi_platform.runtime.dagster_private import (
    ConfigurableClassData,
    SqlEventLogStorageTable,
    check_event_batch_hook,
)

# Fails at import (when the instance loads this storage) if dagster-postgres no longer has what the override uses.
check_event_batch_hook()

POOL_SIZE = 1
POOL_MAX_OVERFLOW = 4
POOL_RECYCLE_S = 300


#: `SET statement_timeout = 0`: no limit, as dagster-postgres has outside the webserver.
NO_STATEMENT_TIMEOUT = 0


def pooled_engine(storage: Any) -> None:
    """Give `storage` a pooled engine on the same URL and credentials, through dagster-postgres's public
    `optimize_for_webserver` (pool size 1, the given recycle and overflow), without a statement timeout.

    dagster-postgres sizes that pool at one connection, as `POOL_SIZE` does here; the NullPool engine it replaces
    holds no connection, so nothing is left open."""
    storage.optimize_for_webserver(
        statement_timeout=NO_STATEMENT_TIMEOUT, pool_recycle=POOL_RECYCLE_S, max_overflow=POOL_MAX_OVERFLOW
    )


def _arguments(inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "inst_data": inst_data,
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class _Pooled:
    """Mixed in before a dagster-postgres storage class: built as usual, then given a pooled engine."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pooled_engine(self)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # dagster-postgres builds its own class here, not `cls`.
        return cls(**_arguments(inst_data, config_value))


class PooledPostgresRunStorage(_Pooled, PostgresRunStorage):
    """PostgresRunStorage whose statements reuse pooled connections."""


class PooledPostgresEventLogStorage(_Pooled, PostgresEventLogStorage):
    """PostgresEventLogStorage whose statements reuse pooled connections, and which writes a batch of
    "materialization planned" events in one INSERT."""

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """dagster-postgres writes a batch of materializations in one INSERT but stores "materialization planned"
        events one by one (two transactions and a NOTIFY each, the NOTIFY unused since 1.x): 365 per year-long
        range run, written by whoever creates the run (the backfill daemon). Here they get the materializations'
        treatment: the same rows in one INSERT, their tags and the asset-key rows in one index transaction. A
        planned event sets only `last_run_id` and the event timestamp on its asset-key row, so the last event
        per asset leaves that row as storing each in turn would. Other events take dagster-postgres's path.
        """
        planned = [e for e in events if _event_type(e) == DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
        if not planned:
            super().store_event_batch(events)
            return
        with self._connect() as conn:
            rows = conn.execute(
                self.prepare_insert_event_batch(planned).returning(SqlEventLogStorageTable.c.id)
            ).fetchall()
        event_ids = [int(row[0]) for row in rows]
        last_per_asset = {
            e.get_dagster_event().asset_key: (e, i) for e, i in zip(planned, event_ids, strict=True)
        }
        with self.index_transaction() as conn:
            self._store_asset_event_tags(conn, planned, event_ids)
            for event, event_id in last_per_asset.values():
                self._store_asset_event(conn, event, event_id)
        rest = [e for e in events if _event_type(e) != DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
        if rest:
            super().store_event_batch(rest)


def _event_type(event: EventLogEntry) -> DagsterEventType | None:
    return event.dagster_event.event_type if event.dagster_event else None


class PooledPostgresScheduleStorage(_Pooled, PostgresScheduleStorage):
    """PostgresScheduleStorage whose statements reuse pooled connections."""
