"""Pacing of Meta API calls from the usage headers of every response, so calls slow down before Meta throttles.

Meta reports how much of its rate limits a caller has used on every response (docs/meta-insights-api.md §2.5):
`X-Business-Use-Case-Usage` and `X-Ad-Account-Usage` for the ad account, `X-App-Usage` for the whole app, and
`x-fb-ads-insights-throttle` for both. Every figure is a percentage of a limit and 100 means throttled.
`read_usage` reduces them to the highest figure of the ad account and of the app; `Pacer` records both after each
response (in a `PacingStore`: in memory, or the warehouse table `api_pacing` that every run process shares) and
waits before each call by the rule of `PacingPolicy.delay_s`:

- below `threshold_pct` (default 75 %) no wait;
- from the threshold to 100 %, `max_delay_s × (usage − threshold) / (100 − threshold)` after the latest response:
  0 s at the threshold, rising in proportion to `max_delay_s` (default 60 s) just below 100 %;
- at 100 % (or more), until Meta's `estimated_time_to_regain_access` has passed (minutes in the header); when
  Meta gives no time, `max_delay_s` after the latest response.

The wait of a call is the longer of its ad account's and the app's. Concurrent runs read the same rows, so a call
of one run also holds back the others on the same account: each waits from the latest response of any of them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, SupportsFloat, SupportsIndex

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from kpi_platform import settings
from kpi_platform.meta.errors import Throttled, act_id, throttle_wait_seconds
from kpi_platform.meta.parse import parse_usage_headers
from kpi_platform.warehouse import Warehouse, as_utc, schema

Clock = Callable[[], datetime]
Sleeper = Callable[[float], None]

logger = logging.getLogger(__name__)

#: Percentage figures of the ad account, per decoded header (`parse_usage_headers` keys).
ACCOUNT_FIGURES: Mapping[str, tuple[str, ...]] = {
    "business_use_case_usage": ("call_count", "total_cputime", "total_time"),
    "ad_account_usage": ("acc_id_util_pct",),
    "ads_insights_throttle": ("acc_id_util_pct",),
}
#: Percentage figures of the whole app.
APP_FIGURES: Mapping[str, tuple[str, ...]] = {
    "app_usage": ("call_count", "total_cputime", "total_time"),
    "ads_insights_throttle": ("app_id_util_pct",),
}
#: Meta's limit: a figure at this percentage means the next call is throttled.
FULL_PCT = 100.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _pct(value: object) -> float | None:
    # What `float()` accepts; anything else (None, lists, objects from JSON) would raise TypeError.
    if isinstance(value, bool) or not isinstance(
        value, str | bytes | bytearray | SupportsFloat | SupportsIndex
    ):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _entries(decoded: object) -> list[Mapping[str, Any]]:
    """The objects of one decoded header: X-Business-Use-Case-Usage nests lists of them under business or ad
    account ids; the other headers are one object."""
    if not isinstance(decoded, Mapping):
        return []
    if all(isinstance(v, list) for v in decoded.values()) and decoded:
        return [e for entries in decoded.values() for e in entries if isinstance(e, Mapping)]
    return [decoded]


def _highest(decoded: Mapping[str, Any], figures: Mapping[str, tuple[str, ...]]) -> float | None:
    values = [
        pct
        for header, names in figures.items()
        for entry in _entries(decoded.get(header))
        for name in names
        if (pct := _pct(entry.get(name))) is not None
    ]
    return max(values, default=None)


@dataclass(frozen=True)
class Usage:
    """What one response's usage headers say: the highest percentage figure of the ad account and of the app
    (None when no header carried one), Meta's wait in seconds (0 when none), and the decoded headers."""

    account_pct: float | None
    app_pct: float | None
    regain_s: float
    headers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def max_pct(self) -> float:
        """The highest figure of the response, account or app (0 when none)."""
        return max((p for p in (self.account_pct, self.app_pct) if p is not None), default=0.0)


def read_usage(headers: Mapping[str, str] | None) -> Usage | None:
    """The usage `headers` report, or None when they carry no usage header. Unreadable headers and figures are
    skipped: a broken header must not stop collection, it only cannot pace it."""
    decoded = parse_usage_headers(headers or {})
    if not decoded:
        return None
    return Usage(
        account_pct=_highest(decoded, ACCOUNT_FIGURES),
        app_pct=_highest(decoded, APP_FIGURES),
        regain_s=throttle_wait_seconds(headers) or 0.0,
        headers=decoded,
    )


