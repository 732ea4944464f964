"""The gap-healing sensor, ticked with its cursor at fixed times: gaps requested once and only once, up to each
client's due day; transient failures retried soon, others cooling down, reported once and then left to a person."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.clients import Client, load_clients
from kpi_platform.definitions import build_defs
from kpi_platform.defs.collection import CLIENT_DAILY_KPIS, build_gap_healing_sensor
from kpi_platform.defs.partitions import client_daily_partitions
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, contiguous
from kpi_platform.operations.plans import (
    GIVE_UP_AFTER_FAILURES,
    NON_TRANSIENT_BASE_COOLDOWN_S,
    TRANSIENT_COOLDOWN_S,
    CollectionRequest,
)
from kpi_platform.warehouse import schema
from kpi_platform_tests.support.platform import CLIENTS_YAML
from kpi_platform_tests.support.warehouse_data import day_row, span, store_days

#: 10:00 in Warsaw (CET): the 06:00 collection of the 19th has run, so the 19th is the clients' last due day.
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
TODAY = date(2026, 11, 20)
YESTERDAY = TODAY - timedelta(days=1)
#: The simulator answers this token as expired (190): a non-transient failure.
BAD_TOKEN_ENV = "KPI_TEST_BAD_META_TOKEN"


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def tick(platform, defs, sensor, cursor, warnings: list[str] | None = None):
    context = dg.build_sensor_context(
        instance=platform.instance,
        cursor=cursor,
        repository_def=defs.get_repository_def(),
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url)},
    )
    handler = _Lines()
    context.log.addHandler(handler)
    result = sensor(context)
    if warnings is not None:
        warnings += handler.lines
    return result, context.cursor if result.cursor is None else result.cursor


def ranges(result) -> set[tuple[str, str]]:
    return {(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in (result.run_requests or [])}


def rng(client_id: str, start: date, end: date) -> tuple[str, str]:
    return (f"{client_id}|{start}", f"{client_id}|{end}")


def execute(platform, request: dg.RunRequest, **meta_overrides) -> dg.ExecuteInProcessResult:
    """Run a requested run in process, as the daemon would launch it."""
    job = platform.defs(**meta_overrides).resolve_job_def("daily_collection_job")
    return job.execute_in_process(instance=platform.instance, tags=request.tags, raise_on_error=False)


def failures(cursor) -> dict[str, list]:
    return json.loads(cursor)["failures"]


def test_gaps_are_requested_once_and_in_progress_days_never_twice(platform):
    defs = platform.defs()
    sensor = build_gap_healing_sensor(clock=Clock(NOW))
    first = TODAY - timedelta(days=settings.HEALING_HORIZON_DAYS)
    hole_start, hole_end = TODAY - timedelta(days=10), TODAY - timedelta(days=8)
    # acme: the whole horizon except a 3-day hole, collected in two runs around it.
    assert platform.collect("acme", first, hole_start - timedelta(days=1)).success
    assert platform.collect("acme", hole_end + timedelta(days=1), YESTERDAY).success
    # globex: nothing yet, but its last 5 days are queued (a run created, not started).
    queued = CollectionRequest("globex", YESTERDAY - timedelta(days=4), YESTERDAY, run_key="", reason="test")
    platform.instance.create_run_for_job(
        job_def=defs.resolve_job_def("daily_collection_job"), tags=queued.tags()
    )

    result, cursor = tick(platform, defs, sensor, None)
    assert ranges(result) == {
        rng("acme", hole_start, hole_end),
        rng("globex", first, YESTERDAY - timedelta(days=5)),
    }
    for request in result.run_requests:
        assert request.tags["kpi/client"] in ("acme", "globex")
        assert request.tags["kpi/reason"] == "heal"
        # Behind the runs someone asked for (the schedule's and UI backfills', priority 0) in the run queue.
        assert request.tags["dagster/priority"] == "-1"

    # The requested runs are created (as the daemon would): the next tick requests nothing again.
    for request in result.run_requests:
        platform.instance.create_run_for_job(
            job_def=defs.resolve_job_def("daily_collection_job"), tags=request.tags
        )
    result, cursor = tick(platform, defs, sensor, cursor)
    assert not result.run_requests
    assert result.skip_reason is not None


def test_yesterday_is_left_to_the_schedule_until_its_collection_hour_has_passed(platform):
    defs = platform.defs()
    # 00:30 UTC is 01:30 in Warsaw: UTC yesterday (the 19th) is still hours away from its 06:05 collection.
    clock = Clock(datetime(2026, 11, 20, 0, 30, tzinfo=UTC))
    sensor = build_gap_healing_sensor(horizon_days=3, clock=clock)
    before = TODAY - timedelta(days=2)
    assert platform.collect("acme", before - timedelta(days=2), before).success
    assert platform.collect("globex", before - timedelta(days=2), before).success

    result, cursor = tick(platform, defs, sensor, None)
    assert not result.run_requests

    # 06:30 in Warsaw: the schedule's run has just been requested; the healer still keeps off the day.
    clock.now = datetime(2026, 11, 20, 5, 30, tzinfo=UTC)
    result, cursor = tick(platform, defs, sensor, cursor)
    assert not result.run_requests

    # 07:10 in Warsaw, and the 19th was not collected: now it is a gap.
    clock.now = datetime(2026, 11, 20, 6, 10, tzinfo=UTC)
    result, cursor = tick(platform, defs, sensor, cursor)
    assert ranges(result) == {rng("acme", YESTERDAY, YESTERDAY), rng("globex", YESTERDAY, YESTERDAY)}


def test_transient_failures_retry_soon_and_unknown_failures_cool_down(platform, tmp_path):
    defs = platform.defs()
    clock = Clock(NOW)
    sensor = build_gap_healing_sensor(horizon_days=2, clock=clock)
    start = YESTERDAY - timedelta(days=1)
    # globex: Meta answers code 2 ("retry later") and the client has no attempts left: transient.
    outage = '{"fail_page": 1, "fail_page_error": 2}'
    assert not platform.collect(
        "globex", start, YESTERDAY, simulator_faults_json=outage, max_attempts=1
    ).success

    # acme: its run goes to a warehouse where it is not registered. Not a Meta error, so not known to be
    # transient: it is treated like a bug or a database error.
    other = WarehouseResource(url=f"sqlite:///{tmp_path / 'other-warehouse.sqlite'}")
    job = build_defs(resources={"warehouse": other}).resolve_job_def("daily_collection_job")
    tags = CollectionRequest("acme", start, YESTERDAY, run_key="", reason="test").tags()
    assert not job.execute_in_process(instance=platform.instance, tags=tags, raise_on_error=False).success

    clock.advance(minutes=1)
    result, cursor = tick(platform, defs, sensor, None)
    assert not result.run_requests
    memory = failures(cursor)
    assert memory[f"globex|{YESTERDAY}"][:3] == [1, clock.now.timestamp(), False]
    assert memory[f"acme|{YESTERDAY}"][:3] == [1, clock.now.timestamp(), True]
    assert "acme" in memory[f"acme|{YESTERDAY}"][3]

    # After the short pause only the transient failure is retried; the unknown one waits an hour.
    clock.advance(seconds=TRANSIENT_COOLDOWN_S + 60)
    result, cursor = tick(platform, defs, sensor, cursor)
    assert ranges(result) == {rng("globex", start, YESTERDAY)}
    clock.advance(seconds=NON_TRANSIENT_BASE_COOLDOWN_S)
    result, cursor = tick(platform, defs, sensor, cursor)
    assert rng("acme", start, YESTERDAY) in ranges(result)


@pytest.fixture
def three_clients(platform, monkeypatch):
    """acme and globex heal normally; initech's collections run with a token Meta rejects."""
    clients_file = settings.clients_file()
    clients_file.write_text(
        CLIENTS_YAML + "  - {id: initech, name: Initech, ad_account_id: act_100000000003, currency: EUR, "
        "timezone: Europe/Warsaw}\n",
        encoding="utf-8",
    )
    sync_clients(instance=platform.instance, clients=load_clients(clients_file), warehouse=platform.warehouse)
    monkeypatch.setenv(BAD_TOKEN_ENV, "invalid-token")
    return platform


