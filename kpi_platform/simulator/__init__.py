"""A local Meta Marketing API that speaks graph.facebook.com's Insights HTTP API with deterministic data and fault
injection, reachable as a WSGI app, an in-process `requests` adapter, or a real HTTP server.

Read top to bottom it documents how the API behaves: the data Meta returns (numbers as strings, nested action
types, days without delivery have no rows), how it pages (`paging.next` only while more rows exist), how async
report runs progress, and how it fails (error envelope, HTTP status per code, usage headers, dropped sockets).
Every response carries `X-KPI-Simulator: 1`, so rows fetched from here are never mistaken for real data.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit
from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

import requests
import requests.adapters
from requests.structures import CaseInsensitiveDict

from kpi_platform import settings

SIMULATOR_HEADER = "X-KPI-Simulator"
MAX_PAGE_LIMIT = 500
#: Share of days on which a whole account delivers nothing (no rows at all).
IDLE_DAY_SHARE = 0.03
#: Fields the simulator serves; anything else is refused like an unknown field (Meta: code 100).
SUPPORTED_FIELDS: tuple[str, ...] = settings.INSIGHTS_FIELDS
#: Meta's answer when `fields` is absent.
DEFAULT_FIELDS: tuple[str, ...] = ("impressions", "spend")

ErrorCode = int | tuple[int, int]
#: One scripted request outcome: a Graph error code, (code, subcode), "drop", "timeout", "malformed", or None (serve).
ScriptedFault = int | tuple[int, int] | str | None
TRANSPORT_FAULTS = frozenset({"drop", "timeout"})
BODY_FAULTS = frozenset({"malformed"})


# --- Configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountSpec:
    """One simulated ad account."""

    currency: str = "EUR"


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated Meta knows: the date, the ad accounts, page and async-run behaviour.

    `today` None means the real UTC date at each request. `accounts` None accepts any ad account id (currency EUR);
    otherwise ids outside it get Meta's "Unsupported get request" (keys with or without `act_`). `invalid_token` is
    the access token the simulator treats as expired. `seed` selects the data set (the fault RNG has its own).
    """

    today: date | None = None
    accounts: Mapping[str, AccountSpec] | None = None
    page_size_default: int = 25
    async_polls_to_complete: int = 2
    invalid_token: str = "invalid-token"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.page_size_default <= MAX_PAGE_LIMIT:
            raise ValueError(
                f"page_size_default must be within 1..{MAX_PAGE_LIMIT}, got {self.page_size_default}"
            )
        if self.async_polls_to_complete < 0:
            raise ValueError("async_polls_to_complete must not be negative")


@dataclass(frozen=True)
class FaultConfig:
    """Failures to inject; all off by default.

    Per request, in this order: the `scripted_errors` entry for the n-th insights/report request (None = serve
    normally), else `drop_rate`, `malformed_rate` and each of `error_rates` (drawn from an RNG seeded with `seed`).
    A "timeout" holds a real HTTP connection silent for `timeout_seconds` (set it above the client's read timeout);
    in process it raises `requests.ReadTimeout` at once. `slow_seconds` delays every response.

    `fail_page` (1-based) always fails with `fail_page_error` on every paged result. `too_large_days` refuses longer
    time ranges with 100/1487534. `restate_days` / `restatement_version` change spend and conversions of the most
    recent days, as Meta does while attributions arrive. On throttle errors `throttle_regain_minutes` goes into
    `X-Business-Use-Case-Usage.estimated_time_to_regain_access` (minutes, as Meta sends it).
    """

    error_rates: Mapping[ErrorCode, float] = field(default_factory=dict)
    scripted_errors: Sequence[ScriptedFault] = ()
    throttle_regain_minutes: float | None = None
    slow_seconds: float = 0.0
    timeout_seconds: float = settings.HTTP_TIMEOUT[1] + 5.0
    drop_rate: float = 0.0
    malformed_rate: float = 0.0
    fail_page: int | None = None
    fail_page_error: ErrorCode = 2
    async_stuck: bool = False
    async_fail: bool = False
    too_large_days: int | None = None
    restate_days: int = 0
    restatement_version: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        rates = {"drop_rate": self.drop_rate, "malformed_rate": self.malformed_rate}
        rates.update({f"error_rates[{code!r}]": rate for code, rate in self.error_rates.items()})
        for name, rate in rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a probability within 0..1, got {rate}")
        for entry in self.scripted_errors:
            if isinstance(entry, str) and entry not in TRANSPORT_FAULTS | BODY_FAULTS:
                raise ValueError(
                    f"unknown scripted fault {entry!r}: use a code, (code, subcode), drop, timeout, malformed"
                )
        if self.fail_page is not None and self.fail_page < 1:
            raise ValueError("fail_page is 1-based")


# --- Deterministic data: campaigns --------------------------------------------------------------------------


