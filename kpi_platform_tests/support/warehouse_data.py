"""A known warehouse dataset: clients, daily KPI rows with gaps and an idle day, and activity metric rows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse

FETCHED_AT = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
ACME_GAPS = {date(2026, 1, 7), date(2026, 1, 20), date(2026, 1, 21)}
IDLE_DAY = date(2026, 1, 10)


def span(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def client(client_id: str, *, active: bool = True) -> dict:
    return {
        "client_id": client_id,
        "name": client_id.title(),
        "ad_account_id": f"act_{len(client_id)}000",
        "currency": "EUR",
        "timezone": "Europe/Warsaw",
        "active": active,
    }


def day_row(client_id: str, day: date, *, currency: str = "EUR") -> dict:
    idle = day == IDLE_DAY
    impressions = 0 if idle else 1000 + 100 * (day.day % 4)
    clicks = 0 if idle else 5 + day.day % 7
    spend = 0.0 if idle else round(2.5 * (day.day % 5 + 1), 2)
    return {
        "client_id": client_id,
        "kpi_date": day,
        "spend": spend,
        "impressions": impressions,
        "clicks": clicks,
        "ctr_pct": clicks / impressions * 100 if impressions else None,
        "cpc": round(spend / clicks, 4) if clicks else None,
        "calls": 0 if idle else 1,
        "contacts": 0,
        "leads": 0 if idle else day.day % 2,
        "reservations": 0 if idle else 1,
        "reservation_value": 0.0 if idle else 40.0,
        "currency": currency,
        "campaign_count": 0 if idle else 2,
        "delivery": "idle" if idle else "delivered",
        "quality_score": None,
        "source": settings.SOURCE_SIMULATOR,
        "fetched_at": FETCHED_AT,
        "run_id": "run-1",
    }


def store_days(wh: Warehouse, client_id: str, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    wh.replace_client_range(
        client_id=client_id,
        start=min(r["kpi_date"] for r in rows),
        end=max(r["kpi_date"] for r in rows),
        campaign_rows=pd.DataFrame(),
        daily_totals=frame,
    )


ACME_ROWS = [day_row("acme", d) for d in span(date(2026, 1, 1), date(2026, 2, 10)) if d not in ACME_GAPS]


def metric_rows(days: list[date], *, skip: dict[date, set[str]]) -> list[dict]:
    rows = []
    for n, day in enumerate(days):
        values = {
            "users_total": 100 + n,
            "posts_total": 1000 + 10 * n,
            "comments_total": 5000 + 30 * n,
            "posts_created": 10 + n % 3,
            "comments_created": 30 + n % 5,
        }
        for metric, value in values.items():
            if metric in skip.get(day, set()):
                continue
            rows.append(
                {
                    "metric_date": day,
                    "metric_type": "count",
                    "metric_category": metric,
                    "value": value,
                    "metadata": {"source": "test"},
                    "collection_timestamp": FETCHED_AT,
                }
            )
    return rows


#: The time the indicator tests look from; `scored_rows` were fetched relative to it, and days up to 28 days
#: before it (2026-02-02) are final.
INDICATORS_NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
#: The issues of `scored_rows` by day; other days have none ([]), a None was not recorded.
SCORED_ISSUES: dict[date, list[str] | None] = {
    date(2026, 1, 28): ["no_anomalies"],
    date(2026, 1, 30): None,
    date(2026, 2, 2): ["no_split_days", "no_anomalies"],
}


def scored_rows(client_id: str) -> list[dict]:
    """Days 2026-01-25..02-05, each with a score (80 + day % 7) and its issues. January was fetched two days
    before INDICATORS_NOW, 1-3 February three hours before, 4-5 February half an hour before."""
    rows = []
    for day in span(date(2026, 1, 25), date(2026, 2, 5)):
        if day.month == 1:
            age = timedelta(days=2)
        else:
            age = timedelta(hours=3) if day.day <= 3 else timedelta(minutes=30)
        rows.append(
            day_row(client_id, day)
            | {
                "quality_score": 80.0 + day.day % 7,
                "quality_issues": SCORED_ISSUES.get(day, []),
                "fetched_at": INDICATORS_NOW - age,
            }
        )
    return rows
