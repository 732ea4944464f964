"""Problems worth telling a person about, as alerts: failed collections, failed checks, open breakers.

Plain functions from facts (run failures, check results, partition statuses) to `alerts.Alert`s with stable keys,
and to the client-days still failing, so the alert sensors only gather facts and `Notifier.sync` does the
once-per-problem bookkeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kpi_platform.operations import check_catalogue
from kpi_platform.operations.alerts import RUNBOOK, Alert, Severity
from kpi_platform.operations.plans import FAILED, MATERIALIZED

COLLECTION_PREFIX = "collection_failed:"
TOKEN_PREFIX = "token_invalid:"
CHECK_PREFIX = "check:"


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
        severity = check_catalogue.alert_severity(fact.name)
        meta = fact.metadata
        summary = meta.get("summary") or f"{meta.get('n_culprits', '?')} culprit(s)"
        body = "\n".join(
            [
                f"Check {fact.name} on {fact.asset} failed: {summary}",
                *_culprit_lines(meta),
                f"What to do: {check_catalogue.advice(fact.name)}",
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
