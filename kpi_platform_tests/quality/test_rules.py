"""The quality rules: bad fixtures fail with the right severity and name their culprits; good data passes."""

from __future__ import annotations

import json
import time
import warnings
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from kpi_platform.quality.rules import (
    SCORED_CHECKS,
    CheckSeverity,
    Thresholds,
    anomalies,
    assess_quality,
    completeness,
    freshness,
    quality_scores,
    quality_summary,
    reconcile_campaigns,
    reconcile_months,
    split_days,
)

TODAY = date(2025, 4, 1)


def day(client_id: str, kpi_date: date, *, spend=50.0, impressions=5000, clicks=100, leads=2, **more) -> dict:
    idle = spend == 0 and impressions == 0
    row = {
        "client_id": client_id,
        "kpi_date": kpi_date,
        "spend": spend,
        "impressions": impressions,
        "clicks": clicks,
        "calls": 0,
        "contacts": 0,
        "leads": leads,
        "reservations": 0,
        "reservation_value": 0.0,
        "currency": "EUR",
        "campaign_count": 0 if idle else 1,
        "delivery": "idle" if idle else "delivered",
    }
    return row | more


def idle(client_id: str, kpi_date: date) -> dict:
    return day(client_id, kpi_date, spend=0.0, impressions=0, clicks=0, leads=0)


def days_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)


def assert_json(result) -> dict:
    meta = result.metadata()
    assert json.loads(json.dumps(meta)) == meta
    return meta


# --- completeness -----------------------------------------------------------------------------------------------


def last_days(n: int, *, skip: tuple[date, ...] = ()) -> set[date]:
    return {TODAY - timedelta(days=i) for i in range(1, n + 1)} - set(skip)


def test_completeness_passes_when_every_window_is_full_idle_days_included():
    result = completeness({"a": last_days(30)}, clients={"a": 0.995}, today=TODAY)
    assert result.passed and result.culprits == []
    meta = assert_json(result)
    assert meta["completeness_7d_pct"] == 100.0 and meta["completeness_30d_pct"] == 100.0


def test_completeness_names_the_client_and_its_missing_days():
    gaps = (date(2025, 3, 30), date(2025, 3, 10))
    result = completeness(
        {"a": last_days(30), "b": last_days(30, skip=gaps), "ignored": set()},
        clients={"a": 0.995, "b": 0.995, "never_collected": 0.5},
        today=TODAY,
    )
    assert not result.passed and result.severity is CheckSeverity.ERROR
    by_key = {(c["client_id"], c["rule"]): c for c in result.culprits}
    assert set(by_key) == {
        ("b", "completeness_7d"),
        ("b", "completeness_30d"),
        ("never_collected", "completeness_7d"),
        ("never_collected", "completeness_30d"),
    }
    b30 = by_key[("b", "completeness_30d")]
    assert b30["kpi_date"] == "2025-03-10"
    assert b30["missing_dates"] == ["2025-03-10", "2025-03-30"]
    assert (b30["observed"], b30["expected"]) == (pytest.approx(100 * 28 / 30, abs=1e-3), 99.5)
    assert by_key[("b", "completeness_7d")]["missing_dates"] == ["2025-03-30"]

    meta = assert_json(result)
    assert isinstance(meta["completeness_30d_pct"], float)
    assert meta["completeness_30d_pct"] == pytest.approx(100 * (30 + 28 + 0) / 90, abs=1e-3)
    assert meta["clients_below_target"] == ["b", "never_collected"]
    assert meta["per_client"]["b"] == {
        "completeness_7d_pct": pytest.approx(100 * 6 / 7, abs=1e-3),
        "missing_days_7d": 1,
        "completeness_30d_pct": pytest.approx(100 * 28 / 30, abs=1e-3),
        "missing_days_30d": 2,
        "target_pct": 99.5,
        "window_end": "2025-03-31",
        "missing_dates": ["2025-03-10", "2025-03-30"],
    }
    assert meta["per_client"]["never_collected"]["target_pct"] == 50.0


