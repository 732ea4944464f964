"""Warehouse-wide quality checks over stored rows: completeness, split data, quality score, anomalies,
reconciliation and per-client freshness, each an outcome with observed vs expected numbers per client.

Plain Python over the warehouse; `defs/quality_checks.py` turns each outcome into a Dagster asset-check result on
the KPI warehouse asset.
Completeness and freshness judge each client by the same due day: `client_required_day`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.quality import rules
from kpi_platform.quality.history import ClientHistory, read_histories
from kpi_platform.quality.rules import CheckSeverity
from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse import conversion_tracking as tracking

#: Days read for the trailing checks: 30 days of completeness plus 14 days of anomaly history.
HISTORY_DAYS = 45
#: A client's average quality score over the window must be above its `quality_score_target` setting, by default
#: this, or the quality-score check fails (WARN).
QUALITY_SCORE_TARGET = settings.DEFAULT_QUALITY_SCORE_TARGET
#: Days listed with their issues in the quality-score check's metadata, newest first; the counts cover every day.
METADATA_ISSUE_DAYS = 50
#: Months reconciled against their days (older months are final and were reconciled when they closed).
RECONCILE_MONTHS = 13


@dataclass(frozen=True)
class CheckOutcome:
    """One check's result: `asset` names the rows it judges, "daily" (client-day and campaign-day rows) or "monthly"
    (monthly summaries against their days); metadata values are JSON (numbers stay numbers)."""

    name: str
    asset: str
    passed: bool
    severity: CheckSeverity
    metadata: dict[str, Any]


def _outcome(name: str, result: rules.RuleResult, asset: str = "daily") -> CheckOutcome:
    return CheckOutcome(name, asset, result.passed, result.severity, result.metadata())


def client_required_day(client: Client, now_utc: datetime) -> date:
    """The latest day `client` must have stored at `now_utc`: local yesterday from its freshness deadline hour
    (local time) on, the day before until then (`rules.required_day`)."""
    local_now = now_utc.astimezone(ZoneInfo(client.timezone))
    return rules.required_day(local_now, deadline_hour=client.settings.freshness_deadline_hour)


def quality_score_outcome(
    window: pd.DataFrame, tracked: pd.DataFrame, *, targets: Mapping[str, float]
) -> CheckOutcome:
    """`quality_score_acceptable` over the stored client-days of `window`: every client in `targets` averages
    above its target score (WARN otherwise).

    The average is over the scored days: idle days (score NULL, no check applies) and rows stored before scores
    are left out; a client without a scored day has nothing to judge. The metadata lists the days with issues
    as stored beside their scores (newest first, METADATA_ISSUE_DAYS of them), counts failures per check, and
    names each client's conversion tracking over `window` (`conversion_tracking.classify`, with `tracked`, the
    client's rows from TRACKING_WINDOW_DAYS before the window on, as its evidence) and the days whose conversion
    rate is suspicious (the `conversion_rate` issue).
    """
    scores = window["quality_score"].astype("float64") if len(window) else pd.Series(dtype="float64")
    summary = rules.quality_summary(window, scores)
    low = {
        cid: score
        for cid, score in summary["per_client"].items()
        if cid in targets and not score > targets[cid]
    }
    issues = window["quality_issues"] if len(window) else pd.Series(dtype=object)
    recorded = issues.map(lambda v: isinstance(v, list))
    with_issues = window[issues.map(lambda v: bool(v) if isinstance(v, list) else False).to_numpy(dtype=bool)]
    with_issues = with_issues.sort_values(["kpi_date", "client_id"], ascending=[False, True])
    by_check: dict[str, int] = dict.fromkeys(rules.QUALITY_CHECKS, 0)
    for day_issues in with_issues["quality_issues"]:
        for check in {issue.split(" ", 1)[0].rstrip(":") for issue in day_issues}:
            by_check[check] = by_check.get(check, 0) + 1
    listed = [
        {
            "client_id": client_id,
            "kpi_date": rules.json_value(kpi_date),
            "quality_score": rules.json_value(score),
            "issues": list(day_issues),
        }
        for client_id, kpi_date, score, day_issues in zip(
            with_issues["client_id"].head(METADATA_ISSUE_DAYS),
            with_issues["kpi_date"].head(METADATA_ISSUE_DAYS),
            with_issues["quality_score"].head(METADATA_ISSUE_DAYS),
            with_issues["quality_issues"].head(METADATA_ISSUE_DAYS),
            strict=True,
        )
    ]
    return CheckOutcome(
        "quality_score_acceptable",
        "daily",
        passed=not low,
        severity=CheckSeverity.WARN,
        metadata={
            **summary,
            "target_score": QUALITY_SCORE_TARGET,
            "target_by_client": {
                cid: float(t) for cid, t in sorted(targets.items()) if t != QUALITY_SCORE_TARGET
            },
            "clients_below_target": sorted(low),
            "n_clients_below_target": len(low),
            "n_days_with_issues": len(with_issues),
            "n_days_issues_not_recorded": int((~recorded).sum()),
            **{f"n_{check}_issues": n for check, n in by_check.items()},
            "days_with_issues": listed,
            **_conversion_tracking(window, tracked, clients=sorted(targets)),
        },
    )


def _conversion_tracking(
    window: pd.DataFrame, tracked: pd.DataFrame, *, clients: list[str]
) -> dict[str, Any]:
    """Each client's conversion tracking over `window`, judged against its conversions in `tracked`."""

    def per_client(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        if frame.empty:
            empty = pd.Series(0.0, index=clients)
            return empty, empty.astype(bool)
        conversions = rules.conversion_counts(frame).astype("float64").groupby(frame["client_id"]).sum()
        delivered = ((frame["impressions"] > 0) | (frame["spend"] > 0)).groupby(frame["client_id"]).any()
        return conversions.reindex(clients, fill_value=0.0), delivered.reindex(clients, fill_value=False)

    period_conversions, period_delivered = per_client(window)
    window_conversions, _ = per_client(tracked)
    labels = tracking.classify(period_conversions, period_delivered, window_conversions)
    by_client = dict(zip(clients, (str(label) for label in labels), strict=True))
    return {
        "conversion_tracking": by_client,
        "clients_tracking_not_configured": [
            c for c, v in by_client.items() if v == tracking.TRACKING_NOT_CONFIGURED
        ],
        "clients_zero_conversions": [c for c, v in by_client.items() if v == tracking.ZERO_CONVERSIONS],
    }


def history_metadata(histories: Mapping[str, ClientHistory]) -> dict[str, Any]:
    """The completeness check's whole-history figures: missing client-days since each client's start (its
    `start_date`, else its first collected day), per client with any, and the oldest missing day. Informational:
    the check passes or fails on its windows, and gap healing works the older days down, newest first."""
    oldest = min(
        ((h.oldest_missing_day, cid) for cid, h in histories.items() if h.oldest_missing_day is not None),
        default=None,
    )
    return {
        "missing_days_history": sum(h.missing_days for h in histories.values()),
        "missing_days_history_per_client": {
            cid: h.missing_days for cid, h in sorted(histories.items()) if h.missing_days
        },
        "history_start_per_client": {cid: h.start.isoformat() for cid, h in sorted(histories.items())},
        "oldest_missing_day": oldest[0].isoformat() if oldest is not None else None,
        "oldest_missing_client": oldest[1] if oldest is not None else None,
    }


def evaluate_warehouse_checks(
    *, warehouse: Warehouse, clients: Sequence[Client], now_utc: datetime
) -> list[CheckOutcome]:
    """Every warehouse-wide check, for the active clients, as of `now_utc` (timezone-aware).

    Each client's freshness deadline hour is its `freshness_deadline_hour` setting.
    """
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    active = [c for c in clients if c.active]
    ids = [c.id for c in active]
    # No timezone is a whole day ahead of UTC, so every client's due day (at most its local yesterday) is on or
    # before the UTC date the reads end on.
    today = now_utc.astimezone(UTC).date()
    # The conversion-tracking window reaches TRACKING_WINDOW_DAYS before the 30-day window, past HISTORY_DAYS.
    all_days = warehouse.read_client_days(
        start=today - timedelta(days=30 + tracking.TRACKING_WINDOW_DAYS), end=today
    )
    days = all_days[
        all_days["client_id"].isin(ids) & (all_days["kpi_date"] >= today - timedelta(days=HISTORY_DAYS))
    ]
    days = days.reset_index(drop=True)
    window30 = days[days["kpi_date"] >= today - timedelta(days=30)].reset_index(drop=True)
    outcomes: list[CheckOutcome] = []

    present: dict[str, set[date]] = {cid: set() for cid in ids}
    for cid, day in zip(days["client_id"], days["kpi_date"], strict=True):
        present[cid].add(day)
    targets = {c.id: c.settings.completeness_target for c in active}
    # A day counts as missing only once it is due in the client's own timezone, as for freshness: before the
    # client's deadline hour its yesterday may rightly not be collected yet.
    due = {c.id: client_required_day(c, now_utc) for c in active}
    # The windows start no earlier than a client's start_date (as gap healing's recent window); the whole history
    # since each client's start is reported beside them.
    histories = read_histories(warehouse, active, ends=due)
    completeness = rules.completeness(
        present,
        clients=targets,
        today=today,
        window_end=due,
        first_day={c.id: c.start_date for c in active if c.start_date is not None},
    )
    outcomes.append(
        CheckOutcome(
            "completeness_meets_target",
            "daily",
            completeness.passed,
            completeness.severity,
            {**completeness.metadata(), **history_metadata(histories)},
        )
    )

    outcomes.append(_outcome("no_split_days", rules.split_days(window30)))

    score_targets = {c.id: c.settings.quality_score_target for c in active}
    tracked = all_days[all_days["client_id"].isin(ids)].reset_index(drop=True)
    outcomes.append(quality_score_outcome(window30, tracked, targets=score_targets))

    outcomes.append(_outcome("no_anomalies", rules.anomalies(days)))

    campaign_frames = [
        warehouse.read_campaign_days(client_id=cid, start=today - timedelta(days=30), end=today)
        for cid in ids
    ]
    campaigns = pd.concat(campaign_frames, ignore_index=True) if campaign_frames else pd.DataFrame()
    outcomes.append(_outcome("campaigns_reconcile_to_totals", rules.reconcile_campaigns(campaigns, window30)))

    months = warehouse.read_monthly()
    first_month = (today.replace(day=1) - timedelta(days=31 * RECONCILE_MONTHS)).replace(day=1)
    months = months[months["client_id"].isin(ids) & (months["month"] >= first_month)].reset_index(drop=True)
    month_days = warehouse.read_client_days(start=first_month, end=today)
    month_days = month_days[month_days["client_id"].isin(ids)].reset_index(drop=True)
    outcomes.append(
        _outcome("months_equal_sum_of_days", rules.reconcile_months(months, month_days), asset="monthly")
    )

    last_day: dict[str, date | None] = {cid: None for cid in ids}
    if len(days):
        for cid, day in days.groupby("client_id")["kpi_date"].max().items():
            last_day[str(cid)] = day  # the client ids are str; pandas types group keys as Hashable
    local_now = {c.id: now_utc.astimezone(ZoneInfo(c.timezone)) for c in active}
    deadlines = {c.id: c.settings.freshness_deadline_hour for c in active}
    outcomes.append(
        _outcome(
            "fresh_per_client",
            rules.freshness(
                last_day, active_clients=ids, now_by_client=local_now, deadline_hour_by_client=deadlines
            ),
        )
    )
    return outcomes
