"""Pacing from Meta's usage headers: the headers read, the delay rule, the stores (in memory and shared through the
warehouse on both backends), the client pacing against the simulator, and a year's backfill of 20 clients that
is throttled without pacing and never with it."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client, sync_clients_to_warehouse
from kpi_platform.collect import CollectionResult, collect_range
from kpi_platform.defs.collection import pacing_metadata
from kpi_platform.meta.client import MetaInsightsClient
from kpi_platform.meta.errors import Throttled
from kpi_platform.meta.pacing import (
    InMemoryPacingStore,
    Pacer,
    PacingPolicy,
    PacingState,
    PacingStore,
    WarehousePacingStore,
    read_usage,
)
from kpi_platform.simulator import MetaSimulator, RateLimits, SimulatorConfig, mount_simulator
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.postgres import temp_database

ACCOUNT = "act_100000000001"
OTHER = "act_100000000002"
T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


class SimClock:
    """Simulated time: `sleep` advances it at once; `now` (aware datetime) and `monotonic` (seconds) read it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.slept: list[float] = []

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.seconds)

    def monotonic(self) -> float:
        return self.seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.seconds += seconds


def headers(
    *,
    account: float = 10,
    app: float = 5,
    regain_minutes: float = 0,
    buc: float | None = None,
    insights_account: float | None = None,
) -> dict[str, str]:
    return {
        "X-App-Usage": json.dumps({"call_count": app, "total_time": 1, "total_cputime": 1}),
        "X-Ad-Account-Usage": json.dumps({"acc_id_util_pct": account, "reset_time_duration": 60}),
        "X-Business-Use-Case-Usage": json.dumps(
            {
                "100000000001": [
                    {
                        "type": "ads_insights",
                        "call_count": account if buc is None else buc,
                        "total_cputime": 2,
                        "total_time": 3,
                        "estimated_time_to_regain_access": regain_minutes,
                    }
                ]
            }
        ),
        "x-fb-ads-insights-throttle": json.dumps(
            {
                "app_id_util_pct": 0,
                "acc_id_util_pct": account if insights_account is None else insights_account,
            }
        ),
    }


# --- Reading the headers ------------------------------------------------------------------------------------


def test_every_usage_header_is_read_and_the_highest_figure_counts() -> None:
    usage = read_usage(headers(account=20, app=30, buc=64.5, insights_account=12, regain_minutes=2))
    assert usage is not None
    assert (usage.account_pct, usage.app_pct, usage.regain_s, usage.max_pct) == (64.5, 30.0, 120.0, 64.5)
    assert set(usage.headers) == {
        "app_usage",
        "ad_account_usage",
        "business_use_case_usage",
        "ads_insights_throttle",
    }
    only_insights = read_usage(
        {"X-FB-Ads-Insights-Throttle": '{"app_id_util_pct": 81, "acc_id_util_pct": 7}'}
    )
    assert only_insights is not None and (only_insights.account_pct, only_insights.app_pct) == (7.0, 81.0)


def test_unreadable_usage_is_skipped_and_no_usage_header_is_none() -> None:
    assert read_usage({"Content-Type": "application/json"}) is None
    assert read_usage(None) is None
    usage = read_usage(
        {
            "X-App-Usage": "{not json",
            "X-Ad-Account-Usage": json.dumps({"acc_id_util_pct": "n/a"}),
            "X-Business-Use-Case-Usage": json.dumps({"1": [{"call_count": True, "total_time": None}]}),
        }
    )
    assert usage is not None and (usage.account_pct, usage.app_pct, usage.max_pct) == (None, None, 0.0)


# --- The delay rule -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage_pct", "delay_s"),
    [(0, 0.0), (74.9, 0.0), (75, 0.0), (80, 12.0), (87.5, 30.0), (99, 57.6), (100, 60.0), (140, 60.0)],
)
def test_delay_is_zero_below_the_threshold_then_proportional_up_to_the_cap(usage_pct, delay_s) -> None:
    assert PacingPolicy().delay_s(usage_pct) == pytest.approx(delay_s)


