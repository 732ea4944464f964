"""MetaInsightsClient against recorded pages served by a scripted requests adapter: paging, retries, throttle
waits, splits, async report runs, and the token kept out of logs and exceptions."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from kpi_platform import settings
from kpi_platform.meta.client import InsightsFetch, MetaInsightsClient
from kpi_platform.meta.errors import (
    AsyncReportFailed,
    AsyncReportTimeout,
    MetaApiError,
    QueryTooLarge,
    Throttled,
    TokenInvalid,
    TransientError,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "meta"
TOKEN = "EAAGtesttoken0SECRET0value"  # the token inside the recorded `paging.next` links
BASE = "https://graph.facebook.com"
DAY = date(2026, 3, 14)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Reply:
    status: int = 200
    body: object = None  # dict → JSON, str → raw text
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedMeta(BaseAdapter):
    """A requests adapter answering each request with `handler(request)`: a Reply, or an exception to raise."""

    def __init__(self, handler: Callable[[requests.PreparedRequest], Reply | Exception]) -> None:
        super().__init__()
        self.handler = handler
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):  # noqa: ANN001 - BaseAdapter's signature
        self.seen.append(request)
        reply = self.handler(request)
        if isinstance(reply, Exception):
            raise reply
        response = requests.Response()
        response.status_code = reply.status
        text = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
        response._content = text.encode()
        response.headers = CaseInsensitiveDict({"Content-Type": "application/json", **reply.headers})
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass

    def query(self, index: int) -> dict[str, str]:
        """Query and form parameters of the index-th request, one value each."""
        request = self.seen[index]
        values = parse_qs(urlsplit(request.url).query)
        if request.body:
            body = request.body.decode() if isinstance(request.body, bytes) else request.body
            values.update(parse_qs(body))
        return {k: v[0] for k, v in values.items()}


def sequence(*replies: Reply | Exception) -> Callable[[requests.PreparedRequest], Reply | Exception]:
    """Answers in order; the last one repeats."""
    remaining = list(replies)

    def handler(_request: requests.PreparedRequest) -> Reply | Exception:
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return handler


class Sleeps(list):
    """An injected `sleep` that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(handler, **overrides) -> tuple[MetaInsightsClient, ScriptedMeta, Sleeps]:
    adapter = ScriptedMeta(handler)
    session = requests.Session()
    session.mount("https://", adapter)
    sleeps = Sleeps()
    options = {"base_url": BASE, "access_token": TOKEN, "session": session, "sleep": sleeps, **overrides}
    return MetaInsightsClient(**options), adapter, sleeps


def fetch(client: MetaInsightsClient, since: date = DAY, until: date = DAY) -> InsightsFetch:
    return client.fetch_campaign_insights(
        client_id="acme", ad_account_id="act_100000000001", since=since, until=until
    )


def page(*rows: dict, next_url: str | None = None) -> Reply:
    body: dict = {"data": list(rows), "paging": {"cursors": {"before": "A", "after": "B"}}}
    if next_url:
        body["paging"]["next"] = next_url
    return Reply(body=body)


def row(day: date, campaign: str = "1") -> dict:
    return {"campaign_id": campaign, "date_start": day.isoformat(), "date_stop": day.isoformat()}


def error(status: int, name: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=fixture(name), headers=headers or {})


def buc(minutes: float) -> dict[str, str]:
    entries = [{"type": "ads_insights", "estimated_time_to_regain_access": minutes}]
    return {"X-Business-Use-Case-Usage": json.dumps({"100000000001": entries})}


OK = page(row(DAY))


# --- paging ---------------------------------------------------------------------------------------------------


def test_follows_paging_next_exactly_through_an_empty_page() -> None:
    pages = [Reply(body=fixture(f"insights_page_{n}.json")) for n in (1, 2, 3)]
    client, adapter, sleeps = make_client(sequence(*pages))

    result = fetch(client, DAY, DAY + timedelta(days=1))

    assert [r["campaign_id"] for r in result.rows] == [
        "23843676632450104",
        "23843676632450177",
        "23843676632450104",
    ]
    assert (result.requests, result.retries, result.splits, result.used_async) == (3, 0, 0, False)
    assert result.source == settings.SOURCE_META
    first = adapter.query(0)
    assert urlsplit(adapter.seen[0].url).path == "/v23.0/act_100000000001/insights"
    assert first["level"] == "campaign"
    assert first["fields"] == ",".join(settings.INSIGHTS_FIELDS)
    assert json.loads(first["time_range"]) == {"since": "2026-03-14", "until": "2026-03-15"}
    assert (first["time_increment"], first["limit"], first["access_token"]) == ("1", "500", TOKEN)
    assert adapter.seen[1].url == fixture("insights_page_1.json")["paging"]["next"]
    assert adapter.seen[2].url == fixture("insights_page_2.json")["paging"]["next"]
    assert sleeps == []


