"""The health check of the forecasts: their error on the days collected since (MAPE over 30 days) and whether
the refresh still runs."""

from __future__ import annotations

from datetime import timedelta

from kpi_platform.operations.health.report import Finding, HealthContext, HealthStatus

#: Forecast days judged: those of the last 30 days that have been collected.
FORECAST_WINDOW_DAYS = 30
#: The headline error is over the volume KPIs. Conversions are small counts, whose percentage errors (1 forecast,
#: 2 collected: 50 %) say little; their MAPE is in the details.
HEADLINE_METRICS: tuple[str, ...] = ("spend", "impressions", "clicks")
#: Above this MAPE the forecasts are degraded: too far off to plan with.
FORECAST_MAPE_DEGRADED_PCT = 35.0
#: The refresh runs daily: a day and a few hours without a new forecast is degraded, three days unhealthy (an
#: alert: someone must restart it).
FORECAST_AGE_DEGRADED_H = 30.0
FORECAST_AGE_UNHEALTHY_H = 72.0


def check_forecast_accuracy(ctx: HealthContext) -> Finding:
    """Mean absolute percentage error of the forecasts of days collected in the last `FORECAST_WINDOW_DAYS`
    (headline: spend, impressions, clicks; per KPI in details), the share of collected values inside the forecast
    interval, and the age of the newest forecast.

    Nothing to judge (no forecast stored, none collected yet): healthy with score 100, so an empty table never
    drags the report. Degraded when the MAPE exceeds `FORECAST_MAPE_DEGRADED_PCT` or the newest forecast is older
    than `FORECAST_AGE_DEGRADED_H`; unhealthy when older than `FORECAST_AGE_UNHEALTHY_H` (the refresh stopped).
    Score: 100 − MAPE (at least 0), 0 when unhealthy.
    """
    end = ctx.now_utc.date()
    start = end - timedelta(days=FORECAST_WINDOW_DAYS - 1)
    errors = ctx.warehouse.read_forecast_accuracy(start=start, end=end)
    newest = ctx.warehouse.newest_forecast_at()
    age_h = None if newest is None else max(0.0, (ctx.now_utc - newest).total_seconds() / 3600)
    defined = errors[errors["abs_pct_error"].notna()]
    per_metric = {
        str(metric): round(float(values.mean()), 1)
        for metric, values in defined.groupby("metric")["abs_pct_error"]
    }
    headline = defined[defined["metric"].isin(HEADLINE_METRICS)]["abs_pct_error"]
    mape = round(float(headline.mean()), 1) if not headline.empty else None
    inside = (errors["actual"] >= errors["lower"]) & (errors["actual"] <= errors["upper"])
    coverage = round(float(inside.mean()) * 100, 1) if not errors.empty else None
    days = len(errors[["client_id", "kpi_date"]].drop_duplicates())

    metrics: dict[str, float] = {"forecast_days_judged_30d": days}
    parts: list[str] = []
    if mape is None:
        parts.append(f"no forecast day collected in the last {FORECAST_WINDOW_DAYS} days: nothing to judge")
    else:
        metrics["forecast_mape_30d_pct"] = mape
        parts.append(
            f"MAPE {mape:g} % (spend, impressions, clicks) over {days} forecast day(s) collected since"
        )
    if coverage is not None:
        metrics["forecast_interval_coverage_30d_pct"] = coverage
        parts.append(f"{coverage:g} % of collected values inside the interval")
    if age_h is not None:
        metrics["forecast_hours_since_refresh"] = round(age_h, 1)
        parts.append(f"newest forecast {age_h:.0f} h old")

    if age_h is not None and age_h > FORECAST_AGE_UNHEALTHY_H:
        status = HealthStatus.UNHEALTHY
        parts.append(f"the forecast refresh has not run for over {FORECAST_AGE_UNHEALTHY_H:.0f} h")
    elif (age_h is not None and age_h > FORECAST_AGE_DEGRADED_H) or (
        mape is not None and mape > FORECAST_MAPE_DEGRADED_PCT
    ):
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    if status == HealthStatus.UNHEALTHY:
        score = 0.0
    elif mape is None:
        score = 100.0
    else:
        score = max(0.0, 100.0 - mape)
    return Finding(
        status=status,
        score=score,
        summary="; ".join(parts),
        details={
            "window": f"{start}..{end}",
            "mape_pct": mape,
            "mape_pct_per_metric": per_metric,
            "interval_coverage_pct": coverage,
            "newest_forecast_at": newest,
            "degraded_above_mape_pct": FORECAST_MAPE_DEGRADED_PCT,
        },
        metrics=metrics,
    )
