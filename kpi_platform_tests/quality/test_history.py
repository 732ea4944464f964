"""Completeness over each client's whole history on SQLite and PostgreSQL: where a history starts (clients.yaml's
start_date, else the first collected day, never later than the recent window), the present-day counts, and the
missing ranges newest first, read with grouped queries rather than one row per day."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.quality.history import BLOCK_DAYS, history_start, read_histories
from kpi_platform.warehouse import Warehouse
from kpi_platform_tests.support.warehouse_data import client, day_row, span, store_days

END = date(2026, 11, 19)


def _client(client_id: str, start_date: date | None = None) -> Client:
    row = client(client_id)
    return Client(client_id, row["name"], row["ad_account_id"], "EUR", "Europe/Warsaw", start_date=start_date)


@pytest.fixture
def wh(migrated_warehouse_url) -> Warehouse:
    warehouse = Warehouse(migrated_warehouse_url)
    warehouse.migrate()
    return warehouse


def _store(wh: Warehouse, client_id: str, days: list[date]) -> None:
    for start, end in _runs(sorted(days)):
        store_days(wh, client_id, [day_row(client_id, d) for d in span(start, end)])


def _runs(days: list[date]) -> list[tuple[date, date]]:
    runs: list[tuple[date, date]] = []
    for day in days:
        if runs and day == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


def test_history_start_is_the_start_date_else_the_first_collected_day_else_the_recent_window():
    first_partition = date.fromisoformat(settings.PARTITIONS_START_DATE)
    configured = _client("acme", start_date=date(2025, 3, 1))
    assert history_start(configured, first_collected=date(2024, 6, 1), end=END, default_days=90) == date(
        2025, 3, 1
    )
    assert history_start(configured, first_collected=None, end=END, default_days=90) == date(2025, 3, 1)
    plain = _client("globex")
    assert history_start(plain, first_collected=date(2024, 6, 1), end=END, default_days=90) == date(
        2024, 6, 1
    )
    assert history_start(
        plain, first_collected=END - timedelta(days=3), end=END, default_days=90
    ) == END - timedelta(days=3)
    # Nothing collected yet: the recent window the healer covers, never before the first partition.
    assert history_start(plain, first_collected=None, end=END, default_days=90) == END - timedelta(days=89)
    assert (
        history_start(plain, first_collected=None, end=date(2024, 1, 10), default_days=90) == first_partition
    )


def test_histories_count_present_days_and_list_missing_ranges_newest_first(wh):
    clients = [
        _client("acme", start_date=date(2024, 3, 1)),
        _client("globex"),
        _client("initech"),
        _client("umbrella"),
    ]
    wh.upsert_clients([c.to_row() for c in clients])
    acme_gaps = {date(2024, 3, 1), date(2024, 3, 2), *span(date(2025, 5, 10), date(2025, 5, 14)), END}
    # A row before acme's start_date counts for nothing.
    _store(wh, "acme", [date(2024, 2, 20), *(d for d in span(date(2024, 3, 1), END) if d not in acme_gaps)])
    # globex: no start_date, first collected 2024-06-01, one old missing day.
    _store(wh, "globex", [d for d in span(date(2024, 6, 1), END) if d != date(2024, 12, 25)])
    # initech: complete from its first day; umbrella: nothing at all. Days after the end are not judged.
    _store(wh, "initech", span(date(2025, 1, 1), END + timedelta(days=1)))

    histories = read_histories(wh, clients, ends={c.id: END for c in clients}, default_days=90)

    acme = histories["acme"]
    # Its first collected day is counted within its history: the row before its start_date is not.
    assert (acme.start, acme.end, acme.first_collected) == (date(2024, 3, 1), END, date(2024, 3, 3))
    assert acme.start_configured
    assert acme.expected_days == (END - date(2024, 3, 1)).days + 1
    assert acme.missing_days == len(acme_gaps)
    assert acme.missing_ranges == (
        (END, END),
        (date(2025, 5, 10), date(2025, 5, 14)),
        (date(2024, 3, 1), date(2024, 3, 2)),
    )
    assert acme.oldest_missing_day == date(2024, 3, 1)
    assert acme.is_missing(date(2025, 5, 12)) and not acme.is_missing(date(2025, 5, 15))

    globex = histories["globex"]
    assert (globex.start, globex.start_configured) == (date(2024, 6, 1), False)
    assert globex.missing_ranges == ((date(2024, 12, 25), date(2024, 12, 25)),)

    initech = histories["initech"]
    assert (initech.start, initech.missing_days, initech.missing_ranges) == (date(2025, 1, 1), 0, ())
    assert initech.oldest_missing_day is None

    umbrella = histories["umbrella"]
    assert umbrella.first_collected is None
    assert (umbrella.start, umbrella.present_days, umbrella.missing_days) == (END - timedelta(days=89), 0, 90)
    assert umbrella.missing_ranges == ((END - timedelta(days=89), END),)


def test_a_start_date_after_the_due_day_expects_nothing_yet(wh):
    later = _client("acme", start_date=END + timedelta(days=10))
    wh.upsert_clients([later.to_row()])
    _store(wh, "acme", span(END - timedelta(days=5), END))
    history = read_histories(wh, [later], ends={"acme": END})["acme"]
    assert (history.expected_days, history.present_days, history.missing_days) == (0, 0, 0)


def test_one_grouped_query_returns_a_row_per_block_not_per_day(wh):
    clients = [_client(f"c{i}") for i in range(3)]
    wh.upsert_clients([c.to_row() for c in clients])
    # Each client misses three scattered days and one whole quarter (2025-01-01 to 2025-03-31).
    gaps = {
        date(2024, 2, 15),
        date(2024, 9, 3),
        date(2026, 6, 30),
        *span(date(2025, 1, 1), date(2025, 3, 31)),
    }
    for c in clients:
        _store(wh, c.id, [d for d in span(date(2024, 1, 1), END) if d not in gaps])
    statements: list[str] = []

    def before(conn, cursor, statement, *args):
        if "client_daily_kpis" in statement:
            statements.append(statement)

    sa.event.listen(wh.engine, "before_cursor_execute", before)
    try:
        histories = read_histories(wh, clients, ends={c.id: END for c in clients})
    finally:
        sa.event.remove(wh.engine, "before_cursor_execute", before)
    (grouped,) = statements
    assert "GROUP BY" in grouped
    for history in histories.values():
        assert history.missing_days == len(gaps)
        assert history.missing_ranges == (
            (date(2026, 6, 30), date(2026, 6, 30)),
            (date(2025, 1, 1), date(2025, 3, 31)),
            (date(2024, 9, 3), date(2024, 9, 3)),
            (date(2024, 2, 15), date(2024, 2, 15)),
        )


def test_only_gaps_before_list_before_are_listed(wh):
    clients = [_client("acme"), _client("globex")]
    wh.upsert_clients([c.to_row() for c in clients])
    recent = END - timedelta(days=9)
    # Both miss the last two days; only acme misses an older day too.
    _store(wh, "acme", [d for d in span(date(2025, 1, 1), END - timedelta(days=2)) if d != date(2025, 7, 1)])
    _store(wh, "globex", span(date(2025, 1, 1), END - timedelta(days=2)))
    histories = read_histories(
        wh, clients, ends={c.id: END for c in clients}, list_before={c.id: recent for c in clients}
    )
    acme = histories["acme"]
    # The counts cover the whole history; the ranges only its part before `list_before`.
    assert (acme.missing_days, acme.listed_end) == (3, recent - timedelta(days=1))
    assert acme.missing_ranges == ((date(2025, 7, 1), date(2025, 7, 1)),)
    assert (histories["globex"].missing_days, histories["globex"].missing_ranges) == (2, ())


def test_days_at_both_edges_of_a_block_are_found(wh):
    acme = _client("acme")
    wh.upsert_clients([acme.to_row()])
    epoch = date(1970, 1, 1)
    first = epoch + timedelta(days=(date(2025, 1, 1) - epoch).days // BLOCK_DAYS * BLOCK_DAYS)
    last = first + timedelta(days=BLOCK_DAYS - 1)
    # The block's last day (its 64-bit mask's bit 31) and the next block's first day (bit 0) are missing.
    gaps = {last - timedelta(days=2), last, last + timedelta(days=1)}
    _store(wh, "acme", [d for d in span(first - timedelta(days=40), END) if d not in gaps])
    history = read_histories(wh, [acme], ends={"acme": END})["acme"]
    assert history.missing_ranges == (
        (last, last + timedelta(days=1)),
        (last - timedelta(days=2), last - timedelta(days=2)),
    )
