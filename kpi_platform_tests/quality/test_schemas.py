"""The frame contracts: each rule caught with its culprit, all failures in one lazy pass, a capped JSON-safe report."""

from __future__ import annotations

import json
import math
import pickle
from datetime import date

import numpy as np
import pandas as pd
import pytest

from kpi_platform.collect import build_daily_totals
from kpi_platform.quality.schemas import (
    FAILURE_COLUMNS,
    ClientDaySchema,
    ContractViolation,
    MonthlySummarySchema,
    schema_failures,
    validate_collection,
)

START, END = date(2025, 3, 1), date(2025, 3, 3)
RUN = {"client_id": "acme", "start": START, "end": END, "currency": "EUR"}


def campaign(day: int, campaign_id: str = "c1", **changes) -> dict:
    row = {
        "client_id": "acme",
        "kpi_date": date(2025, 3, day),
        "campaign_id": campaign_id,
        "campaign_name": f"Campaign {campaign_id}",
        "spend": 12.34,
        "impressions": 1000,
        "clicks": 25,
        "ctr_pct": 2.5,
        "cpc": 0.4936,
        "calls": 1,
        "contacts": 0,
        "leads": 2,
        "reservations": 0,
        "reservation_value": 0.0,
        "currency": "EUR",
    }
    return row | changes


def campaigns(*rows: dict) -> pd.DataFrame:
    rows = rows or (
        campaign(1),
        campaign(1, "c2", spend=0.0, impressions=0, clicks=0, ctr_pct=np.nan, cpc=np.nan),
        campaign(2),
    )
    return pd.DataFrame(list(rows))


def totals_of(frame: pd.DataFrame, start: date = START, end: date = END) -> pd.DataFrame:
    return build_daily_totals(frame, client_id="acme", start=start, end=end, currency="EUR")


def violation(camp: pd.DataFrame, totals: pd.DataFrame | None = None, **run) -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        validate_collection(camp, totals_of(camp) if totals is None else totals, **(RUN | run))
    return info.value


def test_a_valid_collection_with_an_idle_day_and_a_campaign_without_impressions_passes():
    camp = campaigns()
    totals = totals_of(camp)
    assert list(totals["delivery"]) == ["delivered", "delivered", "idle"]
    validate_collection(camp, totals, **RUN)


def test_a_collection_without_any_campaign_row_passes():
    empty = campaigns().iloc[:0]
    validate_collection(empty, totals_of(empty), **RUN)


def test_ratios_rounded_like_the_api_strings_pass_and_two_percent_off_fails():
    # 7/333 = 2.1021021…%, the API sends "2.102102"; CPC stored with 4 decimals.
    rounded = campaign(1, impressions=333, clicks=7, spend=3.33, ctr_pct=2.102102, cpc=0.4757)
    validate_collection(campaigns(rounded), totals_of(campaigns(rounded)), **RUN)

    off = campaigns(
        campaign(1, impressions=333, clicks=7, spend=3.33, ctr_pct=2.102102 * 1.02, cpc=0.4757 * 1.02)
    )
    assert set(violation(off).rules) == {"ctr_consistent", "cpc_consistent"}


# Each rule, its bad row (day 2, campaign "bad"), and the value the report must show.
CAMPAIGN_RULES = {
    "non_negative": (dict(leads=-1), "leads", -1),
    "clicks_le_impressions": (dict(impressions=10, clicks=11, ctr_pct=110.0, cpc=12.34 / 11), "clicks", 11),
    "spend_requires_impressions": (dict(impressions=0, clicks=0, ctr_pct=np.nan, cpc=np.nan), "spend", 12.34),
    "ctr_consistent": (dict(ctr_pct=25.0), "ctr_pct", 25.0),
    "cpc_consistent": (dict(cpc=4.936), "cpc", 4.936),
    "known_currency": (dict(currency="XXX"), "currency", "XXX"),
    "expected_currency": (dict(currency="USD"), "currency", "USD"),
    "client_matches": (dict(client_id="other"), "client_id", "other"),
}


@pytest.mark.parametrize("rule", sorted(CAMPAIGN_RULES))
def test_each_campaign_rule_names_its_culprit(rule):
    changes, column, value = CAMPAIGN_RULES[rule]
    camp = campaigns(campaign(1), campaign(2, "bad", **changes))
    failures = violation(camp, totals_of(campaigns(campaign(1), campaign(2, "bad")))).failures
    mine = failures[(failures["rule"] == rule) & (failures["schema"] == "CampaignDaySchema")]
    assert len(mine) == 1, failures
    hit = mine.iloc[0]
    assert (hit["column"], hit["kpi_date"], hit["campaign_id"], hit["failure_value"]) == (
        column,
        date(2025, 3, 2),
        "bad",
        value,
    )


