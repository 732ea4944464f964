"""The Meta API simulator, reached both through the in-process requests adapter and over real loopback HTTP:
deterministic data, paging, nested actions, async report runs, every fault kind, errors and headers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import requests

import kpi_platform
from kpi_platform import settings
from kpi_platform.clients import load_clients
from kpi_platform.quality.rules import anomalies
from kpi_platform.simulator import (
    AccountSpec,
    FaultConfig,
    InsightsQuery,
    MetaSimulator,
    RateLimits,
    SimulatorConfig,
    campaigns,
    day_deliveries,
    is_idle_day,
    mount_simulator,
    serve,
)
from kpi_platform.simulator.data import RAMP_UP_DAYS, SMALL_CAMPAIGN_SHARE

TODAY = date(2026, 3, 20)
ACCOUNT = "act_100000000001"
TOKEN = "test-token"
CONVERSION_TYPES = frozenset(
    {
        "lead",
        "onsite_conversion.lead_grouped",
        "offsite_conversion.fb_pixel_lead",
        "click_to_call_native_call_placed",
        "contact_total",
        "contact_website",
        "contact_mobile_app",
        "schedule_total",
        "schedule_website",
    }
)


def query(since: date, until: date, **extra: str) -> dict[str, str]:
    return {
        "access_token": TOKEN,
        "level": "campaign",
        "time_increment": "1",
        "fields": ",".join(settings.INSIGHTS_FIELDS),
        "time_range": json.dumps({"since": since.isoformat(), "until": until.isoformat()}),
        **extra,
    }


@dataclass
class Api:
    """A session pointed at one simulator, in process or over HTTP."""

    session: requests.Session
    base_url: str
    simulator: MetaSimulator

    def url(self, path: str) -> str:
        return f"{self.base_url}/{settings.META_API_VERSION}/{path}"

    def get(self, path: str, *, timeout: tuple[float, float] = (5, 10), **params: str) -> requests.Response:
        return self.session.get(self.url(path), params=params, timeout=timeout)

    def insights(
        self, since: date, until: date, *, account: str = ACCOUNT, **extra: str
    ) -> requests.Response:
        return self.get(f"{account}/insights", **query(since, until, **extra))

    def pages(self, first: requests.Response) -> list[dict[str, Any]]:
        """Every page body, following `paging.next` verbatim."""
        bodies = []
        response = first
        while True:
            assert response.status_code == 200, response.text
            bodies.append(response.json())
            next_url = bodies[-1].get("paging", {}).get("next")
            if not next_url:
                return bodies
            response = self.session.get(next_url, timeout=(5, 10))

    def rows(self, since: date, until: date, *, account: str = ACCOUNT, **extra: str) -> list[dict[str, Any]]:
        return [
            row
            for body in self.pages(self.insights(since, until, account=account, **extra))
            for row in body["data"]
        ]


Connect = Callable[..., Api]


@pytest.fixture
def in_process() -> Connect:
    def connect(config: SimulatorConfig | None = None, faults: FaultConfig | None = None) -> Api:
        simulator = MetaSimulator(config or SimulatorConfig(today=TODAY), faults)
        session = requests.Session()
        mount_simulator(session, simulator)
        return Api(session, settings.SIMULATOR_BASE_URL, simulator)

    return connect


@pytest.fixture(params=["in_process", "http"])
def connect(request: pytest.FixtureRequest, in_process: Connect) -> Iterator[Connect]:
    """Builds an `Api` over the in-process adapter, then (second run) over a real loopback server."""
    if request.param == "in_process":
        yield in_process
        return
    servers = []

    def over_http(config: SimulatorConfig | None = None, faults: FaultConfig | None = None) -> Api:
        simulator = MetaSimulator(config or SimulatorConfig(today=TODAY), faults)
        servers.append(serve(simulator))
        return Api(requests.Session(), servers[-1].url, simulator)

    yield over_http
    for server in servers:
        server.shutdown()


def actions_of(row: dict[str, Any], key: str = "actions") -> dict[str, int | float]:
    return {
        a["action_type"]: float(a["value"]) if key == "action_values" else int(a["value"])
        for a in row.get(key, [])
    }


def error_of(response: requests.Response) -> dict[str, Any]:
    return response.json()["error"]


# --- Data ---------------------------------------------------------------------------------------------------


def test_same_query_gives_identical_rows_and_accounts_differ(in_process: Connect) -> None:
    since, until = TODAY - timedelta(days=20), TODAY
    first = in_process().rows(since, until, limit="500")
    assert first == in_process().rows(since, until, limit="500")
    other = in_process().rows(since, until, account="act_100000000002", limit="500")
    assert {r["campaign_id"] for r in first}.isdisjoint({r["campaign_id"] for r in other})
    assert {r["account_id"] for r in first} == {"100000000001"}


def test_rows_are_ordered_by_date_then_campaign_and_dated_one_day(in_process: Connect) -> None:
    rows = in_process().rows(TODAY - timedelta(days=30), TODAY + timedelta(days=5), limit="500")
    keys = [(r["date_start"], r["campaign_id"]) for r in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert all(r["date_start"] == r["date_stop"] for r in rows)
    assert max(r["date_start"] for r in rows) <= TODAY.isoformat()  # nothing from the future


def test_ctr_and_cpc_agree_with_the_raw_counts(in_process: Connect) -> None:
    api = in_process()
    rows = [
        row
        for account in ("act_100000000001", "act_100000000002", "act_100000000003")
        for row in api.rows(TODAY - timedelta(days=60), TODAY, account=account, limit="500")
    ]
    assert rows
    for row in rows:
        impressions, clicks, spend = int(row["impressions"]), int(row["clicks"]), float(row["spend"])
        assert re.fullmatch(r"\d+\.\d{2}", row["spend"]) and 100 <= impressions <= 100_000
        assert row["ctr"] == f"{clicks / impressions * 100:.6f}"
        if clicks:
            assert row["cpc"] == f"{spend / clicks:.6f}"
            assert 0.19 <= spend / clicks <= 3.01
        else:
            assert "cpc" not in row
    ctrs = sorted(float(r["ctr"]) for r in rows)
    assert 0.5 <= ctrs[len(ctrs) // 2] <= 4.0


def test_idle_days_have_no_rows_at_all(in_process: Connect) -> None:
    since = TODAY - timedelta(days=364)
    days = [since + timedelta(days=n) for n in range(365)]
    idle = {d.isoformat() for d in days if is_idle_day(account_id="100000000001", day=d)}
    assert 3 <= len(idle) <= 30  # about 3 % of the days
    dated = {r["date_start"] for r in in_process().rows(since, TODAY, limit="500")}
    assert dated.isdisjoint(idle)


def test_campaigns_come_and_go_and_only_deliver_while_running() -> None:
    accounts = [str(100000000001 + n) for n in range(10)]
    for account in accounts:
        found = campaigns(account_id=account)
        assert 11 <= len(found) <= 15 and all(c.id.isdigit() and len(c.id) == 18 for c in found)
    ended = [(a, c) for a in accounts for c in campaigns(account_id=a) if c.end is not None]
    assert ended
    account, campaign = ended[0]
    simulator = MetaSimulator(SimulatorConfig(today=campaign.end + timedelta(days=40)))
    span = InsightsQuery(
        account, ("campaign_id",), campaign.start - timedelta(days=30), campaign.end + timedelta(days=30)
    )
    days = [d.day for d in simulator.deliveries(span) if d.campaign.id == campaign.id]
    assert days and campaign.start <= min(days) and max(days) <= campaign.end


def test_large_campaigns_deliver_every_day_they_run_and_spend_their_daily_budget() -> None:
    """A campaign with a real share of its account's volume is paced to its budget: it delivers every day it runs
    (only the account's idle days have no rows), spends 85-110 % of its budget on a full weekday, and a new one
    ramps up over its first RAMP_UP_DAYS."""
    accounts = [f"act_{100000000001 + n}" for n in range(6)]
    checked = ramped = 0
    for account in accounts:
        for n in range(365):
            day = date(2025, 1, 1) + timedelta(days=n)
            if is_idle_day(account_id=account, day=day):
                assert day_deliveries(account_id=account, day=day) == ()
                continue
            running = [c for c in campaigns(account_id=account) if c.runs_on(day)]
            volume = sum(c.impressions_per_day for c in running)
            delivered = {d.campaign.id: d for d in day_deliveries(account_id=account, day=day)}
            for campaign in running:
                if campaign.impressions_per_day < SMALL_CAMPAIGN_SHARE * volume:
                    continue
                spend = delivered[campaign.id].spend_cents / 100  # KeyError: a large campaign went dark
                one_click = 3.0  # spend is whole clicks at the day's CPC (at most 3.00)
                age = (day - campaign.start).days
                if age < RAMP_UP_DAYS:
                    assert spend <= 1.1 * campaign.daily_budget * (age + 1) / RAMP_UP_DAYS + one_click
                    ramped += 1
                elif day.weekday() < 5:
                    assert (
                        0.85 * campaign.daily_budget - one_click
                        <= spend
                        <= 1.1 * campaign.daily_budget + one_click
                    )
                    checked += 1
    assert checked > 5000 and ramped > 0


def test_the_example_clients_generate_no_anomaly_on_any_day() -> None:
    """The quickstart's clients (clients.yaml) as the simulator generates them, 2025 to 2028, judged by the
    `no_anomalies` rule in one go: no day of them is an anomaly, so the quickstart's checks pass whatever day it
    runs on. Ordinary days of a paced account vary by well under half of their mean; idle days are not judged."""
    clients = load_clients(Path(kpi_platform.__file__).resolve().parents[1] / "clients.yaml")
    rows = []
    for client in clients:
        for n in range((date(2028, 12, 31) - date(2025, 1, 1)).days + 1):
            day = date(2025, 1, 1) + timedelta(days=n)
            delivered = day_deliveries(account_id=client.ad_account_id, day=day)
            rows.append(
                {
                    "client_id": client.id,
                    "kpi_date": day,
                    "delivery": "delivered" if delivered else "idle",
                    "spend": sum(d.spend_cents for d in delivered) / 100,
                    "impressions": sum(d.impressions for d in delivered),
                    "clicks": sum(d.clicks for d in delivered),
                    "leads": sum(d.onsite_leads + d.pixel_leads for d in delivered),
                    "calls": sum(d.calls for d in delivered),
                    "contacts": sum(d.contact_website + d.contact_mobile_app for d in delivered),
                    "reservations": sum(d.reservations for d in delivered),
                }
            )
    result = anomalies(pd.DataFrame(rows))
    assert result.days_checked > 4000 and result.idle_days_excluded > 0
    assert result.culprits == []


def test_nested_actions_are_consistent_and_some_campaigns_never_convert(in_process: Connect) -> None:
    api = in_process()
    accounts = [f"act_{100000000001 + n}" for n in range(6)]
    rows = [r for a in accounts for r in api.rows(TODAY - timedelta(days=45), TODAY, account=a, limit="500")]
    converting = set()
    for row in rows:
        actions, values = actions_of(row), actions_of(row, "action_values")
        assert all(v > 0 for v in actions.values())
        assert actions["link_click"] <= int(row["clicks"])
        assert actions["link_click"] <= actions["post_engagement"] <= actions["page_engagement"]
        assert actions.get("lead", 0) == actions.get("onsite_conversion.lead_grouped", 0) + actions.get(
            "offsite_conversion.fb_pixel_lead", 0
        )
        assert actions.get("contact_total", 0) == actions.get("contact_website", 0) + actions.get(
            "contact_mobile_app", 0
        )
        assert actions.get("schedule_total", 0) == actions.get("schedule_website", 0)
        assert ("schedule_total" in values) == ("schedule_total" in actions)
        assert values.get("schedule_total") == values.get("schedule_website")
        if CONVERSION_TYPES & actions.keys():
            converting.add(row["campaign_id"])
    assert converting
    assert {r["campaign_id"] for r in rows} - converting, "every campaign converted"


def test_fields_are_honoured(in_process: Connect) -> None:
    rows = in_process().rows(TODAY - timedelta(days=3), TODAY, fields="impressions,spend")
    assert rows and all(set(r) == {"impressions", "spend", "date_start", "date_stop"} for r in rows)


def test_currency_comes_from_the_account_spec_and_unknown_accounts_are_refused(in_process: Connect) -> None:
    config = SimulatorConfig(today=TODAY, accounts={"act_100000000002": AccountSpec(currency="PLN")})
    api = in_process(config)
    rows = api.rows(TODAY - timedelta(days=5), TODAY, account="act_100000000002")
    assert rows and {r["account_currency"] for r in rows} == {"PLN"}
    response = api.insights(TODAY, TODAY, account="act_100000000001")
    assert response.status_code == 400
    assert (error_of(response)["code"], error_of(response)["error_subcode"]) == (100, 33)


def test_restatement_changes_recent_days_only(in_process: Connect) -> None:
    since = TODAY - timedelta(days=20)

    def rows(version: int) -> dict[tuple[str, str], dict[str, Any]]:
        api = in_process(faults=FaultConfig(restate_days=5, restatement_version=version))
        return {(r["date_start"], r["campaign_id"]): r for r in api.rows(since, TODAY, limit="500")}

    original, once, twice = rows(0), rows(1), rows(2)
    assert original == {
        (r["date_start"], r["campaign_id"]): r for r in in_process().rows(since, TODAY, limit="500")
    }
    assert original.keys() == once.keys() == twice.keys()
    recent = (TODAY - timedelta(days=4)).isoformat()
    for key, row in original.items():
        if key[0] < recent:
            assert once[key] == row == twice[key]
        else:
            assert actions_of(once[key]).get("lead", 0) >= actions_of(row).get("lead", 0)
    changed = {key for key in original if once[key] != original[key]}
    assert changed and all(day >= recent for day, _ in changed)
    assert any(once[key] != twice[key] for key in changed)


# --- Paging -------------------------------------------------------------------------------------------------


def test_paging_returns_every_row_once_and_the_last_page_has_no_next(connect: Connect) -> None:
    api = connect()
    since = TODAY - timedelta(days=30)
    bodies = api.pages(api.insights(since, TODAY, limit="7"))
    assert len(bodies) > 3
    assert all(len(b["data"]) == 7 and "next" in b["paging"] for b in bodies[:-1])
    assert "next" not in bodies[-1]["paging"] and bodies[-1]["data"]
    paged = [r for b in bodies for r in b["data"]]
    assert paged == api.rows(since, TODAY, limit="500")


def test_next_link_is_absolute_on_the_requests_host_and_carries_every_param(connect: Connect) -> None:
    api = connect()
    response = api.insights(TODAY - timedelta(days=10), TODAY, limit="5")
    next_url = response.json()["paging"]["next"]
    assert next_url.startswith(api.url(f"{ACCOUNT}/insights?"))
    params = parse_qs(urlsplit(next_url).query)
    assert {k: v[0] for k, v in params.items() if k != "after"} == query(
        TODAY - timedelta(days=10), TODAY, limit="5"
    )
    assert params["after"] == [response.json()["paging"]["cursors"]["after"]]


def test_an_empty_result_has_no_paging(in_process: Connect) -> None:
    idle = next(
        TODAY - timedelta(days=n)
        for n in range(400)
        if is_idle_day(account_id="100000000001", day=TODAY - timedelta(days=n))
    )
    body = in_process().insights(idle, idle).json()
    assert body == {"data": []}


# --- Async report runs --------------------------------------------------------------------------------------


def test_async_report_run_end_to_end(connect: Connect) -> None:
    api = connect(SimulatorConfig(today=TODAY, async_polls_to_complete=3))
    since = TODAY - timedelta(days=40)
    created = api.session.post(api.url(f"{ACCOUNT}/insights"), data=query(since, TODAY), timeout=(5, 10))
    assert created.status_code == 200
    run_id = created.json()["report_run_id"]
    early = api.get(f"{run_id}/insights", access_token=TOKEN)
    assert early.status_code == 400  # not readable before completion
    statuses = [api.get(run_id, access_token=TOKEN).json() for _ in range(3)]
    assert [(s["async_status"], s["async_percent_completion"]) for s in statuses] == [
        ("Job Not Started", 0),
        ("Job Running", 50),
        ("Job Completed", 100),
    ]
    assert statuses[-1]["date_start"] == since.isoformat() and statuses[-1]["account_id"] == "100000000001"
    bodies = api.pages(api.get(f"{run_id}/insights", access_token=TOKEN, limit="50"))
    assert len(bodies) > 1
    assert [r for b in bodies for r in b["data"]] == api.rows(since, TODAY, limit="500")


def test_a_stuck_report_stays_running_at_100_percent(in_process: Connect) -> None:
    api = in_process(faults=FaultConfig(async_stuck=True))
    run_id = api.session.post(api.url(f"{ACCOUNT}/insights"), data=query(TODAY, TODAY), timeout=5).json()[
        "report_run_id"
    ]
    for _ in range(6):
        status = api.get(run_id, access_token=TOKEN).json()
        assert (status["async_status"], status["async_percent_completion"]) == ("Job Running", 100)
    assert api.get(f"{run_id}/insights", access_token=TOKEN).status_code == 400


def test_a_failed_report_carries_its_error(in_process: Connect) -> None:
    api = in_process(faults=FaultConfig(async_fail=True))
    run_id = api.session.post(api.url(f"{ACCOUNT}/insights"), data=query(TODAY, TODAY), timeout=5).json()[
        "report_run_id"
    ]
    statuses = [api.get(run_id, access_token=TOKEN).json() for _ in range(2)]
    assert statuses[0]["async_status"] == "Job Not Started"
    assert statuses[1]["async_status"] == "Job Failed"
    assert (statuses[1]["error_code"], statuses[1]["error_subcode"]) == (-2, 2490547)
    assert "Report Failed" in statuses[1]["error_message"]


def test_an_unknown_report_run_is_unsupported(in_process: Connect) -> None:
    response = in_process().get("1234567890123456", access_token=TOKEN)
    assert response.status_code == 400 and error_of(response)["error_subcode"] == 33


# --- Faults -------------------------------------------------------------------------------------------------


def test_scripted_faults_happen_in_order_then_requests_succeed(connect: Connect) -> None:
    faults = FaultConfig(
        scripted_errors=(17, "drop", "timeout", "malformed", (100, 1487534), 1, None, 2),
        timeout_seconds=1.0,
        throttle_regain_minutes=0.001,
    )
    api = connect(faults=faults)

    def call() -> requests.Response:
        return api.insights(TODAY - timedelta(days=2), TODAY, timeout=(2, 0.3))

    throttled = call()
    assert throttled.status_code == 400
    assert (error_of(throttled)["code"], error_of(throttled)["error_subcode"]) == (17, 2446079)
    usage = json.loads(throttled.headers["X-Business-Use-Case-Usage"])["100000000001"][0]
    assert usage["estimated_time_to_regain_access"] == 0.001 and usage["call_count"] == 100
    with pytest.raises(requests.ConnectionError):
        call()
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        call()
    assert time.monotonic() - started < 1.0
    malformed = call()
    assert malformed.status_code == 200
    with pytest.raises(ValueError):
        malformed.json()
    too_large = call()
    assert (too_large.status_code, error_of(too_large)["code"], error_of(too_large)["error_subcode"]) == (
        400,
        100,
        1487534,
    )
    unknown = call()
    assert unknown.status_code == 500 and error_of(unknown)["code"] == 1
    assert call().status_code == 200  # None: served normally
    transient = call()
    assert transient.status_code == 500 and error_of(transient)["is_transient"] is True
    assert all(call().status_code == 200 for _ in range(3))
    assert api.simulator.counters().faults == {
        "17/2446079": 1,
        "drop": 1,
        "timeout": 1,
        "malformed": 1,
        "100/1487534": 1,
        "1/99": 1,
        "2": 1,
    }


def test_unknown_paths_do_not_consume_scripted_faults(in_process: Connect) -> None:
    api = in_process(faults=FaultConfig(scripted_errors=(613,)))
    unknown = api.get("me/adaccounts", access_token=TOKEN)
    assert unknown.status_code == 400 and error_of(unknown)["code"] == 2500
    assert error_of(api.insights(TODAY, TODAY))["code"] == 613
    assert api.simulator.counters().by_kind == {"unknown": 1, "insights": 1}


def test_error_rates_are_seeded(in_process: Connect) -> None:
    def outcomes() -> list[int]:
        api = in_process(faults=FaultConfig(error_rates={4: 0.5}, seed=7))
        return [api.insights(TODAY, TODAY).status_code for _ in range(30)]

    first = outcomes()
    assert first == outcomes()
    assert 200 in first and 400 in first
    always = in_process(faults=FaultConfig(error_rates={(80000, 2446079): 1.0}))
    response = always.insights(TODAY, TODAY)
    assert (response.status_code, error_of(response)["code"]) == (400, 80000)


def test_random_drops_and_malformed_bodies(connect: Connect) -> None:
    with pytest.raises(requests.ConnectionError):
        connect(faults=FaultConfig(drop_rate=1.0)).insights(TODAY, TODAY)
    with pytest.raises(ValueError):
        connect(faults=FaultConfig(malformed_rate=1.0)).insights(TODAY, TODAY).json()


def test_a_failing_page_fails_every_time_mid_range(connect: Connect) -> None:
    api = connect(faults=FaultConfig(fail_page=2))
    first = api.insights(TODAY - timedelta(days=20), TODAY, limit="5")
    assert first.status_code == 200
    next_url = first.json()["paging"]["next"]
    for _ in range(2):
        failed = api.session.get(next_url, timeout=5)
        assert failed.status_code == 500
        assert error_of(failed)["code"] == 2 and error_of(failed)["is_transient"] is True
    assert api.simulator.counters().faults == {"fail_page": 2}


def test_ranges_longer_than_too_large_days_must_be_split(in_process: Connect) -> None:
    api = in_process(faults=FaultConfig(too_large_days=7))
    assert api.insights(TODAY - timedelta(days=6), TODAY).status_code == 200
    too_long = api.insights(TODAY - timedelta(days=7), TODAY)
    assert (error_of(too_long)["code"], error_of(too_long)["error_subcode"]) == (100, 1487534)
    created = api.session.post(
        api.url(f"{ACCOUNT}/insights"), data=query(TODAY - timedelta(days=7), TODAY), timeout=5
    )
    assert created.status_code == 400 and error_of(created)["error_subcode"] == 1487534


def test_slow_responses_are_slow(in_process: Connect) -> None:
    api = in_process(faults=FaultConfig(slow_seconds=0.2))
    started = time.monotonic()
    assert api.insights(TODAY, TODAY).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_over_http_a_timeout_really_holds_the_connection_silent() -> None:
    simulator = MetaSimulator(
        SimulatorConfig(today=TODAY), FaultConfig(scripted_errors=("timeout",), timeout_seconds=0.6)
    )
    with serve(simulator) as server:
        url = f"{server.url}/{settings.META_API_VERSION}/{ACCOUNT}/insights"
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError):  # the socket closes without a response after 0.6 s
            requests.get(url, params=query(TODAY, TODAY), timeout=(2, 5))
        assert time.monotonic() - started >= 0.6


# --- Errors and headers -------------------------------------------------------------------------------------


def test_missing_or_invalid_token_is_error_190(connect: Connect) -> None:
    api = connect()
    params = query(TODAY, TODAY)
    del params["access_token"]
    missing = api.get(f"{ACCOUNT}/insights", **params)
    invalid = api.get(f"{ACCOUNT}/insights", **{**params, "access_token": "invalid-token"})
    for response in (missing, invalid):
        assert response.status_code == 400
        assert error_of(response)["code"] == 190 and error_of(response)["type"] == "OAuthException"
        assert error_of(response)["fbtrace_id"]
    assert error_of(invalid)["error_subcode"] == 463


def test_history_beyond_37_months_is_refused(in_process: Connect) -> None:
    api = in_process()
    refused = api.insights(date(2023, 2, 19), date(2023, 2, 25))
    assert refused.status_code == 400 and error_of(refused)["code"] == 100
    assert api.insights(date(2023, 2, 20), date(2023, 2, 25)).status_code == 200


def test_queries_the_simulator_cannot_answer_are_refused(in_process: Connect) -> None:
    api = in_process()
    for bad in ({"time_increment": "all_days"}, {"level": "ad"}, {"fields": "impressions,reach"}):
        response = api.insights(TODAY, TODAY, **bad)
        assert response.status_code == 400 and error_of(response)["code"] == 100, bad


def test_every_response_is_marked_and_carries_usage_headers(connect: Connect) -> None:
    api = connect(faults=FaultConfig(scripted_errors=(80004,)))
    for response in (
        api.insights(TODAY, TODAY),
        api.insights(TODAY, TODAY),
        api.get("nope", access_token=TOKEN),
    ):
        assert response.headers["X-KPI-Simulator"] == "1"
        app = json.loads(response.headers["X-App-Usage"])
        account = json.loads(response.headers["X-Ad-Account-Usage"])
        buc = json.loads(response.headers["X-Business-Use-Case-Usage"])
        assert {"call_count", "total_time", "total_cputime"} <= app.keys()
        assert "acc_id_util_pct" in account
        assert all(
            "estimated_time_to_regain_access" in entry for entries in buc.values() for entry in entries
        )


def test_counters_count_requests_per_kind(in_process: Connect) -> None:
    api = in_process()
    pages = len(api.pages(api.insights(TODAY - timedelta(days=10), TODAY, limit="10")))
    run_id = api.session.post(api.url(f"{ACCOUNT}/insights"), data=query(TODAY, TODAY), timeout=5).json()[
        "report_run_id"
    ]
    api.get(run_id, access_token=TOKEN)
    counters = api.simulator.counters()
    assert counters.requests == api.simulator.request_count == sum(counters.by_kind.values())
    assert counters.by_kind == {"insights": pages, "report_create": 1, "report_status": 1}


# --- Usage and rate limits ----------------------------------------------------------------------------------


class ManualClock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def limited(account_calls: int, app_calls: int = 1000, window_s: float = 60.0) -> tuple[Api, ManualClock]:
    clock = ManualClock()
    limits = RateLimits(window_s=window_s, account_calls=account_calls, app_calls=app_calls)
    simulator = MetaSimulator(SimulatorConfig(today=TODAY, rate_limits=limits), clock=clock)
    session = requests.Session()
    mount_simulator(session, simulator)
    return Api(session, settings.SIMULATOR_BASE_URL, simulator), clock


def usage_of_response(response: requests.Response) -> tuple[float, float, float, float]:
    """(account %, app %, regain minutes, ad account reset seconds) as the response's headers report them."""
    buc = json.loads(response.headers["X-Business-Use-Case-Usage"])["100000000001"][0]
    account = json.loads(response.headers["X-Ad-Account-Usage"])
    app = json.loads(response.headers["X-App-Usage"])
    throttle = json.loads(response.headers["x-fb-ads-insights-throttle"])
    assert buc["call_count"] == account["acc_id_util_pct"] == throttle["acc_id_util_pct"]
    assert app["call_count"] == throttle["app_id_util_pct"]
    return (
        buc["call_count"],
        app["call_count"],
        buc["estimated_time_to_regain_access"],
        account["reset_time_duration"],
    )


def test_usage_rises_with_the_call_rate_and_falls_as_calls_leave_the_window() -> None:
    api, clock = limited(account_calls=4, app_calls=8)
    seen = []
    for _ in range(4):
        seen.append(usage_of_response(api.insights(TODAY, TODAY)))
        clock.seconds += 10
    assert seen == [
        (25.0, 12.5, 0, 60),
        (50.0, 25.0, 0, 60),
        (75.0, 37.5, 0, 60),
        # At 100 % the next call would be refused: Meta's wait is until the oldest call leaves the window.
        (100.0, 50.0, 0.5, 60),
    ]
    clock.seconds += 15  # 55 s after the first call: all four still count
    throttled = api.insights(TODAY, TODAY)
    assert throttled.status_code == 400
    assert (error_of(throttled)["code"], error_of(throttled)["error_subcode"]) == (80000, 2446079)
    # Refused calls count too (Meta counts errors): five in the window, two must leave, the second in 15 s.
    assert usage_of_response(throttled) == (125.0, 62.5, 0.25, 60)
    assert api.simulator.counters().throttles == {"100000000001": 1}
    clock.seconds += 15
    assert api.insights(TODAY, TODAY).status_code == 200
    clock.seconds += 200  # every call has left the window
    assert usage_of_response(api.insights(TODAY, TODAY))[:3] == (25.0, 12.5, 0)


def test_the_app_limit_throttles_every_ad_account() -> None:
    api, _ = limited(account_calls=100, app_calls=3)
    for n in range(3):
        assert api.insights(TODAY, TODAY, account=f"act_10000000000{n + 2}").status_code == 200
    refused = api.insights(TODAY, TODAY)
    assert refused.status_code == 400
    assert (error_of(refused)["code"], error_of(refused)["error_subcode"]) == (4, 1504022)
    assert usage_of_response(refused)[:2] == (1.0, pytest.approx(133.33))
    assert api.simulator.counters().throttles == {"100000000001": 1}


def test_the_default_limits_leave_room_and_only_insights_requests_count() -> None:
    api, _ = limited(
        account_calls=RateLimits().account_calls, app_calls=RateLimits().app_calls, window_s=3600
    )
    for _ in range(3):
        api.get("nope", access_token=TOKEN)
    assert usage_of_response(api.insights(TODAY, TODAY))[:2] == (pytest.approx(100 / 600, abs=0.01), 0.01)


@pytest.mark.parametrize(
    "limits",
    [{"window_s": 0}, {"account_calls": 0}, {"app_calls": -1}],
)
def test_bad_rate_limits_are_refused(limits) -> None:
    with pytest.raises(ValueError):
        RateLimits(**limits)
