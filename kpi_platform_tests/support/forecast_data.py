"""Client-day rows with a known weekly pattern, for the forecast tests: a weekday shape times a level, with
seeded multiplicative noise."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from kpi_platform.warehouse import schema
from kpi_platform_tests.support.warehouse_data import day_row, span

#: Share of an average day's volume per weekday, Monday first: busy mid-week, quiet weekend.
WEEKLY_SHAPE: tuple[float, ...] = (1.0, 1.2, 1.3, 1.2, 1.0, 0.6, 0.5)
#: An average day at level 1.
BASE = {
    "spend": 200.0,
    "impressions": 20_000.0,
    "clicks": 400.0,
    "calls": 20.0,
    "contacts": 10.0,
    "leads": 30.0,
    "reservations": 12.0,
    "reservation_value": 600.0,
}
MONEY = {"spend", "reservation_value"}


def expected(day: date, metric: str, *, level: float = 1.0) -> float:
    """The noise-free value of a day."""
    return BASE[metric] * WEEKLY_SHAPE[day.weekday()] * level


def weekly_rows(
    client_id: str, start: date, end: date, *, level: float = 1.0, noise: float = 0.1, seed: int = 1
) -> list[dict]:
    """client_daily_kpis rows for every day in [start, end]: expected value × (1 + N(0, noise)), counts rounded."""
    rng = np.random.default_rng(seed)
    rows = []
    for day in span(start, end):
        row = day_row(client_id, day)
        for metric in BASE:
            value = max(0.0, expected(day, metric, level=level) * (1 + rng.normal(0, noise)))
            row[metric] = round(value, 2) if metric in MONEY else int(round(value))
        row["delivery"] = "delivered"
        row["campaign_count"] = 2
        row["ctr_pct"] = row["clicks"] / row["impressions"] * 100
        row["cpc"] = round(row["spend"] / row["clicks"], 4)
        rows.append(row)
    return rows


def forecast_frame(
    client_id: str,
    dates: list[date],
    value: float,
    *,
    currency: str = "EUR",
    generated_at: datetime = datetime(2026, 3, 1, 6, 0, tzinfo=UTC),
) -> pd.DataFrame:
    """kpi_forecasts rows: every KPI forecast at `value`, interval ±20 %."""
    row: dict = {"client_id": client_id, "currency": currency, "interval_pct": 80.0, "model": "test"}
    for metric in schema.FORECAST_METRICS:
        row.update({metric: value, f"{metric}_lower": value * 0.8, f"{metric}_upper": value * 1.2})
    row.update(history_days=56, generated_at=generated_at)
    return pd.DataFrame([{**row, "kpi_date": d} for d in dates])
