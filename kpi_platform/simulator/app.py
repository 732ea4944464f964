"""The WSGI application: `MetaSimulator` reads each request, routes it to an endpoint and writes Meta's response.

It holds the simulator's only state (request counters, async report runs, the fault RNG) behind one lock, and
decides each request's fault before any of that state changes, so a retried request behaves as if the failed one
never happened. It is a plain WSGI callable, so the same code serves in process (`transport.SimulatorAdapter`)
and over real HTTP (`transport.serve`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from kpi_platform import settings
from kpi_platform.simulator.data import (
    AccountSpec,
    DayDelivery,
    api_row,
    bare_account_id,
    day_deliveries,
    restated,
    stable_int,
)
from kpi_platform.simulator.faults import TRANSPORT_FAULTS, FaultConfig, ScriptedFault, TransportFault
from kpi_platform.simulator.graph_api import (
    MAX_PAGE_LIMIT,
    UNSUPPORTED,
    GraphError,
    InsightsQuery,
    RateLimits,
    ReportRun,
    UsageSnapshot,
    debug_token_body,
    page_request,
    paged_body,
    parse_insights_query,
    rate_limit_error,
    report_run_body,
    report_status,
    usage_headers,
    usage_of,
)

SIMULATOR_HEADER = "X-KPI-Simulator"
#: What a system user's token for the collector is granted (ads_read is the one collection needs).
DEFAULT_TOKEN_SCOPES: tuple[str, ...] = ("ads_read", "business_management")
#: Requests the fault injection applies to: the Insights API, never token introspection (faults.py).
_FAULTED_KINDS = frozenset({"insights", "report_create", "report_status", "report_insights"})


# --- Configuration ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated Meta knows: the date, the ad accounts, page and async-run behaviour.

    `today` None means the real UTC date at each request. `accounts` None accepts any ad account id (currency EUR);
    otherwise ids outside it get Meta's "Unsupported get request" (keys with or without `act_`). `invalid_token` is
    the access token the simulator treats as expired. `seed` selects the data set (the fault RNG has its own).
    `rate_limits` sets how fast usage rises with the call rate and where throttling starts (`RateLimits`).

    What `GET /debug_token` reports about every other token: `token_expires_at` and
    `token_data_access_expires_at` (aware datetimes; None = never, sent as 0 like a system user's token) and
    `token_scopes`. A token past `token_expires_at` is reported invalid there; insights requests still serve it.
    """

    today: date | None = None
    accounts: Mapping[str, AccountSpec] | None = None
    page_size_default: int = 25
    async_polls_to_complete: int = 2
    invalid_token: str = "invalid-token"
    seed: int = 0
    rate_limits: RateLimits = RateLimits()
    token_expires_at: datetime | None = None
    token_data_access_expires_at: datetime | None = None
    token_scopes: tuple[str, ...] = DEFAULT_TOKEN_SCOPES

    def __post_init__(self) -> None:
        if not 1 <= self.page_size_default <= MAX_PAGE_LIMIT:
            raise ValueError(
                f"page_size_default must be within 1..{MAX_PAGE_LIMIT}, got {self.page_size_default}"
            )
        if self.async_polls_to_complete < 0:
            raise ValueError("async_polls_to_complete must not be negative")
        for name in ("token_expires_at", "token_data_access_expires_at"):
            moment = getattr(self, name)
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware, got {moment!r}")


# --- The WSGI application -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorCounters:
    """Requests served so far: all of them, per route kind, the faults injected (by code label or kind), and the
    requests refused because they passed a rate limit, per ad account (`throttles`)."""

    requests: int
    by_kind: Mapping[str, int]
    faults: Mapping[str, int]
    throttles: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query_pairs: tuple[tuple[str, str], ...]
    params: Mapping[str, str]
    base_url: str
    token: str | None


_VERSION = r"/v\d+\.\d+"
_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("debug_token", re.compile(_VERSION + r"/debug_token/?")),
    ("insights", re.compile(_VERSION + r"/act_(?P<account>[^/]+)/insights/?")),
    ("report_insights", re.compile(_VERSION + r"/(?P<report>\d+)/insights/?")),
    ("report_status", re.compile(_VERSION + r"/(?P<report>\d+)/?")),
)
#: How often a held request looks whether its hang has ended.
HANG_POLL_SECONDS = 0.2
_STATUS_LINES = {200: "200 OK", 400: "400 Bad Request", 500: "500 Internal Server Error"}


