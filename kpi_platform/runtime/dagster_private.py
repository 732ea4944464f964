"""Every private Dagster name this project uses, behind one door, with the guard that fails loudly on an upgrade.

Dagster 1.13 leaves a few things this platform needs without a public API: which partitions a backfill not yet
launched will cover, whether a check record is still only planned, how the code server starts run workers, how
often the backfill daemon looks for work, how dagster-postgres and the SQLite storage write a batch of events, and
how each partition of a range run gets its own materialization metadata without a cost per partition. Each is
imported here and nowhere else (the test suite's own instance fixtures aside), so an upgrade has one file to read.

`check_dagster()` runs when a production process starts (code server, daemon, pooled storage): a Dagster version
other than `PINNED_DAGSTER_VERSION`, or one of these names missing, stops the process with the name and the
fallback, instead of letting a renamed hook silently change behaviour. The pooled-vs-stock storage test
(`kpi_platform_tests/runtime/test_pg_storage.py::test_pooled_storage_matches_stock_storage_upgrade_gate`) is
the upgrade gate for the event-log override.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import dagster

# PRIVATE in 1.13: the event types Dagster mirrors in the SQLite index shard (what the SQLite storage batches).
from dagster._core.events import ASSET_EVENTS

# PRIVATE in 1.13: which partitions a not-yet-launched backfill will cover, and the backfill filters.
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus

# PRIVATE in 1.13: a schedule's stored state (running or stopped in the UI), read without the code location.
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

# PRIVATE in 1.13: check records and their status (a PLANNED record has no result yet).
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

# PRIVATE in 1.13: the event-log table, for the pooled and the SQLite storage's batched INSERTs.
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

# PRIVATE in 1.13: Dagster's default SQLite storage and its parts (event log, runs, schedules, the folders under
# base_dir), which the embedded default's batched storage (kpi_platform/runtime/sqlite_storage.py) extends.
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

# PRIVATE in 1.13: the run storage's tables, so the health report reads a month of collection runs by their status,
# end and tags without deserializing every run's body (`run_history.finished_collection_runs`).
from dagster._core.storage.runs.schema import RunsTable, RunTagsTable
from dagster._core.storage.runs.sql_run_storage import SqlRunStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage
from dagster._core.storage.sqlite_storage import _event_logs_directory as sqlite_event_logs_directory
from dagster._core.storage.sqlite_storage import _runs_directory as sqlite_runs_directory
from dagster._core.storage.sqlite_storage import _schedule_directory as sqlite_schedule_directory

# PRIVATE in 1.13: how a configurable class (the storage) receives its config.
from dagster._serdes import ConfigurableClassData

# PRIVATE in 1.13: the ticks of a cron string, as Dagster's scheduler computes them (timezones and DST included).
from dagster._utils.schedules import cron_string_iterator

#: The Dagster release these names were read from (pyproject.toml pins the same one).
PINNED_DAGSTER_VERSION = "1.13.27"

__all__ = [
    "ASSET_EVENTS",
    "AssetCheckExecutionRecord",
    "AssetCheckExecutionRecordStatus",
    "BulkActionStatus",
    "BulkActionsFilter",
    "ConfigurableClassData",
    "DagsterSqliteStorage",
    "InstigatorStatus",
    "InstigatorType",
    "PINNED_DAGSTER_VERSION",
    "RunTagsTable",
    "RunsTable",
    "SqlRunStorage",
    "SqlEventLogStorageTable",
    "SqliteEventLogStorage",
    "SqliteRunStorage",
    "SqliteScheduleStorage",
    "add_partition_metadata",
    "check_dagster",
    "check_sqlite_event_batch_hook",
    "cron_string_iterator",
    "daemon_cli",
    "dagster_cli",
    "grpc_server_module",
    "preload_run_worker",
    "sqlite_event_logs_directory",
    "sqlite_runs_directory",
    "sqlite_schedule_directory",
    "backfill_daemon_modules",
]


class DagsterUpgradeError(RuntimeError):
    """A private Dagster name this project relies on is gone or changed meaning."""


def grpc_server_module() -> ModuleType:
    """`dagster._grpc.server`: the code server's gRPC API server (run worker start, child server command)."""
    return importlib.import_module("dagster._grpc.server")


def preload_run_worker() -> ModuleType:
    """`dagster._grpc.impl`: the run worker's entry point, imported by the fork server before any run forks."""
    return importlib.import_module("dagster._grpc.impl")


def backfill_daemon_modules() -> tuple[ModuleType, ModuleType]:
    """(`dagster._daemon.backfill`, `dagster._daemon.controller`): the backfill loop and the interval it reads."""
    return importlib.import_module("dagster._daemon.backfill"), importlib.import_module(
        "dagster._daemon.controller"
    )


def dagster_cli():  # noqa: ANN201 - a click group
    """The `dagster` command's click group."""
    return importlib.import_module("dagster._cli").cli


def daemon_cli():  # noqa: ANN201 - a click group
    """The `dagster-daemon` command's click group."""
    return importlib.import_module("dagster._daemon.cli").cli


def _require(condition: bool, what: str, fallback: str) -> None:
    if not condition:
        raise DagsterUpgradeError(f"Dagster {dagster.__version__}: {what}; {fallback}")