def test_wait_counts_from_the_latest_response_and_at_100_percent_until_meta_gives_access_back() -> None:
    policy = PacingPolicy(threshold_pct=50, max_delay_s=10)
    state = PacingState(ACCOUNT, 75.0, None, {}, updated_at=T0)
    assert policy.wait_s(state, T0) == 5.0
    assert policy.wait_s(state, T0 + timedelta(seconds=4)) == 1.0
    assert policy.wait_s(state, T0 + timedelta(seconds=9)) == 0.0
    full = PacingState(ACCOUNT, 100.0, T0 + timedelta(minutes=3), {}, updated_at=T0)
    assert policy.wait_s(full, T0) == 180.0  # Meta's regain time, not the 10 s cap
    assert policy.wait_s(PacingState(ACCOUNT, 100.0, None, {}, updated_at=T0), T0) == 10.0
    # A regain time still pending holds calls back even when the latest figure is lower.
    pending = PacingState(ACCOUNT, 20.0, T0 + timedelta(seconds=30), {}, updated_at=T0)
    assert policy.wait_s(pending, T0) == 30.0


@pytest.mark.parametrize(
    ("threshold", "max_delay", "message"),
    [
        (0, 60, "threshold_pct"),
        (100, 60, "threshold_pct"),
        (75, 0, "max_delay_s"),
        (75, float("inf"), "max_delay_s"),
    ],
)
def test_a_bad_policy_is_refused(threshold, max_delay, message) -> None:
    with pytest.raises(ValueError, match=message):
        PacingPolicy(threshold_pct=threshold, max_delay_s=max_delay)


def test_policy_from_the_environment_names_a_bad_variable() -> None:
    policy = PacingPolicy.from_env(
        {settings.ENV_PACING_THRESHOLD_PCT: "90", settings.ENV_PACING_MAX_DELAY_S: "15"}
    )
    assert (policy.threshold_pct, policy.max_delay_s) == (90.0, 15.0)
    assert PacingPolicy.from_env({}) == PacingPolicy(75.0, 60.0)
    with pytest.raises(ValueError, match=settings.ENV_PACING_THRESHOLD_PCT):
        PacingPolicy.from_env({settings.ENV_PACING_THRESHOLD_PCT: "100"})
    with pytest.raises(ValueError, match=settings.ENV_PACING_MAX_DELAY_S):
        PacingPolicy.from_env({settings.ENV_PACING_MAX_DELAY_S: "soon"})


# --- Stores -------------------------------------------------------------------------------------------------


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    yield wh
    wh.dispose()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[PacingStore]:
    """Each store: in memory, and in the warehouse on each backend."""
    if request.param == "memory":
        yield InMemoryPacingStore()
        return
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
        else:
            url = stack.enter_context(temp_database(template=request.getfixturevalue("pg_template")))
        wh = Warehouse(url)
        stack.callback(wh.dispose)
        wh.migrate()
        yield WarehousePacingStore(wh)


def record(store: PacingStore, pct: float, at: datetime, regain_at: datetime | None = None) -> None:
    store.record(ACCOUNT, usage_pct=pct, regain_at=regain_at, headers={"ad_account_usage": {"x": pct}}, at=at)


def test_the_latest_response_wins_and_a_pending_regain_time_is_kept(store: PacingStore) -> None:
    assert store.get([ACCOUNT]) == []
    record(store, 40.0, T0)
    record(store, 90.0, T0 + timedelta(seconds=10), regain_at=T0 + timedelta(minutes=5))
    record(store, 30.0, T0 + timedelta(seconds=5))  # read before the stored one: ignored
    (state,) = store.get([ACCOUNT, OTHER])
    assert (state.usage_pct, state.updated_at, state.regain_at) == (
        90.0,
        T0 + timedelta(seconds=10),
        T0 + timedelta(minutes=5),
    )
    assert state.headers == {"ad_account_usage": {"x": 90.0}}
    record(store, 50.0, T0 + timedelta(seconds=20))  # names no regain time while one is pending: kept
    (state,) = store.get([ACCOUNT])
    assert (state.usage_pct, state.regain_at) == (50.0, T0 + timedelta(minutes=5))
    record(store, 10.0, T0 + timedelta(minutes=6))  # once it has passed, it goes
    (state,) = store.get([ACCOUNT])
    assert (state.usage_pct, state.regain_at) == (10.0, None)


def test_concurrent_writers_neither_fail_nor_lose_the_latest_response(warehouse: Warehouse) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        store = WarehousePacingStore(warehouse)
        try:
            for n in range(15):
                record(store, float(worker * 100 + n) / 10, T0 + timedelta(seconds=n * 10 + worker))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    (state,) = WarehousePacingStore(warehouse).get([ACCOUNT])
    assert state.updated_at == T0 + timedelta(seconds=14 * 10 + 3)
    assert state.usage_pct == pytest.approx(31.4)


