"""Collection of one client × one contiguous date range: fetch → parse → totals → validate → one transaction.

This is the code path of the daily asset, the quickstart and the benchmarks alike; it knows nothing of Dagster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.meta.client import InsightsFetch, InsightsSource
from kpi_platform.meta.errors import act_id
from kpi_platform.meta.parse import CAMPAIGN_COLUMNS, ParseError, fits_bigint, parse_insights_rows
from kpi_platform.quality.rules import Thresholds, assess_quality
from kpi_platform.quality.schemas import FAILURE_COLUMNS, ContractViolation, validate_collection
from kpi_platform.warehouse import Warehouse

COUNT_COLUMNS: tuple[str, ...] = ("impressions", "clicks", "calls", "contacts", "leads", "reservations")
#: Integers up to this size survive a float64 round trip exactly; counts whose sums may pass it are summed as ints.
FLOAT_EXACT_INT = 2**53
DAILY_COLUMNS: tuple[str, ...] = (
    "client_id",
    "kpi_date",
    *settings.SUM_COLUMNS,
    "ctr_pct",
    "cpc",
    "currency",
    "campaign_count",
    "delivery",
)


#: A validator receives the campaign rows and daily totals of the range and raises to refuse them.
Validator = Callable[[pd.DataFrame, pd.DataFrame, Client, date, date], None]


def validate_contract(
    campaigns: pd.DataFrame, totals: pd.DataFrame, client: Client, start: date, end: date
) -> None:
    """The default validator: the pandera contract (raises quality.schemas.ContractViolation with every failure)."""
    validate_collection(
        campaigns, totals, client_id=client.id, start=start, end=end, currency=client.currency
    )


def client_thresholds(client: Client) -> Thresholds:
    """The client's quality-score limits from its clients.yaml settings (money in its currency)."""
    s = client.settings
    return Thresholds(
        min_daily_spend=s.min_daily_spend,
        max_daily_spend=s.max_daily_spend,
        min_daily_clicks=s.min_daily_clicks,
        max_daily_clicks=s.max_daily_clicks,
        ctr_pct_min=s.ctr_pct_min,
        ctr_pct_max=s.ctr_pct_max,
        cpc_min=s.cpc_min,
        cpc_max=s.cpc_max,
        max_conversion_rate_pct=s.max_conversion_rate_pct,
    )


def score_days(totals: pd.DataFrame, client: Client) -> pd.DataFrame:
    """`totals` with each day's `quality_score` (NaN for an idle day, which is not scored) and `quality_issues`
    (the failed checks' texts, an empty list for none), against the client's thresholds."""
    assessment = assess_quality(totals, {client.id: client_thresholds(client)})
    return totals.assign(quality_score=assessment.scores.astype("float64"), quality_issues=assessment.issues)


@dataclass(frozen=True)
class CollectionResult:
    """What one collection wrote and what it cost."""

    client_id: str
    start: date
    end: date
    days: int
    idle_days: int
    campaign_rows: int
    day_rows: int
    spend: float
    currency: str
    source: str
    api_requests: int
    api_retries: int
    throttle_wait_s: float
    fetch_seconds: float
    write_seconds: float
    #: Mean score of the scored days (None when every day was idle) and how many they were.
    quality_score_mean: float | None
    scored_days: int
    #: Days with at least one quality issue (consistency rules included).
    days_with_issues: int
    #: The ad account called, the highest Meta usage figure (percent of a rate limit) its responses reported, and
    #: the seconds its calls were paced because of it (meta/pacing.py).
    ad_account_id: str = ""
    max_usage_pct: float = 0.0
    paced_s: float = 0.0