def run_requested(platform, result) -> None:
    for request in result.run_requests or []:
        if request.tags["kpi/client"] == "initech":
            assert not execute(platform, request, token_env_var=BAD_TOKEN_ENV).success
        else:
            assert execute(platform, request).success


def test_a_permanently_failing_client_cools_down_then_is_left_alone_while_others_heal(three_clients):
    platform = three_clients
    defs = platform.defs()
    # 07:10 in Warsaw: the 19th is due; a 7-day horizon is the 13th to the 19th.
    clock = Clock(datetime(2026, 11, 20, 6, 10, tzinfo=UTC))
    sensor = build_gap_healing_sensor(horizon_days=7, clock=clock)
    first = YESTERDAY - timedelta(days=6)
    assert platform.collect("acme", first, date(2026, 11, 15)).success
    assert platform.collect("acme", date(2026, 11, 18), YESTERDAY).success
    assert platform.collect("globex", first, YESTERDAY - timedelta(days=1)).success
    warnings: list[str] = []

    result, cursor = tick(platform, defs, sensor, None, warnings)
    assert ranges(result) == {
        rng("acme", date(2026, 11, 16), date(2026, 11, 17)),
        rng("globex", YESTERDAY, YESTERDAY),
        rng("initech", first, YESTERDAY),
    }
    run_requested(platform, result)

    cooldowns = []
    for failure in range(1, GIVE_UP_AFTER_FAILURES):
        # The next tick learns of the failure; acme and globex are healed and never requested again.
        clock.advance(minutes=1)
        result, cursor = tick(platform, defs, sensor, cursor, warnings)
        assert not result.run_requests
        memory = failures(cursor)
        assert set(memory) == {f"initech|{first + timedelta(days=i)}" for i in range(7)}
        count, failed_ts, non_transient, reason = memory[f"initech|{YESTERDAY}"]
        assert (count, non_transient) == (failure, True)
        assert "access token" in reason
        # Requested again only once its cool-down has passed, not a minute before.
        cooldown = timedelta(hours=2 ** (failure - 1))
        clock.now = datetime.fromtimestamp(failed_ts, UTC) + cooldown - timedelta(minutes=1)
        result, cursor = tick(platform, defs, sensor, cursor, warnings)
        assert not result.run_requests
        clock.advance(minutes=2)
        result, cursor = tick(platform, defs, sensor, cursor, warnings)
        assert ranges(result) == {rng("initech", first, YESTERDAY)}
        cooldowns.append(cooldown)
        run_requested(platform, result)
    assert cooldowns == [timedelta(hours=h) for h in (1, 2, 4, 8)]

    # The fifth failure in a row: no more requests, however long it waits (still the same local day).
    clock.advance(minutes=1)
    result, cursor = tick(platform, defs, sensor, cursor, warnings)
    assert failures(cursor)[f"initech|{YESTERDAY}"][0] == GIVE_UP_AFTER_FAILURES
    clock.now = datetime(2026, 11, 20, 22, 50, tzinfo=UTC)
    result, cursor = tick(platform, defs, sensor, cursor, warnings)
    assert not result.run_requests
    # The days stay FAILED in Dagster, which the health report and the alerts read.
    statuses = platform.instance.get_status_by_partition(
        CLIENT_DAILY_KPIS, [f"initech|{YESTERDAY}", f"acme|{YESTERDAY}"], client_daily_partitions
    )
    assert {k: s.value for k, s in statuses.items()} == {
        f"initech|{YESTERDAY}": "FAILED",
        f"acme|{YESTERDAY}": "MATERIALIZED",
    }

    # Reported once per escalation (the 3rd, 4th and 5th failure), never on the ticks in between.
    initech = [line for line in warnings if line.startswith("initech")]
    assert [line.split(" failed ")[1].split(" times")[0] for line in initech] == ["3", "4", "5"]
    assert all(f"initech {first}..{YESTERDAY} " in line for line in initech)
    assert "next attempt in 4 h" in initech[0] and "next attempt in 8 h" in initech[1]
    assert "no longer requested" in initech[2]
    assert not [line for line in warnings if not line.startswith("initech")]

    # A new local day: its new gaps are requested for every client, initech's given-up days are not, and the
    # memory of the day that left the horizon is dropped.
    clock.now = datetime(2026, 11, 21, 6, 30, tzinfo=UTC)
    result, cursor = tick(platform, defs, sensor, cursor, warnings)
    assert ranges(result) == {rng(c, TODAY, TODAY) for c in ("acme", "globex", "initech")}
    assert f"initech|{first}" not in failures(cursor)
    assert len(failures(cursor)) == 6

    # A client no longer active leaves no memory behind.
    initech = Client.from_row(platform.warehouse.get_client("initech"))
    platform.warehouse.upsert_clients([replace(initech, active=False).to_row()])
    result, cursor = tick(platform, defs, sensor, cursor, warnings)
    assert failures(cursor) == {}
    assert {r.tags["kpi/client"] for r in result.run_requests} == {"acme", "globex"}