def test_pacing_state_is_shared_between_processes_through_the_warehouse(migrated_warehouse_url) -> None:
    clock = SimClock()
    first, second = Warehouse(migrated_warehouse_url), Warehouse(migrated_warehouse_url)
    first.migrate()
    try:
        one = Pacer(WarehousePacingStore(first), clock=clock.now, sleep=clock.sleep)
        other = Pacer(WarehousePacingStore(second), clock=clock.now, sleep=clock.sleep)
        one.after_response(ACCOUNT, headers(account=87.5))
        assert other.wait_s(ACCOUNT) == pytest.approx(30.0)
        # The app-wide figure holds back every ad account, in every process.
        one.after_response(ACCOUNT, headers(account=10, app=80))
        assert other.wait_s(OTHER) == pytest.approx(12.0)
        assert other.before_call(OTHER, max_wait_s=900) == pytest.approx(12.0)
        with second.engine.connect() as conn:
            rows = conn.execute(sa.select(schema.api_pacing).order_by("account_id")).all()
        assert [(r.account_id, r.usage_pct) for r in rows] == [
            (ACCOUNT, 10.0),
            (settings.PACING_APP_KEY, 80.0),
        ]
        account_row, app_row = rows
        assert account_row.headers["business_use_case_usage"]["100000000001"][0]["call_count"] == 10
        assert "app_usage" not in account_row.headers
        assert set(app_row.headers) == {"app_usage", "ads_insights_throttle"}
    finally:
        first.dispose()
        second.dispose()


# --- The pacer ----------------------------------------------------------------------------------------------


def test_pacer_sleeps_in_proportion_then_waits_the_regain_time_and_refuses_longer_waits() -> None:
    clock = SimClock()
    pacer = Pacer(InMemoryPacingStore(), clock=clock.now, sleep=clock.sleep)
    assert pacer.before_call(ACCOUNT, max_wait_s=900) == 0.0
    pacer.after_response(ACCOUNT, headers(account=74))
    assert pacer.before_call(ACCOUNT, max_wait_s=900) == 0.0
    pacer.after_response(ACCOUNT, headers(account=80))
    assert pacer.before_call(ACCOUNT, max_wait_s=900) == pytest.approx(12.0)
    assert pacer.before_call(OTHER, max_wait_s=900) == 0.0  # another ad account is not held back
    pacer.after_response(ACCOUNT, headers(account=100, regain_minutes=4))
    assert pacer.before_call(ACCOUNT, max_wait_s=900) == pytest.approx(240.0)
    pacer.after_response(ACCOUNT, headers(account=100, regain_minutes=30))
    with pytest.raises(
        Throttled, match=r"act_100000000001.*1800 s.*longer than the longest wait \(900 s\)"
    ) as caught:
        pacer.before_call(ACCOUNT, max_wait_s=900, client_id="acme")
    assert caught.value.wait_seconds == pytest.approx(1800.0) and caught.value.client_id == "acme"
    assert clock.slept == [pytest.approx(12.0), pytest.approx(240.0)]


def test_the_client_reads_usage_on_every_response_and_paces_from_it() -> None:
    clock = SimClock()
    limits = RateLimits(window_s=60, account_calls=10, app_calls=1000)
    simulator = MetaSimulator(
        SimulatorConfig(today=date(2026, 3, 31), rate_limits=limits), clock=clock.monotonic
    )
    session = requests.Session()
    mount_simulator(session, simulator)
    store = InMemoryPacingStore()
    client = MetaInsightsClient(
        base_url=settings.SIMULATOR_BASE_URL,
        access_token="token",
        session=session,
        sleep=clock.sleep,
        pacer=Pacer(store, clock=clock.now, sleep=clock.sleep),
    )
    fetches = [
        client.fetch_campaign_insights(
            client_id="acme", ad_account_id=ACCOUNT, since=date(2026, 3, 1), until=date(2026, 3, 2)
        )
        for _ in range(12)
    ]
    assert simulator.counters().throttles == {}
    assert [f.max_usage_pct for f in fetches[:8]] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    assert [f.paced_s for f in fetches[:8]] == [0.0] * 8  # at or below 75 % no call waits
    assert fetches[8].paced_s == pytest.approx(12.0)  # 80 %: 60 s × (80 − 75) / 25
    assert max(f.max_usage_pct for f in fetches) <= 100.0
    (state,) = store.get([ACCOUNT])
    assert state.headers["ad_account_usage"]["acc_id_util_pct"] == fetches[-1].max_usage_pct


