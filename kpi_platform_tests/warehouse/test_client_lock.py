"""Writers of one client are serialised in the warehouse, on both backends: two processes replacing the same
client × range at once both succeed, the later one waits for the earlier one's commit, and the rows left are those
of a single run. On PostgreSQL this is the per-client advisory lock (`store.client_lock_key`); on SQLite the database
write lock taken at BEGIN IMMEDIATE, with the busy timeout letting the second writer wait instead of failing with
"database is locked".

The writers are real OS processes (multiprocessing, "spawn"), each with its own engine, as two Dagster runs are.
They store prepared ranges through `collect.store_range`, the call the daily asset makes.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
import requests
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.collect import PreparedRange, prepare_range, store_range
from kpi_platform.meta.client import MetaInsightsClient
from kpi_platform.simulator import MetaSimulator, SimulatorConfig, mount_simulator
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform.warehouse.store import client_lock_key
from kpi_platform_tests.support.client_lock import hold_client_lock, sessions_waiting_for_client_lock

CLIENT_ROW = {
    "client_id": "acme",
    "name": "Acme",
    "ad_account_id": "act_100000000001",
    "currency": "EUR",
    "timezone": "Europe/Warsaw",
    "active": True,
    "settings": {},
}
OTHER_ROW = {**CLIENT_ROW, "client_id": "globex", "name": "Globex", "ad_account_id": "act_100000000002"}
START, END = date(2026, 1, 1), date(2026, 1, 14)
#: How long the parent lets the second writer wait before releasing the first (it must still be waiting then).
HELD_S = 1.5
#: Upper bound for any single wait in these tests; a writer still blocked after it is a failure, not a hang.
WAIT_LIMIT_S = 60.0
SPAWN = multiprocessing.get_context("spawn")
#: client_lock_key("acme"). A change here changes the key every deployed version locks, so old and new code
#: running side by side during an upgrade would not wait for each other.
GOLDEN_ACME_KEY = 1_609_175_590_264_891_968


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([CLIENT_ROW, OTHER_ROW])
    try:
        yield wh
    finally:
        wh.dispose()


def prepared(run_id: str, fetched_at: datetime, client_row: dict = CLIENT_ROW) -> PreparedRange:
    """One collection of the range from the in-process simulator, fetched, validated and scored, not stored."""
    simulator = MetaSimulator(SimulatorConfig(today=date(2026, 2, 1)))
    session = requests.Session()
    mount_simulator(session, simulator)
    meta = MetaInsightsClient(base_url=settings.SIMULATOR_BASE_URL, access_token="simulator", session=session)
    try:
        return prepare_range(
            client=Client.from_row(client_row), start=START, end=END, meta=meta, run_id=run_id, now=fetched_at
        )
    finally:
        meta.close()


def table_contents(warehouse: Warehouse) -> dict[str, list[tuple]]:
    """Every row of the two daily fact tables, in primary-key order."""
    out = {}
    with warehouse.engine.connect() as conn:
        for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
            query = sa.select(table).order_by(*table.primary_key.columns)
            out[table.name] = [tuple(row) for row in conn.execute(query)]
    return out


def run_ids(warehouse: Warehouse) -> set[str]:
    with warehouse.engine.connect() as conn:
        return {
            run_id
            for table in (schema.campaign_daily_kpis, schema.client_daily_kpis)
            for run_id in conn.execute(sa.select(table.c.run_id).distinct()).scalars()
        }


# --- the writer processes ------------------------------------------------------------------------------------


def write_range(
    url: str,
    prepared_range: PreparedRange,
    *,
    name: str,
    hold: bool,
    client_lock: bool,
    events: dict,
    results,
) -> None:
    """Child process: store `prepared_range` through `store_range` and report the outcome.

    `hold`: pause inside the write transaction (after the client's lock and the deletes, before the inserts)
    until the parent sets `events["release"]`, having set `events["inside"]`. `client_lock=False` replaces
    the per-client lock with nothing, to show what happens without it."""
    if hold:
        insert_frame = Warehouse._insert_frame

        def held_insert(self, conn, table, frame):
            if not events["inside"].is_set():
                events["inside"].set()
                if not events["release"].wait(WAIT_LIMIT_S):
                    raise TimeoutError("the parent never released the first writer")
            return insert_frame(self, conn, table, frame)

        Warehouse._insert_frame = held_insert
    if not client_lock:
        Warehouse._lock_client = lambda self, conn, client_id: None
    warehouse = Warehouse(url)
    outcome = {"name": name, "error": None, "started": time.time()}
    try:
        events[f"{name}_calling"].set()
        result = store_range(prepared_range, warehouse=warehouse)
        outcome["rows"] = result.campaign_rows + result.day_rows
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which asserts on it
        outcome["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        outcome["finished"] = time.time()
        warehouse.dispose()
        results.put(outcome)


@dataclass
class Overlap:
    """What two overlapping writers did: their outcomes, when the first was released, what the parent saw."""

    first: dict
    second: dict
    released_at: float
    #: PostgreSQL: the lock the second writer was found waiting for (pg_locks.locktype); SQLite: None.
    waited_on: str | None


def pg_waiting_lock(warehouse: Warehouse) -> str | None:
    """The type of a lock some session of this database is waiting for (pg_locks, not granted), if any."""
    with warehouse.engine.connect() as conn:
        return conn.execute(
            sa.text(
                # Waits for a row (transactionid) carry no database: find the sessions through pg_stat_activity.
                "select l.locktype from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                "where not l.granted and a.datname = current_database() limit 1"
            )
        ).scalar()


def wait_for(predicate, what: str, timeout_s: float = WAIT_LIMIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def overlapping_writes(
    warehouse: Warehouse, first: PreparedRange, second: PreparedRange, *, client_lock: bool = True
) -> Overlap:
    """Writer 1 enters its write transaction and stays there; writer 2 starts the same write meanwhile. The
    parent checks writer 2 is blocked (and, on PostgreSQL, what it waits for), then releases writer 1."""
    url = warehouse.engine.url.render_as_string(hide_password=False)
    events = {name: SPAWN.Event() for name in ("inside", "release", "first_calling", "second_calling")}
    results = SPAWN.Queue()
    processes = [
        SPAWN.Process(
            target=write_range,
            args=(url, prepared_range),
            kwargs={
                "name": name,
                "hold": name == "first",
                "client_lock": client_lock,
                "events": events,
                "results": results,
            },
        )
        for name, prepared_range in (("first", first), ("second", second))
    ]
    try:
        processes[0].start()
        assert events["inside"].wait(WAIT_LIMIT_S), "writer 1 never entered its transaction"
        processes[1].start()
        assert events["second_calling"].wait(WAIT_LIMIT_S), "writer 2 never started its write"
        waited_on = None
        if warehouse.is_postgres:
            waited_on = wait_for(lambda: pg_waiting_lock(warehouse), "writer 2 to wait for a lock")
        time.sleep(HELD_S)
        # Writer 2 cannot have finished: writer 1 holds the client's lock (or, without it, row locks) and the
        # database write lock on SQLite.
        assert results.empty(), results.get()
        assert processes[1].is_alive()
        released_at = time.time()
        events["release"].set()
        outcomes = {}
        for _ in processes:
            outcome = results.get(timeout=WAIT_LIMIT_S)
            outcomes[outcome["name"]] = outcome
        for process in processes:
            process.join(WAIT_LIMIT_S)
            assert process.exitcode == 0
    finally:
        events["release"].set()
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()
    return Overlap(outcomes["first"], outcomes["second"], released_at, waited_on)


# --- tests -----------------------------------------------------------------------------------------------------


def test_two_processes_writing_one_client_range_both_succeed_one_after_the_other(warehouse):
    """Both writers succeed; the second waited for the first to commit (it was still blocked after HELD_S and
    finished only after the release), and the tables hold exactly the rows a single run of the second writer
    leaves. On PostgreSQL the second writer waited on the client's advisory lock.

    Without the per-client lock this fails on PostgreSQL (shown by the next test): both transactions delete the
    range, and the second one's inserts collide with the first one's committed rows on pk_campaign_daily_kpis.
    """
    store_range(prepared("stored-before", datetime(2026, 1, 31, 6, tzinfo=UTC)), warehouse=warehouse)
    before = table_contents(warehouse)
    first = prepared("first", datetime(2026, 2, 1, 6, tzinfo=UTC))
    second = prepared("second", datetime(2026, 2, 1, 7, tzinfo=UTC))

    overlap = overlapping_writes(warehouse, first, second)

    assert overlap.first["error"] is None and overlap.second["error"] is None, overlap
    assert overlap.first["rows"] == overlap.second["rows"] > 0
    assert overlap.second["finished"] > overlap.released_at
    assert overlap.second["finished"] - overlap.second["started"] > HELD_S
    if warehouse.is_postgres:
        assert overlap.waited_on == "advisory"
    after = table_contents(warehouse)
    assert after != before
    assert run_ids(warehouse) == {"second"}
    # The reference: the rows a single, unhurried run of the same range leaves.
    store_range(second, warehouse=warehouse)
    assert table_contents(warehouse) == after


def test_without_the_client_lock_the_second_writer_fails_on_postgresql(migrated_pg_url):
    """The same overlap with the per-client lock removed: the second writer's DELETE waits only for the rows the
    first one deleted, finds them gone after the commit, and its inserts then hit the first writer's new rows:
    UniqueViolation on pk_campaign_daily_kpis, the failure the lock prevents (issue #11 §1).

    The range is stored beforehand, as on a re-collection. On an empty range the outcome is the same with the
    roles swapped: the second writer deletes nothing, inserts and commits without waiting, and the first one's
    inserts then fail on the primary key. Either way one of two overlapping writers fails without the lock."""
    warehouse = Warehouse(migrated_pg_url)
    try:
        warehouse.upsert_clients([CLIENT_ROW])
        store_range(prepared("stored-before", datetime(2026, 1, 31, 6, tzinfo=UTC)), warehouse=warehouse)
        first = prepared("first", datetime(2026, 2, 1, 6, tzinfo=UTC))
        second = prepared("second", datetime(2026, 2, 1, 7, tzinfo=UTC))

        overlap = overlapping_writes(warehouse, first, second, client_lock=False)

        assert overlap.waited_on == "transactionid"  # a row lock, not the client's lock
        assert overlap.first["error"] is None
        assert "UniqueViolation" in overlap.second["error"]
        assert "pk_campaign_daily_kpis" in overlap.second["error"]
        assert run_ids(warehouse) == {"first"}
    finally:
        warehouse.dispose()


def test_client_lock_key_is_stable_and_per_client():
    """A fixed function of the client id (the same in every process, unlike `hash()`), a signed 64-bit integer
    as pg_advisory_xact_lock(bigint) takes, different per client."""
    assert client_lock_key("acme") == client_lock_key("acme") == GOLDEN_ACME_KEY
    keys = {client_lock_key(f"client-{n}") for n in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= key < 2**63 for key in keys)


@pytest.mark.parametrize("write", ["range", "monthly_summary"])
def test_every_per_client_write_waits_for_the_clients_lock(migrated_pg_url, write):
    """While another session holds the client's lock, its range replacement and its monthly summary wait;
    a write of another client goes through meanwhile."""
    warehouse = Warehouse(migrated_pg_url)
    holder = sa.create_engine(migrated_pg_url)
    try:
        warehouse.upsert_clients([CLIENT_ROW, OTHER_ROW])
        acme = prepared("acme-run", datetime(2026, 2, 1, 6, tzinfo=UTC))
        store_range(acme, warehouse=warehouse)
        totals = warehouse.monthly_totals_from_days(client_id="acme", month=START)
        summary = {**totals, "status": "provisional", "source": "simulator", "run_id": "acme-run"}
        writes = {
            "range": lambda: store_range(acme, warehouse=warehouse),
            "monthly_summary": lambda: warehouse.upsert_monthly_summary(summary),
        }
        done = threading.Event()
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                writes[write]()
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)
            finally:
                done.set()

        with holder.connect() as conn, conn.begin():
            hold_client_lock(conn, "acme")
            thread = threading.Thread(target=writer)
            thread.start()
            wait_for(
                lambda: sessions_waiting_for_client_lock(warehouse.engine, "acme"),
                "the write to wait for the lock",
            )
            # Another client is not held up by acme's lock.
            store_range(
                prepared("globex-run", datetime(2026, 2, 1, 6, tzinfo=UTC), OTHER_ROW), warehouse=warehouse
            )
            assert not done.is_set()
        # The holder's transaction ended: the write goes ahead.
        thread.join(WAIT_LIMIT_S)
        assert done.is_set() and errors == []
    finally:
        holder.dispose()
        warehouse.dispose()
