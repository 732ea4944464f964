"""The access token's own health: what Meta's `GET /debug_token` says about it (valid, both expiry dates, granted
scopes), and how urgent that is, so someone rotates the token before collection stops.

Meta gives a token two dates: `expires_at`, after which the token is rejected (code 190/463), and
`data_access_expires_at`, after which it may no longer read data (90 days after the user last used the app); 0
stands for never, as for a system user's token that does not expire. Collection needs the `ads_read` scope.

`fetch_token_info` calls the endpoint; `assess` turns its answer into an urgency with days left, as of any moment,
so a stored answer is judged again later without calling Meta. The token is sent as both `input_token` (the token
inspected) and `access_token` (the caller: a token may inspect itself), and appears in no message, exception or
stored value: every text passes `errors.redact`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import requests
import tenacity

from kpi_platform import settings
from kpi_platform.meta.client import redact_url_loggers
from kpi_platform.meta.errors import (
    TOKEN_INVALID_CODES,
    MalformedResponse,
    MetaApiError,
    MetaRequestError,
    Throttled,
    TransientError,
    classify,
    redact,
)

#: Scopes collection cannot work without (Insights needs ads_read).
REQUIRED_SCOPES: tuple[str, ...] = ("ads_read",)
#: A HIGH alert from this many days before either date: a week to get a new token issued and deployed.
HIGH_WITHIN_DAYS = 7.0
#: CRITICAL from this many days before either date: collection stops within a day.
CRITICAL_WITHIN_DAYS = 1.0
#: Attempts of one debug_token call on a transient failure (a network error, a throttle, a 5xx), and the
#: (connect, read) seconds of each: together within the 60 s Dagster gives a sensor tick, so a check that cannot
#: reach Meta fails its tick with the reason instead of timing out.
MAX_ATTEMPTS = 2
TIMEOUT: tuple[float, float] = (10.0, 20.0)
SECONDS_PER_DAY = 86_400.0

_NETWORK_ERRORS: tuple[type[Exception], ...] = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
)


class TokenUrgency(StrEnum):
    """How soon someone must rotate the token: not yet, within a week, now."""

    OK = "ok"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True)
class TokenInfo:
    """Meta's answer about the token (never the token itself). A date of None means never; `error` is Meta's
    reason when the token is not valid."""

    is_valid: bool
    expires_at: datetime | None
    data_access_expires_at: datetime | None
    scopes: tuple[str, ...]
    token_type: str = ""
    error: str = ""


@dataclass(frozen=True)
class TokenAssessment:
    """`info` judged at `now`: the urgency, one sentence per problem, and the days left before each date (None:
    never). `days_left` is the nearer of the two."""

    urgency: TokenUrgency
    problems: tuple[str, ...]
    expires_in_days: float | None
    data_access_expires_in_days: float | None
    missing_scopes: tuple[str, ...]
    info: TokenInfo

    @property
    def days_left(self) -> float | None:
        left = [d for d in (self.expires_in_days, self.data_access_expires_in_days) if d is not None]
        return min(left) if left else None


def _days_until(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else (moment - now).total_seconds() / SECONDS_PER_DAY


def _in_words(days: float) -> str:
    if days <= 0:
        return "has passed"
    return f"is in {days * 24:.0f} h" if days < 2 else f"is in {days:.1f} days"


def assess(
    info: TokenInfo, now: datetime, *, required_scopes: Sequence[str] = REQUIRED_SCOPES
) -> TokenAssessment:
    """The urgency of `info` at `now` (timezone-aware).

    CRITICAL: Meta reports the token invalid, a required scope is missing, or either date is at most
    `CRITICAL_WITHIN_DAYS` away (or past). HIGH: either date is at most `HIGH_WITHIN_DAYS` away. OK otherwise.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    expires_in = _days_until(info.expires_at, now)
    data_in = _days_until(info.data_access_expires_at, now)
    # A token refused outright comes back without scopes: it is invalid, not short of a scope.
    judged_scopes = info.is_valid or bool(info.scopes)
    missing = tuple(s for s in required_scopes if s not in info.scopes) if judged_scopes else ()
    critical: list[str] = []
    high: list[str] = []
    if not info.is_valid:
        critical.append(f"Meta reports the token invalid: {info.error or 'no reason given'}")
    if missing:
        critical.append(f"the token lacks the scope(s) {', '.join(missing)} that collection needs")
    for what, moment, days in (
        ("expiry", info.expires_at, expires_in),
        ("data-access expiry", info.data_access_expires_at, data_in),
    ):
        if moment is None or days is None:
            continue
        sentence = f"its {what} ({moment:%Y-%m-%d %H:%M} UTC) {_in_words(days)}"
        if days <= CRITICAL_WITHIN_DAYS:
            critical.append(sentence)
        elif days <= HIGH_WITHIN_DAYS:
            high.append(sentence)
    urgency = TokenUrgency.CRITICAL if critical else TokenUrgency.HIGH if high else TokenUrgency.OK
    return TokenAssessment(urgency, tuple(critical + high), expires_in, data_in, missing, info)


