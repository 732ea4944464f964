"""Database connection errors are retried with exponential backoff and logged; other errors fail at once."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from kpi_platform.activity.retry import (
    CONNECTION_ATTEMPTS,
    DatabaseUnavailableError,
    call_with_connection_retries,
    is_connection_error,
)


class DriverError(Exception):
    """Stands in for a DB-API driver's exception."""


def operational(message: str = "server closed the connection unexpectedly") -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, DriverError(message))


class Flaky:
    """Fails with `errors` in turn, then returns `value`; counts its calls."""

    def __init__(self, *errors: BaseException, value: object = "counted") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


@pytest.fixture
def waits() -> list[float]:
    return []


def call(fn, waits: list[float], log: logging.Logger | None = None):
    return call_with_connection_retries(
        fn, what="reading the application database", log=log or logging.getLogger("test"), sleep=waits.append
    )


def test_a_call_failing_twice_then_succeeding_returns_after_exponential_waits(waits, caplog):
    flaky = Flaky(
        operational(), sa.exc.InterfaceError("SELECT 1", {}, DriverError("connection already closed"))
    )
    with caplog.at_level(logging.WARNING, logger="test"):
        assert call(flaky, waits) == "counted"
    assert flaky.calls == 3
    assert waits == [2.0, 4.0]
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "reading the application database: database connection failed (attempt 1/3), retrying in 2 s: "
        "OperationalError: server closed the connection unexpectedly",
        "reading the application database: database connection failed (attempt 2/3), retrying in 4 s: "
        "InterfaceError: connection already closed",
    ]


def test_a_call_that_always_fails_is_tried_three_times_then_fails_clearly(waits, caplog):
    flaky = Flaky(*(operational(f"could not connect to server ({n})") for n in range(1, 10)))
    with caplog.at_level(logging.WARNING, logger="test"), pytest.raises(DatabaseUnavailableError) as raised:
        call(flaky, waits)
    assert flaky.calls == CONNECTION_ATTEMPTS == 3
    assert waits == [2.0, 4.0]
    assert raised.value.attempts == 3
    assert str(raised.value) == (
        "reading the application database: database connection failed 3 times in a row, giving up: "
        "OperationalError: could not connect to server (3)"
    )
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)
    assert caplog.records[-1].levelno == logging.ERROR
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_other_errors_fail_at_once(waits):
    for error in (
        ValueError("bad row"),
        sa.exc.IntegrityError("INSERT", {}, DriverError("duplicate key")),
        sa.exc.ProgrammingError("SELECT", {}, DriverError("relation does not exist")),
    ):
        flaky = Flaky(error)
        with pytest.raises(type(error)):
            call(flaky, waits)
        assert flaky.calls == 1
    assert waits == []


def test_which_errors_are_connection_errors():
    assert is_connection_error(operational())
    assert is_connection_error(sa.exc.InterfaceError("SELECT 1", {}, DriverError("closed")))
    invalidated = sa.exc.DBAPIError(
        "SELECT 1", {}, DriverError("SSL connection has been closed"), connection_invalidated=True
    )
    assert is_connection_error(invalidated)
    assert not is_connection_error(sa.exc.DBAPIError("SELECT 1", {}, DriverError("division by zero")))
    assert not is_connection_error(sa.exc.IntegrityError("INSERT", {}, DriverError("duplicate key")))
    assert not is_connection_error(RuntimeError("connection"))


def test_a_real_unreachable_database_is_retried(waits, tmp_path):
    # A SQLite file in a folder that does not exist cannot be opened: OperationalError on connect.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'absent' / 'app.sqlite'}")

    def read() -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT 1")).scalar_one())

    with pytest.raises(DatabaseUnavailableError, match="unable to open database file"):
        call(read, waits)
    assert waits == [2.0, 4.0]
    engine.dispose()
