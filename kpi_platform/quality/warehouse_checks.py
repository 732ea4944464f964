"""Warehouse-wide quality checks over stored rows: completeness, split data, quality score, anomalies,
reconciliation and per-client freshness, each an outcome with observed vs expected numbers per client.

Plain Python over the warehouse; `defs/quality_checks.py` turns each outcome into a Dagster asset-check result on
the KPI warehouse asset.
Completeness and freshness judge each client by the same due day: `client_required_day`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from kpi_platform.clients import Client
from kpi_platform.quality import rules
from kpi_platform.quality.rules import CheckSeverity
from kpi_platform.warehouse import Warehouse

#: Days read for the trailing checks: 30 days of completeness plus 14 days of anomaly history.
HISTORY_DAYS = 45
#: A client whose average quality score over the window is below this fails the quality-score check (WARN).
QUALITY_SCORE_MIN = 75.0
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
    start = today - timedelta(days=HISTORY_DAYS)
    days = warehouse.read_client_days(start=start, end=today)
    days = days[days["client_id"].isin(ids)].reset_index(drop=True)
    window30 = days[days["kpi_date"] >= today - timedelta(days=30)].reset_index(drop=True)
    outcomes: list[CheckOutcome] = []

    present: dict[str, set[date]] = {cid: set() for cid in ids}
    for cid, day in zip(days["client_id"], days["kpi_date"], strict=True):
        present[cid].add(day)
    targets = {c.id: c.settings.completeness_target for c in active}
    # A day counts as missing only once it is due in the client's own timezone, as for freshness: before the
    # client's deadline hour its yesterday may rightly not be collected yet.
    due = {c.id: client_required_day(c, now_utc) for c in active}
    outcomes.append(
        _outcome(
            "completeness_meets_target",
            rules.completeness(present, clients=targets, today=today, window_end=due),
        )
    )

    outcomes.append(_outcome("no_split_days", rules.split_days(window30)))

    scores = (
        window30["quality_score"].astype("float64").fillna(100.0)
        if len(window30)
        else pd.Series(dtype="float64")
    )
    summary = rules.quality_summary(window30, scores)
    low = {cid: s for cid, s in summary["per_client"].items() if s < QUALITY_SCORE_MIN}
    outcomes.append(
        CheckOutcome(
            "quality_score_acceptable",
            "daily",
            passed=not low,
            severity=CheckSeverity.WARN,
            metadata={
                **summary,
                "expected_min_score": QUALITY_SCORE_MIN,
                "clients_below_min": sorted(low),
                "n_clients_below_min": len(low),
            },
        )
    )

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