def test_completeness_windows_end_on_each_clients_own_due_day():
    # "west" is not yet due for 2025-03-31: its windows end a day earlier, so the day is not missing.
    present = {"east": last_days(30), "west": last_days(31) - {date(2025, 3, 31)}}
    result = completeness(
        present,
        clients={"east": 0.995, "west": 0.995},
        today=TODAY,
        window_end={"west": date(2025, 3, 30)},
    )
    assert result.passed
    west30 = next(w for w in result.per_client if w.client_id == "west" and w.window_days == 30)
    assert (west30.start, west30.end, west30.expected_days) == (date(2025, 3, 1), date(2025, 3, 30), 30)

    late = completeness(present, clients={"west": 0.995}, today=TODAY, window_end={"west": date(2025, 3, 31)})
    assert [(c["client_id"], c["kpi_date"]) for c in late.culprits] == [("west", "2025-03-31")] * 2


def test_completeness_metadata_caps_the_missing_dates_listed_per_client():
    result = completeness({"gone": set()}, clients={"gone": 0.995}, today=TODAY, windows=(7, 60))
    entry = result.metadata()["per_client"]["gone"]
    assert entry["missing_days_60d"] == 60
    assert len(entry["missing_dates"]) == 31 and entry["missing_dates"][0] == "2025-01-31"


def test_completeness_windows_start_at_a_clients_first_day_and_honour_lower_targets():
    new = {TODAY - timedelta(days=i) for i in range(1, 4)}  # collected since three days ago
    result = completeness(
        {"new": new, "loose": last_days(30, skip=(date(2025, 3, 15),))},
        clients={"new": 0.995, "loose": 0.9},
        today=TODAY,
        first_day={"new": TODAY - timedelta(days=3), "loose": date(2020, 1, 1)},
    )
    assert result.passed
    new30 = next(w for w in result.per_client if w.client_id == "new" and w.window_days == 30)
    assert (new30.expected_days, new30.present_days) == (3, 3)


def test_completeness_over_200_clients_and_a_year_is_fast():
    year = last_days(365)
    present = {f"c{i:03d}": set(year) for i in range(200)}
    clients = dict.fromkeys(present, 0.995)
    t0 = time.perf_counter()
    result = completeness(present, clients=clients, today=TODAY)
    assert result.passed and time.perf_counter() - t0 < 2.0


# --- split days -------------------------------------------------------------------------------------------------


def test_split_days_flags_spend_without_conversions_only_for_converting_clients():
    start = date(2025, 3, 1)
    rows = [day("conv", start + timedelta(days=i), leads=12) for i in range(5)]
    rows.append(day("conv", date(2025, 3, 6), leads=0))
    rows += [day("brand", start + timedelta(days=i), leads=0) for i in range(5)]  # awareness: never converts
    rows.append(day("brand", date(2025, 3, 6), leads=1))
    rows.append(idle("conv", date(2025, 3, 7)))
    result = split_days(days_frame(rows))
    assert not result.passed and result.severity is CheckSeverity.ERROR
    assert result.culprits == [
        {
            "client_id": "conv",
            "kpi_date": "2025-03-06",
            "rule": "spend_without_conversions",
            "observed": 0,
            "expected": 12.0,
            "spend": 50.0,
            "client_converting_share_pct": pytest.approx(100 * 5 / 6, abs=0.01),
        }
    ]
    meta = assert_json(result)
    assert meta["n_spend_without_conversions"] == 1 and meta["n_split_days"] == 1


def test_a_small_spend_day_without_conversions_is_not_a_split_day():
    # 3 leads per 50 spent: a day of 50 without leads has a 5 % chance under Poisson; not evidence of lost data.
    start = date(2025, 3, 1)
    rows = [day("conv", start + timedelta(days=i), leads=3) for i in range(5)]
    rows.append(day("conv", date(2025, 3, 6), leads=0))
    assert split_days(days_frame(rows)).passed


def test_conversions_without_spend_are_always_split_days():
    rows = [day("a", date(2025, 3, 1), leads=0), day("a", date(2025, 3, 2), spend=0.0, leads=0, calls=2)]
    result = split_days(days_frame(rows))
    assert [
        (c["client_id"], c["kpi_date"], c["rule"], c["observed"], c["expected"]) for c in result.culprits
    ] == [("a", "2025-03-02", "conversions_without_spend", 2, 0)]


def test_split_days_pass_on_consistent_days():
    rows = [day("a", date(2025, 3, i), leads=1) for i in range(1, 5)] + [idle("a", date(2025, 3, 5))]
    assert split_days(days_frame(rows)).passed


# --- quality score ----------------------------------------------------------------------------------------------


