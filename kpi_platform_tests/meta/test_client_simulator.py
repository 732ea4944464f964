"""MetaInsightsClient against the Meta simulator, over real loopback HTTP and in process: the rows match the
simulator's ground truth, and retries, throttle waits, splits and async runs behave as against recorded pages."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from datetime import date, timedelta

import pytest
import requests

from kpi_platform import settings
from kpi_platform.meta.client import InsightsFetch, MetaInsightsClient
from kpi_platform.meta.errors import (
    AsyncReportFailed,
    AsyncReportTimeout,
    MetaRequestError,
    Throttled,
    TokenInvalid,
    TransientError,
)
from kpi_platform.meta.parse import parse_insights_rows
from kpi_platform.simulator import (
    FaultConfig,
    InsightsQuery,
    MetaSimulator,
    SimulatorConfig,
    mount_simulator,
    serve,
)

TOKEN = "EAAGsimulatortoken0SECRET"
ACCOUNT = "100000000001"
TODAY = date(2026, 3, 31)
SINCE = date(2026, 3, 1)
CONFIG = SimulatorConfig(today=TODAY)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


Connect = Callable[..., tuple[MetaInsightsClient, Sleeps, MetaSimulator]]


@pytest.fixture(params=["loopback_http", "in_process"])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """Builds a client talking to a fresh simulator with the given faults, over the parametrized transport."""
    servers, clients = [], []

    def make(
        faults: FaultConfig | None = None, config: SimulatorConfig = CONFIG, **options
    ) -> tuple[MetaInsightsClient, Sleeps, MetaSimulator]:
        simulator = MetaSimulator(config, faults)
        session = requests.Session()
        if request.param == "loopback_http":
            server = serve(simulator)
            servers.append(server)
            base_url = server.url
        else:
            mount_simulator(session, simulator)
            base_url = settings.SIMULATOR_BASE_URL
        sleeps = Sleeps()
        client = MetaInsightsClient(
            base_url=base_url, access_token=TOKEN, session=session, sleep=sleeps, **options
        )
        clients.append(client)
        return client, sleeps, simulator

    yield make
    for client in clients:
        client.close()
    for server in servers:
        server.shutdown()


def fetch(
    client: MetaInsightsClient, since: date = SINCE, until: date = SINCE + timedelta(days=9)
) -> InsightsFetch:
    return client.fetch_campaign_insights(
        client_id="acme", ad_account_id=f"act_{ACCOUNT}", since=since, until=until
    )


def truth(simulator: MetaSimulator, since: date, until: date) -> list:
    query = InsightsQuery(account_id=ACCOUNT, fields=settings.INSIGHTS_FIELDS, since=since, until=until)
    return simulator.deliveries(query)


def keys(result: InsightsFetch) -> list[tuple[str, str]]:
    return [(r["date_start"], r["campaign_id"]) for r in result.rows]


def test_rows_match_the_simulator_ground_truth_over_many_pages(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INSIGHTS_PAGE_LIMIT", 7)
    client, sleeps, simulator = connect()
    until = SINCE + timedelta(days=9)
    result = fetch(client, SINCE, until)
    expected = truth(simulator, SINCE, until)
    assert keys(result) == [(d.day.isoformat(), d.campaign.id) for d in expected]
    assert result.requests == -(-len(expected) // 7) > 2
    assert (result.source, result.retries, sleeps) == (settings.SOURCE_SIMULATOR, 0, [])

    frame = parse_insights_rows(result.rows, client_id="acme", expected_currency="EUR")
    assert frame["impressions"].tolist() == [d.impressions for d in expected]
    assert frame["spend"].round(2).tolist() == [d.spend_cents / 100 for d in expected]
    # The simulator lists `lead` next to its parts and `contact_total` next to its parts: no double counting.
    assert frame["leads"].tolist() == [d.onsite_leads + d.pixel_leads for d in expected]
    assert frame["contacts"].tolist() == [d.contact_website + d.contact_mobile_app for d in expected]
    assert frame["calls"].tolist() == [d.calls for d in expected]
    assert frame["reservations"].tolist() == [d.reservations for d in expected]
    assert frame["reservation_value"].round(2).tolist() == [d.reservation_value_cents / 100 for d in expected]


def test_throttle_waits_the_minutes_the_simulator_announces(connect: Connect) -> None:
    client, sleeps, _ = connect(FaultConfig(scripted_errors=(80000, 4), throttle_regain_minutes=2))
    result = fetch(client)
    assert sleeps == [120.0, 120.0]
    assert (result.retries, result.throttle_wait_s) == (2, 240.0)


def test_throttle_beyond_the_cap_is_raised(connect: Connect) -> None:
    client, sleeps, simulator = connect(
        FaultConfig(scripted_errors=(17,), throttle_regain_minutes=60), max_throttle_wait_s=900
    )
    with pytest.raises(Throttled) as caught:
        fetch(client)
    assert (caught.value.wait_seconds, sleeps, simulator.request_count) == (3600.0, [], 1)


def test_transient_errors_retried_five_times_then_raised(connect: Connect) -> None:
    client, sleeps, simulator = connect(FaultConfig(scripted_errors=(1, 2, (2, 1504043), 960, 1, 1)))
    with pytest.raises(TransientError):
        fetch(client)
    assert simulator.request_count == settings.MAX_ATTEMPTS == 5
    assert len(sleeps) == 4


@pytest.mark.parametrize("fault", ["malformed", "drop", 2])
def test_one_failure_then_success(connect: Connect, fault: object) -> None:
    client, _, simulator = connect(FaultConfig(scripted_errors=(fault,)))
    result = fetch(client)
    assert (result.retries, result.requests, simulator.request_count) == (1, 2, 2)
    assert len(result.rows) == len(truth(simulator, SINCE, SINCE + timedelta(days=9)))


def test_expired_token_is_not_retried_and_not_shown(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, sleeps, simulator = connect(config=SimulatorConfig(today=TODAY, invalid_token=TOKEN))
    with pytest.raises(TokenInvalid) as caught:
        fetch(client)
    assert (simulator.request_count, sleeps) == (1, [])
    assert "client 'acme' (act_100000000001)" in str(caught.value) and "190/463" in str(caught.value)
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text


def test_token_absent_from_logs_while_retrying_and_paging(
    connect: Connect, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(settings, "INSIGHTS_PAGE_LIMIT", 5)
    client, _, _ = connect(FaultConfig(scripted_errors=(None, "drop", 1, "malformed", 80000)))
    result = fetch(client)
    assert result.retries == 4
    assert "retrying" in caplog.text and "access_token=***" in caplog.text
    assert TOKEN not in caplog.text


def test_a_page_failing_on_every_attempt_fails_the_fetch(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "INSIGHTS_PAGE_LIMIT", 5)
    client, _, simulator = connect(FaultConfig(fail_page=2))
    with pytest.raises(TransientError):
        fetch(client)
    assert simulator.request_count == 1 + settings.MAX_ATTEMPTS


def test_a_permanent_page_failure_names_client_range_page_and_cursor(
    connect: Connect, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(settings, "INSIGHTS_PAGE_LIMIT", 5)
    client, _, _ = connect(FaultConfig(fail_page=3))
    with caplog.at_level(logging.DEBUG), pytest.raises(TransientError) as caught:
        fetch(client, SINCE, SINCE + timedelta(days=9))
    message = str(caught.value)
    assert message.startswith(f"client 'acme' (act_{ACCOUNT}): Meta reported a temporary error")
    assert re.search(r"\[insights 2026-03-01\.\.2026-03-10, page 3 after cursor [\w-]+\]$", message), message
    assert TOKEN not in message and TOKEN not in caplog.text


def test_a_refused_page_of_an_async_report_names_the_report(connect: Connect, monkeypatch) -> None:
    monkeypatch.setattr(settings, "INSIGHTS_PAGE_LIMIT", 5)
    client, _, _ = connect(FaultConfig(fail_page=2, fail_page_error=100))
    since, until = SINCE - timedelta(days=40), SINCE
    with pytest.raises(MetaRequestError) as caught:
        fetch(client, since, until)
    where = rf"\[async report \d+ for {since}\.\.{until}, page 2 after cursor [\w-]+\]$"
    assert re.search(where, str(caught.value)), str(caught.value)
    assert "client 'acme'" in str(caught.value) and TOKEN not in str(caught.value)


def test_a_failed_status_poll_names_the_report(connect: Connect) -> None:
    client, _, _ = connect(FaultConfig(scripted_errors=(None, 100)))  # the first status poll is refused
    since, until = SINCE - timedelta(days=40), SINCE
    with pytest.raises(MetaRequestError) as caught:
        fetch(client, since, until)
    assert re.search(rf"\[polling async report \d+ for {since}\.\.{until}\]$", str(caught.value))


def test_query_too_large_is_split_until_it_fits(connect: Connect) -> None:
    client, _, simulator = connect(FaultConfig(too_large_days=3))
    until = SINCE + timedelta(days=9)
    result = fetch(client, SINCE, until)
    assert keys(result) == [(d.day.isoformat(), d.campaign.id) for d in truth(simulator, SINCE, until)]
    assert result.splits == 3  # 10 → 5 + 5 → (3 + 2) + (3 + 2)


def test_long_ranges_use_an_async_report_run(connect: Connect) -> None:
    client, sleeps, simulator = connect(async_poll_s=1.5)
    until = SINCE + timedelta(days=29)
    since = until - timedelta(days=59)
    result = fetch(client, since, until)
    assert result.used_async
    assert keys(result) == [(d.day.isoformat(), d.campaign.id) for d in truth(simulator, since, until)]
    assert sleeps and max(sleeps) <= 1.5


def test_stuck_async_report_times_out(connect: Connect) -> None:
    client, sleeps, _ = connect(FaultConfig(async_stuck=True), async_poll_s=2.0, async_max_wait_s=6.0)
    with pytest.raises(AsyncReportTimeout):
        fetch(client, SINCE - timedelta(days=40), SINCE)
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_failed_async_report_is_started_again_then_raised(connect: Connect) -> None:
    client, _, simulator = connect(FaultConfig(async_fail=True), max_attempts=3)
    with pytest.raises(AsyncReportFailed) as caught:
        fetch(client, SINCE - timedelta(days=40), SINCE)
    assert (caught.value.code, caught.value.subcode) == (-2, 2490547)
    assert simulator.counters().by_kind.get("report_create") == 3  # three report runs created


def test_read_timeout_over_http_is_retried() -> None:
    simulator = MetaSimulator(CONFIG, FaultConfig(scripted_errors=("timeout",), timeout_seconds=1.0))
    sleeps = Sleeps()
    with serve(simulator) as server:
        with MetaInsightsClient(
            base_url=server.url, access_token=TOKEN, sleep=sleeps, timeout=(2.0, 0.3)
        ) as client:
            result = fetch(client)
    assert (result.retries, result.requests) == (1, 2)
    assert len(result.rows) == len(truth(simulator, SINCE, SINCE + timedelta(days=9)))
