"""MetaInsightsClient: campaign-day insights over one requests.Session, with paging, async report jobs, retries,
throttle waits and date-range splitting; it returns raw API rows (parse.py types them).

Every request has a timeout; the access token travels as the `access_token` parameter, as Meta expects, and is
removed from every log line and exception by `errors.redact`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final, Protocol, SupportsFloat, SupportsIndex, SupportsInt
from urllib.parse import parse_qs, urlsplit

import requests
import tenacity

from kpi_platform import settings
from kpi_platform.meta.errors import (
    AsyncReportFailed,
    AsyncReportTimeout,
    ErrorFields,
    MalformedResponse,
    MetaApiError,
    MetaRequestError,
    QueryTooLarge,
    Throttled,
    TransientError,
    act_id,
    classify,
    redact,
)
from kpi_platform.meta.pacing import Pacer, read_usage

#: (connect, read) seconds for every request.
DEFAULT_TIMEOUT: tuple[float, float] = settings.HTTP_TIMEOUT
#: Header set by the local simulator on every response; it marks the fetched rows as simulated.
SIMULATOR_HEADER = "X-KPI-Simulator"
ASYNC_COMPLETED: Final[settings.AsyncStatus] = "Job Completed"
ASYNC_FAILED: frozenset[settings.AsyncStatus] = frozenset({"Job Failed", "Job Skipped"})
#: Only fields every API version has: `error_code` etc. exist from v25.0 and are read when present.
ASYNC_STATUS_FIELDS = "id,async_status,async_percent_completion"

_NETWORK_ERRORS: tuple[type[Exception], ...] = (
    requests.Timeout,
    requests.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)

Validator = Callable[[Mapping[str, Any]], bool]

#: Third-party loggers that write request URLs (urllib3 logs each one at DEBUG, token included).
URL_LOGGERS: tuple[str, ...] = ("urllib3.connectionpool",)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message through `redact`, so `access_token` values never reach a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def redact_url_loggers() -> None:
    """Attach one RedactingFilter to each of URL_LOGGERS (idempotent)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


@dataclass(frozen=True)
class InsightsFetch:
    """Every raw campaign-day row of one client × date range (all pages, all splits), and what it cost.

    `requests` counts HTTP attempts, `retries` the attempts that were repeated, `throttle_wait_s` the seconds
    slept because Meta throttled, `splits` how often a range was halved, `source` whether the simulator answered.
    `max_usage_pct` is the highest usage figure (percent of a Meta rate limit, ad account or app) of any response,
    `paced_s` the seconds slept before calls because that usage was high (meta/pacing.py).
    """

    rows: tuple[dict, ...]
    requests: int
    retries: int
    throttle_wait_s: float
    source: str
    splits: int
    used_async: bool
    max_usage_pct: float = 0.0
    paced_s: float = 0.0


class InsightsSource(Protocol):
    """What collection needs from the Meta client (the client itself, or the client behind the breakers)."""

    def fetch_campaign_insights(
        self, *, client_id: str, ad_account_id: str, since: date, until: date
    ) -> InsightsFetch: ...


class ClosableInsightsSource(InsightsSource, Protocol):
    """An `InsightsSource` holding a connection, closed by whoever built it: what the Meta resource hands a run
    (`MetaInsightsClient`, a fake in tests) and what the breakers wrap."""

    def close(self) -> None: ...


@dataclass
class _Tally:
    requests: int = 0
    retries: int = 0
    throttle_wait_s: float = 0.0
    simulator: bool = False
    splits: int = 0
    used_async: bool = False
    max_usage_pct: float = 0.0
    paced_s: float = 0.0


@dataclass(frozen=True)
class _Call:
    """One fetch: who it is for (named in errors and logs) and its running tally."""

    client_id: str
    account: str
    tally: _Tally

    @property
    def who(self) -> str:
        return f"client '{self.client_id}' ({self.account})"


def _is_page(body: Mapping[str, Any]) -> bool:
    data = body.get("data")
    paging = body.get("paging", {})
    return (
        isinstance(data, list)
        and all(isinstance(row, dict) for row in data)
        and isinstance(paging, dict)
        and isinstance(paging.get("next", ""), str)
    )


def _is_report_run(body: Mapping[str, Any]) -> bool:
    return isinstance(body.get("report_run_id"), str | int) and str(body["report_run_id"]) != ""


def _is_report_status(body: Mapping[str, Any]) -> bool:
    return isinstance(body.get("async_status"), str)


