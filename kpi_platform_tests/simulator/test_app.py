"""The simulator's token introspection (`GET /debug_token` with configured expiries and scopes) and its hang fault
(requests held unanswered while a file exists), in process and over real loopback HTTP."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from kpi_platform import settings
from kpi_platform.simulator import FaultConfig, MetaSimulator, SimulatorConfig, mount_simulator, serve
from kpi_platform.simulator.graph_api import debug_token_body

TOKEN = "test-token"
TODAY = date(2026, 3, 20)
NOON = datetime(2026, 3, 20, 12, tzinfo=UTC)
INSIGHTS = {
    "access_token": TOKEN,
    "level": "campaign",
    "time_increment": "1",
    "fields": "spend",
    "time_range": json.dumps({"since": "2026-03-18", "until": "2026-03-19"}),
}


@pytest.fixture(params=["in_process", "http"])
def connect(request) -> Iterator:
    servers = []

    def make(config: SimulatorConfig | None = None, faults: FaultConfig | None = None):
        simulator = MetaSimulator(config or SimulatorConfig(today=TODAY), faults)
        session = requests.Session()
        if request.param == "http":
            server = serve(simulator)
            servers.append(server)
            base = server.url
        else:
            mount_simulator(session, simulator)
            base = settings.SIMULATOR_BASE_URL
        return session, f"{base}/{settings.META_API_VERSION}", simulator

    yield make
    for server in servers:
        server.shutdown()


def test_debug_token_reports_the_configured_dates_and_scopes(connect):
    expires = NOON + timedelta(days=6)
    data_access = NOON + timedelta(days=80)
    session, api, simulator = connect(
        SimulatorConfig(
            today=TODAY,
            token_expires_at=expires,
            token_data_access_expires_at=data_access,
            token_scopes=("ads_read", "read_insights"),
        )
    )
    response = session.get(
        f"{api}/debug_token", params={"input_token": TOKEN, "access_token": TOKEN}, timeout=(5, 10)
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["is_valid"] is True
    assert (data["expires_at"], data["data_access_expires_at"]) == (
        int(expires.timestamp()),
        int(data_access.timestamp()),
    )
    assert data["scopes"] == ["ads_read", "read_insights"]
    assert simulator.counters().by_kind == {"debug_token": 1}


def test_debug_token_needs_both_tokens(connect):
    session, api, _ = connect()
    no_input = session.get(f"{api}/debug_token", params={"access_token": TOKEN}, timeout=(5, 10))
    assert no_input.status_code == 400 and no_input.json()["error"]["code"] == 100
    no_caller = session.get(f"{api}/debug_token", params={"input_token": TOKEN}, timeout=(5, 10))
    assert no_caller.status_code == 400 and no_caller.json()["error"]["code"] == 190


def test_debug_token_is_never_faulted(connect):
    session, api, simulator = connect(faults=FaultConfig(scripted_errors=(2, 2), drop_rate=1.0))
    response = session.get(
        f"{api}/debug_token", params={"input_token": TOKEN, "access_token": TOKEN}, timeout=(5, 10)
    )
    assert response.status_code == 200
    assert simulator.counters().faults == {}


def test_debug_token_body_marks_an_expired_or_invalid_token():
    fields = {"data_access_expires_at": None, "scopes": ("ads_read",), "now": NOON, "invalid_token": "bad"}
    expired = debug_token_body(input_token="t", expires_at=NOON - timedelta(seconds=1), **fields)["data"]
    assert expired["is_valid"] is False
    assert (expired["error"]["code"], expired["error"]["subcode"]) == (190, 463)
    invalid = debug_token_body(input_token="bad", expires_at=None, **fields)["data"]
    assert (invalid["is_valid"], invalid["expires_at"], invalid["error"]["subcode"]) == (False, 0, 460)
    fine = debug_token_body(input_token="t", expires_at=NOON + timedelta(seconds=1), **fields)["data"]
    assert fine["is_valid"] is True and "error" not in fine


def test_naive_token_dates_are_refused():
    with pytest.raises(ValueError, match="token_expires_at must be timezone-aware"):
        SimulatorConfig(token_expires_at=datetime(2026, 1, 1))


def test_requests_hang_while_the_file_exists_then_are_served(connect, tmp_path):
    hang = tmp_path / "hang"
    hang.touch()
    session, api, simulator = connect(faults=FaultConfig(hang_while_path=str(hang), hang_seconds=30))
    released_after = 0.6
    threading.Timer(released_after, hang.unlink).start()
    began = time.monotonic()
    # The read timeout is above the release: the client waits, as it would on a call that never returns.
    response = session.get(f"{api}/act_100000000001/insights", params=INSIGHTS, timeout=(5, 10))
    waited = time.monotonic() - began
    assert response.status_code == 200 and response.json()["data"]
    assert released_after <= waited < 5
    assert simulator.counters().faults == {"hang": 1}
    # Once the file is gone, nothing hangs.
    began = time.monotonic()
    assert session.get(f"{api}/act_100000000001/insights", params=INSIGHTS, timeout=(5, 10)).ok
    assert time.monotonic() - began < 0.5


def test_a_hang_gives_up_after_hang_seconds(connect, tmp_path):
    hang = tmp_path / "hang"
    hang.touch()
    session, api, _ = connect(faults=FaultConfig(hang_while_path=str(hang), hang_seconds=0.5))
    began = time.monotonic()
    assert session.get(f"{api}/act_100000000001/insights", params=INSIGHTS, timeout=(5, 10)).ok
    assert 0.5 <= time.monotonic() - began < 3


def test_hang_seconds_must_be_positive():
    with pytest.raises(ValueError, match="hang_seconds must be positive"):
        FaultConfig(hang_while_path="x", hang_seconds=0)
