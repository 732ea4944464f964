"""How the Graph API behaves around the data: which insights requests it accepts, how it pages, how async report
runs progress, and how it fails.

Nothing here keeps state between requests (`MetaSimulator` owns the report runs and counters), so the rules read
in one place and each can be tested on its own. Errors come in Meta's envelope with the HTTP status Meta uses for
each code (throttles are 400, never 429), and every response carries Meta's usage headers, so a client is tested
against what it will really parse.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from kpi_platform import settings
from kpi_platform.simulator.faults import ErrorCode

MAX_PAGE_LIMIT = 500
#: Fields the simulator serves; anything else is refused like an unknown field (Meta: code 100).
SUPPORTED_FIELDS: tuple[str, ...] = settings.INSIGHTS_FIELDS
#: Meta's answer when `fields` is absent.
DEFAULT_FIELDS: tuple[str, ...] = ("impressions", "spend")


# --- Graph API errors ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ErrorTemplate:
    status: int
    message: str
    subcode: int | None = None
    is_transient: bool | None = None


_RATE_LIMIT_HELP = (
    "For more info, please refer to https://developers.facebook.com/docs/graph-api/overview/rate-limiting."
)
UNSUPPORTED = (
    "Unsupported {method} request. Object with ID '{object}' does not exist, cannot be loaded due to missing "
    "permissions, or does not support this operation. Please read the Graph API documentation at "
    "https://developers.facebook.com/docs/graph-api"
)
#: Status and wording per code; Meta throttles with HTTP 400 (never 429), unknown errors come back as 500.
_ERRORS: dict[int, _ErrorTemplate] = {
    1: _ErrorTemplate(500, "An unknown error occurred", 99, True),
    2: _ErrorTemplate(500, "An unexpected error has occurred. Please retry your request later.", None, True),
    4: _ErrorTemplate(400, "(#4) Application request limit reached", 1504022, True),
    10: _ErrorTemplate(400, "(#10) Application does not have permission for this action", None, False),
    17: _ErrorTemplate(400, "(#17) User request limit reached", 2446079, False),
    32: _ErrorTemplate(400, "(#32) Page request limit reached", None, True),
    100: _ErrorTemplate(400, "(#100) Invalid parameter"),
    102: _ErrorTemplate(400, "Session key invalid or no longer valid", None, False),
    190: _ErrorTemplate(400, "Invalid OAuth access token - Cannot parse access token", None, False),
    200: _ErrorTemplate(400, "(#200) Permissions error", None, False),
    613: _ErrorTemplate(400, "(#613) Calls to this api have exceeded the rate limit.", 1487742, True),
    960: _ErrorTemplate(
        400,
        "Request aborted. This could happen if a dependent request failed or the request timed out.",
        None,
        True,
    ),
    2500: _ErrorTemplate(400, "Unknown path components"),
}
_SUBCODE_MESSAGES: dict[tuple[int, int], str] = {
    (100, 1487534): "Please reduce the amount of data you're asking for, then retry your request",
    (
        100,
        1504018,
    ): "Your request timed out. Please try a smaller date range, fetch fewer fields, or use async jobs.",
    (2, 1504038): "Your request timed out. Please retry with a smaller date range.",
    (2, 1504043): "An intermittent error occurred. Please retry your request later.",
    (190, 463): "Error validating access token: Session has expired.",
}


class GraphError(Exception):
    """An error the simulator answers with Meta's envelope; `status` is the HTTP status Meta uses for it."""

    def __init__(self, code: int, subcode: int | None = None, *, message: str | None = None) -> None:
        template = (
            _ERRORS.get(code) or _throttle_template(code) or _ErrorTemplate(400, f"(#{code}) Simulated error")
        )
        self.code = code
        self.subcode = subcode if subcode is not None else template.subcode
        self.message = message or _SUBCODE_MESSAGES.get((code, self.subcode or 0)) or template.message
        self.status = template.status
        self.is_transient = template.is_transient
        super().__init__(f"({code}/{self.subcode}) {self.message}")

    @classmethod
    def of(cls, spec: ErrorCode) -> GraphError:
        return cls(*spec) if isinstance(spec, tuple) else cls(spec)

    @property
    def label(self) -> str:
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)

    def envelope(self, *, fbtrace_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": "OAuthException", "code": self.code}
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.is_transient is not None:
            error["is_transient"] = self.is_transient
        error["fbtrace_id"] = fbtrace_id
        return {"error": error}


def _throttle_template(code: int) -> _ErrorTemplate | None:
    """Business-use-case throttles 80000..80014 share one wording and subcode."""
    if code not in settings.THROTTLE_CODES:
        return None
    return _ErrorTemplate(
        400,
        f"(#{code}) There have been too many calls from this ad-account. Wait a bit and try again. "
        + _RATE_LIMIT_HELP,
        2446079,
        True,
    )


# --- Request parsing: the insights query --------------------------------------------------------------------


@dataclass(frozen=True)
class InsightsQuery:
    """A validated campaign-level daily insights request for one ad account (dates inclusive)."""

    account_id: str
    fields: tuple[str, ...]
    since: date
    until: date

    @property
    def days(self) -> int:
        return (self.until - self.since).days + 1


def _months_before(day: date, months: int) -> date:
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    for candidate in range(day.day, 27, -1):
        try:
            return date(year, month + 1, candidate)
        except ValueError:
            continue
    return date(year, month + 1, min(day.day, 28))


def _parse_time_range(params: Mapping[str, str], today: date) -> tuple[date, date]:
    raw = params.get("time_range")
    if raw is None:
        return today - timedelta(days=30), today - timedelta(days=1)  # Meta's default preset: last_30d
    try:
        value = json.loads(raw)
        since, until = date.fromisoformat(value["since"]), date.fromisoformat(value["until"])
    except (ValueError, TypeError, KeyError):
        raise GraphError(
            100, message="(#100) Param time_range must be a JSON object with since and until dates"
        ) from None
    if until < since:
        raise GraphError(100, message="(#100) time_range: since must not be after until")
    return since, until


def parse_insights_query(
    params: Mapping[str, str], *, account_id: str, today: date, too_large_days: int | None = None
) -> InsightsQuery:
    """Validate an insights request the way Meta would refuse it; raises `GraphError` (code 100) otherwise."""
    if params.get("level", "account") != settings.INSIGHTS_LEVEL:
        raise GraphError(100, message="(#100) The simulator serves level=campaign only")
    if params.get("time_increment", "all_days") != str(settings.INSIGHTS_TIME_INCREMENT):
        raise GraphError(100, message="(#100) The simulator serves daily rows only: send time_increment=1")
    fields = (
        tuple(f.strip() for f in params["fields"].split(",") if f.strip())
        if "fields" in params
        else DEFAULT_FIELDS
    )
    for position, name in enumerate(fields):
        if name not in SUPPORTED_FIELDS:
            raise GraphError(
                100,
                message=f"(#100) fields[{position}] must be one of the following values: {', '.join(SUPPORTED_FIELDS)}",
            )
    since, until = _parse_time_range(params, today)
    oldest = _months_before(today, settings.INSIGHTS_RETENTION_MONTHS)
    if since < oldest:
        raise GraphError(
            100,
            message=f"(#100) The start date of the time range cannot be beyond "
            f"{settings.INSIGHTS_RETENTION_MONTHS} months from the current date (earliest: {oldest})",
        )
    query = InsightsQuery(account_id=account_id, fields=fields, since=since, until=until)
    if too_large_days is not None and query.days > too_large_days:
        raise GraphError(100, 1487534)
    return query


# --- Paging -------------------------------------------------------------------------------------------------


def _cursor(index: int) -> str:
    """Cursors are opaque to clients (and not stable over time at Meta); here they name a row position."""
    return base64.urlsafe_b64encode(f"row:{index}".encode()).decode().rstrip("=")


def _cursor_index(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, number = text.partition(":")
        if kind != "row":
            raise ValueError(cursor)
        return int(number)
    except ValueError:
        raise GraphError(100, message="(#100) Invalid cursor") from None


def _limit(params: Mapping[str, str], default: int) -> int:
    try:
        limit = int(params.get("limit", default))
    except ValueError:
        raise GraphError(100, message="(#100) Param limit must be an integer") from None
    if limit < 1:
        raise GraphError(100, message="(#100) Param limit must be positive")
    return min(limit, MAX_PAGE_LIMIT)


@dataclass(frozen=True)
class PageRequest:
    """Which slice of a result one request asks for; `number` is 1-based."""

    start: int
    limit: int

    @property
    def number(self) -> int:
        return self.start // self.limit + 1


def page_request(params: Mapping[str, str], *, default_limit: int) -> PageRequest:
    limit = _limit(params, default_limit)
    start = _cursor_index(params["after"]) + 1 if params.get("after") else 0
    return PageRequest(start=start, limit=limit)


def paged_body(
    rows: Sequence[Any],
    page: PageRequest,
    *,
    render: Callable[[Any], dict[str, Any]],
    next_url: Callable[[str], str],
) -> dict[str, Any]:
    """`{"data": [...], "paging": {...}}`; `paging.next` only while rows remain, no `paging` for an empty result."""
    chunk = rows[page.start : page.start + page.limit]
    body: dict[str, Any] = {"data": [render(row) for row in chunk]}
    if not chunk:
        return body
    last = page.start + len(chunk) - 1
    body["paging"] = {"cursors": {"before": _cursor(page.start), "after": _cursor(last)}}
    if last + 1 < len(rows):
        body["paging"]["next"] = next_url(_cursor(last))
    return body


# --- Async report runs --------------------------------------------------------------------------------------


@dataclass
class ReportRun:
    """One async job; it advances one step per status poll."""

    id: str
    query: InsightsQuery
    polls: int = 0


def report_status(
    run: ReportRun, *, polls_to_complete: int, stuck: bool, fail: bool
) -> tuple[settings.AsyncStatus, int]:
    """(async_status, async_percent_completion) after `run.polls` polls.

    "Job Not Started" on the first poll, then "Job Running" with a rising percentage, then "Job Completed" on poll
    `polls_to_complete`. A stuck run reports "Job Running" at 100 % forever, as Meta's sometimes do.
    """
    if stuck:
        return "Job Running", 100
    if run.polls >= polls_to_complete:
        return ("Job Failed", 0) if fail else ("Job Completed", 100)
    if run.polls <= 1:
        return "Job Not Started", 0
    return "Job Running", round(100 * (run.polls - 1) / max(1, polls_to_complete - 1))


def report_run_body(run: ReportRun, status: settings.AsyncStatus, percent: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": run.id,
        "account_id": run.query.account_id,
        "async_status": status,
        "async_percent_completion": percent,
        "date_start": run.query.since.isoformat(),
        "date_stop": run.query.until.isoformat(),
    }
    if status == "Job Failed":
        body.update(error_code=-2, error_subcode=2490547, error_message="Report Failed. Try again later.")
    return body


# --- Token introspection: GET /debug_token ----------------------------------------------------------------

#: The app the simulator's tokens belong to, and the system user they are issued to.
SIMULATOR_APP_ID = "100000000000001"
SIMULATOR_USER_ID = "100000000000002"


def _epoch(moment: datetime | None) -> int:
    """Meta's timestamps are UNIX seconds; 0 means never (a system user's token that does not expire)."""
    return int(moment.timestamp()) if moment is not None else 0


def debug_token_body(
    *,
    input_token: str,
    invalid_token: str,
    expires_at: datetime | None,
    data_access_expires_at: datetime | None,
    scopes: Sequence[str],
    now: datetime,
) -> dict[str, Any]:
    """What `GET /debug_token?input_token=…` answers about `input_token`: `is_valid`, both expiries (UNIX seconds,
    0 = never) and the granted `scopes`. A token past its expiry, or the simulator's `invalid_token`, is reported
    `is_valid: false` with the error Meta gives (190/463, 190/460), not as an error response: the caller's own
    token is what authenticates the request."""
    data: dict[str, Any] = {
        "app_id": SIMULATOR_APP_ID,
        "type": "SYSTEM_USER",
        "application": "KPI platform (simulated)",
        "data_access_expires_at": _epoch(data_access_expires_at),
        "expires_at": _epoch(expires_at),
        "is_valid": True,
        "issued_at": int(now.timestamp()) - 86_400,
        "scopes": list(scopes),
        "user_id": SIMULATOR_USER_ID,
    }
    if input_token == invalid_token:
        data["is_valid"] = False
        data["error"] = {"code": 190, "subcode": 460, "message": "The session has been invalidated."}
    elif expires_at is not None and expires_at <= now:
        data["is_valid"] = False
        data["error"] = {
            "code": 190,
            "subcode": 463,
            "message": f"Error validating access token: Session has expired on {expires_at:%A, %d-%b-%y %H:%M:%S} UTC.",
        }
    return {"data": data}


# --- Usage headers and rate limits ------------------------------------------------------------------------


@dataclass(frozen=True)
class RateLimits:
    """How the simulator counts calls against Meta's limits: every insights and report request (errors included,
    as Meta counts them) within a sliding window of `window_s` seconds, per ad account and for the whole app.

    Usage is `100 × calls in the window / limit`: it rises with the call rate and falls as calls leave the window.
    A call that takes an ad account past `account_calls` gets 80000/2446079 (business use case `ads_insights`), one
    that takes the app past `app_calls` gets 4/1504022. The defaults (600 calls per account and 20 000 per app
    within an hour) leave room for a year's backfill of many clients; tests tighten them to provoke throttling.
    """

    window_s: float = 3600.0
    account_calls: int = 600
    app_calls: int = 20_000

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if self.account_calls < 1 or self.app_calls < 1:
            raise ValueError(f"call limits must be at least 1, got {self.account_calls} and {self.app_calls}")


@dataclass(frozen=True)
class UsageSnapshot:
    """The usage one response reports: percent of the ad account's and the app's limit, and the wait until the
    next call would be let through again (0 below 100 %)."""

    account_pct: float
    app_pct: float
    regain_s: float = 0.0
    reset_s: float = 0.0

    @classmethod
    def throttled(cls, regain_minutes: float | None) -> UsageSnapshot:
        """What an injected throttle error reports: 100 % and the configured regain time."""
        return cls(account_pct=100.0, app_pct=100.0, regain_s=(regain_minutes or 0) * 60.0, reset_s=300.0)

    @property
    def over_account_limit(self) -> bool:
        return self.account_pct > 100.0

    @property
    def over_app_limit(self) -> bool:
        return self.app_pct > 100.0


def usage_of(
    calls: Sequence[float], *, limit: int, window_s: float, now: float
) -> tuple[float, float, float]:
    """(percent, regain_s, reset_s) of the ordered call times `calls` still in the window at `now`.

    `regain_s`: at 100 % or more, the time until enough calls have left the window for one more to be let
    through (the (n − limit + 1)-th oldest call leaving), else 0. `reset_s`: until the newest call leaves it.
    """
    pct = 100.0 * len(calls) / limit
    regain = 0.0
    if len(calls) >= limit:
        regain = max(0.0, calls[len(calls) - limit] + window_s - now)
    reset = max(0.0, calls[-1] + window_s - now) if calls else 0.0
    return pct, regain, reset


def rate_limit_error(usage: UsageSnapshot) -> GraphError | None:
    """The throttle error of a call past a limit (the ad account's first), None within the limits."""
    if usage.over_account_limit:
        return GraphError(80000, 2446079)
    if usage.over_app_limit:
        return GraphError(4, 1504022)
    return None


def usage_headers(*, account_id: str, usage: UsageSnapshot) -> dict[str, str]:
    """Meta's three usage headers (JSON inside headers, values in percent) plus the insights throttle header.

    `estimated_time_to_regain_access` is in whole minutes, rounded up, as Meta sends it (docs §2.5);
    `reset_time_duration` in seconds.
    """
    account, app = round(usage.account_pct, 2), round(usage.app_pct, 2)
    # Rounded up: whole minutes once a wait is a minute or more, thousandths below (short simulated windows).
    minutes = usage.regain_s / 60.0
    regain_minutes = math.ceil(minutes) if minutes >= 1 else math.ceil(minutes * 1000) / 1000

    def dumps(value: object) -> str:
        return json.dumps(value, separators=(",", ":"))

    return {
        "X-App-Usage": dumps({"call_count": app, "total_time": app / 2, "total_cputime": app / 2}),
        "X-Ad-Account-Usage": dumps(
            {
                "acc_id_util_pct": account,
                "reset_time_duration": math.ceil(usage.reset_s),
                "ads_api_access_tier": "standard_access",
            }
        ),
        "X-Business-Use-Case-Usage": dumps(
            {
                account_id: [
                    {
                        "type": "ads_insights",
                        "call_count": account,
                        "total_cputime": account / 2,
                        "total_time": account / 2,
                        "estimated_time_to_regain_access": regain_minutes,
                        "ads_api_access_tier": "standard_access",
                    }
                ]
            }
        ),
        "x-fb-ads-insights-throttle": dumps(
            {"app_id_util_pct": app, "acc_id_util_pct": account, "ads_api_access_tier": "standard_access"}
        ),
    }
