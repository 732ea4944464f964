"""The access token watch: the daily `debug_token` answer as an alert (HIGH a week before either expiry date,
CRITICAL a day before, when `ads_read` is missing or the token is invalid; resolved once a new token is in place)
and as the record the health report reads.

The record is an observation of the external asset `meta_ads/access_token` in Dagster (one per check: the UI plots
its days left), written by `meta_token_check_sensor` and read by the health report's `token` check, which judges
it again at its own time, so the days left it shows are current between two checks. It holds Meta's answer
(validity, dates, scopes), never the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kpi_platform.meta.errors import RUNBOOK_TOKEN
from kpi_platform.meta.token_check import (
    CRITICAL_WITHIN_DAYS,
    HIGH_WITHIN_DAYS,
    TokenAssessment,
    TokenInfo,
    TokenUrgency,
)
from kpi_platform.operations.alerts import Alert, Severity

#: Scope of the token watch's alerts in `alert_state` (apart from `token_invalid:<client>`, which collection runs
#: raise when Meta refuses the token mid-run).
TOKEN_CHECK_PREFIX = "token_check:"
TOKEN_ALERT_KEY = f"{TOKEN_CHECK_PREFIX}meta_access_token"
#: The external asset whose observations record each check.
TOKEN_ASSET_PATH: tuple[str, ...] = ("meta_ads", "access_token")
#: How often the sensor asks Meta.
TOKEN_CHECK_INTERVAL_S = 24 * 3600
#: A record older than this means the daily check has stopped (failing ticks: Meta unreachable, no token set).
TOKEN_CHECK_STALE_S = 2 * TOKEN_CHECK_INTERVAL_S
NEVER = "never"

_SEVERITY = {TokenUrgency.HIGH: Severity.HIGH, TokenUrgency.CRITICAL: Severity.CRITICAL}


def days_text(days: float | None) -> str:
    return NEVER if days is None else f"{days:.1f} days"


def token_summary(assessment: TokenAssessment) -> str:
    """One line: the urgency and the days left before each date."""
    info = assessment.info
    head = "valid" if info.is_valid else "INVALID"
    return (
        f"Meta access token {head} ({assessment.urgency.value}): expires in "
        f"{days_text(assessment.expires_in_days)}, data access in {days_text(assessment.data_access_expires_in_days)}"
        + (f"; missing scope(s) {', '.join(assessment.missing_scopes)}" if assessment.missing_scopes else "")
    )


def token_alerts(assessment: TokenAssessment) -> list[Alert]:
    """The token's alert, or none when it is fine; sync with scope `TOKEN_CHECK_PREFIX`, so a new token (or a
    renewed one) resolves it, and a HIGH alert that turns CRITICAL is sent again."""
    severity = _SEVERITY.get(assessment.urgency)
    if severity is None:
        return []
    days = assessment.days_left
    if not assessment.info.is_valid:
        title = "Meta access token is invalid"
    elif assessment.missing_scopes:
        title = f"Meta access token lacks {', '.join(assessment.missing_scopes)}"
    else:
        title = f"Meta access token expires in {days_text(days)}"
    body = "\n".join(
        [
            f"{token_summary(assessment)}.",
            *(f"- {problem}" for problem in assessment.problems),
            f"Alert levels: HIGH from {HIGH_WITHIN_DAYS:g} days before either date, CRITICAL from "
            f"{CRITICAL_WITHIN_DAYS:g} day, when a required scope is missing or the token is invalid.",
            "What to do: issue a new system-user token with ads_read and deploy it as META_ACCESS_TOKEN "
            f"({RUNBOOK_TOKEN}); this alert resolves at the next daily check.",
        ]
    )
    return [Alert(TOKEN_ALERT_KEY, severity, title, body)]


# --- The record -------------------------------------------------------------------------------------------------


def _moment_text(moment: datetime | None) -> str:
    return NEVER if moment is None else moment.isoformat()


def _moment(text: str) -> datetime | None:
    return None if text == NEVER else datetime.fromisoformat(text)


def record_metadata(assessment: TokenAssessment, checked_at: datetime) -> dict[str, str | float | bool]:
    """The observation's metadata: Meta's answer, when it was asked, and the days left then (plotted in the UI;
    left out for a date that never comes)."""
    info = assessment.info
    metadata: dict[str, str | float | bool] = {
        "checked_at": checked_at.isoformat(),
        "urgency": assessment.urgency.value,
        "is_valid": info.is_valid,
        "expires_at": _moment_text(info.expires_at),
        "data_access_expires_at": _moment_text(info.data_access_expires_at),
        "scopes": ",".join(info.scopes),
        "token_type": info.token_type,
        "error": info.error,
    }
    if assessment.days_left is not None:
        metadata["days_left"] = round(assessment.days_left, 2)
    return metadata


def read_record(metadata: Mapping[str, Any]) -> tuple[TokenInfo, datetime]:
    """(Meta's answer, when it was asked) from an observation's metadata values; ValueError names a broken field."""
    try:
        info = TokenInfo(
            is_valid=bool(metadata["is_valid"]),
            expires_at=_moment(str(metadata["expires_at"])),
            data_access_expires_at=_moment(str(metadata["data_access_expires_at"])),
            scopes=tuple(s for s in str(metadata.get("scopes") or "").split(",") if s),
            token_type=str(metadata.get("token_type") or ""),
            error=str(metadata.get("error") or ""),
        )
        checked_at = datetime.fromisoformat(str(metadata["checked_at"]))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"the token check's record is unreadable ({type(exc).__name__}: {exc})") from None
    return info, checked_at