def test_a_date_outside_the_range_is_reported_in_both_frames():
    camp = campaigns(campaign(1), campaign(4))
    totals = totals_of(camp, end=date(2025, 3, 4))
    failures = violation(camp, totals).failures
    outside = failures[failures["rule"] == "dates_in_range"]
    assert set(outside["schema"]) == {"CampaignDaySchema", "ClientDaySchema"}
    assert set(outside["kpi_date"]) == {date(2025, 3, 4)}


def test_duplicate_campaign_rows_break_the_unique_key():
    camp = campaigns(campaign(1), campaign(1))
    totals = totals_of(campaigns(campaign(1)))
    failures = violation(camp, totals).failures
    dup = failures[failures["rule"] == "unique_key"]
    assert len(dup) == 2 and set(dup["column"]) == {"client_id,kpi_date,campaign_id"}


def test_totals_must_cover_every_day_once():
    camp = campaigns()
    totals = totals_of(camp)
    gap = violation(camp, totals.iloc[[0, 2]]).failures
    assert gap[["rule", "kpi_date"]].values.tolist() == [["days_complete", date(2025, 3, 2)]]
    twice = violation(camp, pd.concat([totals, totals.iloc[[2]]])).failures
    assert set(twice["rule"]) == {"unique_key"}
    assert set(twice["kpi_date"]) == {date(2025, 3, 3)}


def test_totals_that_do_not_sum_the_campaigns_are_reported_per_column():
    camp = campaigns()
    totals = totals_of(camp)
    totals.loc[0, "spend"] += 0.004  # within the money tolerance
    totals.loc[1, "leads"] += 1
    failures = violation(camp, totals).failures
    assert failures[["rule", "column", "kpi_date"]].values.tolist() == [
        ["campaigns_reconcile", "leads", date(2025, 3, 2)]
    ]
    assert failures.iloc[0]["failure_value"] == "total 3.0 != campaigns 2.0"


def test_idle_must_mean_no_campaign_and_no_spend():
    camp = campaigns()
    totals = totals_of(camp)
    totals.loc[0, "delivery"] = "idle"
    totals.loc[2, "delivery"] = "delivered"
    failures = violation(camp, totals).failures
    idle = failures[failures["rule"] == "idle_consistent"]
    assert list(idle["kpi_date"]) == [date(2025, 3, 1), date(2025, 3, 3)]
    assert list(idle["failure_value"]) == ["idle", "delivered"]


def test_wrong_types_and_missing_columns_are_reported_without_crashing():
    camp = campaigns()
    totals = totals_of(camp)
    camp["impressions"] = camp["impressions"].astype("float64")
    camp["kpi_date"] = camp["kpi_date"].astype(str)
    totals = totals.drop(columns=["campaign_count"])
    failures = violation(camp, totals).failures
    rules = set(zip(failures["rule"], failures["column"], strict=True))
    assert {("dtype('int64')", "impressions"), ("dtype('date')", "kpi_date")} <= rules
    assert ("column_in_dataframe", "campaign_count") in rules
    assert "campaigns_reconcile" not in set(failures["rule"])


def test_one_lazy_pass_reports_every_broken_rule_and_a_capped_json_safe_sample():
    bad = [campaign(2, f"bad{i}", **changes) for i, (changes, _, _) in enumerate(CAMPAIGN_RULES.values())]
    many = [campaign(1, f"neg{i}", calls=-1) for i in range(30)]
    camp = campaigns(*many, *bad)
    totals = totals_of(camp)
    totals.loc[2, "delivery"] = "delivered"
    exc = violation(camp, totals.iloc[[0, 2]])

    assert set(exc.rules) >= {*CAMPAIGN_RULES, "days_complete", "idle_consistent"}
    assert len(exc.failures) > 40
    assert list(exc.failures.columns) == list(FAILURE_COLUMNS)

    sample = exc.sample(n=20)
    assert len(sample) == 20
    assert {s["rule"] for s in sample} == set(exc.rules)  # every rule shows in a capped sample
    json.dumps(sample)
    assert all(isinstance(s["kpi_date"], str | None) for s in sample)
    assert all(not (isinstance(s["failure_value"], float) and math.isnan(s["failure_value"])) for s in sample)

    summary = exc.summary()
    assert "acme" in summary and "2025-03-02" in summary and "idle_consistent" in summary
    assert str(exc) == summary
    assert isinstance(exc, ValueError)


def test_nan_failure_values_become_none_in_the_sample():
    camp = campaigns(campaign(1, ctr_pct=np.nan))
    exc = violation(camp)
    assert exc.rules == ["ctr_consistent"]
    assert exc.sample() == [
        {
            "schema": "CampaignDaySchema",
            "rule": "ctr_consistent",
            "column": "ctr_pct",
            "client_id": "acme",
            "kpi_date": "2025-03-01",
            "campaign_id": "c1",
            "failure_value": None,
        }
    ]


