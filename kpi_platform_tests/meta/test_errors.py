"""Error taxonomy: the JSON body decides the class, the usage header the throttle wait; redaction of the token."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import requests

from kpi_platform.meta.errors import (
    AsyncReportFailed,
    MalformedResponse,
    MetaApiError,
    MetaRequestError,
    PermissionDenied,
    QueryTooLarge,
    Throttled,
    TokenInvalid,
    TransientError,
    classify,
    redact,
    throttle_wait_seconds,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "meta"
TOKEN = "EAAGtesttoken0SECRET0value"


def envelope(code: int, subcode: int | None = None, **extra: object) -> dict:
    error: dict[str, object] = {"message": f"(#{code}) message", "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error.update(fbtrace_id="AFm-trace", **extra)
    return {"error": error}


def buc_header(*minutes: float) -> dict[str, str]:
    entries = [
        {"type": "ads_insights", "call_count": 100, "estimated_time_to_regain_access": m} for m in minutes
    ]
    return {"X-Business-Use-Case-Usage": json.dumps({"100000000001": entries})}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # Throttles arrive as HTTP 400 with the code in the body.
        (400, envelope(4, 1504022), Throttled),
        (400, envelope(17, 2446079, is_transient=False), Throttled),
        (400, envelope(32), Throttled),
        (400, envelope(613, 1487742), Throttled),
        (400, envelope(80000, 2446079), Throttled),
        (400, envelope(80004, 2446079), Throttled),
        (400, envelope(80014), Throttled),
        # Transient.
        (500, envelope(1), TransientError),
        (400, envelope(2, 1504038), TransientError),
        (400, envelope(2, 1504043), TransientError),
        (400, envelope(960), TransientError),
        (400, envelope(100, 33, is_transient=True), TransientError),
        (500, None, TransientError),
        (503, {"unexpected": "html error page"}, TransientError),
        # A code we do not know, on a server error, is an outage: retried. On a 4xx it is a refusal.
        (502, envelope(123456), TransientError),
        (400, envelope(123456), MetaRequestError),
        # Code 2 with invalid breakdowns / metrics is not transient.
        (400, envelope(2, 1504041), MetaRequestError),
        (400, envelope(2, 1504042), MetaRequestError),
        # Token and permission: never retried.
        *[(400, envelope(190, sub), TokenInvalid) for sub in (None, 458, 459, 460, 463, 464, 467)],
        (400, envelope(102), TokenInvalid),
        (403, envelope(10), PermissionDenied),
        (400, envelope(200), PermissionDenied),
        (400, envelope(272), PermissionDenied),
        (400, envelope(299), PermissionDenied),
        # The body wins over the status: token error on a 500 stays a token error.
        (500, envelope(190, 463, is_transient=True), TokenInvalid),
        (200, envelope(80000), Throttled),
        # Too much data: split.
        (400, envelope(100, 1487534), QueryTooLarge),
        (500, envelope(100, 1504018), QueryTooLarge),
        (400, envelope(100, 1815629), MetaRequestError),
        (400, envelope(-2, 2490547), AsyncReportFailed),
        # No envelope.
        (200, None, MalformedResponse),
        (404, None, MetaRequestError),
        (400, {"error": "not an object"}, MetaRequestError),
        (408, None, TransientError),
        (429, None, Throttled),
    ],
)
def test_classify_by_body(status: int, body: object, expected: type[MetaApiError]) -> None:
    error = classify(status, body, {})
    assert type(error) is expected
    assert error.status_code == status


def test_classify_keeps_the_envelope_fields() -> None:
    body = json.loads((FIXTURES / "error_throttle_80000.json").read_text())
    error = classify(400, body, buc_header(3), client_id="acme", ad_account_id="act_123")
    assert isinstance(error, Throttled)
    assert (error.code, error.subcode, error.fbtrace_id, error.client_id) == (
        80000,
        2446079,
        "AFm-w0VSqFxoRyuKXJgg48H",
        "acme",
    )
    assert error.wait_seconds == 180.0
    assert error.transient


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (buc_header(0), None),
        (buc_header(2), 120.0),
        (buc_header(0, 7, 3), 420.0),  # the longest wait over all entries
        ({"x-business-use-case-usage": buc_header(1.5)["X-Business-Use-Case-Usage"]}, 90.0),
        ({"X-Business-Use-Case-Usage": "{not json"}, None),
        ({"X-App-Usage": '{"call_count": 100}'}, None),
        ({}, None),
    ],
)
def test_throttle_wait_from_usage_header_in_minutes(headers: dict, expected: float | None) -> None:
    assert throttle_wait_seconds(headers) == expected


def test_throttle_wait_takes_the_max_over_businesses() -> None:
    header = json.dumps(
        {
            "111": [{"type": "ads_insights", "estimated_time_to_regain_access": 4}],
            "222": [{"type": "ads_management", "estimated_time_to_regain_access": 9}],
        }
    )
    assert (
        throttle_wait_seconds(requests.structures.CaseInsensitiveDict({"x-business-use-case-usage": header}))
        == 540.0
    )


def test_token_error_names_client_and_fix_without_the_token() -> None:
    body = json.loads((FIXTURES / "error_token_expired.json").read_text())
    # Meta sometimes quotes the token it refused.
    body["error"]["message"] += f" Token: {TOKEN}"
    error = classify(400, body, {}, client_id="acme", ad_account_id="act_123", secrets=[TOKEN])
    assert isinstance(error, TokenInvalid)
    assert not error.transient
    text = str(error)
    assert text.startswith(
        "client 'acme' (act_123): the Meta access token is invalid or expired (code 190/463)."
    )
    assert "Create a new system-user token and set META_ACCESS_TOKEN" in text
    assert "README › Runbook › Rotating the token" in text
    assert TOKEN not in text and TOKEN not in repr(error)


def test_permission_error_says_what_to_grant() -> None:
    error = classify(400, envelope(200), {}, client_id="acme", ad_account_id="123")
    assert isinstance(error, PermissionDenied)
    assert "client 'acme' (act_123)" in str(error)
    assert "ads_read" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        f"token {TOKEN} leaked",
        f"GET https://graph.facebook.com/v23.0/act_1/insights?after=X&access_token={TOKEN}&limit=5",
        f"url-encoded {requests.utils.quote(TOKEN + '/+=', safe='')}",
    ],
)
def test_redact_removes_the_token(text: str) -> None:
    cleaned = redact(text, [TOKEN + "/+=", TOKEN])
    assert TOKEN not in cleaned
    assert "***" in cleaned


def test_redact_removes_unknown_access_token_values() -> None:
    cleaned = redact('?access_token=abc123&x=1 and {"access_token": "zzz"}')
    assert cleaned == '?access_token=***&x=1 and {"access_token": "***"}'


def test_errors_survive_pickling_with_their_fields() -> None:
    error = classify(400, envelope(80000, 2446079), buc_header(5), client_id="acme")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is Throttled
    assert (copy.wait_seconds, copy.code, copy.client_id, str(copy)) == (300.0, 80000, "acme", str(error))


def test_in_context_keeps_the_error_and_adds_where_it_happened() -> None:
    error = classify(400, envelope(80000, 2446079), buc_header(5), client_id="acme", ad_account_id="1")
    where = "insights 2026-03-01..2026-03-10, page 3 after cursor abc"
    placed = error.in_context(f"{where} access_token={TOKEN}")
    assert type(placed) is Throttled and placed is not error
    fields = (placed.wait_seconds, placed.code, placed.subcode, placed.client_id)
    assert fields == (300.0, 80000, 2446079, "acme")
    assert str(placed) == placed.message
    assert placed.message.startswith(error.message.rstrip(". "))
    assert placed.message.endswith(f"[{where} access_token=***]")
    assert TOKEN not in placed.message
    assert str(pickle.loads(pickle.dumps(placed))) == str(placed)