def _read_request(environ: Mapping[str, Any]) -> _Request:
    query_pairs = tuple(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    pairs = list(query_pairs)
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    params = dict(pairs)
    token = params.get("access_token")
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if not token and authorization.split(" ")[0] in ("Bearer", "OAuth"):
        token = authorization.partition(" ")[2].strip() or None
    host = environ.get("HTTP_HOST") or f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}"
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    return _Request(
        method=environ.get("REQUEST_METHOD", "GET").upper(),
        path=path,
        query_pairs=query_pairs,
        params=params,
        base_url=f"{environ.get('wsgi.url_scheme', 'http')}://{host}{quote(path)}",
        token=token,
    )


def _next_url(request: _Request, after: str) -> str:
    """The absolute URL of the next page: this request's URL and parameters (token included, as Meta does)."""
    pairs = [(k, v) for k, v in request.query_pairs if k not in ("after", "before")]
    if request.method != "GET":
        pairs = [(k, v) for k, v in request.params.items() if k not in ("after", "before")]
    return f"{request.base_url}?{urlencode([*pairs, ('after', after)])}"


class MetaSimulator:
    """A deterministic Meta Insights API. `wsgi_app` is a plain WSGI callable.

    Per request: route, count, optional latency, injected fault (before any state changes, so a retried request
    behaves as if the failed one never happened), token, ad account, then the endpoint. Async runs, counters and
    the fault RNG live on the instance behind one lock, so one simulator can serve threads.

    Usage is the exception to "as if the failed one never happened": every Insights API request, failed or not,
    counts against the rate limits within their sliding window (Meta counts errors too), timed by `clock`
    (seconds; tests pass a simulated one). Every response reports that usage in Meta's headers, and a request
    past a limit is refused with Meta's throttle error, so a client that ignores the headers gets throttled.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        faults: FaultConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.faults = faults or FaultConfig()
        accounts = self.config.accounts
        self._accounts = None if accounts is None else {bare_account_id(k): v for k, v in accounts.items()}
        self._lock = threading.Lock()
        self._fault_rng = random.Random(self.faults.seed)
        self._requests = 0
        self._api_requests = 0
        self._by_kind: Counter[str] = Counter()
        self._faults: Counter[str] = Counter()
        self._runs: dict[str, ReportRun] = {}
        self._clock = clock
        self._account_calls: dict[str, deque[float]] = {}
        self._app_calls: deque[float] = deque()
        self._throttles: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"MetaSimulator(requests={self._requests}, faults={dict(self._faults)})"

    @property
    def request_count(self) -> int:
        return self._requests

    def counters(self) -> SimulatorCounters:
        with self._lock:
            return SimulatorCounters(
                self._requests, dict(self._by_kind), dict(self._faults), dict(self._throttles)
            )

    def today(self) -> date:
        return self.config.today or datetime.now(UTC).date()

    def currency(self, account_id: str) -> str:
        spec = (self._accounts or {}).get(bare_account_id(account_id))
        return spec.currency if spec else AccountSpec().currency

    # --- request handling -------------------------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = _read_request(environ)
        kind, match = self._route(request)
        index = self._count(kind)
        if self.faults.slow_seconds:
            time.sleep(self.faults.slow_seconds)
        account_id = self._account_of(kind, match)
        usage = self._use(kind, account_id)
        throttled = False
        try:
            if kind in _FAULTED_KINDS:
                self._hang()
                fault = self._planned_fault(index)
                if fault in TRANSPORT_FAULTS:
                    self._record_fault(str(fault))
                    raise TransportFault(
                        str(fault), self.faults.timeout_seconds if fault == "timeout" else 0.0
                    )
                if fault == "malformed":
                    self._record_fault("malformed")
                    truncated = f'{{"data":[{{"account_id":"{account_id}","campaign_id":"12'.encode()
                    return self._respond(
                        start_response, 200, truncated, account_id=account_id, throttled=False
                    )
                if isinstance(fault, int | tuple):  # a Graph error code or (code, subcode)
                    error = GraphError.of(fault)
                    self._record_fault(error.label)
                    raise error
            limit_error = rate_limit_error(usage) if kind in _FAULTED_KINDS else None
            if limit_error is not None:
                with self._lock:
                    self._throttles[account_id] += 1
                raise limit_error
            status, body = 200, self._dispatch(kind, match, request)
        except GraphError as error:
            throttled = error.code in settings.THROTTLE_CODES
            status, body = error.status, error.envelope(fbtrace_id=self._trace_id(index))
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return self._respond(start_response, status, payload, account_id=account_id, throttled=throttled)

    def _route(self, request: _Request) -> tuple[str, re.Match[str] | None]:
        """The endpoint kind: debug_token, insights, report_create, report_status, report_insights, or unknown."""
        for kind, pattern in _ROUTES:
            match = pattern.fullmatch(request.path)
            if match:
                return ("report_create" if kind == "insights" and request.method == "POST" else kind), match
        return "unknown", None

    def _count(self, kind: str) -> int:
        """Count the request; return its 0-based position among insights and report requests."""
        with self._lock:
            self._requests += 1
            self._by_kind[kind] += 1
            if kind not in _FAULTED_KINDS:
                return -1
            self._api_requests += 1
            return self._api_requests - 1

    def _use(self, kind: str, account_id: str) -> UsageSnapshot:
        """Count an Insights API request of `account_id` in the rate-limit windows (other kinds count nothing) and
        return the usage after it: percent of each limit, and the wait until a call is let through again."""
        limits = self.config.rate_limits
        with self._lock:
            now = self._clock()
            calls = self._account_calls.setdefault(account_id, deque())
            for window in (calls, self._app_calls):
                while window and window[0] <= now - limits.window_s:
                    window.popleft()
            if kind in _FAULTED_KINDS and account_id != "0":
                calls.append(now)
                self._app_calls.append(now)
            account_pct, account_regain, reset = usage_of(
                calls, limit=limits.account_calls, window_s=limits.window_s, now=now
            )
            app_pct, app_regain, _ = usage_of(
                self._app_calls, limit=limits.app_calls, window_s=limits.window_s, now=now
            )
        return UsageSnapshot(account_pct, app_pct, regain_s=max(account_regain, app_regain), reset_s=reset)

    def _planned_fault(self, index: int) -> ScriptedFault:
        faults = self.faults
        if index < len(faults.scripted_errors):
            return faults.scripted_errors[index]
        with self._lock:
            rng = self._fault_rng
            if faults.drop_rate and rng.random() < faults.drop_rate:
                return "drop"
            if faults.malformed_rate and rng.random() < faults.malformed_rate:
                return "malformed"
            for code, rate in faults.error_rates.items():
                if rate and rng.random() < rate:
                    return code
        return None

    def _hang(self) -> None:
        """While `faults.hang_while_path` exists, hold the request unanswered (at most `hang_seconds`), then serve
        it normally: a call that never returns, whatever the client's timeouts, until the file is removed."""
        path = self.faults.hang_while_path
        if path is None or not os.path.exists(path):
            return
        self._record_fault("hang")
        deadline = time.monotonic() + self.faults.hang_seconds
        while os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(min(HANG_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _record_fault(self, label: str) -> None:
        with self._lock:
            self._faults[label] += 1

    def _account_of(self, kind: str, match: re.Match[str] | None) -> str:
        if match is None or kind not in _FAULTED_KINDS:
            return "0"
        if kind in ("insights", "report_create"):
            return bare_account_id(match["account"])
        run = self._runs.get(match["report"])
        return run.query.account_id if run else "0"

    def _trace_id(self, index: int) -> str:
        digest = hashlib.blake2b(f"trace:{self.faults.seed}:{index}".encode(), digest_size=16).digest()
        return "A" + base64.urlsafe_b64encode(digest).decode()[:22]

    def _respond(
        self,
        start_response: Callable[..., Any],
        status: int,
        payload: bytes,
        *,
        account_id: str,
        throttled: bool,
    ) -> list[bytes]:
        current = self._use("", account_id)
        if throttled and not (current.over_account_limit or current.over_app_limit):
            # An injected throttle: Meta reports the limit reached, with the configured wait.
            current = UsageSnapshot.throttled(self.faults.throttle_regain_minutes)
        usage = usage_headers(account_id=account_id, usage=current)
        headers = [
            ("Content-Type", "application/json; charset=UTF-8"),
            ("Content-Length", str(len(payload))),
            (SIMULATOR_HEADER, "1"),
            *usage.items(),
        ]
        start_response(_STATUS_LINES[status], headers)
        return [payload]

    # --- endpoints --------------------------------------------------------------------------------------------

    def _dispatch(self, kind: str, match: re.Match[str] | None, request: _Request) -> dict[str, Any]:
        if kind == "unknown" or match is None:
            raise GraphError(2500, message=f"Unknown path components: {request.path}")
        self._check_token(request)
        if kind == "debug_token":
            return self._debug_token(request)
        if kind == "report_create":
            return self._create_report_run(self._account(match["account"], request), request)
        if kind == "insights" and request.method == "GET":
            return self._insights(self._account(match["account"], request), request)
        if request.method != "GET":
            raise GraphError(
                100, 33, message=UNSUPPORTED.format(method=request.method.lower(), object=match["report"])
            )
        run = self._run(match["report"])
        if kind == "report_status":
            return self._poll_report_run(run)
        return self._report_insights(run, request)

    def _check_token(self, request: _Request) -> None:
        if not request.token:
            raise GraphError(190, message="An access token is required to request this resource.")
        if request.token == self.config.invalid_token:
            raise GraphError(190, 463)

    def _debug_token(self, request: _Request) -> dict[str, Any]:
        if request.method != "GET":
            raise GraphError(
                100, 33, message=UNSUPPORTED.format(method=request.method.lower(), object="debug_token")
            )
        input_token = request.params.get("input_token")
        if not input_token:
            raise GraphError(100, message="(#100) The parameter input_token is required")
        config = self.config
        now = datetime.now(UTC)
        if config.today is not None:  # a fixed simulated date: its noon
            now = datetime.combine(config.today, dt_time(12), UTC)
        return debug_token_body(
            input_token=input_token,
            invalid_token=config.invalid_token,
            expires_at=config.token_expires_at,
            data_access_expires_at=config.token_data_access_expires_at,
            scopes=config.token_scopes,
            now=now,
        )

    def _account(self, raw_id: str, request: _Request) -> str:
        account_id = bare_account_id(raw_id)
        if not account_id.isdigit() or (self._accounts is not None and account_id not in self._accounts):
            message = UNSUPPORTED.format(method=request.method.lower(), object=f"act_{raw_id}")
            raise GraphError(100, 33, message=message)
        return account_id

    def _query(self, account_id: str, request: _Request) -> InsightsQuery:
        return parse_insights_query(
            request.params,
            account_id=account_id,
            today=self.today(),
            too_large_days=self.faults.too_large_days,
        )

    def _insights(self, account_id: str, request: _Request) -> dict[str, Any]:
        return self._page(self._query(account_id, request), request)

    def _page(self, query: InsightsQuery, request: _Request) -> dict[str, Any]:
        page = page_request(request.params, default_limit=self.config.page_size_default)
        if page.number == self.faults.fail_page:
            self._record_fault("fail_page")
            raise GraphError.of(self.faults.fail_page_error)
        currency = self.currency(query.account_id)
        return paged_body(
            self.deliveries(query),
            page,
            render=lambda d: api_row(d, account_id=query.account_id, currency=currency, fields=query.fields),
            next_url=lambda after: _next_url(request, after),
        )

    def deliveries(self, query: InsightsQuery) -> list[DayDelivery]:
        """Every campaign-day of `query` up to today, ordered by date then campaign id, restatements applied."""
        today, seed = self.today(), self.config.seed
        restated_from = today - timedelta(days=self.faults.restate_days - 1)
        result: list[DayDelivery] = []
        day = query.since
        while day <= min(query.until, today):
            for delivery in day_deliveries(account_id=query.account_id, day=day, seed=seed):
                if self.faults.restate_days > 0 and day >= restated_from:
                    delivery = restated(delivery, version=self.faults.restatement_version, seed=seed)
                result.append(delivery)
            day += timedelta(days=1)
        return result

    # --- async report runs ------------------------------------------------------------------------------------

    def _create_report_run(self, account_id: str, request: _Request) -> dict[str, Any]:
        query = self._query(account_id, request)
        with self._lock:
            number = len(self._runs)
            run_id = str(10**15 + stable_int("report", account_id, number, self.config.seed) % (9 * 10**15))
            while run_id in self._runs:
                run_id = str(int(run_id) + 1)
            self._runs[run_id] = ReportRun(id=run_id, query=query)
        return {"report_run_id": run_id}

    def _run(self, run_id: str) -> ReportRun:
        run = self._runs.get(run_id)
        if run is None:
            raise GraphError(100, 33, message=UNSUPPORTED.format(method="get", object=run_id))
        return run

    def _status(self, run: ReportRun) -> tuple[settings.AsyncStatus, int]:
        return report_status(
            run,
            polls_to_complete=self.config.async_polls_to_complete,
            stuck=self.faults.async_stuck,
            fail=self.faults.async_fail,
        )

    def _poll_report_run(self, run: ReportRun) -> dict[str, Any]:
        with self._lock:
            run.polls += 1
        return report_run_body(run, *self._status(run))

    def _report_insights(self, run: ReportRun, request: _Request) -> dict[str, Any]:
        status, percent = self._status(run)
        if status != "Job Completed":
            raise GraphError(
                100, message=f"(#100) Report {run.id} is not readable: '{status}' at {percent} %"
            )
        return self._page(run.query, request)