#: A day inside every default limit: spend 50 EUR, CTR 2 %, CPC 0.50, conversion rate 2 %.
GOOD = {"spend": 50.0, "impressions": 5000, "clicks": 100, "leads": 2}


@pytest.mark.parametrize(
    ("values", "limits", "check", "issue"),
    [
        (
            {"spend": 12_000.0, "impressions": 10_000, "clicks": 300},
            {},
            "spend",
            "spend 12000.00 above 10000.00 EUR",
        ),
        # With the default limits more than 100,000 clicks means a CPC below 0.10 or spend above 10,000 as well.
        (
            {"spend": 750.0, "impressions": 50_000, "clicks": 1500},
            {"max_daily_clicks": 1000},
            "clicks",
            "clicks 1500 above 1000",
        ),
        ({"spend": 25.0, "impressions": 100_000, "clicks": 50}, {}, "ctr", "ctr 0.05 % below 0.10 %"),
        ({"spend": 300.0, "impressions": 1000, "clicks": 200}, {}, "ctr", "ctr 20.00 % above 10.00 %"),
        ({"spend": 7_210.0}, {}, "cpc", "cpc 72.10 above 50.00 EUR"),
        ({"spend": 5.0}, {}, "cpc", "cpc 0.05 below 0.10 EUR"),
    ],
)
def test_each_scored_check_fails_alone_with_its_issue(values, limits, check, issue):
    frame = days_frame([day("a", TODAY, **(GOOD | values))])
    assessment = assess_quality(frame, {"a": Thresholds(**limits)})
    checks = assessment.checks.iloc[0]
    assert [name for name in SCORED_CHECKS if checks[name] is not pd.NA and not checks[name]] == [check]
    assert assessment.scores.tolist() == [80.0]  # four of the five checks passed
    assert assessment.issues.tolist() == [[issue]]


def test_a_delivered_day_without_data_fails_has_data_and_spend():
    # Campaign rows that delivered nothing: the day is not recorded as idle, so it is judged.
    frame = days_frame([day("a", TODAY, spend=0.0, impressions=0, clicks=0, leads=0, delivery="delivered")])
    assessment = assess_quality(frame, {})
    checks = assessment.checks.iloc[0]
    assert [checks[c] for c in SCORED_CHECKS][:3] == [False, False, True]
    assert checks[["ctr", "cpc"]].isna().all()  # nothing to divide by: not applicable
    assert assessment.scores.tolist() == [33.33]  # 1 of the 3 applicable checks passed
    assert assessment.issues.tolist() == [
        [
            "has_data: 0 impressions, 0 clicks and spend 0.00 EUR on a day not recorded as idle",
            "spend 0.00 not above 0.00 EUR",
        ]
    ]


def test_idle_days_are_not_scored_and_left_out_of_the_average():
    rows = [
        day("a", TODAY, **GOOD),
        day("a", TODAY + timedelta(days=1), spend=7_210.0),
        idle("a", date(2025, 4, 3)),
    ]
    frame = days_frame(rows)
    assessment = assess_quality(frame, {})
    assert assessment.checks.iloc[2].isna().all()
    assert assessment.scores.iloc[:2].tolist() == [100.0, 80.0] and np.isnan(assessment.scores.iloc[2])
    assert assessment.issues.iloc[2] == []

    summary = quality_summary(frame, assessment.scores)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["per_client"] == {"a": 90.0} and summary["quality_score_mean"] == 90.0
    assert (summary["days_scored"], summary["days_not_scored"], summary["days_below_100"]) == (2, 1, 1)
    only_idle = days_frame([idle("b", TODAY)])
    assert quality_summary(only_idle, quality_scores(only_idle, {}))["per_client"] == {}


def test_limits_are_inclusive_and_ratios_without_a_denominator_are_not_judged():
    rows = [
        day(
            "a", TODAY, spend=10_000.0, impressions=1_000_000, clicks=1000, leads=100
        ),  # CTR 0.1 %, CPC 10, 10 %
        day("a", TODAY, spend=50.0, impressions=1000, clicks=1, leads=0),  # CPC 50.00 exactly, CTR 0.1 %
        day("a", TODAY, spend=2.0, impressions=400, clicks=0, leads=0),  # CTR 0 %, no CPC
    ]
    assessment = assess_quality(days_frame(rows), {})
    assert assessment.scores.tolist() == [100.0, 100.0, 75.0]
    assert pd.isna(assessment.checks["cpc"].iloc[2]) and pd.isna(assessment.checks["conversion_rate"].iloc[2])
    assert assessment.issues.iloc[2] == ["ctr 0.00 % below 0.10 %"]


