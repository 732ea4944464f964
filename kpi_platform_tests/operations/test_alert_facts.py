"""From facts to what is still failing: a queued retry is not a heal, and a day learnt from a failed run counts."""

from __future__ import annotations

from kpi_platform.operations.alert_facts import failing_collection_keys
from kpi_platform.operations.plans import FAILED, IN_PROGRESS, MATERIALIZED


def test_failing_keys_stay_failing_until_materialized():
    keys = ["acme|2026-03-01", "acme|2026-03-02", "acme|2026-03-03", "globex|2026-03-01"]
    statuses = {
        "acme|2026-03-01": FAILED,
        "acme|2026-03-02": IN_PROGRESS,
        "acme|2026-03-03": IN_PROGRESS,
        "globex|2026-03-01": MATERIALIZED,
    }
    # 03-02 failed before its retry was queued; 03-03 is a first attempt; globex healed.
    remembered = ["acme|2026-03-02", "globex|2026-03-01"]
    failing = failing_collection_keys(keys=keys, statuses=statuses, remembered=remembered, failed_in_runs=())
    assert failing == {"acme|2026-03-01", "acme|2026-03-02"}
    # A day is learnt from a failed run even when its retry started before the sync saw it FAILED; days outside
    # the horizon are not counted.
    from_runs = ["acme|2026-03-03", "acme|2025-01-01"]
    failing = failing_collection_keys(keys=keys, statuses=statuses, remembered=(), failed_in_runs=from_runs)
    assert failing == {"acme|2026-03-01", "acme|2026-03-03"}
    assert failing_collection_keys(keys=keys, statuses={}, remembered=(), failed_in_runs=()) == set()
