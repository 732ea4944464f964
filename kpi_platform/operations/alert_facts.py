"""Problems worth telling a person about, as alerts: failed collections, failed checks, open breakers.

Plain functions from facts (run failures, check results, partition statuses) to `alerts.Alert`s with stable keys,
and to the client-days still failing, so the alert sensors only gather facts and `Notifier.sync` does the
once-per-problem bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kpi_platform.operations.alerts import RUNBOOK, Alert, Severity
from kpi_platform.operations.plans import FAILED, MATERIALIZED

COLLECTION_PREFIX = "collection_failed:"
TOKEN_PREFIX = "token_invalid:"
CHECK_PREFIX = "check:"

#: Alert severity per asset check: wrong data is HIGH, late or incomplete data MEDIUM, anomalies LOW.
CHECK_SEVERITY: dict[str, Severity] = {
    "rows_meet_contract": Severity.HIGH,
    "no_split_days": Severity.HIGH,
    "campaigns_reconcile_to_totals": Severity.HIGH,
    "months_equal_sum_of_days": Severity.HIGH,
    "completeness_meets_target": Severity.MEDIUM,
    "fresh_per_client": Severity.MEDIUM,
    "quality_score_acceptable": Severity.MEDIUM,
    "no_anomalies": Severity.LOW,
}
CHECK_ADVICE: dict[str, str] = {
    "rows_meet_contract": "Nothing was stored for the refused range. Look at the failed rules and sample in the check "
    "result; if Meta's data is right and our contract is wrong, fix the contract; the gap-healing sensor retries.",
    "no_split_days": "Spend without conversions usually means conversions were not fetched. Re-collect the days "
    "(backfill the partitions) and compare with Ads Manager.",
    "campaigns_reconcile_to_totals": "Campaign rows and day totals disagree: re-collect the days named.",
    "months_equal_sum_of_days": "A monthly summary is stale: re-materialize the month named.",
    "completeness_meets_target": "Days are missing: the gap-healing sensor requests them; if they stay missing, "
    "backfill the missing partitions from the UI.",
    "fresh_per_client": "Yesterday's data is late: check the daily collection schedule, the run queue and failed runs.",
    "quality_score_acceptable": "CTR, CPC, spend or clicks are outside the client's thresholds: review the days "
    "named and the thresholds in clients.yaml.",
    "no_anomalies": "A value is more than 3σ from its 14-day mean: check it against Ads Manager.",
}


@dataclass(frozen=True)
class CheckFact:
    """The latest evaluation of one asset check."""

    asset: str
    name: str
    passed: bool
    metadata: Mapping[str, Any]


def _culprit_lines(metadata: Mapping[str, Any], limit: int = 5) -> list[str]:
    lines = []
    for culprit in list(metadata.get("culprits") or [])[:limit]:
        if isinstance(culprit, Mapping):
            lines.append(
                f"- {culprit.get('client_id', '?')} {culprit.get('kpi_date') or ''} {culprit.get('rule', '')}: "
                f"observed {culprit.get('observed')}, expected {culprit.get('expected')}"
            )
    return lines


def check_alerts(facts: Iterable[CheckFact]) -> list[Alert]:
    """One alert per failing check; sync with scope CHECK_PREFIX so a passing check resolves its alert."""
    alerts = []
    for fact in facts:
        if fact.passed:
            continue
        severity = CHECK_SEVERITY.get(fact.name, Severity.MEDIUM)
        meta = fact.metadata
        summary = meta.get("summary") or f"{meta.get('n_culprits', '?')} culprit(s)"
        body = "\n".join(
            [
                f"Check {fact.name} on {fact.asset} failed: {summary}",
                *_culprit_lines(meta),
                f"What to do: {CHECK_ADVICE.get(fact.name, 'see the check result in the Dagster UI.')}",
                f"See {RUNBOOK} › Alerts.",
            ]
        )
        alerts.append(
            Alert(f"{CHECK_PREFIX}{fact.asset}:{fact.name}", severity, f"Check {fact.name} failed", body)
        )
    return alerts


def collection_failure_alert(
    *, client_id: str, first_day: str, last_day: str, error: str, message: str
) -> Alert:
    """CRITICAL: a client's days failed after the client's own retries. A token error gets its own key."""
    if error in ("TokenInvalid", "PermissionDenied"):
        return Alert(
            f"{TOKEN_PREFIX}{client_id}",
            Severity.CRITICAL,
            f"Meta token rejected for {client_id}",
            f"Collection of {client_id} {first_day}..{last_day} failed: {message}\n"
            f"What to do: rotate the token (see {RUNBOOK} › Rotating the token); the failed days are healed "
            "automatically after the next successful run.",
        )
    return Alert(
        f"{COLLECTION_PREFIX}{client_id}",
        Severity.CRITICAL,
        f"Collection failed for {client_id}",
        f"Collection of {client_id} {first_day}..{last_day} failed after retries ({error}): {message}\n"
        f"What to do: read the run's logs in the Dagster UI; transient causes heal by themselves (gap-healing "
        f"sensor); otherwise fix the cause and backfill the failed partitions ({RUNBOOK} › Healing by hand).",
    )


def failing_collection_keys(
    *,
    keys: Iterable[str],
    statuses: Mapping[str, str | None],
    remembered: Iterable[str],
    failed_in_runs: Iterable[str],
) -> set[str]:
    """The client-days of `keys` whose collection failed and that have not been materialized since.

    Dagster shows a failed day whose retry is queued or running as IN_PROGRESS, hiding the failure; so a day
    seen FAILED (`remembered` from earlier ticks, or covered by a run that failed since: `failed_in_runs`) stays
    failing until it is MATERIALIZED, and a collection alert is not resolved by each retry that starts.
    """
    horizon = set(keys)
    seen_failing = {k for k, status in statuses.items() if status == FAILED}
    seen_failing |= set(remembered) | set(failed_in_runs)
    return {k for k in seen_failing & horizon if statuses.get(k) != MATERIALIZED}