# --- Meta's answer ----------------------------------------------------------------------------------------------


def _moment(value: object, field: str) -> datetime | None:
    """A UNIX-seconds date; 0 (or absent) means never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise MalformedResponse(f"debug_token: {field} is not a UNIX timestamp: {value!r}")
    try:
        seconds = int(value)
    except ValueError:
        raise MalformedResponse(f"debug_token: {field} is not a UNIX timestamp: {value!r}") from None
    return None if seconds == 0 else datetime.fromtimestamp(seconds, UTC)


def parse_debug_token(body: Mapping[str, Any]) -> TokenInfo:
    """`TokenInfo` from a debug_token response body (`{"data": {...}}`); MalformedResponse for another shape."""
    data = body.get("data")
    if not isinstance(data, Mapping) or not isinstance(data.get("is_valid"), bool):
        raise MalformedResponse(
            f"debug_token answered JSON of an unexpected shape (keys: {sorted(body)[:10]}); "
            "expected data.is_valid"
        )
    scopes = data.get("scopes") or []
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise MalformedResponse(f"debug_token: scopes is not a list of names: {scopes!r}")
    error = data.get("error")
    reason = ""
    if isinstance(error, Mapping):
        code = "/".join(str(error[k]) for k in ("code", "subcode") if error.get(k) is not None)
        reason = f"{error.get('message') or 'no message'}" + (f" ({code})" if code else "")
    return TokenInfo(
        is_valid=data["is_valid"],
        expires_at=_moment(data.get("expires_at"), "expires_at"),
        data_access_expires_at=_moment(data.get("data_access_expires_at"), "data_access_expires_at"),
        scopes=tuple(scopes),
        token_type=str(data.get("type") or ""),
        error=reason,
    )


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, TransientError | Throttled)


def fetch_token_info(
    *,
    session: requests.Session,
    base_url: str,
    access_token: str,
    api_version: str = settings.META_API_VERSION,
    timeout: tuple[float, float] = TIMEOUT,
    max_attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> TokenInfo:
    """What Meta says about `access_token`, from one `GET /<version>/debug_token` (retried on transient failures).

    A token Meta refuses outright (error 190 or 102 on the call itself: expired, revoked, malformed) is an
    answer, not a failure: it comes back as `is_valid=False` with Meta's reason. Anything else that fails raises
    a `MetaApiError` whose message is redacted, so the caller can fail visibly without revealing the token.
    """
    if not access_token:
        raise ValueError("no access token to check")
    # urllib3 logs each request line at DEBUG, both tokens included.
    redact_url_loggers()
    url = f"{base_url.rstrip('/')}/{api_version}/debug_token"
    secrets = (access_token,)

    def attempt() -> dict[str, Any]:
        try:
            response = session.get(
                url, params={"input_token": access_token, "access_token": access_token}, timeout=timeout
            )
        except _NETWORK_ERRORS as exc:
            # `from None`: requests' exception text includes the URL, hence the token.
            raise TransientError(f"debug_token: {type(exc).__name__}: {exc}", secrets=secrets) from None
        except requests.RequestException as exc:
            raise MetaRequestError(f"debug_token: {type(exc).__name__}: {exc}", secrets=secrets) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or "error" in body:
            raise classify(response.status_code, body, response.headers, secrets=secrets) from None
        return body

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_attempts),
        wait=tenacity.wait_exponential(multiplier=1, max=5),
        retry=tenacity.retry_if_exception(_retryable),
        sleep=sleep,
        reraise=True,
    )
    try:
        body = retrying(attempt)
    except MetaApiError as exc:
        if exc.code in TOKEN_INVALID_CODES:
            return TokenInfo(
                is_valid=False,
                expires_at=None,
                data_access_expires_at=None,
                scopes=(),
                error=redact(f"{exc.message} ({exc.code_label})", secrets),
            )
        raise
    info = parse_debug_token(body)
    # Meta's reason is stored and shown; it never quotes the token, and this keeps it so.
    return replace(info, error=redact(info.error, secrets))