@dataclass(frozen=True)
class PacingState:
    """The latest usage of one key (`act_<id>` or `app`): what `api_pacing` holds per row."""

    account_id: str
    usage_pct: float
    regain_at: datetime | None
    headers: Mapping[str, Any]
    updated_at: datetime


@dataclass(frozen=True)
class PacingPolicy:
    """The delay rule (module docstring). `threshold_pct` within (0, 100), `max_delay_s` > 0."""

    threshold_pct: float = settings.PACING_THRESHOLD_PCT
    max_delay_s: float = settings.PACING_MAX_DELAY_S

    def __post_init__(self) -> None:
        if not 0 < self.threshold_pct < FULL_PCT:
            raise ValueError(f"threshold_pct must be between 0 and 100 (exclusive), got {self.threshold_pct}")
        if not (math.isfinite(self.max_delay_s) and self.max_delay_s > 0):
            raise ValueError(f"max_delay_s must be a number of seconds > 0, got {self.max_delay_s}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PacingPolicy:
        """KPI_META_PACING_THRESHOLD_PCT and KPI_META_PACING_MAX_DELAY_S, or the defaults."""
        return cls(settings.pacing_threshold_pct(environ), settings.pacing_max_delay_s(environ))

    def delay_s(self, usage_pct: float) -> float:
        """Seconds from the latest response to the next call at `usage_pct` below 100 %; at 100 % the wait is
        Meta's regain time (`wait_s`), and this gives `max_delay_s`, the wait when Meta names none."""
        if usage_pct < self.threshold_pct:
            return 0.0
        if usage_pct >= FULL_PCT:
            return self.max_delay_s
        return self.max_delay_s * (usage_pct - self.threshold_pct) / (FULL_PCT - self.threshold_pct)

    def wait_s(self, state: PacingState, now: datetime) -> float:
        """Seconds to wait at `now` before the next call, given the latest usage `state` (0: call now)."""
        ready_at = state.updated_at
        if state.usage_pct < FULL_PCT or state.regain_at is None:
            ready_at = state.updated_at + timedelta(seconds=self.delay_s(state.usage_pct))
        if state.regain_at is not None:
            ready_at = max(ready_at, state.regain_at)
        return max(0.0, (ready_at - now).total_seconds())


class PacingStore(Protocol):
    """Where the latest usage per key is kept: `InMemoryPacingStore` or `WarehousePacingStore`."""

    def get(self, account_ids: Iterable[str]) -> list[PacingState]:
        """The stored states of those keys that have one."""
        ...

    def record(
        self,
        account_id: str,
        *,
        usage_pct: float,
        regain_at: datetime | None,
        headers: Mapping[str, Any],
        at: datetime,
    ) -> None:
        """Store the usage read at `at`, unless a later response is already stored; a stored `regain_at` still
        ahead of `at` is kept when the new response names none (a response that was in flight while another
        run was told to wait does not lift the wait)."""
        ...


class InMemoryPacingStore:
    """A `PacingStore` for one process (tests, and clients built without a warehouse)."""

    def __init__(self) -> None:
        self._states: dict[str, PacingState] = {}
        self._lock = threading.Lock()

    def get(self, account_ids: Iterable[str]) -> list[PacingState]:
        with self._lock:
            return [self._states[k] for k in account_ids if k in self._states]

    def record(
        self,
        account_id: str,
        *,
        usage_pct: float,
        regain_at: datetime | None,
        headers: Mapping[str, Any],
        at: datetime,
    ) -> None:
        with self._lock:
            old = self._states.get(account_id)
            if old is not None and old.updated_at > at:
                return
            if regain_at is None and old is not None and old.regain_at is not None and old.regain_at > at:
                regain_at = old.regain_at
            self._states[account_id] = PacingState(account_id, usage_pct, regain_at, dict(headers), at)


class WarehousePacingStore:
    """A `PacingStore` in the warehouse table `api_pacing`, shared by every run process (as the circuit breakers
    are). Each record is one upsert statement whose conditions (a later response wins, a pending regain time is
    kept) are evaluated by the database, so concurrent writers need no lock."""

    def __init__(self, warehouse: Warehouse | sa.Engine) -> None:
        self._engine = warehouse.engine if isinstance(warehouse, Warehouse) else warehouse

    def __repr__(self) -> str:
        return f"WarehousePacingStore({self._engine.url.render_as_string(hide_password=True)!r})"

    def get(self, account_ids: Iterable[str]) -> list[PacingState]:
        table = schema.api_pacing
        keys = list(account_ids)
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.account_id.in_(keys))).all()
        return [
            PacingState(
                account_id=row.account_id,
                usage_pct=float(row.usage_pct),
                regain_at=as_utc(row.regain_at),
                headers=row.headers or {},
                updated_at=as_utc(row.updated_at) or datetime.min.replace(tzinfo=UTC),
            )
            for row in rows
        ]

    def record(
        self,
        account_id: str,
        *,
        usage_pct: float,
        regain_at: datetime | None,
        headers: Mapping[str, Any],
        at: datetime,
    ) -> None:
        table = schema.api_pacing
        with self._engine.begin() as conn:
            dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            statement = dialect_insert(table).values(
                account_id=account_id,
                usage_pct=usage_pct,
                regain_at=regain_at,
                headers=dict(headers),
                updated_at=at,
            )
            new = statement.excluded
            pending = sa.and_(
                new.regain_at.is_(None), table.c.regain_at > sa.literal(at, table.c.regain_at.type)
            )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=[table.c.account_id],
                    set_={
                        "usage_pct": new.usage_pct,
                        "regain_at": sa.case((pending, table.c.regain_at), else_=new.regain_at),
                        "headers": new.headers,
                        "updated_at": new.updated_at,
                    },
                    where=table.c.updated_at <= new.updated_at,
                )
            )


