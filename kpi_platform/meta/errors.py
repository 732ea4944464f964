"""Meta API error taxonomy, classified from the Graph API JSON error envelope, and secret redaction.

Meta reports throttling as HTTP 400 with a code in the body (docs/meta-insights-api.md §2.4), so the HTTP status
decides only when there is no recognisable envelope. Every message stored on an exception has passed `redact`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, SupportsIndex, SupportsInt, TypedDict, Unpack
from urllib.parse import quote, quote_plus

from kpi_platform import settings

REDACTED = "***"

# `access_token=...` (and `input_token=...`, the token `debug_token` inspects) in query strings and form bodies,
# and `"access_token": "..."` / `"input_token": "..."` in JSON text.
_TOKEN_QUERY = re.compile(r"((?:access|input)_token=)[^&#\s\"'<>]+", re.IGNORECASE)
_TOKEN_JSON = re.compile(r"(\"(?:access|input)_token\"\s*:\s*\")[^\"]*(\")", re.IGNORECASE)

#: 190 subcodes Meta documents for invalid sessions (docs §2.4): app removed, checkpoint, password changed,
#: expired, unconfirmed user, logged out / invalid.
TOKEN_SUBCODES = frozenset({458, 459, 460, 463, 464, 467})
TOKEN_INVALID_CODES = frozenset({190, 102})
#: Meta's "Report Failed… try again later" for async jobs (docs §2.4: -2 / 2490547).
ASYNC_FAILED_CODE = -2

RUNBOOK_TOKEN = "README › Runbook › Rotating the token"


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """`text` as a string with every secret (raw or URL-encoded) and every `access_token` / `input_token` value
    replaced."""
    out = str(text)
    for secret in secrets:
        if not secret:
            continue
        for variant in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
            out = out.replace(variant, REDACTED)
    out = _TOKEN_QUERY.sub(rf"\g<1>{REDACTED}", out)
    return _TOKEN_JSON.sub(rf"\g<1>{REDACTED}\g<2>", out)


class ErrorFields(TypedDict, total=False):
    """The keyword fields of every `MetaApiError`, passed on as `**fields` by code that builds them."""

    code: int | None
    subcode: int | None
    fbtrace_id: str | None
    client_id: str | None
    status_code: int | None
    secrets: Iterable[str | None]


class MetaApiError(Exception):
    """A failed Meta API call. `transient` says whether a later attempt may succeed."""

    transient: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        fbtrace_id: str | None = None,
        client_id: str | None = None,
        status_code: int | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.message = redact(message, secrets)
        self.code = code
        self.subcode = subcode
        self.fbtrace_id = fbtrace_id
        self.client_id = client_id
        self.status_code = status_code
        super().__init__(self.message)

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only fields survive pickling (multiprocess executors)
        return (_rebuild, (type(self), dict(self.__dict__)))

    def in_context(self, where: str, secrets: Iterable[str | None] = ()) -> MetaApiError:
        """The same error (same type and fields) with `where` it happened appended to its message, e.g. the date
        range and the page being read."""
        state = dict(self.__dict__)
        state["message"] = f"{self.message.rstrip('. ')} [{redact(where, secrets)}]"
        return _rebuild(type(self), state)

    @property
    def code_label(self) -> str:
        """`code/subcode` as Meta writes it, e.g. `190/463`; empty without a code."""
        if self.code is None:
            return ""
        return f"{self.code}/{self.subcode}" if self.subcode is not None else str(self.code)


class Throttled(MetaApiError):
    """A rate limit (codes 4, 17, 32, 613, 80000–80014). `wait_seconds` comes from the usage header, else None."""

    transient = True

    def __init__(
        self, message: str, *, wait_seconds: float | None = None, **kwargs: Unpack[ErrorFields]
    ) -> None:
        super().__init__(message, **kwargs)
        self.wait_seconds = wait_seconds


class TransientError(MetaApiError):
    """Meta or the network failed in a way worth retrying (codes 1, 2, 960, `is_transient`, 5xx, timeouts)."""

    transient = True


class MalformedResponse(TransientError):
    """A response that is not the JSON shape Meta documents; Meta's corrupted pages succeed on retry."""


class TokenInvalid(MetaApiError):
    """The access token is invalid, expired or revoked (190, 102). Never retried: someone must rotate it."""


class PermissionDenied(MetaApiError):
    """The token lacks a permission for this ad account (10, 200–299). Never retried: someone must grant it."""


class QueryTooLarge(MetaApiError):
    """Meta refuses the data volume of one call (100/1487534, 100/1504018): ask for a smaller date range."""


class AsyncReportFailed(MetaApiError):
    """An async report run ended `Job Failed` / `Job Skipped`; Meta says to start it again later."""

    transient = True


class AsyncReportTimeout(MetaApiError):
    """An async report run did not complete within the allowed wait (runs can stay `Job Running` for ever)."""

    transient = True


class MetaRequestError(MetaApiError):
    """Any other refusal (bad parameter, unknown object…): retrying the same request cannot help."""