def test_a_full_page_without_next_is_the_last() -> None:
    rows = [row(DAY, str(n)) for n in range(settings.INSIGHTS_PAGE_LIMIT)]
    client, adapter, _ = make_client(sequence(page(*rows)))
    assert len(fetch(client).rows) == settings.INSIGHTS_PAGE_LIMIT
    assert len(adapter.seen) == 1


def test_responses_marked_by_the_simulator_set_the_source() -> None:
    client, _, _ = make_client(sequence(Reply(body=OK.body, headers={"X-KPI-Simulator": "1"})))
    assert fetch(client).source == settings.SOURCE_SIMULATOR


def test_a_page_that_keeps_failing_fails_the_whole_fetch() -> None:
    client, adapter, _ = make_client(
        sequence(
            page(row(DAY), next_url=f"{BASE}/v23.0/act_1/insights?after=X"), Reply(status=500, body="oops")
        )
    )
    with pytest.raises(TransientError):
        fetch(client)
    assert len(adapter.seen) == 1 + settings.MAX_ATTEMPTS


def test_next_links_without_a_token_get_it_added() -> None:
    client, adapter, _ = make_client(
        sequence(page(row(DAY), next_url=f"{BASE}/v23.0/act_1/insights?after=X"), OK)
    )
    fetch(client)
    assert adapter.query(1) == {"after": "X", "access_token": TOKEN}


def test_the_token_is_never_added_to_a_foreign_host() -> None:
    client, adapter, _ = make_client(
        sequence(page(row(DAY), next_url="https://elsewhere.example/insights?after=X"), OK)
    )
    fetch(client)
    assert adapter.seen[1].url == "https://elsewhere.example/insights?after=X"


# --- retries and throttling -----------------------------------------------------------------------------------


def test_throttle_waits_the_time_from_the_usage_header() -> None:
    client, adapter, sleeps = make_client(sequence(error(400, "error_throttle_80000.json", buc(2)), OK))
    result = fetch(client)
    assert sleeps == [120.0]
    assert (result.retries, result.requests, result.throttle_wait_s) == (1, 2, 120.0)
    assert len(result.rows) == 1


def test_throttle_without_a_wait_backs_off_exponentially() -> None:
    client, _, sleeps = make_client(
        sequence(*[error(400, "error_throttle_80000.json", buc(0))] * 3, OK), backoff_base_s=1.0
    )
    result = fetch(client)
    assert len(sleeps) == 3
    for attempt, wait in enumerate(sleeps):
        assert 2**attempt <= wait <= 2**attempt + 1.0  # base × 2^n plus up to one base of jitter
    assert result.throttle_wait_s == pytest.approx(sum(sleeps))


def test_throttle_longer_than_the_cap_is_raised_at_once() -> None:
    client, adapter, sleeps = make_client(
        sequence(error(400, "error_throttle_80000.json", buc(20))), max_throttle_wait_s=900
    )
    with pytest.raises(Throttled) as caught:
        fetch(client)
    assert caught.value.wait_seconds == 1200.0
    assert (len(adapter.seen), sleeps) == (1, [])


def test_transient_errors_are_retried_up_to_max_attempts_then_raised() -> None:
    client, adapter, sleeps = make_client(sequence(error(500, "error_unknown_500.json")), backoff_max_s=5.0)
    with pytest.raises(TransientError) as caught:
        fetch(client)
    assert len(adapter.seen) == 5
    assert len(sleeps) == 4
    assert all(wait <= 5.0 for wait in sleeps)
    assert caught.value.code == 1