def _stable_int(*parts: object) -> int:
    """A hash that is the same in every process (Python's `hash()` of a str is salted per process)."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _rng(*parts: object) -> random.Random:
    return random.Random(_stable_int(*parts))


_CAMPAIGN_NAMES = (
    "Search – Brand",
    "Search – Generic",
    "Leads – Lookalike 1%",
    "Leads – Instant Form",
    "Traffic – Website Visitors",
    "Calls – Local 10 km",
    "Reservations – Online Booking",
    "Retargeting – 30 Days",
    "Awareness – Video Views",
    "Contact – Messenger",
    "Promo – Seasonal Offer",
    "Reach – Brand Lift",
    "Leads – Retargeting Form",
    "Calls – Click to Call",
    "Traffic – Blog Readers",
    "Reservations – Last Minute",
    "Search – Competitors",
    "Awareness – Local Radius",
)
_NAME_VARIANTS = ("", "", "", " (new)", " – Copy", " | 2025", " v2")


@dataclass(frozen=True)
class Campaign:
    """A simulated campaign: when it runs, its typical volume and prices, and what it converts (rates per link click)."""

    id: str
    name: str
    start: date
    end: date | None
    impressions_per_day: int
    ctr_pct: float
    cpc: float
    delivery_share: float
    lead_rate: float = 0.0
    call_rate: float = 0.0
    contact_rate: float = 0.0
    schedule_rate: float = 0.0
    reservation_value: float = 0.0

    @property
    def converts(self) -> bool:
        return any((self.lead_rate, self.call_rate, self.contact_rate, self.schedule_rate))

    def runs_on(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


#: Campaigns per account that never end: with the ones that come and go, about 9-10 deliver on a day.
ALWAYS_ON_CAMPAIGNS = 10


@lru_cache(maxsize=1024)
def campaigns(*, account_id: str, seed: int = 0) -> tuple[Campaign, ...]:
    """The 11–15 campaigns of an account, ordered by id. Ten run forever; the others come and go between 2024 and 2027.

    One long-running campaign always converts; about a quarter of the others never do. `act_` is optional.
    """
    rng = _rng("campaigns", bare_account_id(account_id), seed)
    count = rng.randint(11, 15)
    result = []
    for slot, base_name in enumerate(rng.sample(_CAMPAIGN_NAMES, count)):
        if slot < ALWAYS_ON_CAMPAIGNS:
            start, end = date(2021, 1, 1) + timedelta(days=rng.randrange(365)), None
        else:
            start = date(2024, 1, 1) + timedelta(days=rng.randrange(4 * 365))
            end = start + timedelta(days=rng.randint(30, 400))
        converts = slot == 0 or rng.random() > 0.25
        rates = {}
        if converts:
            rates = {
                "lead_rate": rng.uniform(0.01, 0.12),
                "call_rate": rng.choice((0.0, rng.uniform(0.005, 0.04))),
                "contact_rate": rng.choice((0.0, rng.uniform(0.005, 0.03))),
                "schedule_rate": rng.choice((0.0, rng.uniform(0.005, 0.05))),
                "reservation_value": round(rng.uniform(30.0, 180.0), 2),
            }
        result.append(
            Campaign(
                id=str(120_200_000_000_000_000 + rng.randrange(10**14)),
                name=base_name + rng.choice(_NAME_VARIANTS),
                start=start,
                end=end,
                impressions_per_day=int(10 ** rng.uniform(2.7, 4.3)),
                ctr_pct=rng.uniform(0.6, 3.5),
                cpc=rng.uniform(0.25, 2.5),
                delivery_share=rng.uniform(0.85, 0.98),
                **rates,
            )
        )
    return tuple(sorted(result, key=lambda campaign: campaign.id))


def is_idle_day(*, account_id: str, day: date, seed: int = 0) -> bool:
    """True on the ~3 % of days on which the whole account delivers nothing (Meta then returns no rows at all)."""
    return _rng("idle", bare_account_id(account_id), day.isoformat(), seed).random() < IDLE_DAY_SHARE


# --- Deterministic data: one campaign-day -------------------------------------------------------------------


@dataclass(frozen=True)
class DayDelivery:
    """What one campaign delivered on one day, as counts and cents; `api_row` renders it the way Meta does."""

    day: date
    campaign: Campaign
    impressions: int
    clicks: int
    spend_cents: int
    link_clicks: int
    post_engagements: int
    page_engagements: int
    onsite_leads: int = 0
    pixel_leads: int = 0
    calls: int = 0
    contact_website: int = 0
    contact_mobile_app: int = 0
    reservations: int = 0
    reservation_value_cents: int = 0


def _conversions(campaign: Campaign, link_clicks: int, rng: random.Random) -> dict[str, int]:
    def count(rate: float) -> int:
        return int(link_clicks * rate * rng.uniform(0.4, 1.6) + rng.random())

    leads = count(campaign.lead_rate)
    onsite_share = rng.uniform(0.3, 0.8)
    contacts = count(campaign.contact_rate)
    reservations = count(campaign.schedule_rate)
    return {
        "onsite_leads": round(leads * onsite_share),
        "pixel_leads": leads - round(leads * onsite_share),
        "calls": count(campaign.call_rate),
        "contact_website": contacts - contacts // 3,
        "contact_mobile_app": contacts // 3,
        "reservations": reservations,
        "reservation_value_cents": round(
            reservations * campaign.reservation_value * rng.uniform(0.7, 1.3) * 100
        ),
    }


def _delivery(campaign: Campaign, day: date, rng: random.Random) -> DayDelivery:
    weekend = 0.8 if day.weekday() >= 5 else 1.0
    impressions = max(100, int(campaign.impressions_per_day * weekend * rng.uniform(0.6, 1.4)))
    ctr_pct = min(4.0, max(0.5, campaign.ctr_pct * rng.uniform(0.8, 1.2)))
    clicks = round(impressions * ctr_pct / 100)
    cpc = min(3.0, max(0.2, campaign.cpc * rng.uniform(0.85, 1.15)))
    # Without clicks Meta still bills impressions (CPM), so spend stays above zero.
    spend_cents = round(clicks * cpc * 100) if clicks else round(impressions * rng.uniform(0.2, 0.8))
    link_clicks = round(clicks * rng.uniform(0.6, 0.95))
    post_engagements = link_clicks + round(impressions * rng.uniform(0.001, 0.01))
    return DayDelivery(
        day=day,
        campaign=campaign,
        impressions=impressions,
        clicks=clicks,
        spend_cents=spend_cents,
        link_clicks=link_clicks,
        post_engagements=post_engagements,
        page_engagements=post_engagements + rng.randint(0, 5),
        **(_conversions(campaign, link_clicks, rng) if campaign.converts else {}),
    )


@lru_cache(maxsize=16384)
def day_deliveries(*, account_id: str, day: date, seed: int = 0) -> tuple[DayDelivery, ...]:
    """The account's campaign rows for one day, ordered by campaign id: a pure function of (account, day, seed)."""
    account_id = bare_account_id(account_id)
    if is_idle_day(account_id=account_id, day=day, seed=seed):
        return ()
    rows = []
    for campaign in campaigns(account_id=account_id, seed=seed):
        rng = _rng("delivery", account_id, campaign.id, day.isoformat(), seed)
        if campaign.runs_on(day) and rng.random() < campaign.delivery_share:
            rows.append(_delivery(campaign, day, rng))
    return tuple(rows)


