"""parse_insights_rows: typed campaign-day rows from recorded API rows; named action types, never summed."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from kpi_platform.meta.parse import (
    CAMPAIGN_COLUMNS,
    ParseError,
    fits_bigint,
    parse_insights_rows,
    parse_usage_headers,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "meta"
EXPECTED_DTYPES = {
    "client_id": "object",
    "kpi_date": "object",
    "campaign_id": "object",
    "campaign_name": "object",
    "spend": "float64",
    "impressions": "int64",
    "clicks": "int64",
    "ctr_pct": "float64",
    "cpc": "float64",
    "calls": "int64",
    "contacts": "int64",
    "leads": "int64",
    "reservations": "int64",
    "reservation_value": "float64",
    "currency": "object",
}


def recorded_rows() -> list[dict]:
    return [
        r for n in (1, 2, 3) for r in json.loads((FIXTURES / f"insights_page_{n}.json").read_text())["data"]
    ]


def base_row(**overrides: object) -> dict:
    row = {
        "account_currency": "EUR",
        "campaign_id": "42",
        "campaign_name": "Spring",
        "date_start": "2026-03-14",
        "date_stop": "2026-03-14",
        "impressions": "1000",
        "clicks": "50",
        "spend": "25.00",
    }
    row.update(overrides)
    return row


def parse_one(row: dict, **kwargs: object) -> pd.Series:
    return parse_insights_rows([row], client_id="acme", **kwargs).iloc[0]


def test_recorded_pages_become_typed_rows() -> None:
    frame = parse_insights_rows(recorded_rows(), client_id="acme", expected_currency="EUR")
    assert tuple(frame.columns) == CAMPAIGN_COLUMNS
    assert {c: str(t) for c, t in frame.dtypes.items()} == EXPECTED_DTYPES
    assert len(frame) == 3
    first = frame.iloc[0]
    assert first["kpi_date"] == date(2026, 3, 14) and type(first["kpi_date"]) is date
    assert (first["client_id"], first["campaign_id"], first["campaign_name"]) == (
        "acme",
        "23843676632450104",
        "TF: Trafik",
    )
    assert (first["spend"], first["impressions"], first["clicks"]) == (2447.55, 64243, 5474)
    assert first["ctr_pct"] == pytest.approx(8.520773) and first["cpc"] == pytest.approx(0.447123)
    assert first["currency"] == "EUR"


def test_nested_action_types_are_never_double_counted() -> None:
    first, second, _ = parse_insights_rows(recorded_rows(), client_id="acme").to_dict("records")
    # `lead` (12) already contains the pixel (7) and on-site (5) leads; link_click/post_engagement are no conversions.
    assert first["leads"] == 12
    assert first["calls"] == 5  # first preferred type, not 5 + 3
    assert first["reservations"] == 4  # schedule_total, not 4 + 3 + 1
    assert first["reservation_value"] == pytest.approx(320.50)  # from action_values, not counts
    assert first["contacts"] == 0
    # Without `lead`, the disjoint parts are added.
    assert second["leads"] == 3
    assert second["contacts"] == 3


def test_conversions_absent_are_zero() -> None:
    row = parse_one(base_row())
    assert [row[c] for c in ("calls", "contacts", "leads", "reservations", "reservation_value")] == [
        0,
        0,
        0,
        0,
        0.0,
    ]


def test_ctr_and_cpc_computed_when_absent() -> None:
    row = parse_one(base_row(impressions="2000", clicks="50", spend="25"))
    assert row["ctr_pct"] == pytest.approx(2.5)  # a percentage
    assert row["cpc"] == pytest.approx(0.5)


def test_ctr_and_cpc_are_nan_without_a_denominator() -> None:
    no_clicks = parse_one(base_row(clicks="0", ctr="0"))
    assert no_clicks["ctr_pct"] == 0.0 and math.isnan(no_clicks["cpc"])
    idle = parse_one(base_row(impressions="0", clicks="0", spend="0", ctr="0"))
    assert math.isnan(idle["ctr_pct"]) and math.isnan(idle["cpc"])


def test_currency_mismatch_names_campaign_date_and_field() -> None:
    with pytest.raises(ParseError, match=r"campaign 42 on 2026-03-14: field 'account_currency' is USD.*EUR"):
        parse_insights_rows([base_row(account_currency="USD")], client_id="acme", expected_currency="EUR")


def test_expected_currency_fills_a_missing_account_currency() -> None:
    row = base_row()
    del row["account_currency"]
    assert parse_one(row, expected_currency="PLN")["currency"] == "PLN"
    with pytest.raises(ParseError, match="account_currency"):
        parse_insights_rows([row], client_id="acme")


def test_a_row_spanning_several_days_is_refused() -> None:
    with pytest.raises(ParseError, match=r"campaign 42 on 2026-03-14: field 'date_stop'"):
        parse_insights_rows([base_row(date_stop="2026-03-20")], client_id="acme")


@pytest.mark.parametrize(
    "missing", ["campaign_id", "campaign_name", "date_start", "spend", "impressions", "clicks"]
)
def test_a_missing_required_field_is_named(missing: str) -> None:
    row = base_row()
    del row[missing]
    with pytest.raises(ParseError, match=f"field '{missing}' is missing"):
        parse_insights_rows([row], client_id="acme")


@pytest.mark.parametrize(("field", "value"), [("spend", "12,50"), ("impressions", "n/a"), ("ctr", "NaN")])
def test_non_numeric_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ParseError, match=f"field '{field}'"):
        parse_insights_rows([base_row(**{field: value})], client_id="acme")


def test_non_numeric_action_value_is_named() -> None:
    with pytest.raises(ParseError, match=r"actions\[lead\]"):
        parse_insights_rows([base_row(actions=[{"action_type": "lead", "value": "many"}])], client_id="acme")


def test_empty_input_gives_an_empty_typed_frame() -> None:
    frame = parse_insights_rows([], client_id="acme")
    assert frame.empty
    assert tuple(frame.columns) == CAMPAIGN_COLUMNS
    assert {c: str(t) for c, t in frame.dtypes.items()} == EXPECTED_DTYPES


def test_identical_repeats_are_kept_once_and_conflicts_refused() -> None:
    assert len(parse_insights_rows([base_row(), base_row()], client_id="acme")) == 1
    with pytest.raises(ParseError, match="two different rows"):
        parse_insights_rows([base_row(), base_row(spend="26.00")], client_id="acme")


def test_usage_headers_are_decoded() -> None:
    usage = parse_usage_headers(
        {
            "x-app-usage": '{"call_count": 28, "total_time": 25, "total_cputime": 25}',
            "X-Ad-Account-Usage": '{"acc_id_util_pct": 9.67}',
            "X-FB-Ads-Insights-Throttle": "not json",
            "Content-Type": "application/json",
        }
    )
    assert usage == {
        "app_usage": {"call_count": 28, "total_time": 25, "total_cputime": 25},
        "ad_account_usage": {"acc_id_util_pct": 9.67},
        "ads_insights_throttle": "not json",
    }


# --- counts the warehouse cannot hold ----------------------------------------------------------------------------


def test_a_count_too_large_for_bigint_is_kept_exactly_for_the_contract_to_refuse() -> None:
    huge = "1" * 31
    frame = parse_insights_rows(
        [base_row(impressions=huge), base_row(campaign_id="43", impressions="1000")], client_id="acme"
    )
    # No OverflowError: the column holds the exact Python ints (object), the other columns keep their dtypes.
    assert str(frame["impressions"].dtype) == "object"
    assert frame["impressions"].tolist() == [int(huge), 1000]
    assert {c: str(t) for c, t in frame.dtypes.items() if c != "impressions"} == {
        c: t for c, t in EXPECTED_DTYPES.items() if c != "impressions"
    }
    assert frame.iloc[0]["ctr_pct"] == pytest.approx(50 / int(huge) * 100)


@pytest.mark.parametrize(
    ("field", "text", "dtype"),
    [
        # BIGINT's largest: read exactly, not rounded up through a float.
        ("impressions", "9223372036854775807", "int64"),
        ("impressions", "9223372036854775808", "object"),
        ("clicks", "-9223372036854775809", "object"),
        ("impressions", "1e40", "object"),
    ],
)
def test_counts_are_read_exactly_at_the_bigint_edges(field: str, text: str, dtype: str) -> None:
    frame = parse_insights_rows([base_row(**{field: text})], client_id="acme")
    assert str(frame[field].dtype) == dtype
    assert frame.iloc[0][field] == (int(float(text)) if "e" in text else int(text))


def test_fits_bigint() -> None:
    assert fits_bigint([]) and fits_bigint([-(2**63), 2**63 - 1])
    assert not fits_bigint([0, 2**63]) and not fits_bigint([-(2**63) - 1])
