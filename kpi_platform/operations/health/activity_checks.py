"""The health check of the platform activity snapshots (the warehouse's `daily_metrics`, metric_type `count`)."""

from __future__ import annotations

from kpi_platform.operations.activity_watch import (
    HORIZON_DAYS,
    LISTED_DAYS_MAX,
    STALE_AFTER_H,
    read_activity_facts,
)
from kpi_platform.operations.health.report import Finding, HealthContext, HealthStatus, _ratio_score


def check_activity(ctx: HealthContext) -> Finding:
    """The activity snapshots over the last `HORIZON_DAYS` due days (day D is due from 02:00 UTC on D + 1).

    Unhealthy when no snapshot is stored or the newest was taken more than `STALE_AFTER_H` hours ago (the job is
    not running or keeps failing); degraded when a due day lacks any of its collected metrics (the healer requests it);
    healthy when every due day, yesterday's included from 02:00 UTC, is complete. Score: share of complete due
    days, 0 when unhealthy."""
    facts = read_activity_facts(ctx.warehouse, now_utc=ctx.now_utc)
    missing = facts.missing_in_window
    hours = facts.hours_since_snapshot
    listed = ", ".join(d.isoformat() for d in missing[:LISTED_DAYS_MAX]) + (
        f" and {len(missing) - LISTED_DAYS_MAX} more" if len(missing) > LISTED_DAYS_MAX else ""
    )
    parts: list[str] = []
    if hours is None:
        parts.append("no activity snapshot stored")
    elif facts.stale:
        parts.append(f"no snapshot for {hours:.0f} h (over {STALE_AFTER_H:.0f} h)")
    if missing:
        parts.append(f"{len(missing)} due day(s) missing in the last {HORIZON_DAYS}: {listed}")
    else:
        parts.append(f"every due day complete up to {facts.end}")
    if hours is not None and not facts.stale:
        parts.append(f"last snapshot {hours:.1f} h ago")
    if facts.stale:
        status = HealthStatus.UNHEALTHY
    else:
        status = HealthStatus.DEGRADED if missing else HealthStatus.HEALTHY
    summary = "; ".join(parts)
    metrics: dict[str, float] = {"activity_missing_days": len(missing), "activity_late_days": facts.late_days}
    if hours is not None:
        metrics["activity_hours_since_snapshot"] = hours
    present = facts.expected_days - len(missing)
    return Finding(
        status=status,
        score=0.0 if status == HealthStatus.UNHEALTHY else _ratio_score(present, facts.expected_days),
        summary=summary,
        details={
            "window": f"{facts.start}..{facts.end}",
            "last_due_day": facts.end,
            "missing_days": [d.isoformat() for d in missing],
            "missing_metrics": {d.isoformat(): list(facts.missing[d]) for d in missing[:LISTED_DAYS_MAX]},
            "late_days": facts.late_days,
            "last_snapshot_at": facts.newest_collected_at,
            "unhealthy_after_hours": STALE_AFTER_H,
        },
        metrics=metrics,
    )