class Pacer:
    """Waits before each Meta API call as the latest usage says, and records the usage of each response.

    `clock` (aware datetimes) and `sleep` are injectable, so tests run on simulated time; both default to the real
    ones. Safe to share between threads when the store is.
    """

    def __init__(
        self,
        store: PacingStore,
        *,
        policy: PacingPolicy | None = None,
        clock: Clock = _utcnow,
        sleep: Sleeper = time.sleep,
    ) -> None:
        self.store = store
        self.policy = policy or PacingPolicy()
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Pacer({self.store!r}, {self.policy!r})"

    def wait_s(self, ad_account_id: str) -> float:
        """Seconds the next call of `ad_account_id` has to wait now: the longer of the account's and the app's."""
        now = self._clock()
        states = self.store.get([act_id(ad_account_id), settings.PACING_APP_KEY])
        return max((self.policy.wait_s(s, now) for s in states), default=0.0)

    def before_call(
        self,
        ad_account_id: str,
        *,
        max_wait_s: float,
        client_id: str | None = None,
        secrets: Iterable[str] = (),
    ) -> float:
        """Sleep until the next call of `ad_account_id` may go out; returns the seconds slept.

        The usage is read again after each sleep (another run may have called meanwhile). Raises `Throttled`,
        without sleeping further, when the total wait would pass `max_wait_s`: the caller gives up as it does
        when Meta itself asks for too long a wait.
        """
        account = act_id(ad_account_id)
        slept = 0.0
        while (wait := self.wait_s(account)) > 0:
            if slept + wait > max_wait_s:
                who = f"client '{client_id}' ({account})" if client_id else account
                raise Throttled(
                    f"{who}: Meta API usage is at or near its limit, so the next call would have to wait "
                    f"{slept + wait:.0f} s in all, longer than the longest wait ({max_wait_s:g} s); not calling "
                    "Meta. A later run continues once the usage has gone down.",
                    wait_seconds=slept + wait,
                    client_id=client_id,
                    secrets=tuple(secrets),
                )
            logger.info("%s: Meta API usage is high; pacing the next call by %.1f s", account, wait)
            self._sleep(wait)
            slept += wait
        return slept

    def after_response(self, ad_account_id: str, headers: Mapping[str, str] | None) -> Usage | None:
        """Record the usage `headers` report for the account and the app; returns it (None without headers)."""
        usage = read_usage(headers)
        if usage is None:
            return None
        now = self._clock()
        regain_at = now + timedelta(seconds=usage.regain_s) if usage.regain_s > 0 else None
        account_headers = {k: v for k, v in usage.headers.items() if k != "app_usage"}
        if usage.account_pct is not None:
            self.store.record(
                act_id(ad_account_id),
                usage_pct=usage.account_pct,
                regain_at=regain_at,
                headers=account_headers,
                at=now,
            )
        if usage.app_pct is not None:
            app_headers = {k: v for k, v in usage.headers.items() if k in APP_FIGURES}
            self.store.record(
                settings.PACING_APP_KEY, usage_pct=usage.app_pct, regain_at=None, headers=app_headers, at=now
            )
        return usage