def test_gaps_older_than_the_horizon_are_healed_newest_first_a_capped_number_per_tick(platform):
    defs = platform.defs()
    sensor = build_gap_healing_sensor(history_days_per_tick=2, clock=Clock(NOW))
    recent = YESTERDAY - timedelta(days=settings.HEALING_HORIZON_DAYS - 1)
    acme = replace(Client.from_row(platform.warehouse.get_client("acme")), start_date=date(2026, 6, 1))
    platform.warehouse.upsert_clients([acme.to_row()])
    # The recent window is collected; the older history is stored around its gaps, months before the horizon.
    for client_id in ("acme", "globex"):
        assert platform.collect(client_id, recent, YESTERDAY).success
    old_gaps = {
        "acme": {date(2026, 6, 10), date(2026, 6, 11), date(2026, 6, 12), date(2026, 7, 4)},
        "globex": {date(2026, 5, 20)},
    }
    # globex has no start_date: its history starts on its first collected day.
    firsts = {"acme": date(2026, 6, 1), "globex": date(2026, 5, 1)}
    for client_id, gaps in old_gaps.items():
        days = [d for d in span(firsts[client_id], recent - timedelta(days=1)) if d not in gaps]
        for start, end in contiguous(days):
            store_days(platform.warehouse, client_id, [day_row(client_id, d) for d in span(start, end)])

    # globex's missing day was collected once through Dagster, then lost from the warehouse (a restore, say):
    # Dagster shows it materialized, yet it is a gap.
    assert platform.collect("globex", date(2026, 5, 20), date(2026, 5, 20)).success
    with platform.warehouse.engine.begin() as conn:
        for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
            conn.execute(
                sa.delete(table).where(table.c.client_id == "globex", table.c.kpi_date == date(2026, 5, 20))
            )

    healed: list[list[tuple[str, str]]] = []
    cursor = None
    for _ in range(4):
        result, cursor = tick(platform, defs, sensor, cursor)
        requested = [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in result.run_requests or []]
        healed.append(requested)
        for request in result.run_requests or []:
            assert execute(platform, request).success
    assert healed == [
        [rng("acme", date(2026, 7, 4), date(2026, 7, 4)), rng("acme", date(2026, 6, 12), date(2026, 6, 12))],
        [rng("acme", date(2026, 6, 10), date(2026, 6, 11))],
        [rng("globex", date(2026, 5, 20), date(2026, 5, 20))],
        [],
    ]
    # Nothing before acme's start_date was ever requested, and the history is complete now.
    assert platform.warehouse.present_days(
        start=date(2026, 5, 1), end=date(2026, 5, 31), client_ids=["acme"]
    ) == {"acme": set()}