def check_forkserver_hook(server_module: ModuleType | None = None) -> None:
    """The code server's hook: `DagsterApiServer` starts run workers from `self._mp_ctx`."""
    server = server_module if server_module is not None else grpc_server_module()
    api_server = server.DagsterApiServer
    sources = inspect.getsource(api_server.__init__) + inspect.getsource(api_server.StartRun)
    _require(
        "self._mp_ctx = " in sources and "self._mp_ctx.Process(" in sources,
        "this Dagster version no longer starts run workers from DagsterApiServer._mp_ctx",
        "start the code location with `dagster code-server start` instead",
    )
    _require(
        hasattr(server, "get_python_environment_entry_point"),
        "dagster._grpc.server.get_python_environment_entry_point is gone",
        "start the code location with `dagster code-server start` instead",
    )


def check_backfill_interval_hook() -> None:
    """The daemon's hook: the backfill loop paces itself with `DEFAULT_DAEMON_INTERVAL_SECONDS`."""
    backfill, controller = backfill_daemon_modules()
    _require(
        "DEFAULT_DAEMON_INTERVAL_SECONDS" in inspect.getsource(backfill.execute_backfill_iteration_loop)
        and hasattr(controller, "DEFAULT_DAEMON_INTERVAL_SECONDS"),
        "this Dagster version no longer paces the backfill daemon with DEFAULT_DAEMON_INTERVAL_SECONDS",
        "start the daemon with `dagster-daemon run` instead",
    )


def check_event_batch_hook() -> None:
    """The pooled storage's override: dagster-postgres's event log still offers what `store_event_batch` uses."""
    from dagster_postgres.event_log import PostgresEventLogStorage

    for name in (
        "prepare_insert_event_batch",
        "index_transaction",
        "_store_asset_event_tags",
        "_store_asset_event",
        "_connect",
        "store_event_batch",
    ):
        _require(
            hasattr(PostgresEventLogStorage, name),
            f"PostgresEventLogStorage.{name} is gone",
            "use dagster-postgres's own storage classes in dagster.yaml instead of kpi_platform.runtime.pg_storage",
        )


def check_sqlite_event_batch_hook() -> None:
    """The batched SQLite storage's override: Dagster's SQLite event log still has what `store_event_batch`
    uses."""
    for name in (
        "_event_to_row",
        "run_connection",
        "index_transaction",
        "_store_asset_event_tags",
        "_store_asset_event",
        "store_event",
        "store_event_batch",
    ):
        _require(
            hasattr(SqliteEventLogStorage, name),
            f"SqliteEventLogStorage.{name} is gone",
            "remove the `storage` section from dagster.yaml (Dagster's own SQLite storage)",
        )


def _step_context(context: dagster.AssetExecutionContext) -> Any:
    return getattr(context, "_step_execution_context", None)


def add_partition_metadata(
    context: dagster.AssetExecutionContext, metadata_by_partition: Mapping[str, Mapping[str, Any]]
) -> None:
    """Give each listed partition's materialization of the asset being computed its own metadata (merged over
    what its MaterializeResult gives every partition); the keys must be partitions of this run.

    The public `context.add_asset_metadata(..., partition_key=...)` does the same one key at a time, but checks
    each key by expanding the run's whole partition range and asking the instance twice whether the client
    partition exists: 8-12 ms per key, O(days²) over a year's run (measured 3.1-4.5 s for 365 days). This adds
    the same entries to the step's metadata accumulator (PRIVATE) after one set lookup per key, and falls back to
    the public method when the accumulator is not where 1.13 keeps it.
    """
    run_keys = set(context.partition_keys)
    unknown = sorted(k for k in metadata_by_partition if k not in run_keys)
    if unknown:
        raise ValueError(f"partition metadata for keys this run does not materialize: {unknown[:5]}")
    step = _step_context(context)
    accumulator = getattr(step, "_metadata_accumulator", None)
    if accumulator is None or not hasattr(accumulator, "with_additional_asset_metadata"):
        for key, metadata in metadata_by_partition.items():
            context.add_asset_metadata(metadata, partition_key=key)
        return
    asset_key = context.assets_def.key
    for key, metadata in metadata_by_partition.items():
        accumulator = accumulator.with_additional_asset_metadata(
            asset_key=asset_key, partition_key=key, metadata=metadata
        )
    step._metadata_accumulator = accumulator


def check_partition_metadata_hook() -> None:
    """`add_partition_metadata`'s hook: the step context keeps per-partition asset metadata in
    `_metadata_accumulator`, which the materialization events read back."""
    system = importlib.import_module("dagster._core.execution.context.system")
    execute_step = importlib.import_module("dagster._core.execution.plan.execute_step")
    add_source = inspect.getsource(system.StepExecutionContext.add_asset_metadata)
    events_source = inspect.getsource(execute_step._get_output_asset_events)
    _require(
        "self._metadata_accumulator.with_additional_asset_metadata(" in add_source
        and "get_asset_metadata(" in events_source
        and "partition_key=partition" in events_source,
        "StepExecutionContext no longer keeps per-partition asset metadata in _metadata_accumulator",
        "the daily asset then falls back to context.add_asset_metadata, correct but slow for long range runs",
    )


def check_dagster(*, strict_version: bool = True) -> None:
    """Fail loudly at start if this Dagster is not the one the private names were read from."""
    if strict_version:
        _require(
            dagster.__version__ == PINNED_DAGSTER_VERSION,
            f"kpi_platform's production entry points were verified against Dagster {PINNED_DAGSTER_VERSION}",
            "re-run the upgrade gate tests (kpi_platform_tests/runtime) and update PINNED_DAGSTER_VERSION",
        )
    check_forkserver_hook()
    check_backfill_interval_hook()
    check_event_batch_hook()
    check_sqlite_event_batch_hook()
    check_partition_metadata_hook()
