"""The token check: how Meta's debug_token answer is judged (7 days HIGH, 1 day CRITICAL, a missing ads_read or an
invalid token CRITICAL), how it is read from the simulator over real HTTP and in process, and that the token
appears in no message, log line or exception on the way."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests

from kpi_platform import settings
from kpi_platform.meta.errors import MalformedResponse, TransientError
from kpi_platform.meta.token_check import (
    TokenInfo,
    TokenUrgency,
    assess,
    fetch_token_info,
    parse_debug_token,
)
from kpi_platform.simulator import MetaSimulator, SimulatorConfig, mount_simulator, serve

TOKEN = "EAAGtokencheck0SECRET"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def info(
    *,
    expires_in: float | None = None,
    data_access_in: float | None = None,
    scopes: tuple[str, ...] = ("ads_read", "business_management"),
    is_valid: bool = True,
    error: str = "",
) -> TokenInfo:
    return TokenInfo(
        is_valid=is_valid,
        expires_at=None if expires_in is None else NOW + timedelta(days=expires_in),
        data_access_expires_at=None if data_access_in is None else NOW + timedelta(days=data_access_in),
        scopes=scopes,
        error=error,
    )


# --- judging ----------------------------------------------------------------------------------------------------


def test_a_token_that_never_expires_with_ads_read_is_fine():
    result = assess(info(), NOW)
    assert result.urgency == TokenUrgency.OK
    assert result.problems == ()
    assert result.days_left is None


@pytest.mark.parametrize(
    ("expires_in", "data_access_in", "urgency"),
    [
        (30.0, None, TokenUrgency.OK),
        (7.01, 90.0, TokenUrgency.OK),
        (7.0, 90.0, TokenUrgency.HIGH),  # 7 days before the date: HIGH
        (3.0, None, TokenUrgency.HIGH),
        (1.01, None, TokenUrgency.HIGH),
        (1.0, None, TokenUrgency.CRITICAL),  # 1 day before: CRITICAL
        (0.2, None, TokenUrgency.CRITICAL),
        (-2.0, None, TokenUrgency.CRITICAL),  # past
        (None, 6.5, TokenUrgency.HIGH),  # either date counts: data access
        (60.0, 0.5, TokenUrgency.CRITICAL),
    ],
)
def test_urgency_follows_the_nearer_of_both_dates(expires_in, data_access_in, urgency):
    result = assess(info(expires_in=expires_in, data_access_in=data_access_in), NOW)
    assert result.urgency == urgency
    nearest = min(d for d in (expires_in, data_access_in) if d is not None)
    assert result.days_left == pytest.approx(nearest)
    assert bool(result.problems) == (urgency != TokenUrgency.OK)


def test_a_missing_ads_read_scope_is_critical_whatever_the_dates():
    result = assess(info(scopes=("business_management",)), NOW)
    assert result.urgency == TokenUrgency.CRITICAL
    assert result.missing_scopes == ("ads_read",)
    assert "ads_read" in result.problems[0]


def test_an_invalid_token_is_critical_and_not_also_short_of_scopes():
    result = assess(info(is_valid=False, scopes=(), error="Session has expired (190/463)"), NOW)
    assert result.urgency == TokenUrgency.CRITICAL
    assert result.missing_scopes == ()
    assert result.problems == ("Meta reports the token invalid: Session has expired (190/463)",)


def test_judging_needs_an_aware_moment():
    with pytest.raises(ValueError, match="timezone-aware"):
        assess(info(), NOW.replace(tzinfo=None))


# --- Meta's answer ----------------------------------------------------------------------------------------------


def test_parse_reads_unix_dates_with_zero_as_never():
    expires = int((NOW + timedelta(days=3)).timestamp())
    parsed = parse_debug_token(
        {
            "data": {
                "is_valid": True,
                "expires_at": expires,
                "data_access_expires_at": 0,
                "scopes": ["ads_read"],
                "type": "SYSTEM_USER",
            }
        }
    )
    assert parsed.expires_at == datetime.fromtimestamp(expires, UTC)
    assert parsed.data_access_expires_at is None
    assert (parsed.scopes, parsed.token_type, parsed.error) == (("ads_read",), "SYSTEM_USER", "")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": []},
        {"data": {"expires_at": 0}},
        {"data": {"is_valid": True, "scopes": "ads_read"}},
        {"data": {"is_valid": True, "expires_at": "soon"}},
        {"data": {"is_valid": True, "expires_at": True}},
    ],
)
def test_parse_refuses_other_shapes(body):
    with pytest.raises(MalformedResponse):
        parse_debug_token(body)


@pytest.fixture(params=["loopback_http", "in_process"])
def ask(request) -> Iterator:
    """Calls fetch_token_info against a fresh simulator with the given config, over the parametrized transport."""
    servers = []

    def call(config: SimulatorConfig, token: str = TOKEN) -> TokenInfo:
        simulator = MetaSimulator(config)
        session = requests.Session()
        if request.param == "loopback_http":
            server = serve(simulator)
            servers.append(server)
            base_url = server.url
        else:
            base_url = settings.SIMULATOR_BASE_URL
            mount_simulator(session, simulator, base_url=base_url)
        with session:
            return fetch_token_info(
                session=session, base_url=base_url, access_token=token, sleep=lambda _: None
            )

    yield call
    for server in servers:
        server.shutdown()


def test_the_simulator_reports_configured_expiries_and_scopes(ask):
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=5)
    data_access = expires + timedelta(days=40)
    answer = ask(
        SimulatorConfig(
            token_expires_at=expires, token_data_access_expires_at=data_access, token_scopes=("ads_read",)
        )
    )
    assert answer == TokenInfo(
        is_valid=True,
        expires_at=expires,
        data_access_expires_at=data_access,
        scopes=("ads_read",),
        token_type="SYSTEM_USER",
    )
    assert assess(answer, datetime.now(UTC)).urgency == TokenUrgency.HIGH


def test_by_default_the_simulators_token_never_expires_and_reads_ads(ask):
    answer = ask(SimulatorConfig())
    assert (answer.is_valid, answer.expires_at, answer.data_access_expires_at) == (True, None, None)
    assert assess(answer, datetime.now(UTC)).urgency == TokenUrgency.OK


def test_a_token_meta_refuses_is_an_answer_not_a_failure(ask):
    answer = ask(SimulatorConfig(invalid_token=TOKEN))
    assert not answer.is_valid
    assert "190/463" in answer.error
    assert TOKEN not in answer.error
    assert assess(answer, datetime.now(UTC)).urgency == TokenUrgency.CRITICAL


def test_an_expired_token_is_reported_invalid_with_metas_reason(ask):
    expired = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    answer = ask(SimulatorConfig(token_expires_at=expired))
    assert not answer.is_valid
    assert answer.expires_at == expired
    assert "Session has expired" in answer.error and "190/463" in answer.error


class _FailingSession(requests.Session):
    """Every request fails the way requests does: with the full URL (and so the token) in the message."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def get(self, url, **kwargs):  # type: ignore[override]
        self.calls += 1
        prepared = requests.Request("GET", url, params=kwargs.get("params")).prepare()
        raise requests.ConnectionError(f"Max retries exceeded with url: {prepared.url}")


def test_a_failed_check_raises_without_the_token_anywhere(caplog):
    session = _FailingSession()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TransientError) as raised:
        fetch_token_info(
            session=session, base_url="https://graph.example", access_token=TOKEN, sleep=lambda _: None
        )
    assert session.calls == 2  # retried once: a transient failure
    text = f"{raised.value} {raised.value!r} {raised.value.message}"
    assert "input_token=***" in text and "access_token=***" in text
    assert TOKEN not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert TOKEN not in caplog.text


def test_no_token_no_call():
    with pytest.raises(ValueError, match="no access token"):
        fetch_token_info(session=_FailingSession(), base_url="https://graph.example", access_token="")