def test_transient_errors_then_success_return_all_rows() -> None:
    client, _, sleeps = make_client(
        sequence(error(500, "error_unknown_500.json"), Reply(status=502, body="<html>"), OK)
    )
    result = fetch(client)
    assert (len(result.rows), result.retries, result.requests, result.throttle_wait_s) == (1, 2, 3, 0.0)
    assert len(sleeps) == 2


def test_token_error_is_never_retried_and_names_the_fix() -> None:
    body = fixture("error_token_expired.json")
    body["error"]["message"] += f" (token {TOKEN})"
    client, adapter, sleeps = make_client(sequence(Reply(status=400, body=body)))
    with pytest.raises(TokenInvalid) as caught:
        fetch(client)
    assert (len(adapter.seen), sleeps) == (1, [])
    message = str(caught.value)
    assert "client 'acme' (act_100000000001)" in message
    assert "META_ACCESS_TOKEN" in message and "Rotating the token" in message
    assert TOKEN not in message


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body="<html>Service Unavailable</html>"),  # 200 that is not JSON
        Reply(body='{"data": [1, 2'),  # truncated
        Reply(body={"unexpected": True}),  # JSON without `data`
        Reply(body={"data": "not a list"}),
    ],
)
def test_malformed_responses_are_retried(reply: Reply) -> None:
    client, _, sleeps = make_client(sequence(reply, OK))
    result = fetch(client)
    assert (len(result.rows), result.retries) == (1, 1)


def test_dropped_connection_is_retried() -> None:
    drop = requests.ConnectionError(f"Connection aborted for {BASE}/v23.0/x?access_token={TOKEN}")
    client, _, sleeps = make_client(sequence(drop, requests.ReadTimeout("read timed out"), OK))
    result = fetch(client)
    assert (len(result.rows), result.retries, result.requests) == (1, 2, 3)


