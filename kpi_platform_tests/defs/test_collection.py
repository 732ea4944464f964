"""The daily asset's materialization metadata: the quality score is averaged over the scored days only."""

from __future__ import annotations

from datetime import date

from kpi_platform.collect import CollectionResult
from kpi_platform.defs.collection import collection_metadata


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
