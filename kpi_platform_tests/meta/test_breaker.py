"""Circuit breakers kept in the warehouse: open, fail fast, half-open, close, shared between processes."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime, timedelta

import pytest

from kpi_platform import settings
from kpi_platform.meta.breaker import BreakerGuard, BreakerOpen, account_breaker_name
from kpi_platform.meta.errors import (
    MetaApiError,
    PermissionDenied,
    QueryTooLarge,
    Throttled,
    TokenInvalid,
    TransientError,
)
from kpi_platform.warehouse import Warehouse

ACCOUNT = "act_111"
OTHER_ACCOUNT = "act_222"
TOKEN = "EAAB-secret-token-value"
API = settings.BREAKER_API_NAME


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Api:
    """Stands in for a fetch: counts calls, raises the queued errors, then succeeds."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "rows"


def outage(n: int = 0) -> TransientError:
    return TransientError(f"Meta API answered HTTP 503 (attempt {n}) access_token={TOKEN}", secrets=(TOKEN,))


@pytest.fixture
def warehouse(migrated_warehouse_url):
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    yield wh
    wh.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def guard(warehouse, clock) -> BreakerGuard:
    return BreakerGuard(warehouse, clock=clock, secrets=(TOKEN,))


def fail(guard: BreakerGuard, times: int, account: str = ACCOUNT) -> None:
    for n in range(times):
        with pytest.raises(TransientError):
            guard.call(account, Api(outage(n)))


def test_opens_after_five_consecutive_outages_and_fails_fast(guard, clock):
    fail(guard, settings.BREAKER_FAIL_MAX - 1)
    assert guard.get(API).state == "closed" and guard.get(API).fail_counter == 4
    with pytest.raises(TransientError):  # the tripping call raises Meta's own error
        guard.call(ACCOUNT, Api(outage()))
    states = {s.name: s for s in guard.list_breakers()}
    assert set(states) == {API, account_breaker_name(ACCOUNT)}
    assert all(s.state == "open" and s.opened_at == clock.now for s in states.values())

    api = Api()
    with pytest.raises(BreakerOpen) as raised:
        guard.call(ACCOUNT, api, client_id="acme")
    assert api.calls == 0
    error = raised.value
    assert isinstance(error, MetaApiError) and error.transient
    assert error.breaker == API  # the API-wide breaker is named first
    assert error.half_open_at == clock.now + timedelta(seconds=settings.BREAKER_RESET_TIMEOUT_S)
    message = str(error)
    for part in (
        "client 'acme'",
        "'meta_api'",
        "2025-03-01 08:00:00 UTC",
        "08:15:00 UTC",
        "HTTP 503",
        "What to do",
    ):
        assert part in message
    assert TOKEN not in message
    assert TOKEN not in (guard.get(API).last_error or "") and "HTTP 503" in guard.get(API).last_error
    assert pickle.loads(pickle.dumps(error)).breaker == API


def test_a_success_resets_the_consecutive_count(guard):
    fail(guard, 4)
    assert guard.call(ACCOUNT, Api()) == "rows"
    fail(guard, 4)
    assert guard.get(API).state == "closed"
    assert guard.get(API).fail_counter == 4


