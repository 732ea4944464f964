"""Monthly summaries per client: the month's client-day totals summed, with a provisional/final status.

A month is `provisional` until settings.MONTH_FINAL_AFTER_DAYS after it ends (Meta may still restate its last
days) and `final` after. A summary is only built from a complete month: every day present (idle days count).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from kpi_platform import settings
from kpi_platform.quality.schemas import ContractViolation, MonthlySummarySchema, schema_failures
from kpi_platform.warehouse import Warehouse


class IncompleteMonthError(RuntimeError):
    """A month cannot be summarised because some of its days are not collected."""


@dataclass(frozen=True)
class MonthlySummary:
    client_id: str
    month: date
    row: dict[str, Any]

    @property
    def status(self) -> str:
        return self.row["status"]


def month_end(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def month_status(month: date, today: date) -> str:
    """`final` once MONTH_FINAL_AFTER_DAYS have passed since the month's last day, else `provisional`."""
    final_from = month_end(month) + timedelta(days=settings.MONTH_FINAL_AFTER_DAYS)
    return "final" if today >= final_from else "provisional"


def build_monthly_summary(
    *,
    warehouse: Warehouse,
    client_id: str,
    month: date,
    today: date,
    run_id: str,
    now: datetime | None = None,
) -> MonthlySummary:
    """Sum a complete month of client-day rows and store it (insert or replace)."""
    month = month.replace(day=1)
    days_in_month = calendar.monthrange(month.year, month.month)[1]
    totals = warehouse.monthly_totals_from_days(client_id=client_id, month=month)
    present = int(totals.get("days_present") or 0)
    if present < days_in_month:
        raise IncompleteMonthError(
            f"client '{client_id}' month {month:%Y-%m}: {present} of {days_in_month} days collected; "
            "the summary waits for the missing days"
        )
    sources = set(
        warehouse.read_client_days(client_id=client_id, start=month, end=month_end(month))["source"]
    )
    impressions = int(totals["impressions"])
    clicks = int(totals["clicks"])
    spend = float(totals["spend"])
    row = {
        **totals,
        "client_id": client_id,
        "month": month,
        "days_in_month": days_in_month,
        "ctr_pct": clicks / impressions * 100 if impressions else None,
        "cpc": spend / clicks if clicks else None,
        "status": month_status(month, today),
        # A month mixing simulator and real rows says so rather than passing for either.
        "source": sources.pop() if len(sources) == 1 else "mixed",
        "computed_at": now or datetime.now(UTC),
        "run_id": run_id,
    }
    # The month's own contract (non-negative sums, ratios consistent with them, a known status) before it
    # replaces the stored summary: a broken month raises and the previous summary stays.
    failures = schema_failures(pd.DataFrame([row]), MonthlySummarySchema)
    if not failures.empty:
        raise ContractViolation(failures, client_id, month, month_end(month))
    warehouse.upsert_monthly_summary(row)
    return MonthlySummary(client_id=client_id, month=month, row=row)


def months_due_final(monthly: pd.DataFrame, today: date) -> list[tuple[str, date]]:
    """(client_id, month) of the stored summaries still `provisional` although their restatement window has
    passed: nothing else re-runs a month after its last restatement, so without this it would stay provisional."""
    if monthly.empty:
        return []
    due = []
    for client_id, month, status in zip(
        monthly["client_id"], monthly["month"], monthly["status"], strict=True
    ):
        month = month if isinstance(month, date) else date.fromisoformat(str(month)[:10])
        if status == "provisional" and month_status(month, today) == "final":
            due.append((str(client_id), month))
    return sorted(due)