def restated(delivery: DayDelivery, *, version: int, seed: int = 0) -> DayDelivery:
    """`delivery` as Meta reports it after `version` restatements: more conversions, slightly different spend."""
    if version <= 0:
        return delivery
    rng = _rng("restate", delivery.campaign.id, delivery.day.isoformat(), version, seed)

    def grown(count: int) -> int:
        return count + round(count * 0.1 * version * rng.random()) + rng.randint(0, version) if count else 0

    spend_cents = max(1, round(delivery.spend_cents * (1 + 0.01 * version * rng.uniform(0.5, 1.5))))
    reservations = grown(delivery.reservations)
    value_per = delivery.reservation_value_cents / delivery.reservations if delivery.reservations else 0
    return replace(
        delivery,
        spend_cents=spend_cents,
        onsite_leads=grown(delivery.onsite_leads),
        pixel_leads=grown(delivery.pixel_leads),
        calls=grown(delivery.calls),
        contact_website=grown(delivery.contact_website),
        contact_mobile_app=grown(delivery.contact_mobile_app),
        reservations=reservations,
        reservation_value_cents=round(reservations * value_per),
    )


# --- Rendering a row as Meta does ---------------------------------------------------------------------------


def _actions(d: DayDelivery) -> list[dict[str, str]]:
    """Meta's nested action types: totals sit next to their parts, so the list must never be summed."""
    counts = (
        ("link_click", d.link_clicks),
        ("post_engagement", d.post_engagements),
        ("page_engagement", d.page_engagements),
        ("lead", d.onsite_leads + d.pixel_leads),
        ("onsite_conversion.lead_grouped", d.onsite_leads),
        ("offsite_conversion.fb_pixel_lead", d.pixel_leads),
        ("click_to_call_native_call_placed", d.calls),
        ("contact_total", d.contact_website + d.contact_mobile_app),
        ("contact_website", d.contact_website),
        ("contact_mobile_app", d.contact_mobile_app),
        ("schedule_total", d.reservations),
        ("schedule_website", d.reservations),
    )
    return [{"action_type": kind, "value": str(value)} for kind, value in counts if value > 0]


def _action_values(d: DayDelivery) -> list[dict[str, str]]:
    if d.reservations <= 0 or d.reservation_value_cents <= 0:
        return []
    value = f"{d.reservation_value_cents / 100:.2f}"
    return [
        {"action_type": "schedule_total", "value": value},
        {"action_type": "schedule_website", "value": value},
    ]


def api_row(d: DayDelivery, *, account_id: str, currency: str, fields: Sequence[str]) -> dict[str, Any]:
    """One insights row: only the requested `fields` (plus date_start/date_stop), every number a string.

    `ctr` is a percentage (clicks / impressions × 100) and `cpc` is spend / clicks, absent when there were no clicks;
    empty `actions` / `action_values` lists are left out, as Meta does.
    """
    spend = d.spend_cents / 100
    values: dict[str, Any] = {
        "account_id": account_id,
        "account_currency": currency,
        "campaign_id": d.campaign.id,
        "campaign_name": d.campaign.name,
        "impressions": str(d.impressions),
        "clicks": str(d.clicks),
        "spend": f"{spend:.2f}",
        "ctr": f"{d.clicks / d.impressions * 100:.6f}",
        "cpc": f"{spend / d.clicks:.6f}" if d.clicks else None,
        "actions": _actions(d) or None,
        "action_values": _action_values(d) or None,
    }
    row = {name: values[name] for name in fields if values.get(name) is not None}
    row["date_start"] = row["date_stop"] = d.day.isoformat()
    return row


# --- Graph API errors ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ErrorTemplate:
    status: int
    message: str
    subcode: int | None = None
    is_transient: bool | None = None


