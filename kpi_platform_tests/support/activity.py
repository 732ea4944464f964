"""Platform activity snapshots stored straight into a warehouse, for tests that judge them (health, alerts, healing)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse


def snapshot_days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def store_snapshots(
    warehouse: Warehouse,
    days: Iterable[date],
    *,
    collected_at: datetime,
    late: bool = False,
    metrics: Iterable[str] = settings.ACTIVITY_METRICS,
) -> None:
    """Store `metrics` (all five by default) for each of `days`, taken at `collected_at`; totals grow by the
    day's creations, so the stored days also pass the totals check."""
    wanted = set(metrics)
    rows = []
    for day in days:
        n = day.toordinal() % 1000
        values = {
            "users_total": 10 + n,
            "posts_total": 100 + 2 * n,
            "comments_total": 200 + 3 * n,
            "posts_created": 2,
            "comments_created": 3,
        }
        for metric, value in values.items():
            if metric not in wanted:
                continue
            rows.append(
                {
                    "metric_date": day,
                    "metric_type": settings.ACTIVITY_METRIC_TYPE,
                    "metric_category": metric,
                    "value": float(value),
                    "metadata": {"source": "test", "taken_at": collected_at.isoformat(), "late": late},
                    "collection_timestamp": collected_at,
                }
            )
    warehouse.record_daily_metrics(rows)