def test_a_violation_survives_pickling():
    exc = violation(campaigns(campaign(1, leads=-3)))
    copy = pickle.loads(pickle.dumps(exc))
    assert copy.rules == exc.rules and copy.summary() == exc.summary()


def test_client_day_quality_score_is_bounded():
    camp = campaigns()
    totals = totals_of(camp).assign(quality_score=[100.0, 140.0, np.nan])
    failures = schema_failures(totals, ClientDaySchema)
    assert failures[["rule", "kpi_date", "failure_value"]].values.tolist() == [
        ["score_0_to_100", date(2025, 3, 2), 140.0]
    ]


def month_row(**changes) -> dict:
    row = {
        "client_id": "acme",
        "month": date(2025, 2, 1),
        "spend": 100.0,
        "impressions": 10_000,
        "clicks": 200,
        "calls": 3,
        "contacts": 0,
        "leads": 5,
        "reservations": 1,
        "reservation_value": 80.0,
        "ctr_pct": 2.0,
        "cpc": 0.5,
        "days_present": 28,
        "days_in_month": 28,
        "idle_days": 2,
        "status": "final",
        "currency": "PLN",
    }
    return row | changes


def test_monthly_summaries_contract():
    good = pd.DataFrame([month_row(), month_row(month=date(2025, 3, 1), days_in_month=31, days_present=31)])
    assert schema_failures(good, MonthlySummarySchema).empty

    bad = pd.DataFrame(
        [
            month_row(month=date(2025, 2, 2)),
            month_row(
                month=date(2025, 4, 1), days_in_month=31, days_present=30, idle_days=31, status="draft"
            ),
            month_row(month=date(2025, 5, 1), days_in_month=31, days_present=32),
            month_row(month=date(2025, 5, 1), days_in_month=31, days_present=31, ctr_pct=None, cpc=None),
        ]
    )
    failures = schema_failures(bad, MonthlySummarySchema)
    by_rule = failures.groupby("rule")["kpi_date"].apply(sorted).to_dict()
    assert by_rule == {
        "month_starts_on_day_1": [date(2025, 2, 2)],
        "days_in_month_matches": [date(2025, 4, 1)],
        "idle_days_le_days_present": [date(2025, 4, 1)],
        "status_value": [date(2025, 4, 1)],
        "days_present_le_days_in_month": [date(2025, 5, 1)],
        "unique_key": [date(2025, 5, 1), date(2025, 5, 1)],
        "ctr_consistent": [date(2025, 5, 1)],
        "cpc_consistent": [date(2025, 5, 1)],
    }


# --- values the warehouse columns cannot hold -----------------------------------------------------------------------


def test_a_count_beyond_bigint_fails_fits_bigint_naming_the_row_and_nothing_else():
    huge = int("1" * 31)
    bad = campaign(2, "bad", impressions=huge, ctr_pct=25 / huge * 100)
    camp = campaigns(campaign(1), bad)
    assert camp["impressions"].dtype == object  # what the parser hands over for such a value
    failures = violation(camp).failures
    assert set(failures["rule"]) == {"fits_bigint"}  # not also a dtype failure: the range is the whole story
    by_schema = {row["schema"]: row for row in failures.to_dict("records")}
    assert set(by_schema) == {"CampaignDaySchema", "ClientDaySchema"}
    hit = by_schema["CampaignDaySchema"]
    assert (hit["column"], hit["kpi_date"], hit["campaign_id"], hit["failure_value"]) == (
        "impressions",
        date(2025, 3, 2),
        "bad",
        huge,
    )
    assert by_schema["ClientDaySchema"]["failure_value"] == huge  # day 2's total: its one campaign
    assert "fits_bigint" in violation(camp).summary()
    assert json.dumps(violation(camp).sample())  # the huge value is JSON-safe


def test_counts_that_fit_but_whose_day_total_does_not_fail_on_the_total():
    big = 2**62 + 1
    rows = [campaign(1, c, impressions=big, clicks=0, ctr_pct=0.0, cpc=np.nan, spend=0.0) for c in ("a", "b")]
    camp = campaigns(*rows, campaign(2), campaign(3))
    assert camp["impressions"].dtype == "int64"
    totals = totals_of(camp)
    assert totals.loc[0, "impressions"] == 2 * big  # summed exactly, never wrapped around int64
    failures = violation(camp, totals).failures
    assert failures[["schema", "rule", "kpi_date"]].values.tolist() == [
        ["ClientDaySchema", "fits_bigint", date(2025, 3, 1)]
    ]


def test_money_beyond_numeric_18_2_fails_fits_numeric():
    camp = campaigns(campaign(1), campaign(2, "bad", spend=1e17, cpc=1e17 / 25))
    failures = violation(camp).failures
    mine = failures[(failures["rule"] == "fits_numeric") & (failures["schema"] == "CampaignDaySchema")]
    assert sorted(mine["column"]) == ["cpc", "spend"]
    assert set(mine["campaign_id"]) == {"bad"}