_RATE_LIMIT_HELP = (
    "For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting."
)
_UNSUPPORTED = (
    "Unsupported {method} request. Object with ID '{object}' does not exist, cannot be loaded due to missing "
    "permissions, or does not support this operation. Please read the Graph API documentation at "
    "https://developers.facebook.com/docs/graph-api"
)
#: Status and wording per code; Meta throttles with HTTP 400 (never 429), unknown errors come back as 500.
_ERRORS: dict[int, _ErrorTemplate] = {
    1: _ErrorTemplate(500, "An unknown error occurred", 99, True),
    2: _ErrorTemplate(500, "An unexpected error has occurred. Please retry your request later.", None, True),
    4: _ErrorTemplate(400, "(#4) Application request limit reached", 1504022, True),
    10: _ErrorTemplate(400, "(#10) Application does not have permission for this action", None, False),
    17: _ErrorTemplate(400, "(#17) User request limit reached", 2446079, False),
    32: _ErrorTemplate(400, "(#32) Page request limit reached", None, True),
    100: _ErrorTemplate(400, "(#100) Invalid parameter"),
    102: _ErrorTemplate(400, "Session key invalid or no longer valid", None, False),
    190: _ErrorTemplate(400, "Invalid OAuth access token - Cannot parse access token", None, False),
    200: _ErrorTemplate(400, "(#200) Permissions error", None, False),
    613: _ErrorTemplate(400, "(#613) Calls to this api have exceeded the rate limit.", 1487742, True),
    960: _ErrorTemplate(
        400,
        "Request aborted. This could happen if a dependent request failed or the request timed out.",
        None,
        True,
    ),
    2500: _ErrorTemplate(400, "Unknown path components"),
}
_SUBCODE_MESSAGES: dict[tuple[int, int], str] = {
    (100, 1487534): "Please reduce the amount of data you're asking for, then retry your request",
    (
        100,
        1504018,
    ): "Your request timed out. Please try a smaller date range, fetch fewer fields, or use async jobs.",
    (2, 1504038): "Your request timed out. Please retry with a smaller date range.",
    (2, 1504043): "An intermittent error occurred. Please retry your request later.",
    (190, 463): "Error validating access token: Session has expired.",
}


