"""The health report's `token` check: the days left before the Meta access token (or its data access) expires,
judged now from the latest daily `debug_token` answer (`operations/token_watch.py`), which Dagster keeps as an
observation of `meta_ads/access_token`. Read with Dagster's public `fetch_observations`; Meta is not called."""

from __future__ import annotations

import dagster as dg

from kpi_platform.meta.token_check import TokenUrgency, assess
from kpi_platform.operations.health.report import Finding, HealthContext, HealthStatus, _duration
from kpi_platform.operations.token_watch import (
    TOKEN_ASSET_PATH,
    TOKEN_CHECK_STALE_S,
    days_text,
    read_record,
    token_summary,
)

_STATUS = {
    TokenUrgency.OK: (HealthStatus.HEALTHY, 100.0),
    TokenUrgency.HIGH: (HealthStatus.DEGRADED, 50.0),
    TokenUrgency.CRITICAL: (HealthStatus.UNHEALTHY, 0.0),
}


def check_token(ctx: HealthContext) -> Finding:
    """Healthy while both dates are more than 7 days away, degraded within 7 days, unhealthy within 1 day, when
    `ads_read` is missing or the token is invalid (the thresholds of the token alert). Degraded before the first
    check; unhealthy when the latest is more than two days old (the daily check keeps failing)."""
    assert ctx.instance is not None, "the token check reads the instance (needs_instance)"
    records = ctx.instance.fetch_observations(dg.AssetKey(list(TOKEN_ASSET_PATH)), limit=1).records
    observation = records[0].asset_observation if records else None
    if observation is None:
        return Finding(
            HealthStatus.DEGRADED,
            50.0,
            "the Meta access token has not been checked yet (meta_token_check_sensor asks Meta daily)",
        )
    info, checked_at = read_record({name: value.value for name, value in observation.metadata.items()})
    assessment = assess(info, ctx.now_utc)
    age_s = max(0.0, (ctx.now_utc - checked_at).total_seconds())
    status, score = _STATUS[assessment.urgency]
    summary = f"{token_summary(assessment)}; checked {_duration(age_s)} ago"
    if age_s > TOKEN_CHECK_STALE_S:
        status, score = HealthStatus.UNHEALTHY, 0.0
        summary += " (the daily check has stopped: see the ticks of meta_token_check_sensor)"
    metrics: dict[str, float] = {"token_check_age_h": round(age_s / 3600, 1)}
    if assessment.days_left is not None:
        metrics["token_days_left"] = round(assessment.days_left, 2)
    details = {
        "urgency": assessment.urgency.value,
        "problems": list(assessment.problems),
        "expires_in": days_text(assessment.expires_in_days),
        "data_access_expires_in": days_text(assessment.data_access_expires_in_days),
        "scopes": list(info.scopes),
        "checked_at": checked_at.isoformat(),
    }
    return Finding(status, score, summary, details=details, metrics=metrics)
