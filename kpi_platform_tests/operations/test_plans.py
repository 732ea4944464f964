"""Daily collection planning (local collection hour, lookback window, run keys) and gap-healing planning."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime

from kpi_platform import settings
from kpi_platform.clients import Client, ClientSettings
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG
from kpi_platform.operations.plans import (
    GIVE_UP_AFTER_FAILURES,
    HISTORY_SCAN_FACTOR,
    REPORT_AFTER_FAILURES,
    TRANSIENT_COOLDOWN_S,
    FailureMemory,
    collection_due_day,
    failure_reports,
    healing_keys,
    history_gap_keys,
    lookback_window,
    missing_client_tag,
    plan_daily_collection,
    plan_gap_healing,
    prune_failures,
    record_failures,
)
from kpi_platform.quality.history import ClientHistory


def client(cid, tz="Europe/Warsaw", hour=6, lookback=28, active=True):
    return Client(
        cid, cid, "act_1", "EUR", tz, active, ClientSettings(lookback_days=lookback, collection_hour=hour)
    )


def test_lookback_window_is_complete_days_before_today():
    assert lookback_window(date(2026, 11, 23), 28) == (date(2026, 10, 26), date(2026, 11, 22))


def test_each_client_is_due_at_its_local_hour():
    clients = [client("warsaw"), client("ny", tz="America/New_York", hour=7), client("off", active=False)]
    # 05:05 UTC = 06:05 in Warsaw (CET, UTC+1) = 00:05 in New York
    plans = plan_daily_collection(clients, datetime(2026, 11, 23, 5, 5, tzinfo=UTC))
    assert [p.client_id for p in plans] == ["warsaw"]
    (plan,) = plans
    assert (plan.start, plan.end) == (date(2026, 10, 26), date(2026, 11, 22))
    assert plan.run_key == "daily:warsaw:2026-11-23"
    assert plan.tags()[RANGE_START_TAG] == "warsaw|2026-10-26"
    assert plan.tags()[RANGE_END_TAG] == "warsaw|2026-11-22"
    assert plan.tags()["kpi/client"] == "warsaw"
    # 12:05 UTC = 07:05 in New York (EST, UTC-5)
    assert [
        p.client_id for p in plan_daily_collection(clients, datetime(2026, 11, 23, 12, 5, tzinfo=UTC))
    ] == ["ny"]


def test_per_client_lookback_override():
    (plan,) = plan_daily_collection(
        [client("a", tz="UTC", hour=6, lookback=3)], datetime(2026, 11, 23, 6, 5, tzinfo=UTC)
    )
    assert (plan.start, plan.end) == (date(2026, 11, 20), date(2026, 11, 22))


# --- Gap healing ------------------------------------------------------------------------------------------------


def test_the_healing_due_day_is_the_clients_local_day_after_its_collection_hour():
    warsaw = client("warsaw")
    # 00:30 UTC is 01:30 in Warsaw: UTC yesterday (the 19th) is collected only at 06:05, so it is not due.
    assert collection_due_day(warsaw, datetime(2026, 11, 20, 0, 30, tzinfo=UTC)) == date(2026, 11, 18)
    # 06:30: the schedule's run has just been requested; the grace hour keeps the healer off the day.
    assert collection_due_day(warsaw, datetime(2026, 11, 20, 5, 30, tzinfo=UTC)) == date(2026, 11, 18)
    assert collection_due_day(warsaw, datetime(2026, 11, 20, 6, 10, tzinfo=UTC)) == date(2026, 11, 19)
    # 01:00 UTC on the 21st is 20:00 on the 20th in New York: the 20th is still running there.
    ny = client("ny", tz="America/New_York", hour=7)
    assert collection_due_day(ny, datetime(2026, 11, 21, 1, 0, tzinfo=UTC)) == date(2026, 11, 19)
    # Collection hours next to midnight: the grace hour may cross the local date.
    late, early = client("late", tz="UTC", hour=23), client("early", tz="UTC", hour=0)
    assert collection_due_day(late, datetime(2026, 11, 20, 23, 30, tzinfo=UTC)) == date(2026, 11, 18)
    assert collection_due_day(late, datetime(2026, 11, 21, 0, 10, tzinfo=UTC)) == date(2026, 11, 19)
    assert collection_due_day(early, datetime(2026, 11, 20, 0, 30, tzinfo=UTC)) == date(2026, 11, 18)
    assert collection_due_day(early, datetime(2026, 11, 20, 1, 10, tzinfo=UTC)) == date(2026, 11, 19)


def test_healing_keys_end_at_each_clients_due_day():
    clients = [client("warsaw"), client("ny", tz="America/New_York", hour=7), client("off", active=False)]
    # 13:00 in Warsaw, 07:00 in New York (inside ny's grace hour).
    keys = healing_keys(clients, now_utc=datetime(2026, 11, 20, 12, 0, tzinfo=UTC), horizon_days=3)
    assert keys == [
        "warsaw|2026-11-17",
        "warsaw|2026-11-18",
        "warsaw|2026-11-19",
        "ny|2026-11-16",
        "ny|2026-11-17",
        "ny|2026-11-18",
    ]
    # Never before the first partition.
    assert healing_keys(clients[:1], now_utc=datetime(2024, 1, 2, 12, 0, tzinfo=UTC), horizon_days=90) == [
        "warsaw|2024-01-01"
    ]


def test_failures_count_in_a_row_per_kind_and_hard_ones_are_given_up_after_n():
    key = "acme|2026-11-19"
    memory = {}
    for n in range(1, GIVE_UP_AFTER_FAILURES + 1):
        memory = record_failures(memory, keys=[key], failed_ts=float(n), non_transient=True, reason="token")
        assert memory[key].count == n
        assert memory[key].given_up == (n == GIVE_UP_AFTER_FAILURES)
    assert [FailureMemory(n, 0.0, True, "").cooldown_s() / 3600 for n in range(1, 5)] == [1, 2, 4, 8]
    # A transient failure in between starts the count again, on the short retry.
    memory = record_failures(memory, keys=[key], failed_ts=9.0, non_transient=False, reason="503")
    assert (memory[key].count, memory[key].cooldown_s()) == (1, TRANSIENT_COOLDOWN_S)
    memory = record_failures(memory, keys=[key], failed_ts=10.0, non_transient=True, reason="token")
    assert (memory[key].count, memory[key].given_up) == (1, False)


def test_given_up_days_are_held_back_and_cooled_down_days_requested():
    given_up = FailureMemory(GIVE_UP_AFTER_FAILURES, 0.0, True, "token")
    waited = FailureMemory(GIVE_UP_AFTER_FAILURES - 1, 0.0, True, "token")
    keys = ["acme|2026-11-18", "acme|2026-11-19", "globex|2026-11-19"]
    plan = plan_gap_healing(
        keys=keys,
        statuses={k: "FAILED" for k in keys},
        reserved=set(),
        failures={"acme|2026-11-18": given_up, "acme|2026-11-19": given_up, "globex|2026-11-19": waited},
        now_ts=waited.retry_at() + 1,
        max_runs=20,
        tick=7,
    )
    assert [(r.client_id, r.start, r.end) for r in plan.requests] == [
        ("globex", date(2026, 11, 19), date(2026, 11, 19))
    ]
    assert plan.given_up == ("acme|2026-11-18", "acme|2026-11-19")
    assert plan.failed == 3


def test_failures_are_reported_once_per_escalation_from_the_threshold_on():
    memory = {
        "acme|2026-11-17": FailureMemory(REPORT_AFTER_FAILURES, 0.0, True, "token"),
        "acme|2026-11-18": FailureMemory(REPORT_AFTER_FAILURES, 0.0, True, "token"),
        "acme|2026-11-19": FailureMemory(GIVE_UP_AFTER_FAILURES, 0.0, True, "token"),
        "globex|2026-11-19": FailureMemory(REPORT_AFTER_FAILURES - 1, 0.0, True, "token"),
        "initech|2026-11-19": FailureMemory(REPORT_AFTER_FAILURES + 2, 0.0, False, "503"),
    }
    # Only days whose failure was recorded this tick are reported: the rest were reported when they escalated.
    assert failure_reports(memory, recorded=["globex|2026-11-19", "initech|2026-11-19"]) == []
    lines = failure_reports(memory, recorded=list(memory))
    assert lines == [
        "acme 2026-11-17..2026-11-18 failed 3 times in a row for a non-transient reason; next attempt in 4 h: token",
        "acme 2026-11-19 failed 5 times in a row for a non-transient reason; no longer requested: fix the cause, "
        "then backfill these days (README › Healing by hand): token",
    ]


def test_failure_memory_is_pruned_to_active_clients_inside_the_horizon():
    memory = FailureMemory(1, 0.0, True, "token")
    failures = {
        "acme|2026-11-16": memory,  # before the 3-day window (17th-19th)
        "acme|2026-11-17": memory,
        "acme|2026-11-18": memory,  # healed since
        "acme|2026-11-20": memory,  # a schedule run failed for a day not yet due for the healer: kept
        "gone|2026-11-19": memory,  # no longer an active client
    }
    kept = prune_failures(
        failures,
        clients=[client("acme"), client("gone", active=False)],
        now_utc=datetime(2026, 11, 20, 12, 0, tzinfo=UTC),
        horizon_days=3,
        statuses={"acme|2026-11-18": "MATERIALIZED", "acme|2026-11-17": "FAILED"},
    )
    assert set(kept) == {"acme|2026-11-17", "acme|2026-11-20"}


def _history(cid: str, start: date, end: date, *missing: tuple[date, date]) -> ClientHistory:
    days = sum((b - a).days + 1 for a, b in missing)
    return ClientHistory(
        cid, start, end, start, False, (end - start).days + 1 - days, tuple(sorted(missing, reverse=True))
    )


def test_healing_keys_start_at_each_clients_start_date():
    now = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    late_start = replace(client("warsaw"), start_date=date(2026, 11, 18))
    assert healing_keys([late_start], now_utc=now, horizon_days=90) == [
        "warsaw|2026-11-18",
        "warsaw|2026-11-19",
    ]
    # A start after the due day expects nothing yet.
    future = replace(client("warsaw"), start_date=date(2026, 12, 1))
    assert healing_keys([future], now_utc=now, horizon_days=90) == []


def test_history_gaps_are_listed_newest_first_across_clients_up_to_the_cap():
    histories = {
        "acme": _history(
            "acme",
            date(2024, 1, 1),
            date(2026, 11, 19),
            (date(2026, 11, 19), date(2026, 11, 19)),  # inside the recent window: not a history key
            (date(2026, 8, 20), date(2026, 8, 23)),  # straddles the window's start (the 22nd)
            (date(2024, 3, 1), date(2024, 3, 2)),
        ),
        "globex": _history(
            "globex", date(2025, 1, 1), date(2026, 11, 19), (date(2026, 5, 1), date(2026, 5, 1))
        ),
    }
    before = {"acme": date(2026, 8, 22), "globex": date(2026, 8, 22)}
    listed = history_gap_keys(histories, before=before, failures={}, now_ts=0.0, max_days=100)
    assert listed == [
        "acme|2026-08-21",
        "acme|2026-08-20",
        "globex|2026-05-01",
        "acme|2024-03-02",
        "acme|2024-03-01",
    ]
    # The cap keeps the newest; the oldest gaps wait for later ticks.
    assert history_gap_keys(histories, before=before, failures={}, now_ts=0.0, max_days=3) == listed[:3]


def test_held_back_history_days_never_use_up_the_cap():
    histories = {
        "acme": _history("acme", date(2024, 1, 1), date(2026, 11, 19), (date(2025, 6, 1), date(2025, 6, 5)))
    }
    given_up = FailureMemory(GIVE_UP_AFTER_FAILURES, 0.0, True, "token")
    cooling = FailureMemory(1, 100.0, True, "token")
    failures = {"acme|2025-06-05": given_up, "acme|2025-06-04": cooling, "acme|2025-06-03": given_up}
    listed = history_gap_keys(
        histories, before={"acme": date(2026, 8, 22)}, failures=failures, now_ts=200.0, max_days=2
    )
    assert listed == [
        "acme|2025-06-05",
        "acme|2025-06-04",
        "acme|2025-06-03",
        "acme|2025-06-02",
        "acme|2025-06-01",
    ]
    plan = plan_gap_healing(
        keys=listed, statuses={}, reserved=set(), failures=failures, now_ts=200.0, max_runs=20, tick=1
    )
    assert [(r.start, r.end) for r in plan.requests] == [(date(2025, 6, 1), date(2025, 6, 2))]
    assert (plan.given_up, plan.cooling) == (("acme|2025-06-05", "acme|2025-06-03"), ("acme|2025-06-04",))
    # Held-back days are skipped, yet a tick looks at no more than HISTORY_SCAN_FACTOR × the cap.
    long = {
        "acme": _history("acme", date(2024, 1, 1), date(2026, 11, 19), (date(2025, 5, 1), date(2025, 5, 30)))
    }
    all_given_up = {f"acme|2025-05-{d:02d}": given_up for d in range(1, 31)}
    listed = history_gap_keys(
        long, before={"acme": date(2026, 8, 22)}, failures=all_given_up, now_ts=200.0, max_days=2
    )
    assert listed == [f"acme|2025-05-{d:02d}" for d in range(30, 30 - 2 * HISTORY_SCAN_FACTOR, -1)]


def test_recent_ranges_come_before_history_ranges_within_the_run_cap():
    history = [f"acme|2025-06-0{d}" for d in (3, 1)] + ["globex|2024-02-01"]
    recent = ["acme|2026-11-18", "acme|2026-11-19", "globex|2026-11-17"]
    statuses = {"acme|2026-11-18": "MATERIALIZED"}
    plan = plan_gap_healing(
        keys=recent + history, statuses=statuses, reserved=set(), failures={}, now_ts=0.0, max_runs=3, tick=1
    )
    assert [(r.client_id, str(r.start)) for r in plan.requests] == [
        ("acme", "2026-11-19"),
        ("globex", "2026-11-17"),
        ("acme", "2025-06-03"),
    ]
    assert plan.deferred_ranges == 2


def test_failure_memory_of_history_days_is_kept_while_the_warehouse_misses_them():
    memory = FailureMemory(GIVE_UP_AFTER_FAILURES, 0.0, True, "token")
    failures = {
        "acme|2025-06-01": memory,  # still missing: a given-up day stays given up once older than the window
        "acme|2025-06-02": memory,  # stored meanwhile (a backfill): forgotten
        "acme|2023-12-31": memory,  # before the client's history
        "acme|2026-11-17": memory,
    }
    histories = {
        "acme": _history("acme", date(2025, 1, 1), date(2026, 11, 19), (date(2025, 6, 1), date(2025, 6, 1)))
    }
    kept = prune_failures(
        failures,
        clients=[client("acme")],
        now_utc=datetime(2026, 11, 20, 12, 0, tzinfo=UTC),
        horizon_days=3,
        statuses={},
        histories=histories,
    )
    assert set(kept) == {"acme|2025-06-01", "acme|2026-11-17"}


def test_a_run_of_one_client_without_the_client_tag_gets_it():
    assert missing_client_tag({}, ["acme", "acme"]) == {settings.CLIENT_TAG: "acme"}
    # A tag already there is kept as it is; a run over several clients (or none) stays untagged.
    assert missing_client_tag({settings.CLIENT_TAG: "acme"}, ["acme"]) == {}
    assert missing_client_tag({}, ["acme", "globex"]) == {}
    assert missing_client_tag({}, []) == {}