class GraphError(Exception):
    """An error the simulator answers with Meta's envelope; `status` is the HTTP status Meta uses for it."""

    def __init__(self, code: int, subcode: int | None = None, *, message: str | None = None) -> None:
        template = (
            _ERRORS.get(code) or _throttle_template(code) or _ErrorTemplate(400, f"(#{code}) Simulated error")
        )
        self.code = code
        self.subcode = subcode if subcode is not None else template.subcode
        self.message = message or _SUBCODE_MESSAGES.get((code, self.subcode or 0)) or template.message
        self.status = template.status
        self.is_transient = template.is_transient
        super().__init__(f"({code}/{self.subcode}) {self.message}")

    @classmethod
    def of(cls, spec: ErrorCode) -> GraphError:
        return cls(*spec) if isinstance(spec, tuple) else cls(spec)

    @property
    def label(self) -> str:
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)

    def envelope(self, *, fbtrace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": "OAuthException", "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.is_transient is not None:
            error["is_transient"] = self.is_transient
        error["fbtrace_id"] = fbtrace_id
        return {"error": error}


def _throttle_template(code: int) -> _ErrorTemplate | None:
    """Business-use-case throttles 80000..80014 share one wording and subcode."""
    if code not in settings.THROTTLE_CODES:
        return None
    return _ErrorTemplate(
        400,
        f"(#{code}) There have been too many calls from this ad-account. Wait a bit and try again. "
        + _RATE_LIMIT_HELP,
        2446079,
        True,
    )


# --- Request parsing: the insights query --------------------------------------------------------------------


@dataclass(frozen=True)
class InsightsQuery:
    """A validated campaign-level daily insights request for one ad account (dates inclusive)."""

    account_id: str
    fields: tuple[str, ...]
    since: date
    until: date

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1


def bare_account_id(account_id: str) -> str:
    """`act_123` and `123` both name ad account 123; Meta's rows carry the bare number."""
    return account_id.removeprefix("act_")


def _months_before(day: date, months: int) -> date:
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    for candidate in range(day.day, 27, -1):
        try:
            return date(year, month + 1, candidate)
        except ValueError:
            continue
    return date(year, month + 1, min(day.day, 28))


def _parse_time_range(params: Mapping[str, str], today: date) -> tuple[date, date]:
    raw = params.get("time_range")
    if raw is None:
        return today - timedelta(days=30), today - timedelta(days=1)  # Meta's default preset: last_30d
    try:
        value = json.loads(raw)
        since, until = date.fromisoformat(value["since"]), date.fromisoformat(value["until"])
    except (ValueError, TypeError, KeyError):
        raise GraphError(
            100, message="(#100) Param time_range must be a JSON object with since and until dates"
        ) from None
    if until < since:
        raise GraphError(100, message="(#100) time_range: since must not be after until")
    return since, until


def parse_insights_query(
    params: Mapping[str, str], *, account_id: str, today: date, too_large_days: int | None = None
) -> InsightsQuery:
    """Validate an insights request the way Meta would refuse it; raises `GraphError` (code 100) otherwise."""
    if params.get("level", "account") != settings.INSIGHTS_LEVEL:
        raise GraphError(100, message="(#100) The simulator serves level=campaign only")
    if params.get("time_increment", "all_days") != str(settings.INSIGHTS_TIME_INCREMENT):
        raise GraphError(100, message="(#100) The simulator serves daily rows only: send time_increment=1")
    fields = (
        tuple(f.strip() for f in params["fields"].split(",") if f.strip())
        if "fields" in params
        else DEFAULT_FIELDS
    )
    for position, name in enumerate(fields):
        if name not in SUPPORTED_FIELDS:
            raise GraphError(
                100,
                message=f"(#100) fields[{position}] must be one of the following values: {', '.join(SUPPORTED_FIELDS)}",
            )
    since, until = _parse_time_range(params, today)
    oldest = _months_before(today, settings.INSIGHTS_RETENTION_MONTHS)
    if since < oldest:
        raise GraphError(
            100,
            message=f"(#100) The start date of the time range cannot be beyond "
            f"{settings.INSIGHTS_RETENTION_MONTHS} months from the current date (earliest: {oldest})",
        )
    query = InsightsQuery(account_id=account_id, fields=fields, since=since, until=until)
    if too_large_days is not None and query.days > too_large_days:
        raise GraphError(100, 1487534)
    return query


# --- Paging -------------------------------------------------------------------------------------------------


def _cursor(index: int) -> str:
    """Cursors are opaque to clients (and not stable over time at Meta); here they name a row position."""
    return base64.urlsafe_b64encode(f"row:{index}".encode()).decode().rstrip("=")


def _cursor_index(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, number = text.partition(":")
        if kind != "row":
            raise ValueError(cursor)
        return int(number)
    except ValueError:
        raise GraphError(100, message="(#100) Invalid cursor") from None


def _limit(params: Mapping[str, str], default: int) -> int:
    try:
        limit = int(params.get("limit", default))
    except ValueError:
        raise GraphError(100, message="(#100) Param limit must be an integer") from None
    if limit < 1:
        raise GraphError(100, message="(#100) Param limit must be positive")
    return min(limit, MAX_PAGE_LIMIT)


@dataclass(frozen=True)
class PageRequest:
    """Which slice of a result one request asks for; `number` is 1-based."""

    start: int
    limit: int

    @property
    def number(self) -> int:
        return self.start // self.limit + 1


def page_request(params: Mapping[str, str], *, default_limit: int) -> PageRequest:
    limit = _limit(params, default_limit)
    start = _cursor_index(params["after"]) + 1 if params.get("after") else 0
    return PageRequest(start=start, limit=limit)


def paged_body(
    rows: Sequence[Any],
    page: PageRequest,
    *,
    render: Callable[[Any], dict[str, Any]],
    next_url: Callable[[str], str],
) -> dict[str, Any]:
    """`{"data": [...], "paging": {...}}`; `paging.next` only while rows remain, no `paging` for an empty result."""
    chunk = rows[page.start : page.start + page.limit]
    body: dict[str, Any] = {"data": [render(row) for row in chunk]}
    if not chunk:
        return body
    last = page.start + len(chunk) - 1
    body["paging"] = {"cursors": {"before": _cursor(page.start), "after": _cursor(last)}}
    if last + 1 < len(rows):
        body["paging"]["next"] = next_url(_cursor(last))
    return body


# --- Async report runs --------------------------------------------------------------------------------------


@dataclass
class _ReportRun:
    """One async job; it advances one step per status poll."""

    id: str
    query: InsightsQuery
    polls: int = 0


def _report_status(run: _ReportRun, *, polls_to_complete: int, stuck: bool, fail: bool) -> tuple[str, int]:
    """(async_status, async_percent_completion) after `run.polls` polls.

    "Job Not Started" on the first poll, then "Job Running" with a rising percentage, then "Job Completed" on poll
    `polls_to_complete`. A stuck run reports "Job Running" at 100 % forever, as Meta's sometimes do.
    """
    if stuck:
        return "Job Running", 100
    if run.polls >= polls_to_complete:
        return ("Job Failed", 0) if fail else ("Job Completed", 100)
    if run.polls <= 1:
        return "Job Not Started", 0
    return "Job Running", round(100 * (run.polls - 1) / max(1, polls_to_complete - 1))


def _report_run_body(run: _ReportRun, status: str, percent: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": run.id,
        "account_id": run.query.account_id,
        "async_status": status,
        "async_percent_completion": percent,
        "date_start": run.query.since.isoformat(),
        "date_stop": run.query.until.isoformat(),
    }
    if status == "Job Failed":
        body.update(error_code=-2, error_subcode=2490547, error_message="Report Failed. Try again later.")
    return body


# --- Usage headers ------------------------------------------------------------------------------------------


def _usage_headers(
    *, account_id: str, calls: int, throttled: bool, regain_minutes: float | None
) -> dict[str, str]:
    """Meta's three usage headers (JSON inside headers, values in percent) plus the insights throttle header."""
    pct = 100 if throttled else min(40, 1 + calls // 5)
    regain = (regain_minutes or 0) if throttled else 0

    def dumps(value: object) -> str:
        return json.dumps(value, separators=(",", ":"))

    return {
        "X-App-Usage": dumps({"call_count": pct, "total_time": pct // 2, "total_cputime": pct // 2}),
        "X-Ad-Account-Usage": dumps(
            {
                "acc_id_util_pct": float(pct),
                "reset_time_duration": 300 if throttled else 0,
                "ads_api_access_tier": "standard_access",
            }
        ),
        "X-Business-Use-Case-Usage": dumps(
            {
                account_id: [
                    {
                        "type": "ads_insights",
                        "call_count": pct,
                        "total_cputime": pct // 2,
                        "total_time": pct // 2,
                        "estimated_time_to_regain_access": regain,
                        "ads_api_access_tier": "standard_access",
                    }
                ]
            }
        ),
        "x-fb-ads-insights-throttle": dumps(
            {
                "app_id_util_pct": float(pct),
                "acc_id_util_pct": float(pct),
                "ads_api_access_tier": "standard_access",
            }
        ),
    }


# --- The WSGI application -----------------------------------------------------------------------------------


class TransportFault(Exception):
    """Raised by the WSGI app for faults below HTTP: each transport turns it into a dropped or silent connection."""

    def __init__(self, kind: str, seconds: float = 0.0) -> None:
        super().__init__(kind)
        self.kind = kind
        self.seconds = seconds


@dataclass(frozen=True)
class SimulatorCounters:
    """Requests served so far: all of them, per route kind, and the faults injected (by code label or kind)."""

    requests: int
    by_kind: Mapping[str, int]
    faults: Mapping[str, int]


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query_pairs: tuple[tuple[str, str], ...]
    params: Mapping[str, str]
    base_url: str
    token: str | None


_VERSION = r"/v\d+\.\d+"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("insights", re.compile(_VERSION + r"/act_(?P<account>[^/]+)/insights/?")),
    ("report_insights", re.compile(_VERSION + r"/(?P<report>\d+)/insights/?")),
    ("report_status", re.compile(_VERSION + r"/(?P<report>\d+)/?")),
)
_STATUS_LINES = {200: "200 OK", 400: "400 Bad Request", 500: "500 Internal Server Error"}


def _read_request(environ: Mapping[str, Any]) -> _Request:
    query_pairs = tuple(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    pairs = list(query_pairs)
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    params = dict(pairs)
    token = params.get("access_token")
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if not token and authorization.split(" ")[0] in ("Bearer", "OAuth"):
        token = authorization.partition(" ")[2].strip() or None
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return _Request(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=path,
        query_pairs=query_pairs,
        params=params,
        base_url=f"{environ.get('wsgi.url_scheme', 'http')}://{host}{quote(path)}",
        token=token,
    )


def _next_url(request: _Request, after: str) -> str:
    """The absolute URL of the next page: this request's URL and parameters (token included, as Meta does)."""
    pairs = [(k, v) for k, v in request.query_pairs if k not in ("after", "before")]
    if request.method != "GET":
        pairs = [(k, v) for k, v in request.params.items() if k not in ("after", "before")]
    return f"{request.base_url}?{urlencode([*pairs, ('after', after)])}"


class MetaSimulator:
    """A deterministic Meta Insights API. `wsgi_app` is a plain WSGI callable.

    Per request: route, count, optional latency, injected fault (before any state changes, so a retried request
    behaves as if the failed one never happened), token, ad account, then the endpoint. Async runs, counters and
    the fault RNG live on the instance behind one lock, so one simulator can serve threads.
    """

    def __init__(self, config: SimulatorConfig | None = None, faults: FaultConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.faults = faults or FaultConfig()
        accounts = self.config.accounts
        self._accounts = None if accounts is None else {bare_account_id(k): v for k, v in accounts.items()}
        self._lock = threading.Lock()
        self._fault_rng = random.Random(self.faults.seed)
        self._requests = 0
        self._api_requests = 0
        self._by_kind: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._runs: dict[str, _ReportRun] = {}

    def __repr__(self) -> str:
        return f"MetaSimulator(requests={self._requests}, faults={dict(self._faults)})"

    @property
    def request_count(self) -> int:
        return self._requests

    def counters(self) -> SimulatorCounters:
        with self._lock:
            return SimulatorCounters(self._requests, dict(self._by_kind), dict(self._faults))

    def today(self) -> date:
        return self.config.today or datetime.now(UTC).date()

    def currency(self, account_id: str) -> str:
        spec = (self._accounts or {}).get(bare_account_id(account_id))
        return spec.currency if spec else AccountSpec().currency

    # --- request handling -------------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = _read_request(environ)
        kind, match = self._route(request)
        index = self._count(kind)
        if self.faults.slow_seconds:
            time.sleep(self.faults.slow_seconds)
        account_id = self._account_of(kind, match)
        throttled = False
        try:
            if kind != "unknown":
                fault = self._planned_fault(index)
                if fault in TRANSPORT_FAULTS:
                    self._record_fault(str(fault))
                    raise TransportFault(
                        str(fault), self.faults.timeout_seconds if fault == "timeout" else 0.0
                    )
                if fault == "malformed":
                    self._record_fault("malformed")
                    truncated = f'{{"data":[{{"account_id":"{account_id}","campaign_id":"12'.encode()
                    return self._respond(
                        start_response, 200, truncated, account_id=account_id, throttled=False
                    )
                if fault is not None:
                    error = GraphError.of(fault)  # type: ignore[arg-type]
                    self._record_fault(error.label)
                    raise error
            status, body = 200, self._dispatch(kind, match, request)
        except GraphError as error:
            throttled = error.code in settings.THROTTLE_CODES
            status, body = error.status, error.envelope(fbtrace_id=self._trace_id(index))
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return self._respond(start_response, status, payload, account_id=account_id, throttled=throttled)

    def _route(self, request: _Request) -> tuple[str, re.Match[str] | None]:
        """The endpoint kind: insights, report_create, report_status, report_insights, or unknown."""
        for kind, pattern in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match:
                return ("report_create" if kind == "insights" and request.method == "POST" else kind), match
        return "unknown", None

    def _count(self, kind: str) -> int:
        """Count the request; return its 0-based position among insights and report requests."""
        with self._lock:
            self._requests += 1
            self._by_kind[kind] += 1
            if kind == "unknown":
                return -1
            self._api_requests += 1
            return self._api_requests - 1

    def _planned_fault(self, index: int) -> ScriptedFault:
        faults = self.faults
        if index < len(faults.scripted_errors):
            return faults.scripted_errors[index]
        with self._lock:
            rng = self._fault_rng
            if faults.drop_rate and rng.random() < faults.drop_rate:
                return "drop"
            if faults.malformed_rate and rng.random() < faults.malformed_rate:
                return "malformed"
            for code, rate in faults.error_rates.items():
                if rate and rng.random() < rate:
                    return code
        return None

    def _record_fault(self, label: str) -> None:
        with self._lock:
            self._faults[label] += 1

    def _account_of(self, kind: str, match: re.Match[str] | None) -> str:
        if match is None:
            return "0"
        if kind in ("insights", "report_create"):
            return bare_account_id(match["account"])
        run = self._runs.get(match["report"])
        return run.query.account_id if run else "0"

    def _trace_id(self, index: int) -> str:
        digest = hashlib.blake2b(f"trace:{self.faults.seed}:{index}".encode(), digest_size=16).digest()
        return "A" + base64.urlsafe_b64encode(digest).decode()[:22]

    def _respond(
        self,
        start_response: Callable[..., Any],
        status: int,
        payload: bytes,
        *,
        account_id: str,
        throttled: bool,
    ) -> list[bytes]:
        usage = _usage_headers(
            account_id=account_id,
            calls=self._requests,
            throttled=throttled,
            regain_minutes=self.faults.throttle_regain_minutes,
        )
        headers = [
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Content-Length", str(len(payload))),
            (SIMULATOR_HEADER, "1"),
            *usage.items(),
        ]
        start_response(_STATUS_LINES[status], headers)
        return [payload]

    # --- endpoints --------------------------------------------------------------------------------------------

    def _dispatch(self, kind: str, match: re.Match[str] | None, request: _Request) -> dict[str, Any]:
        if kind == "unknown" or match is None:
            raise GraphError(2500, message=f"Unknown path components: {request.path}")
        self._check_token(request)
        if kind == "report_create":
            return self._create_report_run(self._account(match["account"], request), request)
        if kind == "insights" and request.method == "GET":
            return self._insights(self._account(match["account"], request), request)
        if request.method != "GET":
            raise GraphError(
                100, 33, message=_UNSUPPORTED.format(method=request.method.lower(), object=match["report"])
            )
        run = self._run(match["report"])
        if kind == "report_status":
            return self._poll_report_run(run)
        return self._report_insights(run, request)

    def _check_token(self, request: _Request) -> None:
        if not request.token:
            raise GraphError(190, message="An access token is required to request this resource.")
        if request.token == self.config.invalid_token:
            raise GraphError(190, 463)

    def _account(self, raw_id: str, request: _Request) -> str:
        account_id = bare_account_id(raw_id)
        if not account_id.isdigit() or (self._accounts is not None and account_id not in self._accounts):
            message = _UNSUPPORTED.format(method=request.method.lower(), object=f"act_{raw_id}")
            raise GraphError(100, 33, message=message)
        return account_id

    def _query(self, account_id: str, request: _Request) -> InsightsQuery:
        return parse_insights_query(
            request.params,
            account_id=account_id,
            today=self.today(),
            too_large_days=self.faults.too_large_days,
        )

    def _insights(self, account_id: str, request: _Request) -> dict[str, Any]:
        return self._page(self._query(account_id, request), request)

    def _page(self, query: InsightsQuery, request: _Request) -> dict[str, Any]:
        page = page_request(request.params, default_limit=self.config.page_size_default)
        if page.number == self.faults.fail_page:
            self._record_fault("fail_page")
            raise GraphError.of(self.faults.fail_page_error)
        currency = self.currency(query.account_id)
        return paged_body(
            self.deliveries(query),
            page,
            render=lambda d: api_row(d, account_id=query.account_id, currency=currency, fields=query.fields),
            next_url=lambda after: _next_url(request, after),
        )

    def deliveries(self, query: InsightsQuery) -> list[DayDelivery]:
        """Every campaign-day of `query` up to today, ordered by date then campaign id, restatements applied."""
        today, seed = self.today(), self.config.seed
        restated_from = today - timedelta(days=self.faults.restate_days - 1)
        result: list[DayDelivery] = []
        day = query.since
        while day <= min(query.until, today):
            for delivery in day_deliveries(account_id=query.account_id, day=day, seed=seed):
                if self.faults.restate_days > 0 and day >= restated_from:
                    delivery = restated(delivery, version=self.faults.restatement_version, seed=seed)
                result.append(delivery)
            day += timedelta(days=1)
        return result

    # --- async report runs ------------------------------------------------------------------------------------

    def _create_report_run(self, account_id: str, request: _Request) -> dict[str, Any]:
        query = self._query(account_id, request)
        with self._lock:
            number = len(self._runs)
            run_id = str(10**15 + _stable_int("report", account_id, number, self.config.seed) % (9 * 10**15))
            while run_id in self._runs:
                run_id = str(int(run_id) + 1)
            self._runs[run_id] = _ReportRun(id=run_id, query=query)
        return {"report_run_id": run_id}

    def _run(self, run_id: str) -> _ReportRun:
        run = self._runs.get(run_id)
        if run is None:
            raise GraphError(100, 33, message=_UNSUPPORTED.format(method="get", object=run_id))
        return run

    def _status(self, run: _ReportRun) -> tuple[str, int]:
        return _report_status(
            run,
            polls_to_complete=self.config.async_polls_to_complete,
            stuck=self.faults.async_stuck,
            fail=self.faults.async_fail,
        )

    def _poll_report_run(self, run: _ReportRun) -> dict[str, Any]:
        with self._lock:
            run.polls += 1
        return _report_run_body(run, *self._status(run))

    def _report_insights(self, run: _ReportRun, request: _Request) -> dict[str, Any]:
        status, percent = self._status(run)
        if status != "Job Completed":
            raise GraphError(
                100, message=f"(#100) Report {run.id} is not readable: '{status}' at {percent} %"
            )
        return self._page(run.query, request)


# --- In process: a requests adapter -------------------------------------------------------------------------


def _environ(request: requests.PreparedRequest) -> dict[str, Any]:
    """The WSGI environ a server would build for `request`."""
    url = urlsplit(request.url or "")
    body = request.body or b""
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, bytes):
        body = b"".join(chunk.encode("utf-8") if isinstance(chunk, str) else chunk for chunk in body)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method or "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(url.path, "iso-8859-1"),
        "QUERY_STRING": url.query,
        "SERVER_NAME": url.hostname or "localhost",
        "SERVER_PORT": str(url.port or (443 if url.scheme == "https" else 80)),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": url.netloc.rpartition("@")[2],
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url.scheme or "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        key = "HTTP_" + name.upper().replace("-", "_")
        if key not in ("HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH", "HTTP_HOST"):
            environ[key] = value
    return environ


class SimulatorAdapter(requests.adapters.BaseAdapter):
    """Serves a `requests.Session` from a `MetaSimulator` without a socket.

    A "drop" fault raises `requests.ConnectionError`, a "timeout" raises `requests.ReadTimeout` at once.
    """

    def __init__(self, simulator: MetaSimulator) -> None:
        super().__init__()
        self.simulator = simulator

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        captured: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers)
            return lambda _data: None

        try:
            chunks = self.simulator.wsgi_app(_environ(request), start_response)
        except TransportFault as fault:
            if fault.kind == "drop":
                raise requests.ConnectionError(
                    "Connection aborted: the simulator dropped it", request=request
                ) from None
            raise requests.ReadTimeout("Read timed out (simulated)", request=request) from None
        body = b"".join(chunks)
        response = requests.Response()
        code, _, reason = captured["status"].partition(" ")
        response.status_code = int(code)
        response.reason = reason
        response.headers = CaseInsensitiveDict(captured["headers"])
        response.encoding = requests.utils.get_encoding_from_headers(response.headers)
        response.raw = io.BytesIO(body)
        response.url = request.url or ""
        response.request = request
        response.connection = self
        return response

    def close(self) -> None:
        """Nothing to release: no sockets."""


def mount_simulator(
    session: requests.Session, simulator: MetaSimulator, *, base_url: str = settings.SIMULATOR_BASE_URL
) -> SimulatorAdapter:
    """Route every request of `session` under `base_url` to `simulator`; returns the mounted adapter."""
    adapter = SimulatorAdapter(simulator)
    session.mount(base_url.rstrip("/") + "/", adapter)
    return adapter


# --- Over real HTTP: a threaded loopback server -------------------------------------------------------------


class _FaultAwareHandler(ServerHandler):
    def handle_error(self) -> None:
        fault = sys.exc_info()[1]
        if not isinstance(fault, TransportFault):
            super().handle_error()
            return
        if fault.kind == "timeout":
            time.sleep(fault.seconds)
        # Nothing has been written: returning closes the socket, so the client sees a connection without a response.
        self.request_handler.close_connection = True


class _QuietRequestHandler(WSGIRequestHandler):
    """wsgiref's handler without access logs (URLs carry the access token) and with transport faults."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        self.raw_requestline = self.rfile.readline(65537)
        if len(self.raw_requestline) > 65536:
            self.send_error(414)
            return
        if not self.parse_request():
            return
        handler = _FaultAwareHandler(
            self.rfile, self.wfile, self.get_stderr(), self.get_environ(), multithread=True
        )
        handler.request_handler = self
        handler.run(self.server.get_app())


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False


@dataclass
class RunningServer:
    """A simulator listening on a loopback port in a background thread; a context manager that shuts it down."""

    simulator: MetaSimulator
    host: str
    port: int
    _server: _ThreadingWSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shutdown(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _make_server(simulator: MetaSimulator, host: str, port: int) -> _ThreadingWSGIServer:
    server = _ThreadingWSGIServer((host, port), _QuietRequestHandler)
    server.set_app(simulator.wsgi_app)
    return server


def serve(simulator: MetaSimulator, *, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start serving `simulator` over HTTP (port 0 picks a free one); stop it with `.shutdown()` or `with`."""
    server = _make_server(simulator, host, port)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="meta-simulator", daemon=True
    )
    thread.start()
    return RunningServer(
        simulator=simulator, host=host, port=server.server_address[1], _server=server, _thread=thread
    )


def run_forever(
    *,
    host: str = "127.0.0.1",
    port: int,
    faults: FaultConfig | None = None,
    config: SimulatorConfig | None = None,
) -> None:
    """Serve a simulator in the foreground until interrupted, printing its URL first."""
    server = _make_server(MetaSimulator(config, faults), host, port)
    url = f"http://{host}:{server.server_address[1]}"
    print(
        f"Meta API simulator listening on {url} (set {settings.ENV_META_URL}={url} to use it); Ctrl+C stops it."
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