def test_limits_are_the_clients_own_in_its_currency():
    pln = {"spend": 30.0, "impressions": 5000, "clicks": 1, "leads": 0, "currency": "PLN"}
    rows = [day("globex", TODAY, **pln), day("acme", TODAY, **(pln | {"currency": "EUR"}))]
    thresholds = {"globex": Thresholds(cpc_max=20.0, min_daily_spend=40.0, max_conversion_rate_pct=5.0)}
    assessment = assess_quality(days_frame(rows), thresholds)
    assert assessment.issues.tolist() == [
        ["spend 30.00 below 40.00 PLN", "ctr 0.02 % below 0.10 %", "cpc 30.00 above 20.00 PLN"],
        ["ctr 0.02 % below 0.10 %"],  # acme has the defaults: CPC 30 is within 0.10-50
    ]
    assert assessment.scores.tolist() == [40.0, 80.0]


def test_an_issue_shows_enough_decimals_to_differ_from_its_limit():
    frame = days_frame([day("a", TODAY, spend=5_000.4, impressions=100_000, clicks=100)])
    assert assess_quality(frame, {}).issues.tolist() == [["cpc 50.004 above 50.000 EUR"]]


def test_a_conversion_rate_above_ten_percent_is_an_issue_but_not_scored():
    rows = [
        day("a", TODAY, leads=10, calls=1),
        day("a", TODAY, leads=10),
    ]  # 11 % and exactly 10 % of 100 clicks
    assessment = assess_quality(days_frame(rows), {})
    assert assessment.checks["conversion_rate"].tolist() == [False, True]
    assert assessment.scores.tolist() == [100.0, 100.0]
    assert assessment.issues.tolist() == [["conversion_rate 11.00 % above 10.00 %"], []]


def test_quality_scores_keep_the_frames_index():
    rows = [day("a", TODAY + timedelta(days=i), **GOOD) for i in range(3)]
    rows.append(day("a", date(2025, 4, 9), spend=7_210.0))
    rows.append(idle("a", date(2025, 4, 10)))
    frame = days_frame(rows)
    frame.index = [f"r{i % 2}" for i in range(len(frame))]  # repeated labels stay aligned by position
    assessment = assess_quality(frame, {})
    assert list(assessment.scores.index) == list(frame.index) == list(assessment.issues.index)
    assert assessment.scores.iloc[:4].tolist() == [100.0, 100.0, 100.0, 80.0]
    assert assessment.issues.tolist() == [[], [], [], ["cpc 72.10 above 50.00 EUR"], []]


# --- anomalies --------------------------------------------------------------------------------------------------


def history(client_id: str, n: int, *, start=date(2025, 1, 1)) -> list[dict]:
    """Days that wobble in a repeating pattern, so no day of it is 3σ from its neighbours."""
    return [
        day(
            client_id,
            start + timedelta(days=i),
            spend=100.0 + 5 * ((3 * i) % 5 - 2),
            clicks=200 + 5 * ((2 * i) % 5 - 2),
            leads=3 + i % 3,
        )
        for i in range(n)
    ]


def test_a_spike_far_from_the_trailing_window_is_an_anomaly():
    rows = history("a", 20) + history("calm", 21)
    rows.append(day("a", date(2025, 1, 21), spend=400.0, clicks=200, leads=4))
    result = anomalies(days_frame(rows))
    assert not result.passed and result.severity is CheckSeverity.WARN
    [hit] = result.culprits
    assert (hit["client_id"], hit["kpi_date"], hit["rule"], hit["observed"]) == (
        "a",
        "2025-01-21",
        "spend_anomaly",
        400.0,
    )
    prior = pd.Series([r["spend"] for r in rows[6:20]])  # the 14 days before, the day itself excluded
    assert hit["expected"] == pytest.approx(prior.mean(), abs=1e-3)
    assert hit["std"] == pytest.approx(prior.std(), abs=1e-3)
    assert hit["z"] == pytest.approx((400 - prior.mean()) / prior.std(), abs=0.01)
    meta = assert_json(result)
    assert meta["n_spend_anomalies"] == 1 and meta["n_clicks_anomalies"] == 0


