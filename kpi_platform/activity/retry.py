"""Retrying a database call whose connection failed: a few attempts with exponential backoff, each logged.

A snapshot reads the application database and writes the warehouse; a dropped connection, a server restarting
or a failover is worth another attempt seconds later, anything else (a missing table, a bad row, a bug) fails at
once. Every call retried here is safe to repeat: the reads have no effects, and a snapshot write is one
transaction that either committed (a repeat then finds the days recorded and leaves them) or did not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
import tenacity

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Attempts of one call in all (the first and two retries).
CONNECTION_ATTEMPTS = 3
#: Waits between attempts: 2 s, then 4 s (exponential, at most 30 s).
CONNECTION_WAIT = tenacity.wait_exponential(multiplier=2, exp_base=2, max=30)


class DatabaseUnavailableError(RuntimeError):
    """A database connection kept failing on every attempt; `attempts` says how many were made."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


def is_connection_error(exc: BaseException) -> bool:
    """True for SQLAlchemy's connection-level failures: `OperationalError` (cannot connect, connection lost, server
    shutting down), `InterfaceError` (the driver's connection is unusable) and any `DBAPIError` for which SQLAlchemy
    invalidated the connection (a disconnect it recognised)."""
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and bool(exc.connection_invalidated)


def _first_line(exc: BaseException) -> str:
    """The driver's own message (SQLAlchemy's wrapper adds the statement and parameters), first line only."""
    cause = getattr(exc, "orig", None) or exc
    text = str(cause).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else '(no message)'}"[:300]


def call_with_connection_retries(
    fn: Callable[[], T],
    *,
    what: str,
    log: logging.Logger = logger,
    attempts: int = CONNECTION_ATTEMPTS,
    wait: tenacity.wait.wait_base | None = None,
    sleep: Callable[[float], None] | None = None,
) -> T:
    """`fn()`, repeated while it fails with a connection error (`is_connection_error`), at most `attempts` times in
    all with exponential waits between them (`CONNECTION_WAIT` unless given); each failed attempt is logged as a
    WARNING naming `what`.

    Any other exception propagates at once. When every attempt failed, raises `DatabaseUnavailableError` naming
    `what`, the attempts and the last error (chained to it). `sleep` is for tests.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        pause = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            f"{what}: database connection failed (attempt {state.attempt_number}/{attempts}), "
            f"retrying in {pause:.0f} s: {_first_line(error) if error is not None else 'unknown error'}"
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait if wait is not None else CONNECTION_WAIT,
        retry=tenacity.retry_if_exception(is_connection_error),
        before_sleep=before_sleep,
        sleep=sleep if sleep is not None else tenacity.nap.sleep,
        reraise=True,
    )
    try:
        return retrying(fn)
    except Exception as exc:
        if not is_connection_error(exc):
            raise
        message = (
            f"{what}: database connection failed {attempts} times in a row, giving up: {_first_line(exc)}"
        )
        log.error(message)
        raise DatabaseUnavailableError(message, attempts=attempts) from exc