def test_network_errors_raised_without_the_token_or_its_cause() -> None:
    drop = requests.ConnectionError(
        f"HTTPSConnectionPool: Max retries exceeded with url: /insights?access_token={TOKEN}"
    )
    client, _, _ = make_client(sequence(drop))
    with pytest.raises(TransientError) as caught:
        fetch(client)
    assert TOKEN not in str(caught.value) and TOKEN not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_token_absent_from_logs_and_repr(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    drop = requests.ConnectionError(f"reset on /insights?access_token={TOKEN}")
    pages = [Reply(body=fixture(f"insights_page_{n}.json")) for n in (1, 2, 3)]
    client, _, _ = make_client(sequence(drop, error(500, "error_unknown_500.json"), *pages))
    fetch(client, DAY, DAY + timedelta(days=1))
    with pytest.raises(TokenInvalid):
        bad, _, _ = make_client(sequence(error(400, "error_token_expired.json")))
        fetch(bad)
    assert caplog.records, "retries and requests are logged"
    assert TOKEN not in caplog.text
    assert "retrying" in caplog.text
    assert TOKEN not in repr(client)


# --- splitting ranges Meta finds too large ----------------------------------------------------------------------


def too_large_beyond(days: int) -> Callable[[requests.PreparedRequest], Reply]:
    """Refuses ranges longer than `days` with 100/1487534; otherwise one row per day of the range."""

    def handler(request: requests.PreparedRequest) -> Reply:
        time_range = json.loads(parse_qs(urlsplit(request.url).query)["time_range"][0])
        since, until = date.fromisoformat(time_range["since"]), date.fromisoformat(time_range["until"])
        if (until - since).days + 1 > days:
            return error(400, "error_too_much_data.json")
        return page(*[row(since + timedelta(days=n)) for n in range((until - since).days + 1)])

    return handler


def test_query_too_large_splits_the_range_in_halves() -> None:
    client, _, sleeps = make_client(too_large_beyond(2))
    result = fetch(client, DAY, DAY + timedelta(days=6))
    days = [r["date_start"] for r in result.rows]
    assert days == [(DAY + timedelta(days=n)).isoformat() for n in range(7)]  # each day once, in order
    assert result.splits == 3  # 7 → 4 + 3 → (2 + 2) + (2 + 1)
    assert sleeps == []


def test_one_day_still_too_large_raises() -> None:
    client, _, _ = make_client(too_large_beyond(0))
    with pytest.raises(QueryTooLarge, match="2026-03-14 is a single day"):
        fetch(client, DAY, DAY + timedelta(days=1))


# --- async report runs ------------------------------------------------------------------------------------------

REPORT = fixture("async_report_run.json")["report_run_id"]


def async_meta(*statuses: str, rows: int = 3) -> Callable[[requests.PreparedRequest], Reply]:
    """POST creates a run, GET /{id} walks through `statuses` (one status file per job), GET /{id}/insights pages."""
    remaining = [fixture(name) for name in statuses]

    def handler(request: requests.PreparedRequest) -> Reply:
        path = urlsplit(request.url).path
        if request.method == "POST":
            return Reply(body=fixture("async_report_run.json"))
        if path.endswith(f"/{REPORT}"):
            return Reply(body=remaining.pop(0) if len(remaining) > 1 else remaining[0])
        if path.endswith(f"/{REPORT}/insights"):
            return page(*[row(DAY + timedelta(days=n)) for n in range(rows)])
        return Reply(status=404, body={"error": {"message": f"unknown path {path}", "code": 803}})

    return handler


def test_async_report_completed() -> None:
    statuses = ("async_status_running_100.json", "async_status_completed.json")
    client, adapter, sleeps = make_client(async_meta(*statuses), async_poll_s=2.0)
    result = fetch(client, DAY, DAY + timedelta(days=40))
    assert result.used_async and len(result.rows) == 3
    post = adapter.seen[0]
    assert post.method == "POST" and urlsplit(post.url).path == "/v23.0/act_100000000001/insights"
    assert TOKEN not in post.url  # the POST carries its parameters in the form body
    assert json.loads(adapter.query(0)["time_range"]) == {"since": "2026-03-14", "until": "2026-04-23"}
    # "Job Running" at 100 % is not done: one more poll after one (short, first) wait.
    assert sleeps == [0.25]
    assert [urlsplit(r.url).path for r in adapter.seen[1:]] == [f"/v23.0/{REPORT}"] * 2 + [
        f"/v23.0/{REPORT}/insights"
    ]


def test_async_report_stuck_times_out() -> None:
    client, _, sleeps = make_client(
        async_meta("async_status_running_100.json"), async_poll_s=2.0, async_max_wait_s=10
    )
    with pytest.raises(AsyncReportTimeout) as caught:
        fetch(client, DAY, DAY + timedelta(days=40))
    # Polls start quickly and back off to the poll interval; the bounded wait ends it.
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert sum(sleeps[:-1]) < 10 <= sum(sleeps)
    assert "Job Running" in str(caught.value)


def test_async_report_failed_is_started_again() -> None:
    client, adapter, sleeps = make_client(
        async_meta("async_status_failed.json", "async_status_completed.json")
    )
    result = fetch(client, DAY, DAY + timedelta(days=40))
    assert len(result.rows) == 3 and result.retries == 1
    assert sum(r.method == "POST" for r in adapter.seen) == 2


def test_async_report_failing_every_time_raises_after_max_attempts() -> None:
    client, adapter, _ = make_client(async_meta("async_status_failed.json"), max_attempts=3)
    with pytest.raises(AsyncReportFailed):
        fetch(client, DAY, DAY + timedelta(days=40))
    assert sum(r.method == "POST" for r in adapter.seen) == 3


def test_ranges_up_to_the_threshold_stay_synchronous() -> None:
    client, adapter, _ = make_client(sequence(OK), async_threshold_days=31)
    assert not fetch(client, DAY, DAY + timedelta(days=30)).used_async
    assert adapter.seen[0].method == "GET"


# --- lifecycle --------------------------------------------------------------------------------------------------


def test_context_manager_closes_the_session() -> None:
    closed = []
    session = requests.Session()
    session.close = lambda: closed.append(True)  # type: ignore[method-assign]
    with MetaInsightsClient(base_url=BASE, access_token=TOKEN, session=session) as client:
        assert TOKEN not in repr(client)
    assert closed == [True]


def test_reversed_range_is_refused() -> None:
    client, _, _ = make_client(sequence(OK))
    with pytest.raises(ValueError, match="before it starts"):
        fetch(client, DAY, DAY - timedelta(days=1))


def test_every_error_is_a_meta_api_error() -> None:
    client, _, _ = make_client(
        sequence(Reply(status=404, body={"error": {"message": "no such object", "code": 803}}))
    )
    with pytest.raises(MetaApiError) as caught:
        fetch(client)
    assert not caught.value.transient
