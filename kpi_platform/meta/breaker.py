"""Circuit breakers on the Meta API, kept in the warehouse table `circuit_breakers` so that their state outlives a
run and is shared by every run process: one breaker for the whole API (`meta_api`), one per ad account
(`meta_api:act_<id>`).

A breaker opens after `BREAKER_FAIL_MAX` consecutive outage failures (errors that are still transient after the
client's own retries: 5xx, timeouts, throttling, failed async reports). Token, permission, request and data-volume
errors are not outages and never trip it. While open, calls fail fast with `BreakerOpen` instead of reaching the
API; after `BREAKER_RESET_TIMEOUT_S` one trial call is let through (half-open): success closes the breaker,
an outage failure opens it again for another cool-down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import pybreaker
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from kpi_platform import settings
from kpi_platform.meta.client import ClosableInsightsSource, InsightsFetch
from kpi_platform.meta.errors import (
    AsyncReportFailed,
    AsyncReportTimeout,
    MetaApiError,
    Throttled,
    TransientError,
    act_id,
    redact,
)
from kpi_platform.warehouse import Warehouse, as_utc, schema

T = TypeVar("T")
Clock = Callable[[], datetime]

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN
#: Errors that say the API is unhealthy. The client raises them only once its own retries are spent.
OUTAGE_ERRORS: tuple[type[MetaApiError], ...] = (
    Throttled,
    TransientError,
    AsyncReportFailed,
    AsyncReportTimeout,
)
#: Stored `last_error` texts are cut to this many characters.
LAST_ERROR_MAX_CHARS = 2000
RUNBOOK_BREAKER = "README › Runbook › Circuit breaker open"


def counts_as_outage(exc: BaseException) -> bool:
    """True for failures that trip a breaker; everything else proves the API answered (or is our own bug)."""
    return isinstance(exc, OUTAGE_ERRORS)


def _not_an_outage(exc: BaseException) -> bool:
    return not counts_as_outage(exc)


def account_breaker_name(ad_account_id: str) -> str:
    """`meta_api:act_<id>`, with or without the `act_` prefix given."""
    return f"{settings.BREAKER_API_NAME}:{act_id(ad_account_id)}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "unknown"


@dataclass(frozen=True)
class BreakerState:
    """One breaker as stored. `half_open_at`: when an open breaker lets a trial call through (None otherwise)."""

    name: str
    state: str
    fail_counter: int
    opened_at: datetime | None
    half_open_at: datetime | None
    updated_at: datetime | None
    last_error: str | None

    @property
    def scope(self) -> str:
        """`every ad account` for the API-wide breaker, else the ad account it guards."""
        if self.name == settings.BREAKER_API_NAME:
            return "every ad account"
        return f"ad account {self.name.split(':', 1)[1]}"


class BreakerOpen(MetaApiError):
    """A call refused without reaching Meta because a circuit breaker is open (or another run holds its trial).

    Carries `breaker` (the name), `opened_at`, `half_open_at` and `last_error`; the message says what to do.
    """

    transient = True

    def __init__(
        self, state: BreakerState, *, client_id: str | None = None, trial_in_progress: bool = False
    ) -> None:
        who = f"client '{client_id}': " if client_id else ""
        if trial_in_progress:
            status = (
                f"is half-open: another run has been making the trial call since {_when(state.updated_at)}, "
                "so this run did not call the API"
            )
        else:
            status = (
                f"is open since {_when(state.opened_at)} after {state.fail_counter} consecutive failures, so this "
                f"run did not call the API. From {_when(state.half_open_at)} one trial call is let through"
            )
        super().__init__(
            f"{who}circuit breaker '{state.name}' ({state.scope}) {status}. "
            f"Last error: {(state.last_error or 'not recorded').rstrip('. ')}. "
            "What to do: if Meta is having an outage (https://metastatus.com) or throttling, nothing — a later run "
            "makes the trial call and closes the breaker on success. If the last error is on our side (network, "
            f"proxy, wrong API URL), fix it, then `kpi-platform breakers reset {state.name}` to retry at once; "
            f"see {RUNBOOK_BREAKER}.",
            client_id=client_id,
        )
        self.breaker = state.name
        self.opened_at = state.opened_at
        self.half_open_at = state.half_open_at
        self.last_error = state.last_error


class WarehouseBreakerStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker state of one breaker in the `circuit_breakers` row `name`; a missing row is a closed breaker.

    Each operation is one statement in its own transaction, and the failure count is incremented in the database
    (`fail_counter = fail_counter + 1`), so concurrent processes never lose a failure. Times come from `clock`,
    never from pybreaker. The half-open success counter stays in memory: one success closes a breaker.
    """

    def __init__(self, engine: sa.Engine, name: str, *, clock: Clock = _utcnow) -> None:
        super().__init__(name)
        self._engine = engine
        self._clock = clock
        self._successes = 0

    # --- SQL helpers ---

    def _upsert(
        self, conn: sa.Connection, *, insert: dict[str, Any], update: dict[str, Any]
    ) -> sa.CursorResult:
        table = schema.circuit_breakers
        dialect_insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        now = self._clock()
        values = {"name": self.name, "state": CLOSED, "fail_counter": 0, "updated_at": now, **insert}
        statement = dialect_insert(table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[table.c.name], set_={"updated_at": now, **update}
        )
        return conn.execute(statement.returning(table.c.fail_counter))

    def _value(self, column: str) -> Any:
        table = schema.circuit_breakers
        with self._engine.connect() as conn:
            return conn.execute(sa.select(table.c[column]).where(table.c.name == self.name)).scalar()

    # --- pybreaker.CircuitBreakerStorage ---

    @property
    def state(self) -> str:
        return self._value("state") or CLOSED

    @state.setter
    def state(self, state: str) -> None:
        with self._engine.begin() as conn:
            self._upsert(conn, insert={"state": state}, update={"state": state})

    def increment_counter(self) -> None:
        table = schema.circuit_breakers
        with self._engine.begin() as conn:
            self._upsert(conn, insert={"fail_counter": 1}, update={"fail_counter": table.c.fail_counter + 1})

    def reset_counter(self) -> None:
        table = schema.circuit_breakers
        # Only a counter that is not 0 is written: every successful call resets, most find nothing to do.
        with self._engine.begin() as conn:
            conn.execute(
                table.update()
                .where(table.c.name == self.name, table.c.fail_counter != 0)
                .values(fail_counter=0, updated_at=self._clock())
            )

    def increment_success_counter(self) -> None:
        self._successes += 1

    def reset_success_counter(self) -> None:
        self._successes = 0

    @property
    def counter(self) -> int:
        return int(self._value("fail_counter") or 0)

    @property
    def success_counter(self) -> int:
        return self._successes

    @property
    def opened_at(self) -> datetime | None:
        return as_utc(self._value("opened_at"))

    @opened_at.setter
    def opened_at(self, _pybreaker_now: datetime) -> None:
        now = self._clock()
        with self._engine.begin() as conn:
            self._upsert(conn, insert={"opened_at": now}, update={"opened_at": now})

    # --- ours ---

    def record_error(self, message: str) -> None:
        with self._engine.begin() as conn:
            self._upsert(conn, insert={"last_error": message}, update={"last_error": message})