@pytest.mark.parametrize(
    "error",
    [
        TokenInvalid("token expired (190/463)"),
        PermissionDenied("no ads_read (code 200)"),
        QueryTooLarge("too much data (100/1487534)"),
        ValueError("a bug of ours"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_that_are_not_outages_never_trip_it(guard, error):
    for _ in range(settings.BREAKER_FAIL_MAX * 2):
        with pytest.raises(type(error)):
            guard.call(ACCOUNT, Api(error))
    assert guard.call(ACCOUNT, Api()) == "rows"
    assert all(s.state == "closed" and s.fail_counter == 0 for s in guard.list_breakers())


def test_throttling_after_retries_counts(guard):
    for _ in range(settings.BREAKER_FAIL_MAX):
        with pytest.raises(Throttled):
            guard.call(ACCOUNT, Api(Throttled("rate limit (code 80000)", wait_seconds=3600)))
    with pytest.raises(BreakerOpen):
        guard.call(ACCOUNT, Api())


def test_half_open_after_cool_down_then_closes_on_success(guard, clock):
    fail(guard, 5)
    clock.advance(settings.BREAKER_RESET_TIMEOUT_S - 1)
    with pytest.raises(BreakerOpen):
        guard.call(ACCOUNT, Api())
    clock.advance(1)
    api = Api()
    assert guard.call(ACCOUNT, api) == "rows"
    assert api.calls == 1
    assert all(s.state == "closed" and s.fail_counter == 0 for s in guard.list_breakers())
    # Closed again: failures are counted from zero.
    fail(guard, 4)
    assert guard.call(ACCOUNT, Api()) == "rows"


def test_reopens_on_a_failed_trial(guard, clock):
    fail(guard, 5)
    clock.advance(settings.BREAKER_RESET_TIMEOUT_S)
    with pytest.raises(TransientError):
        guard.call(ACCOUNT, Api(outage()))
    state = guard.get(API)
    assert state.state == "open" and state.opened_at == clock.now
    with pytest.raises(BreakerOpen):
        guard.call(ACCOUNT, Api())


def test_a_trial_claimed_for_a_call_that_never_goes_out_is_handed_back(guard, warehouse, clock):
    """The API-wide breaker is past its cool-down but the account's is not: the call is refused, and the API-wide
    trial it had claimed is released, so another account makes the trial at once instead of a cool-down later."""
    from kpi_platform.warehouse import schema

    fail(guard, 5)
    clock.advance(settings.BREAKER_RESET_TIMEOUT_S)
    table = schema.circuit_breakers
    with warehouse.engine.begin() as conn:  # the account's breaker re-opened just now
        conn.execute(
            table.update().where(table.c.name == account_breaker_name(ACCOUNT)).values(opened_at=clock.now)
        )
    api = Api()
    with pytest.raises(BreakerOpen, match=ACCOUNT):
        guard.call(ACCOUNT, api)
    assert api.calls == 0
    assert guard.get(API).state == "open"
    other = Api()
    assert guard.call(OTHER_ACCOUNT, other) == "rows"
    assert other.calls == 1
    assert guard.get(API).state == "closed"


def test_one_trial_at_a_time_across_processes(migrated_warehouse_url, clock):
    first, second = Warehouse(migrated_warehouse_url), Warehouse(migrated_warehouse_url)
    try:
        first.migrate()
        guard_a, guard_b = BreakerGuard(first, clock=clock), BreakerGuard(second, clock=clock)
        fail(guard_a, 5)
        clock.advance(settings.BREAKER_RESET_TIMEOUT_S)

        def trial() -> str:
            # While process A makes the trial call, process B is refused without calling the API.
            blocked = Api()
            with pytest.raises(BreakerOpen, match="trial call"):
                guard_b.call(ACCOUNT, blocked)
            assert blocked.calls == 0
            return "rows"

        assert guard_a.call(ACCOUNT, trial) == "rows"
        assert guard_b.call(ACCOUNT, Api()) == "rows"
    finally:
        first.dispose()
        second.dispose()


def test_state_is_shared_between_processes(migrated_warehouse_url, clock):
    first, second = Warehouse(migrated_warehouse_url), Warehouse(migrated_warehouse_url)
    try:
        first.migrate()
        guard_a, guard_b = BreakerGuard(first, clock=clock), BreakerGuard(second, clock=clock)
        fail(guard_a, 3)
        fail(guard_b, 2)  # counts continue across processes: 5 in all
        api = Api()
        with pytest.raises(BreakerOpen):
            guard_a.call(ACCOUNT, api)
        assert api.calls == 0
        assert guard_b.reset(API) and guard_b.reset(account_breaker_name(ACCOUNT))
        assert guard_a.call(ACCOUNT, Api()) == "rows"
    finally:
        first.dispose()
        second.dispose()


def test_an_account_breaker_leaves_other_accounts_alone(warehouse, clock):
    guard = BreakerGuard(warehouse, clock=clock, fail_max=2)
    fail(guard, 2, account=ACCOUNT)
    guard.reset(API)  # only the account breaker stays open
    with pytest.raises(BreakerOpen) as raised:
        guard.call(ACCOUNT, Api())
    assert raised.value.breaker == "meta_api:act_111"
    assert "ad account act_111" in str(raised.value)
    assert guard.call(OTHER_ACCOUNT, Api()) == "rows"


def test_reset_of_unknown_breaker_is_false(guard):
    assert guard.reset("meta_api:act_999") is False
    assert guard.get("meta_api:act_999") is None


def test_wrapped_client_fetches_through_the_guard(guard):
    class Client:
        closed = False
        calls = 0

        def fetch_campaign_insights(self, *, client_id, ad_account_id, since, until):
            self.calls += 1
            raise outage()

        def close(self):
            self.closed = True

    client = Client()
    with guard.wrap(client) as meta:
        for _ in range(settings.BREAKER_FAIL_MAX):
            with pytest.raises(TransientError):
                meta.fetch_campaign_insights(
                    client_id="acme", ad_account_id="111", since=date(2025, 1, 1), until=date(2025, 1, 2)
                )
        with pytest.raises(BreakerOpen, match="client 'acme'"):
            meta.fetch_campaign_insights(
                client_id="acme", ad_account_id="111", since=date(2025, 1, 1), until=date(2025, 1, 2)
            )
    assert client.calls == settings.BREAKER_FAIL_MAX
    assert client.closed
    assert guard.get("meta_api:act_111").state == "open"