def _as_int(value: object) -> int | None:
    # What `int()` accepts; anything else (None, lists, objects from JSON) would raise TypeError.
    if not isinstance(value, str | bytes | bytearray | SupportsInt | SupportsIndex):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _page_label(what: str, number: int, url: str) -> str:
    """`what`, the page number and the paging cursor the page's URL starts after (never the URL: it holds the token)."""
    after = parse_qs(urlsplit(url).query).get("after")
    return f"{what}, page {number}" + (f" after cursor {after[0]}" if after else "")


def _percent(value: object) -> int:
    # What `float()` accepts; anything else (None, lists, objects from JSON) would raise TypeError.
    if not isinstance(value, str | bytes | bytearray | SupportsFloat | SupportsIndex):
        return 0
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


class MetaInsightsClient:
    """Campaign-level daily insights for one ad account at a time. The client owns `session` and closes it.

    The usage headers of every response are read; with a `pacer`, each call first waits as the latest usage of
    its ad account and the app says (meta/pacing.py), and each response's usage is recorded for the next call.
    """

    def __init__(
        self,
        *,
        base_url: str,
        access_token: str,
        api_version: str = settings.META_API_VERSION,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        max_attempts: int = settings.MAX_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        async_threshold_days: int = settings.ASYNC_THRESHOLD_DAYS,
        async_max_wait_s: float = settings.ASYNC_MAX_WAIT_SECONDS,
        async_poll_s: float = settings.ASYNC_POLL_SECONDS,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_throttle_wait_s: float = 900,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self._base_url = base_url.rstrip("/")
        self._token = access_token
        self._api_version = api_version
        self._session = session or requests.Session()
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._sleep = sleep
        self._async_threshold_days = async_threshold_days
        self._async_max_wait_s = async_max_wait_s
        self._async_poll_s = async_poll_s
        self._max_throttle_wait_s = max_throttle_wait_s
        self._backoff = tenacity.wait_exponential_jitter(
            initial=backoff_base_s, max=backoff_max_s, jitter=backoff_base_s
        )
        self._log = logger or logging.getLogger(__name__)
        self._pacer = pacer
        redact_url_loggers()

    def __repr__(self) -> str:
        return f"MetaInsightsClient(base_url={self._base_url!r}, api_version={self._api_version!r})"

    def __enter__(self) -> MetaInsightsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # --- public API -------------------------------------------------------------------------------------------

    def fetch_campaign_insights(
        self, *, client_id: str, ad_account_id: str, since: date, until: date
    ) -> InsightsFetch:
        """All campaign-day rows of `ad_account_id` for `since`..`until` (inclusive), or an exception: never a
        partial result. Ranges longer than `async_threshold_days` use an async report run; a range Meta finds
        too large is halved until it fits (a single day that is still too large raises `QueryTooLarge`).

        Raises a `MetaApiError` subclass: `TokenInvalid` / `PermissionDenied` at once, `Throttled` when Meta (or the
        pacer, from the usage headers) asks for a wait beyond `max_throttle_wait_s`, the last error once
        `max_attempts` attempts of one request failed.
        """
        if until < since:
            raise ValueError(f"date range for client '{client_id}' ends ({until}) before it starts ({since})")
        call = _Call(client_id=client_id, account=act_id(ad_account_id), tally=_Tally())
        rows = self._fetch_range(call, since, until)
        tally = call.tally
        return InsightsFetch(
            rows=tuple(rows),
            requests=tally.requests,
            retries=tally.retries,
            throttle_wait_s=tally.throttle_wait_s,
            source=settings.SOURCE_SIMULATOR if tally.simulator else settings.SOURCE_META,
            splits=tally.splits,
            used_async=tally.used_async,
            max_usage_pct=tally.max_usage_pct,
            paced_s=tally.paced_s,
        )

    # --- date ranges ------------------------------------------------------------------------------------------

    def _fetch_range(self, call: _Call, since: date, until: date) -> list[dict]:
        try:
            if (until - since).days + 1 > self._async_threshold_days:
                return self._fetch_async(call, since, until)
            return self._collect_pages(
                call,
                self._url(f"{call.account}/insights"),
                self._params(since, until),
                what=f"insights {since}..{until}",
            )
        except QueryTooLarge as exc:
            if since == until:
                raise QueryTooLarge(
                    f"{exc.message} ({since} is a single day and cannot be split further)",
                    code=exc.code,
                    subcode=exc.subcode,
                    fbtrace_id=exc.fbtrace_id,
                    client_id=exc.client_id,
                    status_code=exc.status_code,
                ) from None
            middle = since + timedelta(days=(until - since).days // 2)
            call.tally.splits += 1
            self._log.info(
                "%s: Meta found %s..%s too large; fetching %s..%s and %s..%s",
                call.who,
                since,
                until,
                since,
                middle,
                middle + timedelta(days=1),
                until,
            )
            return self._fetch_range(call, since, middle) + self._fetch_range(
                call, middle + timedelta(days=1), until
            )

    @staticmethod
    def _params(since: date, until: date) -> dict[str, str]:
        return {
            "level": settings.INSIGHTS_LEVEL,
            "fields": ",".join(settings.INSIGHTS_FIELDS),
            "time_range": json.dumps(
                {"since": since.isoformat(), "until": until.isoformat()}, separators=(",", ":")
            ),
            "time_increment": str(settings.INSIGHTS_TIME_INCREMENT),
            "limit": str(settings.INSIGHTS_PAGE_LIMIT),
        }

    # --- async report runs ------------------------------------------------------------------------------------

    def _fetch_async(self, call: _Call, since: date, until: date) -> list[dict]:
        call.tally.used_async = True
        # Meta: "-2/2490547 Report Failed… try again later": a failed run is started again, not resumed.
        run_report = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._max_attempts),
            wait=self._backoff,
            retry=tenacity.retry_if_exception_type(AsyncReportFailed),
            sleep=self._sleep,
            before_sleep=lambda state: self._before_retry(call, state),
            reraise=True,
        )
        report_id = run_report(self._run_report, call, since, until)
        return self._collect_pages(
            call,
            self._url(f"{report_id}/insights"),
            {"limit": str(settings.INSIGHTS_PAGE_LIMIT)},
            what=f"async report {report_id} for {since}..{until}",
        )

    def _run_report(self, call: _Call, since: date, until: date) -> str:
        """Start a report run and wait for it; its id once `Job Completed` at 100 %."""
        try:
            created = self._request(
                call,
                "POST",
                self._url(f"{call.account}/insights"),
                params=self._params(since, until),
                valid=_is_report_run,
            )
        except MetaApiError as exc:
            raise exc.in_context(f"starting an async report for {since}..{until}", (self._token,)) from None
        report_id = str(created["report_run_id"])
        waited = 0.0
        # Small reports finish in well under a second; start polling quickly and back off to the poll interval.
        pause = min(settings.ASYNC_FIRST_POLL_SECONDS, self._async_poll_s)
        while True:
            try:
                status = self._request(
                    call,
                    "GET",
                    self._url(report_id),
                    params={"fields": ASYNC_STATUS_FIELDS},
                    valid=_is_report_status,
                )
            except MetaApiError as exc:
                where = f"polling async report {report_id} for {since}..{until}"
                raise exc.in_context(where, (self._token,)) from None
            state: str = status["async_status"]
            percent = _percent(status.get("async_percent_completion"))
            # "Job Running" can report 100 % before the results are readable.
            if state == ASYNC_COMPLETED and percent >= 100:
                return report_id
            if state in ASYNC_FAILED:
                self._raise_report_failure(call, report_id, since, until, status)
            if waited >= self._async_max_wait_s:
                raise AsyncReportTimeout(
                    f"{call.who}: async report {report_id} for {since}..{until} still '{state}' at {percent} % "
                    f"after {waited:g} s",
                    client_id=call.client_id,
                    secrets=(self._token,),
                )
            self._sleep(pause)
            waited += pause
            pause = min(pause * 2, self._async_poll_s)

    def _raise_report_failure(
        self, call: _Call, report_id: str, since: date, until: date, status: Mapping[str, Any]
    ) -> None:
        code, subcode = _as_int(status.get("error_code")), _as_int(status.get("error_subcode"))
        reason = status.get("error_message") or status.get("error_user_msg") or "no reason given"
        fields: ErrorFields = {
            "code": code,
            "subcode": subcode,
            "client_id": call.client_id,
            "secrets": (self._token,),
        }
        text = f"{call.who}: async report {report_id} for {since}..{until} ended '{status['async_status']}': {reason}"
        if (code, subcode) in settings.QUERY_TOO_LARGE:
            raise QueryTooLarge(text, **fields)
        raise AsyncReportFailed(text, **fields)

    # --- paging and requests ----------------------------------------------------------------------------------

    def _collect_pages(self, call: _Call, url: str, params: Mapping[str, str], *, what: str) -> list[dict]:
        """Rows of every page, following `paging.next` verbatim until a page has none (pages may be empty).

        A failure (after the retries of its request) names `what` was read (date range, async report) and the
        page: its number and the cursor it starts after."""
        rows: list[dict] = []
        next_url: str | None = url
        next_params: Mapping[str, str] | None = params
        seen: set[str] = set()
        number = 1
        while next_url:
            try:
                page = self._request(call, "GET", next_url, params=next_params, valid=_is_page)
            except MetaApiError as exc:
                raise exc.in_context(_page_label(what, number, next_url), (self._token,)) from None
            rows.extend(page["data"])
            next_url = page.get("paging", {}).get("next") or None
            next_params = None
            if next_url in seen:
                raise MalformedResponse(
                    f"{call.who}: paging.next repeats a page already read: {next_url} "
                    f"[{_page_label(what, number + 1, next_url)}]",
                    client_id=call.client_id,
                    secrets=(self._token,),
                )
            if next_url:
                seen.add(next_url)
            number += 1
        return rows

    def _is_own_host(self, url: str) -> bool:
        own, other = urlsplit(self._base_url), urlsplit(url)
        return (own.scheme, own.netloc) == (other.scheme, other.netloc)

    def _url(self, path: str) -> str:
        return f"{self._base_url}/{self._api_version}/{path}"

    def _request(
        self,
        call: _Call,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None,
        valid: Validator,
    ) -> dict:
        """The JSON object of one successful response, retrying throttles and transient failures."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception(self._should_retry),
            sleep=self._sleep,
            before_sleep=lambda state: self._before_retry(call, state),
            reraise=True,
        )
        return retrying(self._attempt, call, method, url, params, valid)

    def _attempt(
        self, call: _Call, method: str, url: str, params: Mapping[str, str] | None, valid: Validator
    ) -> dict:
        secrets = (self._token,)
        if self._pacer is not None:
            call.tally.paced_s += self._pacer.before_call(
                call.account, max_wait_s=self._max_throttle_wait_s, client_id=call.client_id, secrets=secrets
            )
        call.tally.requests += 1
        query = dict(params or {})
        # `paging.next` already carries the token; other URLs get it added, but only on our own API host.
        if "access_token" not in parse_qs(urlsplit(url).query) and self._is_own_host(url):
            query["access_token"] = self._token
        self._log.debug("%s: %s %s", call.who, method, redact(url, secrets))
        try:
            if method == "GET":
                response = self._session.get(url, params=query, timeout=self._timeout)
            else:
                # Form body: keeps the token out of URLs that proxies and servers log.
                response = self._session.request(method, url, data=query, timeout=self._timeout)
        except _NETWORK_ERRORS as exc:
            # `from None`: requests' exception text includes the URL, hence the token.
            raise TransientError(
                f"{call.who}: {type(exc).__name__} on {method} {url}: {exc}",
                client_id=call.client_id,
                secrets=secrets,
            ) from None
        except requests.RequestException as exc:
            raise MetaRequestError(
                f"{call.who}: {type(exc).__name__} on {method} {url}: {exc}",
                client_id=call.client_id,
                secrets=secrets,
            ) from None
        if response.headers.get(SIMULATOR_HEADER):
            call.tally.simulator = True
        # Every response, errors included: the usage it reports paces the next call (of any run, with a pacer).
        if self._pacer is not None:
            usage = self._pacer.after_response(call.account, response.headers)
        else:
            usage = read_usage(response.headers)
        if usage is not None:
            call.tally.max_usage_pct = max(call.tally.max_usage_pct, usage.max_pct)
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200 or not isinstance(body, dict) or "error" in body:
            raise classify(
                response.status_code,
                body,
                response.headers,
                client_id=call.client_id,
                ad_account_id=call.account,
                secrets=secrets,
            ) from None
        if not valid(body):
            raise MalformedResponse(
                f"{call.who}: {method} {urlsplit(url).path} answered JSON of an unexpected shape "
                f"(keys: {sorted(body)[:10]})",
                client_id=call.client_id,
                status_code=response.status_code,
                secrets=secrets,
            )
        return body

    # --- retry policy -----------------------------------------------------------------------------------------

    def _should_retry(self, exc: BaseException) -> bool:
        if isinstance(exc, Throttled):
            return exc.wait_seconds is None or exc.wait_seconds <= self._max_throttle_wait_s
        return isinstance(exc, TransientError)

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Throttled) and exc.wait_seconds:
            return exc.wait_seconds
        return self._backoff(state)

    def _before_retry(self, call: _Call, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        call.tally.retries += 1
        if isinstance(exc, Throttled):
            call.tally.throttle_wait_s += wait
        message = exc.message if isinstance(exc, MetaApiError) else str(exc)
        self._log.warning(
            "%s: attempt %d of %d failed (%s), retrying in %.1f s: %s",
            call.who,
            state.attempt_number,
            self._max_attempts,
            type(exc).__name__,
            wait,
            redact(message, (self._token,)),
        )