class _Recorder(pybreaker.CircuitBreakerListener):
    """Stores the redacted text of each counted failure and logs state changes."""

    def __init__(
        self, storage: WarehouseBreakerStorage, *, secrets: tuple[str, ...], reset_timeout_s: float
    ) -> None:
        self._storage = storage
        self._secrets = secrets
        self._reset_timeout_s = reset_timeout_s

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        text = exc.message if isinstance(exc, MetaApiError) else str(exc)
        self._storage.record_error(
            redact(f"{type(exc).__name__}: {text}", self._secrets)[:LAST_ERROR_MAX_CHARS]
        )

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", None)
        if new_state.name == OPEN:
            logger.warning(
                "circuit breaker %s opened after %d consecutive failures; calls fail fast for %g s",
                cb.name,
                cb.fail_counter,
                self._reset_timeout_s,
            )
        elif new_state.name == CLOSED and old in (OPEN, HALF_OPEN):
            logger.info("circuit breaker %s closed: the trial call succeeded", cb.name)


class BreakerGuard:
    """Runs Meta API calls through the API-wide breaker and the breaker of the ad account.

    `warehouse` is a `Warehouse` (or its engine) whose schema includes `circuit_breakers`. Safe to share between
    threads and to construct in every run: all state is in the database.
    """

    def __init__(
        self,
        warehouse: Warehouse | sa.Engine,
        *,
        fail_max: int = settings.BREAKER_FAIL_MAX,
        reset_timeout_s: float = settings.BREAKER_RESET_TIMEOUT_S,
        clock: Clock = _utcnow,
        secrets: Iterable[str | None] = (),
    ) -> None:
        if fail_max < 1:
            raise ValueError(f"fail_max must be at least 1, got {fail_max}")
        self._engine = warehouse.engine if isinstance(warehouse, Warehouse) else warehouse
        self._fail_max = fail_max
        self._reset_timeout = timedelta(seconds=reset_timeout_s)
        self._clock = clock
        self._secrets = tuple(s for s in secrets if s)

    def __repr__(self) -> str:
        return f"BreakerGuard(fail_max={self._fail_max}, reset_timeout_s={self._reset_timeout.total_seconds():g})"

    # --- calls ---

    def call(self, ad_account_id: str, fn: Callable[[], T], *, client_id: str | None = None) -> T:
        """`fn()` if neither the API-wide nor the account's breaker is open, and the failure or success recorded.

        Raises `BreakerOpen` without calling `fn` while a breaker is open (the API-wide one is named first), or
        while another run makes the half-open trial call. Otherwise returns what `fn` returns or raises what it
        raises: the call that trips a breaker still raises its own error, the next ones get `BreakerOpen`.
        """
        names = (settings.BREAKER_API_NAME, account_breaker_name(ad_account_id))
        claimed: list[tuple[BreakerState, datetime]] = []
        try:
            for name in names:
                claim = self._admit(name, client_id=client_id)
                if claim is not None:
                    claimed.append(claim)
        except BreakerOpen:
            # No call goes out, so a trial claimed on the other breaker is handed back: otherwise it would stay
            # half-open with nobody trying, and block every account for another cool-down.
            for state, claimed_at in claimed:
                self._release(state, claimed_at)
            raise
        api, account = (self._breaker(name) for name in names)
        try:
            return api.call(account.call, fn)
        except pybreaker.CircuitBreakerError:
            # Another process opened a breaker between the admission check and the call.
            for name in names:
                current = self.get(name)
                if current is not None and current.state == OPEN:
                    raise BreakerOpen(current, client_id=client_id) from None
            raise

    def wrap(self, client: ClosableInsightsSource) -> GuardedInsightsClient:
        """`client` with every fetch passing through this guard (same fetch and close interface)."""
        return GuardedInsightsClient(client=client, guard=self)

    def _breaker(self, name: str) -> pybreaker.CircuitBreaker:
        # A new breaker object per call: pybreaker caches the state per object, the database is the truth.
        storage = WarehouseBreakerStorage(self._engine, name, clock=self._clock)
        recorder = _Recorder(
            storage, secrets=self._secrets, reset_timeout_s=self._reset_timeout.total_seconds()
        )
        return pybreaker.CircuitBreaker(
            fail_max=self._fail_max,
            reset_timeout=self._reset_timeout.total_seconds(),
            exclude=[_not_an_outage],
            listeners=[recorder],
            state_storage=storage,
            name=name,
            # The call that trips the breaker raises Meta's error, which says more than "breaker opened".
            throw_new_error_on_trip=False,
        )

    def _admit(self, name: str, *, client_id: str | None) -> tuple[BreakerState, datetime] | None:
        """Raise BreakerOpen unless a call may go out; an open breaker past its cool-down becomes half-open
        for exactly one caller (compare-and-set on the timestamp read), which makes the trial call. Returns the
        state before the claim and the claim's time when this caller claimed the trial, else None."""
        table = schema.circuit_breakers
        state = self.get(name)
        if state is None or state.state == CLOSED:
            return None
        now = self._clock()
        if state.state == OPEN:
            if state.half_open_at is not None and now < state.half_open_at:
                raise BreakerOpen(state, client_id=client_id)
            claim = table.c.opened_at == state.opened_at if state.opened_at else table.c.opened_at.is_(None)
            condition = (table.c.state == OPEN, claim)
        else:
            # Half-open: a trial older than a whole cool-down belongs to a run that died; take it over.
            if state.updated_at is not None and now < state.updated_at + self._reset_timeout:
                raise BreakerOpen(state, client_id=client_id, trial_in_progress=True)
            condition = (table.c.state == HALF_OPEN, table.c.updated_at == state.updated_at)
        with self._engine.begin() as conn:
            claimed = conn.execute(
                table.update().where(table.c.name == name, *condition).values(state=HALF_OPEN, updated_at=now)
            ).rowcount
        if claimed != 1:
            latest = self.get(name) or state
            raise BreakerOpen(latest, client_id=client_id, trial_in_progress=latest.state == HALF_OPEN)
        logger.info("circuit breaker %s is half-open: this call is the trial", name)
        return state, now

    def _release(self, state: BreakerState, claimed_at: datetime) -> None:
        """Undo a trial claim that made no call: the breaker goes back to what it was, unless another caller
        changed it since."""
        table = schema.circuit_breakers
        with self._engine.begin() as conn:
            conn.execute(
                table.update()
                .where(
                    table.c.name == state.name, table.c.state == HALF_OPEN, table.c.updated_at == claimed_at
                )
                .values(state=state.state, updated_at=state.updated_at)
            )

    # --- inspection and reset ---

    def get(self, name: str) -> BreakerState | None:
        """The stored state of breaker `name`, None if it never failed."""
        table = schema.circuit_breakers
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.name == name)).first()
        return None if row is None else self._state(row._mapping)

    def list_breakers(self) -> list[BreakerState]:
        """Every stored breaker, by name (for the health report and alerts)."""
        table = schema.circuit_breakers
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(table).order_by(table.c.name)).all()
        return [self._state(row._mapping) for row in rows]

    def reset(self, name: str) -> bool:
        """Close breaker `name` and clear its counter at once (after fixing the cause); False if it has no row."""
        table = schema.circuit_breakers
        with self._engine.begin() as conn:
            changed = conn.execute(
                table.update()
                .where(table.c.name == name)
                .values(state=CLOSED, fail_counter=0, opened_at=None, updated_at=self._clock())
            ).rowcount
        if changed:
            logger.info("circuit breaker %s reset to closed", name)
        return bool(changed)

    def _state(self, row: Any) -> BreakerState:
        opened_at = as_utc(row["opened_at"])
        return BreakerState(
            name=row["name"],
            state=row["state"],
            fail_counter=int(row["fail_counter"]),
            opened_at=opened_at,
            half_open_at=opened_at + self._reset_timeout if row["state"] == OPEN and opened_at else None,
            updated_at=as_utc(row["updated_at"]),
            last_error=row["last_error"],
        )


class GuardedInsightsClient:
    """A `MetaInsightsClient` (or any `ClosableInsightsSource`) whose fetches go through a `BreakerGuard`; it owns
    and closes the client. It is a `ClosableInsightsSource` itself."""

    def __init__(self, *, client: ClosableInsightsSource, guard: BreakerGuard) -> None:
        self._client = client
        self._guard = guard

    def __repr__(self) -> str:
        return f"GuardedInsightsClient({self._client!r}, {self._guard!r})"

    def __enter__(self) -> GuardedInsightsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def fetch_campaign_insights(
        self, *, client_id: str, ad_account_id: str, since: date, until: date
    ) -> InsightsFetch:
        """`MetaInsightsClient.fetch_campaign_insights`, or `BreakerOpen` without a request while a breaker is open."""
        return self._guard.call(
            ad_account_id,
            lambda: self._client.fetch_campaign_insights(
                client_id=client_id, ad_account_id=ad_account_id, since=since, until=until
            ),
            client_id=client_id,
        )
