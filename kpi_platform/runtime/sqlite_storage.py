"""Dagster's SQLite storage with batched event writes, for the embedded default instance (the top-level dagster.yaml).

Dagster's SQLite event log opens two databases for every asset event it stores, each through a new engine with its
own transaction and commit: the run's own file and the cross-run index. A year-long range run writes 730 such
events (a "materialization planned" event per partition when the run is created, a materialization per partition
when its step ends), about 14 ms each on this 2-core machine: most of the run. Dagster hands a batch of these events
to `store_event_batch` when DAGSTER_EVENT_BATCH_SIZE is set, but the SQLite storage then still stores them one by
one. Here a batch is written as one transaction per database: the rows in the run's file, the same rows mirrored in
the index with their tags, and each asset's index row (`asset_keys`) updated once per kind of event, as storing
the events in turn would leave it. Any other event, and a batch spanning several runs, takes Dagster's own path.

Everything else (run storage, schedule storage, the file layout under DAGSTER_HOME) is Dagster's default SQLite
storage, so an instance folder written by either class is read by the other.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from dagster import EventLogEntry

from kpi_platform.runtime.dagster_private import (
    ASSET_EVENTS,
    ConfigurableClassData,
    DagsterSqliteStorage,
    SqlEventLogStorageTable,
    SqliteEventLogStorage,
    SqliteRunStorage,
    SqliteScheduleStorage,
    check_sqlite_event_batch_hook,
    sqlite_event_logs_directory,
    sqlite_runs_directory,
    sqlite_schedule_directory,
)

# Fails at import (when the instance loads this storage) if Dagster's SQLite storage no longer has what this uses.
check_sqlite_event_batch_hook()


def _is_asset_event(event: EventLogEntry) -> bool:
    return event.dagster_event is not None and event.dagster_event.event_type in ASSET_EVENTS


def _inserted_id(primary_key: Sequence[Any] | None) -> int:
    if not primary_key or primary_key[0] is None:
        # As `store_event`: an asset event's tags and asset row cannot be stored without its id.
        raise RuntimeError("the index database gave no id for an inserted event")
    return int(primary_key[0])


class BatchedSqliteEventLogStorage(SqliteEventLogStorage):
    """SqliteEventLogStorage that stores a batch of asset events in one transaction per database."""

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Consecutive asset events are stored together (the batches Dagster hands over are all asset events of
        one run); anything else is stored as `store_event` stores it, in the batch's order."""
        if len({e.run_id for e in events}) != 1:
            super().store_event_batch(events)
            return
        for is_asset, group in itertools.groupby(events, key=_is_asset_event):
            segment = list(group)
            if is_asset and len(segment) > 1:
                self._store_asset_events(segment)
            else:
                for event in segment:
                    self.store_event(event)

    def _store_asset_events(self, events: Sequence[EventLogEntry]) -> None:
        # Each event is serialized once, for both databases (`store_event` serializes it for each).
        rows = [self._event_to_row(event) for event in events]
        insert = SqlEventLogStorageTable.insert()
        with self.run_connection(events[0].run_id) as conn:
            conn.execute(insert, rows)
        with self.index_transaction() as conn:
            # One INSERT per row: SQLite does not promise RETURNING's order for a multi-row INSERT, and the tags
            # and asset rows need each event's own id. The cost is the commit, paid once here.
            event_ids = [_inserted_id(conn.execute(insert, row).inserted_primary_key) for row in rows]
            self._store_asset_event_tags(conn, events, event_ids)
            # Each kind of event sets the same columns of its asset's row every time, so the last event of each
            # kind, applied in the batch's order, leaves the row as storing every event in turn would.
            last: dict[tuple[object, object], int] = {}
            for index, event in enumerate(events):
                dagster_event = event.get_dagster_event()
                last[(dagster_event.asset_key, dagster_event.event_type)] = index
            for index in sorted(last.values()):
                self._store_asset_event(conn, events[index], event_ids[index])


class BatchedSqliteStorage(DagsterSqliteStorage):
    """Dagster's default SQLite storage (`storage: sqlite` in dagster.yaml, same folders under `base_dir`) with
    `BatchedSqliteEventLogStorage` as its event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        # DagsterSqliteStorage.__init__ would open the stock event log first (its index database, a reindex
        # check); the three storages are built here instead, in Dagster's layout.
        self.base_dir = base_dir
        self._run_storage = SqliteRunStorage.from_local(sqlite_runs_directory(base_dir))
        self._event_log_storage = BatchedSqliteEventLogStorage(sqlite_event_logs_directory(base_dir))
        self._schedule_storage = SqliteScheduleStorage.from_local(sqlite_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        # DagsterSqliteStorage builds its own class here, not `cls`.
        return cls.from_local(inst_data=inst_data, **config_value)
