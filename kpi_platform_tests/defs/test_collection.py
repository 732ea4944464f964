"""The daily asset's metadata: each day's own on its partition; the run's totals, whose quality score is averaged
over the scored days only."""

from __future__ import annotations

from datetime import date

from kpi_platform.collect import CollectionResult
from kpi_platform.defs.collection import collection_metadata, day_metadata


def result(
    client_id: str, *, days: int, mean: float | None, scored: int, with_issues: int
) -> CollectionResult:
    return CollectionResult(
        client_id=client_id,
        start=date(2026, 3, 1),
        end=date(2026, 3, days),
        days=days,
        idle_days=days - scored,
        campaign_rows=scored,
        day_rows=days,
        spend=10.0,
        currency="EUR",
        source="simulator",
        api_requests=1,
        api_retries=0,
        throttle_wait_s=0.0,
        fetch_seconds=0.1,
        write_seconds=0.1,
        quality_score_mean=mean,
        scored_days=scored,
        days_with_issues=with_issues,
    )


def test_quality_score_mean_weighs_scored_days_and_leaves_idle_runs_out():
    results = [
        result("acme", days=4, mean=90.0, scored=3, with_issues=1),
        result("bistro", days=1, mean=100.0, scored=1, with_issues=0),
        result("cafe", days=5, mean=None, scored=0, with_issues=0),  # every day idle: nothing scored
    ]
    metadata = collection_metadata(results)
    assert metadata["quality_score_mean"].value == 92.5  # (3 × 90 + 1 × 100) / 4
    assert metadata["days_with_quality_issues"].value == 1
    assert "quality_score_mean" not in collection_metadata(results[2:])


def test_a_days_metadata_is_its_own_figures_by_partition_key():
    figures = [
        {
            "client_id": "acme",
            "kpi_date": date(2026, 3, 2),
            "currency": "EUR",
            "source": "simulator",
            "delivery": "delivered",
            "campaign_rows": 3,
            "spend": 12.5,
            "impressions": 1000,
            "clicks": 10,
            "calls": 1,
            "contacts": 0,
            "leads": 2,
            "reservations": 1,
            "reservation_value": 40.0,
            "ctr_pct": 1.0,
            "cpc": 1.25,
            "quality_score": 80.0,
            "issues": ["cpc 1.25 above 1.00 EUR"],
        },
        {
            "client_id": "acme",
            "kpi_date": date(2026, 3, 3),
            "currency": "EUR",
            "source": "simulator",
            "delivery": "idle",
            "campaign_rows": 0,
            **dict.fromkeys(("impressions", "clicks", "calls", "contacts", "leads", "reservations"), 0),
            "spend": 0.0,
            "reservation_value": 0.0,
            "ctr_pct": None,
            "cpc": None,
            "quality_score": None,
            "issues": [],
        },
    ]
    by_key = {
        key: {name: value.value for name, value in metadata.items()}
        for key, metadata in day_metadata(figures).items()
    }
    assert sorted(by_key) == ["acme|2026-03-02", "acme|2026-03-03"]
    busy, idle = by_key["acme|2026-03-02"], by_key["acme|2026-03-03"]
    assert (busy["spend"], busy["currency"], busy["rows"], busy["leads"], busy["reservation_value"]) == (
        12.5,
        "EUR",
        3,
        2,
        40.0,
    )
    assert (busy["quality_score"], busy["issues"], busy["issues_text"]) == (
        80.0,
        1,
        "cpc 1.25 above 1.00 EUR",
    )
    # Undefined values are left out rather than plotted as 0.
    assert not {"ctr_pct", "cpc", "quality_score"} & set(idle)
    assert (idle["spend"], idle["issues"], idle["issues_text"], idle["delivery"]) == (0.0, 0, "none", "idle")