def test_anomalies_need_min_history_and_see_conversions():
    rows = history("a", 5)
    rows.append(day("a", date(2025, 1, 6), spend=10_000.0))
    assert anomalies(days_frame(rows)).passed  # five days of history are not enough

    rows = history("a", 20)
    rows.append(day("a", date(2025, 1, 21), spend=100.0, clicks=200, leads=40, calls=10))
    [hit] = anomalies(days_frame(rows)).culprits
    assert (hit["rule"], hit["observed"]) == ("conversions_anomaly", 50.0)


def test_a_constant_history_does_not_divide_by_zero():
    rows = [
        day("flat", date(2025, 1, 1) + timedelta(days=i), spend=100.0, clicks=200, leads=0) for i in range(20)
    ]
    rows.append(day("flat", date(2025, 1, 21), spend=100.0, clicks=200, leads=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = anomalies(days_frame(rows))
    assert result.passed
    assert result.metadata()["max_abs_z"] == 0.0


def test_anomalies_over_200_clients_and_a_year_are_fast():
    rng = np.random.default_rng(0)
    n_clients, n_days = 200, 365
    dates = [date(2024, 1, 1) + timedelta(days=i) for i in range(n_days)]
    frame = pd.DataFrame(
        {
            "client_id": np.repeat([f"c{i:03d}" for i in range(n_clients)], n_days),
            "kpi_date": dates * n_clients,
            "spend": rng.normal(100, 10, n_clients * n_days).round(2),
            "impressions": 10_000,
            "clicks": rng.integers(150, 250, n_clients * n_days),
            **{
                c: rng.integers(0, 3, n_clients * n_days)
                for c in ("calls", "contacts", "leads", "reservations")
            },
            "reservation_value": 0.0,
        }
    )
    t0 = time.perf_counter()
    result = anomalies(frame)
    assert time.perf_counter() - t0 < 5.0
    assert result.days_checked == n_clients * (n_days - 7)


def with_an_idle_day_and_a_spike(*, idle_recorded: bool = True) -> list[dict]:
    """Twenty ordinary days of client a with 2025-01-11 idle (no delivery), then spend 60 % above usual on
    2025-01-21, whose trailing 14 days include the idle day."""
    rows = history("a", 20)
    zero = idle("a", date(2025, 1, 11))
    rows[10] = zero if idle_recorded else zero | {"delivery": "delivered"}
    rows.append(day("a", date(2025, 1, 21), spend=160.0, clicks=200, leads=4))
    return rows


def test_an_idle_day_is_no_anomaly_and_no_part_of_the_history():
    rows = with_an_idle_day_and_a_spike()
    result = anomalies(days_frame(rows))
    # The idle day is not judged, and the spike is measured against the delivering days only.
    assert [(c["kpi_date"], c["rule"]) for c in result.culprits] == [("2025-01-21", "spend_anomaly")]
    [hit] = result.culprits
    prior = pd.Series([r["spend"] for r in rows[6:20] if r["delivery"] != "idle"])  # 01-07..01-20 but 01-11
    assert len(prior) == 13
    assert hit["expected"] == pytest.approx(prior.mean(), abs=1e-3)
    assert hit["std"] == pytest.approx(prior.std(), abs=1e-3)
    assert hit["change_pct"] == pytest.approx(100 * (160 / prior.mean() - 1), abs=0.1)
    meta = assert_json(result)
    assert meta["idle_days_excluded"] == 1 and meta["n_anomalies"] == 1
    # Judged: the delivering days with at least 7 delivering days in their 14: 01-08..01-10 and 01-12..01-21.
    assert result.days_checked == 13


def test_a_zero_day_taken_for_delivery_would_be_flagged_and_hide_the_spike():
    """What the idle rule prevents: the same zero day counted as a delivering day is a culprit itself, and the σ it
    adds to the history hides the real spike ten days later."""
    result = anomalies(days_frame(with_an_idle_day_and_a_spike(idle_recorded=False)))
    assert {(c["kpi_date"], c["metric"]) for c in result.culprits} == {
        ("2025-01-11", "spend"),
        ("2025-01-11", "clicks"),
        ("2025-01-11", "conversions"),
    }
    assert result.idle_days_excluded == 0


def test_without_a_delivery_column_no_spend_and_no_impressions_is_an_idle_day():
    frame = days_frame(with_an_idle_day_and_a_spike()).drop(columns=["delivery"])
    result = anomalies(frame)
    assert [(c["kpi_date"], c["rule"]) for c in result.culprits] == [("2025-01-21", "spend_anomaly")]
    assert result.idle_days_excluded == 1


def test_idle_days_only_leave_nothing_to_judge():
    rows = [idle("a", date(2025, 1, 1) + timedelta(days=i)) for i in range(20)]
    result = anomalies(days_frame(rows))
    assert result.passed and result.days_checked == 0 and result.idle_days_excluded == 20


def test_a_change_beyond_3_sigma_but_below_half_the_mean_is_no_anomaly():
    rows = history("a", 20)
    rows.append(day("a", date(2025, 1, 21), spend=130.0, clicks=200, leads=4))  # z ≈ 4, about +30 %
    result = anomalies(days_frame(rows))
    assert result.passed and assert_json(result)["min_change_pct"] == 50.0
    [hit] = anomalies(days_frame(rows), min_change=0.0).culprits  # 3σ alone would flag it
    prior = pd.Series([r["spend"] for r in rows[6:20]])
    assert hit["rule"] == "spend_anomaly" and hit["z"] > 3
    assert hit["change_pct"] == pytest.approx(100 * (130 / prior.mean() - 1), abs=0.1)


def test_a_drop_below_half_is_an_anomaly():
    rows = history("a", 20)
    rows.append(day("a", date(2025, 1, 21), spend=45.0, clicks=200, leads=4))
    [hit] = anomalies(days_frame(rows)).culprits
    assert hit["rule"] == "spend_anomaly" and hit["change_pct"] < -50


# --- reconciliation ---------------------------------------------------------------------------------------------


def campaign_rows() -> pd.DataFrame:
    base = {
        "client_id": "a",
        "impressions": 1000,
        "clicks": 10,
        "calls": 0,
        "contacts": 0,
        "leads": 1,
        "reservations": 0,
        "reservation_value": 0.0,
    }
    return pd.DataFrame(
        [
            base | {"kpi_date": date(2025, 3, 1), "campaign_id": "c1", "spend": 10.01},
            base | {"kpi_date": date(2025, 3, 1), "campaign_id": "c2", "spend": 20.02},
            base | {"kpi_date": date(2025, 3, 2), "campaign_id": "c1", "spend": 5.0},
        ]
    )


def daily_rows() -> pd.DataFrame:
    return days_frame(
        [
            day("a", date(2025, 3, 1), spend=30.03, impressions=2000, clicks=20, campaign_count=2),
            day("a", date(2025, 3, 2), spend=5.0, impressions=1000, clicks=10, leads=1),
            idle("a", date(2025, 3, 3)),
        ]
    ).assign(leads=[2, 1, 0])


def test_campaigns_that_sum_to_the_totals_reconcile():
    result = reconcile_campaigns(campaign_rows(), daily_rows())
    assert result.passed and result.rows_checked == 3
    assert assert_json(result)["n_mismatches"] == 0


def test_reconciliation_names_the_day_column_and_both_numbers():
    days = daily_rows()
    days.loc[0, "spend"] = 30.035  # inside the money tolerance
    days.loc[1, "clicks"] = 11
    days.loc[2, "impressions"] = 7  # an idle day must be all zeros
    campaigns = pd.concat([campaign_rows(), campaign_rows().iloc[[2]].assign(kpi_date=date(2025, 3, 4))])
    result = reconcile_campaigns(campaigns, days)
    assert not result.passed and result.severity is CheckSeverity.ERROR
    got = [(c["kpi_date"], c["column"], c["observed"], c["expected"]) for c in result.culprits]
    assert got == [
        ("2025-03-02", "clicks", 11.0, 10.0),
        ("2025-03-03", "impressions", 7.0, 0.0),
        ("2025-03-04", "row", 0, 1),
    ]
    assert all(c["rule"] == "campaigns_reconcile" and c["client_id"] == "a" for c in result.culprits)
    meta = assert_json(result)
    assert meta["n_clicks_mismatches"] == 1 and meta["n_row_mismatches"] == 1


def test_monthly_rows_equal_the_sum_of_their_days():
    days = days_frame(
        [day("a", date(2025, 2, 1) + timedelta(days=i), spend=10.0) for i in range(27)]
        + [idle("a", date(2025, 2, 28))]
        + [day("a", date(2025, 3, 1))]
    )
    month = {
        "client_id": "a",
        "month": date(2025, 2, 1),
        "spend": 270.0,
        "impressions": 27 * 5000,
        "clicks": 2700,
        "calls": 0,
        "contacts": 0,
        "leads": 54,
        "reservations": 0,
        "reservation_value": 0.0,
        "days_present": 28,
        "idle_days": 1,
    }
    assert reconcile_months(pd.DataFrame([month]), days).passed

    wrong = pd.DataFrame([month | {"spend": 280.0, "days_present": 27}])
    result = reconcile_months(wrong, days)
    assert [(c["kpi_date"], c["column"], c["observed"], c["expected"]) for c in result.culprits] == [
        ("2025-02-01", "days_present", 27.0, 28.0),
        ("2025-02-01", "spend", 280.0, 270.0),
    ]
    assert result.severity is CheckSeverity.ERROR


# --- freshness --------------------------------------------------------------------------------------------------

WARSAW = ZoneInfo("Europe/Warsaw")


def test_before_the_deadline_the_day_before_yesterday_is_enough():
    now = {"a": datetime(2025, 4, 2, 8, 59, tzinfo=WARSAW)}
    assert freshness({"a": date(2025, 3, 31)}, active_clients=["a"], now_by_client=now).passed
    late = freshness(
        {"a": date(2025, 3, 31)},
        active_clients=["a"],
        now_by_client={"a": datetime(2025, 4, 2, 9, 0, tzinfo=WARSAW)},
    )
    assert not late.passed and late.severity is CheckSeverity.WARN
    assert late.culprits == [
        {
            "client_id": "a",
            "kpi_date": "2025-04-01",
            "rule": "freshness",
            "observed": "2025-03-31",
            "expected": "2025-04-01",
            "hours_late": 0.0,
            "days_behind": 1,
            "deadline_hour": 9,
        }
    ]


def test_freshness_judges_each_client_by_its_own_deadline_hour():
    at = datetime(2025, 4, 2, 10, 0, tzinfo=WARSAW)
    result = freshness(
        {"early": date(2025, 3, 31), "late": date(2025, 3, 31)},
        active_clients=["early", "late"],
        now_by_client={"early": at, "late": at},
        deadline_hour_by_client={"late": 12},
    )
    assert [(c["client_id"], c["deadline_hour"], c["hours_late"]) for c in result.culprits] == [
        ("early", 9, 1.0)
    ]
    meta = assert_json(result)
    assert meta["deadline_hour"] == 9
    assert meta["deadline_hour_by_client"] == {"early": 9, "late": 12}


def test_freshness_uses_each_clients_local_time_and_counts_real_hours():
    last = {"pl": date(2025, 3, 27), "nz": date(2025, 3, 30), "never": None, "inactive": None}
    now = {
        # 2025-03-28 fell due on 03-29 09:00 CET; DST began on 03-30, so 10:30 CEST on 03-31 is 48.5 h later.
        "pl": datetime(2025, 3, 31, 10, 30, tzinfo=WARSAW),
        "nz": datetime(2025, 4, 1, 7, 0, tzinfo=ZoneInfo("Pacific/Auckland")),
        "never": datetime(2025, 3, 31, 12, 0, tzinfo=WARSAW),
    }
    result = freshness(last, active_clients=["pl", "nz", "never"], now_by_client=now)
    late = {c["client_id"]: c for c in result.culprits}
    assert set(late) == {"pl", "never"}
    assert (
        late["pl"]["observed"],
        late["pl"]["expected"],
        late["pl"]["hours_late"],
        late["pl"]["days_behind"],
    ) == ("2025-03-27", "2025-03-30", 48.5, 3)
    assert (late["never"]["observed"], late["never"]["expected"], late["never"]["hours_late"]) == (
        None,
        "2025-03-30",
        3.0,
    )
    meta = assert_json(result)
    assert meta["n_late_clients"] == 2 and meta["max_hours_late"] == 48.5
    assert meta["fresh_pct"] == pytest.approx(100 / 3, abs=0.01)


def test_freshness_requires_a_local_time_for_every_active_client():
    with pytest.raises(ValueError, match="missing"):
        freshness({}, active_clients=["missing"], now_by_client={})
