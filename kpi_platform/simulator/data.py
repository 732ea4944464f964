"""The data the simulated Meta returns: ad accounts, their campaigns and what each campaign delivered per day.

Everything is a pure function of (account, day, seed) under a hash that does not change between processes, so
every process, thread and test run sees the same numbers without storing any, and a client's rows can be checked
against `day_deliveries` as ground truth. Rows render as Meta sends them: numbers as strings, nested action types
that must never be summed, and no row at all for a campaign (or a whole account) without delivery that day.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

#: Share of days on which a whole account delivers nothing (no rows at all).
IDLE_DAY_SHARE = 0.03
#: A campaign below this share of its account's running volume is small: on some days it gets no delivery. Larger
#: ones deliver every day they run (Meta paces a budgeted campaign to its daily budget).
SMALL_CAMPAIGN_SHARE = 0.10
#: Days a new campaign takes to reach its full budget (the learning phase).
RAMP_UP_DAYS = 7


# --- Ad accounts --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccountSpec:
    """One simulated ad account."""

    currency: str = "EUR"


def bare_account_id(account_id: str) -> str:
    """`act_123` and `123` both name ad account 123; Meta's rows carry the bare number."""
    return account_id.removeprefix("act_")


# --- Deterministic data: campaigns --------------------------------------------------------------------------


def stable_int(*parts: object) -> int:
    """A hash that is the same in every process (Python's `hash()` of a str is salted per process)."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def _rng(*parts: object) -> random.Random:
    return random.Random(stable_int(*parts))


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
    """A simulated campaign: when it runs, its typical volume and prices, and what it converts (rates per link click).

    `delivery_share` is the share of days a small campaign delivers (see SMALL_CAMPAIGN_SHARE); `link_click_share`
    the part of its clicks that are link clicks.
    """

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
    link_click_share: float = 0.8

    @property
    def daily_budget(self) -> float:
        """What the campaign spends on a full weekday: its typical impressions at its typical CTR and CPC."""
        return self.impressions_per_day * self.ctr_pct / 100 * self.cpc

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
        campaign_id = str(120_200_000_000_000_000 + rng.randrange(10**14))
        result.append(
            Campaign(
                id=campaign_id,
                name=base_name + rng.choice(_NAME_VARIANTS),
                start=start,
                end=end,
                impressions_per_day=int(10 ** rng.uniform(2.7, 4.3)),
                ctr_pct=rng.uniform(0.6, 3.5),
                cpc=rng.uniform(0.25, 2.5),
                delivery_share=rng.uniform(0.85, 0.98),
                **rates,
                # Drawn from a stream of its own: the campaign's other properties do not depend on it.
                link_click_share=_rng("link_share", campaign_id, seed).uniform(0.6, 0.95),
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
    # A campaign's conversion rates are its own and move by at most a fifth from day to day.
    def count(rate: float) -> int:
        return int(link_clicks * rate * rng.uniform(0.8, 1.2) + rng.random())

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
    # Spend follows the daily budget, as Meta paces it: a new campaign ramps up over its learning days, weekends
    # run at 80 %, and pacing keeps a day between 85 % and 110 % of its budget. Clicks follow from the day's CPC,
    # impressions from its CTR.
    ramp = min(1.0, ((day - campaign.start).days + 1) / RAMP_UP_DAYS)
    weekend = 0.8 if day.weekday() >= 5 else 1.0
    budget = campaign.daily_budget * ramp * weekend * rng.uniform(0.85, 1.10)
    ctr_pct = min(4.0, max(0.5, campaign.ctr_pct * rng.uniform(0.8, 1.2)))
    cpc = min(3.0, max(0.2, campaign.cpc * rng.uniform(0.85, 1.15)))
    clicks = round(budget / cpc)
    impressions = max(100, round(clicks * 100 / ctr_pct))
    # Without clicks Meta still bills impressions (CPM), so spend stays above zero.
    spend_cents = round(clicks * cpc * 100) if clicks else round(impressions * rng.uniform(0.2, 0.8))
    link_clicks = round(clicks * campaign.link_click_share * rng.uniform(0.95, 1.05))
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
    """The account's campaign rows for one day, ordered by campaign id: a pure function of (account, day, seed).

    Every running campaign delivers, except that a small one (under SMALL_CAMPAIGN_SHARE of the account's running
    volume) gets no delivery on about 1 − `delivery_share` of its days.
    """
    account_id = bare_account_id(account_id)
    if is_idle_day(account_id=account_id, day=day, seed=seed):
        return ()
    running = [c for c in campaigns(account_id=account_id, seed=seed) if c.runs_on(day)]
    volume = sum(c.impressions_per_day for c in running)
    rows = []
    for campaign in running:
        rng = _rng("delivery", account_id, campaign.id, day.isoformat(), seed)
        small = campaign.impressions_per_day < SMALL_CAMPAIGN_SHARE * volume
        if rng.random() < campaign.delivery_share or not small:
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