def test_a_throttle_error_response_is_read_too() -> None:
    clock = SimClock()
    simulator = MetaSimulator(
        SimulatorConfig(today=date(2026, 3, 31), rate_limits=RateLimits(window_s=60, account_calls=1)),
        clock=clock.monotonic,
    )
    session = requests.Session()
    mount_simulator(session, simulator)
    client = MetaInsightsClient(
        base_url=settings.SIMULATOR_BASE_URL, access_token="token", session=session, sleep=clock.sleep
    )
    day = date(2026, 3, 30)
    client.fetch_campaign_insights(client_id="acme", ad_account_id=ACCOUNT, since=day, until=day)
    second = client.fetch_campaign_insights(client_id="acme", ad_account_id=ACCOUNT, since=day, until=day)
    # Without a pacer the second call is throttled (200 % of a 1-call limit), waits Meta's time and succeeds.
    assert simulator.counters().throttles == {"100000000001": 1}
    assert (second.retries, second.max_usage_pct, second.throttle_wait_s) == (1, 200.0, 60.0)


# --- A year's backfill of 20 clients ------------------------------------------------------------------------

#: Tight limits on a simulated clock: ~11 calls per client's year (report run, polls, pages) pass 8 per minute.
BACKFILL_LIMITS = RateLimits(window_s=60, account_calls=8, app_calls=60)
YEAR_START, YEAR_END = date(2025, 12, 1), date(2026, 11, 30)


def backfill(warehouse: Warehouse, *, paced: bool) -> tuple[list[CollectionResult], MetaSimulator, SimClock]:
    """Every client's year collected one after the other, as a backfill's single-run ranges are, through the
    collection path of the asset, against one simulator on simulated time."""
    clients = [
        Client(
            id=f"client{n:02d}",
            name=f"Client {n}",
            ad_account_id=f"act_{200000000000 + n}",
            currency="EUR",
            timezone="UTC",
        )
        for n in range(20)
    ]
    sync_clients_to_warehouse(clients=clients, warehouse=warehouse)
    clock = SimClock()
    simulator = MetaSimulator(
        SimulatorConfig(today=date(2026, 12, 1), rate_limits=BACKFILL_LIMITS), clock=clock.monotonic
    )
    session = requests.Session()
    mount_simulator(session, simulator)
    pacer = Pacer(WarehousePacingStore(warehouse), clock=clock.now, sleep=clock.sleep) if paced else None
    meta = MetaInsightsClient(
        base_url=settings.SIMULATOR_BASE_URL,
        access_token="token",
        session=session,
        sleep=clock.sleep,
        pacer=pacer,
    )
    with meta:
        results = [
            collect_range(
                client=c,
                start=YEAR_START,
                end=YEAR_END,
                meta=meta,
                warehouse=warehouse,
                run_id=f"backfill-{c.id}",
            )
            for c in clients
        ]
    return results, simulator, clock


@pytest.fixture
def sqlite_warehouse(tmp_path) -> Iterator[Warehouse]:
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    wh.migrate()
    yield wh
    wh.dispose()


def test_a_year_of_20_clients_without_pacing_is_throttled(sqlite_warehouse: Warehouse) -> None:
    results, simulator, _ = backfill(sqlite_warehouse, paced=False)
    throttles = simulator.counters().throttles
    assert sum(throttles.values()) >= 20  # every client's year passes its account's limit
    assert len(throttles) == 20
    assert max(r.max_usage_pct for r in results) > 100.0
    assert sum(r.api_retries for r in results) == sum(throttles.values())


def test_a_year_of_20_clients_with_pacing_is_never_throttled(sqlite_warehouse: Warehouse) -> None:
    results, simulator, clock = backfill(sqlite_warehouse, paced=True)
    counters = simulator.counters()
    assert counters.throttles == {}
    assert all(r.api_retries == 0 for r in results)
    assert all(r.days == 365 for r in results)
    assert all(settings.PACING_THRESHOLD_PCT < r.max_usage_pct <= 100.0 for r in results)
    assert all(r.paced_s > 0 for r in results)
    # The simulated time slept is the pacing plus the async report polls; nothing waited for a throttle.
    assert sum(r.throttle_wait_s for r in results) == 0.0
    assert 0 < sum(r.paced_s for r in results) < sum(clock.slept)
    # The run metadata: numbers per ad account, which the UI plots.
    metadata = pacing_metadata(results)
    first = results[0].ad_account_id
    assert metadata[f"api_usage_max_pct:{first}"].value == round(results[0].max_usage_pct, 2)
    assert metadata[f"api_paced_s:{first}"].value == round(results[0].paced_s, 3)
    assert metadata["api_usage_max_pct"].value == max(round(r.max_usage_pct, 2) for r in results)
    assert len([k for k in metadata if k.startswith("api_usage_max_pct:")]) == 20