def date_range(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def ratio_or_nan(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator, NaN where the denominator is 0 (a CTR without impressions is undefined, not 0)."""
    num = numerator.astype("float64")
    den = denominator.astype("float64")
    return (num / den.where(den != 0)).astype("float64")


def build_daily_totals(
    campaigns: pd.DataFrame, *, client_id: str, start: date, end: date, currency: str
) -> pd.DataFrame:
    """Client-day totals for every day of the range; days without campaign rows are explicit idle days."""
    days = pd.DataFrame({"kpi_date": date_range(start, end)})
    if campaigns.empty:
        grouped = pd.DataFrame(columns=["kpi_date", *settings.SUM_COLUMNS, "campaign_count"])
    else:
        # Counts too large for int64 (or whose sums may pass what float64 holds exactly) are summed as Python
        # ints: the totals keep their exact values, and the contract refuses those outside BIGINT (`fits_bigint`).
        exact = {c: campaigns[c].astype(object) for c in COUNT_COLUMNS if _sum_may_be_inexact(campaigns[c])}
        grouped = (
            (campaigns.assign(**exact) if exact else campaigns)
            .groupby("kpi_date", sort=True)
            .agg(**{c: (c, "sum") for c in settings.SUM_COLUMNS}, campaign_count=("campaign_id", "nunique"))
        )
        grouped = grouped.reset_index()
    totals = days.merge(grouped, on="kpi_date", how="left")
    for column in COUNT_COLUMNS:
        totals[column] = _count_totals(totals[column])
    totals["campaign_count"] = pd.to_numeric(totals["campaign_count"]).fillna(0).astype("int64")
    for column in ("spend", "reservation_value"):
        totals[column] = pd.to_numeric(totals[column]).fillna(0.0).astype("float64").round(2)
    totals["ctr_pct"] = ratio_or_nan(totals["clicks"], totals["impressions"]) * 100
    totals["cpc"] = ratio_or_nan(totals["spend"], totals["clicks"])
    totals["client_id"] = client_id
    totals["currency"] = currency
    totals["delivery"] = (totals["campaign_count"] > 0).map({True: "delivered", False: "idle"})
    return totals[list(DAILY_COLUMNS)]


def _sum_may_be_inexact(counts: pd.Series) -> bool:
    """Whether summing `counts` as int64, or through float64, could lose the exact value."""
    if counts.dtype != "int64":
        return True
    largest = max(abs(int(counts.max())), abs(int(counts.min()))) if len(counts) else 0
    return largest * len(counts) >= FLOAT_EXACT_INT


def _count_totals(values: pd.Series) -> pd.Series:
    """A count column of the totals (NaN on idle days) as int64, or as exact Python ints (dtype object) when a
    value is outside BIGINT."""
    if values.dtype != object:
        return pd.to_numeric(values).fillna(0).astype("int64")
    ints = [0 if pd.isna(v) else int(v) for v in values]
    return pd.Series(ints, index=values.index, dtype="int64" if fits_bigint(ints) else object)


@dataclass(frozen=True)
class PreparedRange:
    """One client × [start, end] fetched, parsed, validated and scored, not yet stored."""

    client: Client
    start: date
    end: date
    campaigns: pd.DataFrame
    totals: pd.DataFrame
    fetch: InsightsFetch
    fetch_seconds: float


def prepare_range(
    *,
    client: Client,
    start: date,
    end: date,
    meta: InsightsSource,
    run_id: str,
    validate: Validator | None = validate_contract,
    now: datetime | None = None,
) -> PreparedRange:
    """Fetch, parse, validate and score one client × [start, end]; raises ContractViolation (with every
    failure) before anything is stored. Each client-day gets its quality score (0-100, per-client thresholds;
    NaN for an idle day) and its issues list (`score_days`)."""
    if end < start:
        raise ValueError(f"collection range for '{client.id}' ends ({end}) before it starts ({start})")
    fetched_at = now or datetime.now(UTC)
    t0 = time.perf_counter()
    fetch = meta.fetch_campaign_insights(
        client_id=client.id, ad_account_id=client.ad_account_id, since=start, until=end
    )
    fetch_seconds = time.perf_counter() - t0
    try:
        campaigns = parse_insights_rows(fetch.rows, client_id=client.id, expected_currency=client.currency)
    except ParseError as exc:
        # Rows that cannot even be typed break the contract just as invalid values do: same report, nothing stored.
        failure = dict.fromkeys(FAILURE_COLUMNS) | {
            "schema": "insights_rows",
            "rule": "parseable",
            "failure_value": str(exc),
        }
        raise ContractViolation(
            pd.DataFrame([failure], columns=list(FAILURE_COLUMNS)), client.id, start, end
        ) from exc
    totals = build_daily_totals(
        campaigns, client_id=client.id, start=start, end=end, currency=client.currency
    )
    if validate is not None:
        validate(campaigns, totals, client, start, end)
    totals = score_days(totals, client)
    stamp: dict[str, str | datetime] = {"source": fetch.source, "fetched_at": fetched_at, "run_id": run_id}
    campaigns = campaigns.assign(**stamp)[[*CAMPAIGN_COLUMNS, *stamp]]
    totals = totals.assign(**stamp)
    return PreparedRange(client, start, end, campaigns, totals, fetch, fetch_seconds)


def store_range(prepared: PreparedRange, *, warehouse: Warehouse) -> CollectionResult:
    """Replace the client × range in the warehouse with the prepared rows, in one transaction."""
    client, totals, fetch = prepared.client, prepared.totals, prepared.fetch
    scores = totals["quality_score"]
    stats = warehouse.replace_client_range(
        client_id=client.id,
        start=prepared.start,
        end=prepared.end,
        campaign_rows=prepared.campaigns,
        daily_totals=totals,
    )
    return CollectionResult(
        client_id=client.id,
        start=prepared.start,
        end=prepared.end,
        days=len(totals),
        idle_days=int((totals["delivery"] == "idle").sum()),
        campaign_rows=stats.campaign_rows,
        day_rows=stats.day_rows,
        spend=round(float(totals["spend"].sum()), 2),
        currency=client.currency,
        source=fetch.source,
        api_requests=fetch.requests,
        api_retries=fetch.retries,
        throttle_wait_s=fetch.throttle_wait_s,
        fetch_seconds=prepared.fetch_seconds,
        write_seconds=stats.seconds,
        quality_score_mean=round(float(scores.mean()), 2) if scores.notna().any() else None,
        scored_days=int(scores.notna().sum()),
        days_with_issues=int(totals["quality_issues"].map(bool).sum()),
        ad_account_id=act_id(client.ad_account_id),
        max_usage_pct=fetch.max_usage_pct,
        paced_s=fetch.paced_s,
    )


#: What `day_figures` reports of each day, in this order (`campaign_rows`: the day's campaign rows).
DAY_FIGURE_FIELDS: tuple[str, ...] = (
    "client_id",
    "kpi_date",
    "currency",
    "source",
    "delivery",
    "campaign_rows",
    *settings.SUM_COLUMNS,
    "ctr_pct",
    "cpc",
    "quality_score",
    "issues",
)


def day_figures(prepared: PreparedRange) -> list[dict[str, Any]]:
    """Each day's own figures, one dict per day of the range (DAY_FIGURE_FIELDS), from the totals already in
    memory: no query. Plain Python values; None where a value is undefined (a ratio without its denominator,
    the score of an idle day) or was not recorded (issues)."""
    totals = prepared.totals.rename(columns={"campaign_count": "campaign_rows", "quality_issues": "issues"})
    chosen = totals.reindex(columns=list(DAY_FIGURE_FIELDS))
    return chosen.astype(object).where(chosen.notna(), None).to_dict("records")  # type: ignore[call-overload]  # pandas-stubs 2.x: `other` lacks None, which pandas accepts


def collect_range(
    *,
    client: Client,
    start: date,
    end: date,
    meta: InsightsSource,
    warehouse: Warehouse,
    run_id: str,
    validate: Validator | None = validate_contract,
    now: datetime | None = None,
) -> CollectionResult:
    """Fetch, parse, validate and store one client × [start, end] in one transaction; all or nothing.

    Validation runs on everything fetched for the range before the transaction: a contract failure raises and
    writes nothing.
    """
    prepared = prepare_range(
        client=client, start=start, end=end, meta=meta, run_id=run_id, validate=validate, now=now
    )
    return store_range(prepared, warehouse=warehouse)