def _rebuild(cls: type[MetaApiError], state: dict[str, Any]) -> MetaApiError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error


def _as_int(value: object) -> int | None:
    # What `int()` accepts; anything else (None, lists, objects from JSON) would raise TypeError.
    if not isinstance(value, str | bytes | bytearray | SupportsInt | SupportsIndex):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def throttle_wait_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds until access returns per X-Business-Use-Case-Usage (minutes in the header; the max over all
    entries), or None when the header is absent, unreadable or says 0."""
    raw = _header(headers, "X-Business-Use-Case-Usage")
    if not raw:
        return None
    try:
        usage = json.loads(raw)
    except ValueError:
        return None
    minutes: list[float] = []
    if isinstance(usage, Mapping):
        for entries in usage.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                if isinstance(entry, Mapping):
                    try:
                        minutes.append(float(entry.get("estimated_time_to_regain_access") or 0))
                    except (TypeError, ValueError):
                        continue
    longest = max(minutes, default=0.0)
    return longest * 60.0 if longest > 0 else None


def act_id(ad_account_id: str) -> str:
    """The ad account as Meta addresses it: `act_<digits>`, whether or not the prefix was given."""
    return ad_account_id if ad_account_id.startswith("act_") else f"act_{ad_account_id}"


def _who(client_id: str | None, ad_account_id: str | None) -> str:
    if client_id and ad_account_id:
        return f"client '{client_id}' ({act_id(ad_account_id)}): "
    if client_id:
        return f"client '{client_id}': "
    return ""


def classify(
    status_code: int,
    body: object,
    headers: Mapping[str, str] | None = None,
    *,
    client_id: str | None = None,
    ad_account_id: str | None = None,
    secrets: Iterable[str | None] = (),
) -> MetaApiError:
    """The exception for one failed response: decided by the JSON error envelope when there is one, by the
    HTTP status only when there is none. `body` is the parsed JSON (None when the body was not JSON)."""
    secrets = tuple(secrets)
    who = _who(client_id, ad_account_id)
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping) or _as_int(error.get("code")) is None:
        common: ErrorFields = {"client_id": client_id, "status_code": status_code, "secrets": secrets}
        if status_code >= 500 or status_code == 408:
            return TransientError(
                f"{who}Meta API answered HTTP {status_code} without an error body", **common
            )
        if status_code == 429:
            # Not Meta's convention, but proxies in front of it answer so.
            return Throttled(
                f"{who}HTTP 429 without an error body", wait_seconds=throttle_wait_seconds(headers), **common
            )
        if 200 <= status_code < 300:
            return MalformedResponse(
                f"{who}Meta API answered HTTP {status_code} with an unexpected body", **common
            )
        return MetaRequestError(f"{who}Meta API answered HTTP {status_code} without an error body", **common)

    code = _as_int(error.get("code"))
    subcode = _as_int(error.get("error_subcode"))
    fields: ErrorFields = {
        "code": code,
        "subcode": subcode,
        "fbtrace_id": error.get("fbtrace_id"),
        "client_id": client_id,
        "status_code": status_code,
        "secrets": secrets,
    }
    label = f"{code}/{subcode}" if subcode is not None else str(code)
    meta_message = str(error.get("message") or "no message")
    detail = f"(code {label}, fbtrace_id {error.get('fbtrace_id')}): {meta_message}"

    if (code, subcode) in settings.QUERY_TOO_LARGE:
        return QueryTooLarge(f"{who}Meta refused the data volume of one call {detail}", **fields)
    if code in TOKEN_INVALID_CODES:
        return TokenInvalid(
            f"{who}the Meta access token is invalid or expired (code {label}). Create a new system-user token "
            f"and set {settings.ENV_TOKEN}; see {RUNBOOK_TOKEN}. Meta said: {meta_message}",
            **fields,
        )
    if code in settings.TOKEN_CODES:
        return PermissionDenied(
            f"{who}the Meta access token lacks permission for this ad account (code {label}). Give the system "
            f"user ads_read on the ad account in Business Settings, or fix the ad account id in clients.yaml. "
            f"Meta said: {meta_message}",
            **fields,
        )
    if code in settings.THROTTLE_CODES:
        return Throttled(
            f"{who}Meta rate limit reached {detail}", wait_seconds=throttle_wait_seconds(headers), **fields
        )
    if code == 2 and subcode in settings.NON_TRANSIENT_SUBCODES:
        return MetaRequestError(f"{who}Meta refused the requested fields or breakdowns {detail}", **fields)
    if code in settings.TRANSIENT_CODES or error.get("is_transient") is True:
        return TransientError(f"{who}Meta reported a temporary error {detail}", **fields)
    if code == ASYNC_FAILED_CODE:
        return AsyncReportFailed(f"{who}Meta async report failed {detail}", **fields)
    if status_code >= 500:
        # An error code we do not know, on a server error: Meta's own outages answer this way, so retry it.
        return TransientError(f"{who}Meta answered HTTP {status_code} {detail}", **fields)
    return MetaRequestError(f"{who}Meta refused the request {detail}", **fields)
