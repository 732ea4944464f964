"""The warehouse-wide checks as plain Python on a SQLite warehouse at a fixed moment: good data passes every
check, and each bad fixture fails its check with the right severity, naming the client and the day."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client, ClientSettings
from kpi_platform.collect import build_daily_totals, date_range, score_days
from kpi_platform.meta.parse import CAMPAIGN_COLUMNS
from kpi_platform.quality.rules import CheckSeverity
from kpi_platform.quality.warehouse_checks import (
    METADATA_ISSUE_DAYS,
    CheckOutcome,
    client_required_day,
    evaluate_warehouse_checks,
)
from kpi_platform.summaries import build_monthly_summary
from kpi_platform.warehouse import Warehouse, schema

WARSAW = Client("waw-dental", "Warsaw Dental", "act_1", "PLN", "Europe/Warsaw")
NEW_YORK = Client("nyc-fitness", "NYC Fitness", "act_2", "USD", "America/New_York")
CLIENTS = (WARSAW, NEW_YORK)
FIRST_DAY = date(2025, 2, 1)
#: 02:20 in Warsaw (before its 09:00 deadline) and 20:20 of the day before in New York: the nightly check run
#: that failed with a false ERROR while UTC yesterday (2025-04-01) was not due anywhere yet.
NIGHT = datetime(2025, 4, 2, 0, 20, tzinfo=UTC)
#: 14:00 in Warsaw (past its deadline) and 08:00 in New York (before its deadline): the clients' due days differ.
NOON = datetime(2025, 4, 2, 12, 0, tzinfo=UTC)
CHECKS = {
    "completeness_meets_target",
    "no_split_days",
    "quality_score_acceptable",
    "no_anomalies",
    "campaigns_reconcile_to_totals",
    "months_equal_sum_of_days",
    "fresh_per_client",
}


def campaign_rows(client: Client, days: list[date]) -> pd.DataFrame:
    """Two campaigns a day with a small day-to-day wobble, so the anomaly check has a spread to measure against."""
    rows = []
    for day in days:
        wobble = day.toordinal() % 5
        for n in (1, 2):
            impressions = 4000 * n + 100 * wobble
            clicks = 80 * n + 2 * wobble
            spend = round(40.0 * n + wobble, 2)
            rows.append(
                {
                    "client_id": client.id,
                    "kpi_date": day,
                    "campaign_id": f"{client.id}-{n}",
                    "campaign_name": f"Campaign {n}",
                    "spend": spend,
                    "impressions": impressions,
                    "clicks": clicks,
                    "ctr_pct": clicks / impressions * 100,
                    "cpc": round(spend / clicks, 4),
                    "calls": n,
                    "contacts": 0,
                    "leads": 3 * n + wobble % 2,
                    "reservations": 0,
                    "reservation_value": 0.0,
                    "currency": client.currency,
                }
            )
    return pd.DataFrame(rows, columns=list(CAMPAIGN_COLUMNS))


Edit = Callable[[pd.DataFrame], pd.DataFrame]


def store(warehouse: Warehouse, client: Client, start: date, end: date, edit: Edit | None = None) -> None:
    """Store one client's range the way a collection run does: totals and quality scores from the campaign rows."""
    campaigns = campaign_rows(client, date_range(start, end))
    if edit is not None:
        campaigns = edit(campaigns)
    totals = build_daily_totals(
        campaigns, client_id=client.id, start=start, end=end, currency=client.currency
    )
    totals = score_days(totals, client)
    stamp = {"source": settings.SOURCE_SIMULATOR, "fetched_at": NIGHT, "run_id": "test"}
    warehouse.replace_client_range(
        client_id=client.id,
        start=start,
        end=end,
        campaign_rows=campaigns.assign(**stamp),
        daily_totals=totals.assign(**stamp),
    )


def on_day(day: date, **values) -> Edit:
    """An edit setting `values` on every campaign row of `day`."""

    def edit(campaigns: pd.DataFrame) -> pd.DataFrame:
        out = campaigns.copy()
        for column, value in values.items():
            out.loc[out["kpi_date"] == day, column] = value
        return out

    return edit


@pytest.fixture
def warehouse(tmp_path) -> Iterator[Warehouse]:
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    wh.migrate()
    yield wh
    wh.dispose()


def fill(
    warehouse: Warehouse,
    now_utc: datetime,
    clients: tuple[Client, ...] = CLIENTS,
    *,
    edits: dict[str, Edit] | None = None,
    short_by_days: dict[str, int] | None = None,
) -> None:
    """Register `clients` and store each from FIRST_DAY to its due day at `now_utc` (minus `short_by_days`), with
    the monthly summaries of its complete months."""
    warehouse.upsert_clients([c.to_row() for c in clients])
    for client in clients:
        end = client_required_day(client, now_utc) - timedelta(days=(short_by_days or {}).get(client.id, 0))
        store(warehouse, client, FIRST_DAY, end, (edits or {}).get(client.id))
        month = FIRST_DAY
        while month.replace(day=28) + timedelta(days=4) <= end + timedelta(days=1):
            build_monthly_summary(
                warehouse=warehouse, client_id=client.id, month=month, today=now_utc.date(), run_id="test"
            )
            month = (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def evaluate(warehouse: Warehouse, now_utc: datetime, clients=CLIENTS) -> dict[str, CheckOutcome]:
    outcomes = evaluate_warehouse_checks(warehouse=warehouse, clients=list(clients), now_utc=now_utc)
    assert {o.name for o in outcomes} == CHECKS
    return {o.name: o for o in outcomes}


def failed(outcome: CheckOutcome, severity: CheckSeverity) -> list[dict]:
    assert not outcome.passed, outcome.metadata
    assert outcome.severity is severity
    return outcome.metadata["culprits"]


# --- good data --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now_utc", "due"),
    [
        (NIGHT, {WARSAW.id: date(2025, 3, 31), NEW_YORK.id: date(2025, 3, 31)}),
        (NOON, {WARSAW.id: date(2025, 4, 1), NEW_YORK.id: date(2025, 3, 31)}),
    ],
    ids=["00:20-utc", "12:00-utc"],
)
def test_full_data_up_to_each_clients_due_day_passes_every_check(warehouse, now_utc, due):
    assert {c.id: client_required_day(c, now_utc) for c in CLIENTS} == due
    fill(warehouse, now_utc)

    outcomes = evaluate(warehouse, now_utc)
    assert [name for name, o in outcomes.items() if not o.passed] == []
    per_client = outcomes["completeness_meets_target"].metadata["per_client"]
    for client in CLIENTS:
        assert per_client[client.id]["window_end"] == due[client.id].isoformat()
        assert per_client[client.id]["target_pct"] == 99.5
        assert per_client[client.id]["missing_dates"] == []
        assert per_client[client.id]["completeness_30d_pct"] == 100.0
    assert outcomes["months_equal_sum_of_days"].asset == "monthly"
    assert outcomes["months_equal_sum_of_days"].metadata["rows_checked"] == 2 * len(CLIENTS)


# --- completeness and freshness ---------------------------------------------------------------------------------


def test_a_missing_day_fails_completeness_naming_the_client_the_date_and_its_target(warehouse):
    fill(warehouse, NIGHT)
    gone = date(2025, 3, 20)
    with warehouse.engine.begin() as conn:
        for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
            conn.execute(sa.delete(table).where(table.c.client_id == NEW_YORK.id, table.c.kpi_date == gone))

    outcome = evaluate(warehouse, NIGHT)["completeness_meets_target"]
    culprits = failed(outcome, CheckSeverity.ERROR)
    assert {(c["client_id"], c["kpi_date"], c["rule"]) for c in culprits} == {
        (NEW_YORK.id, "2025-03-20", "completeness_30d")
    }
    assert outcome.metadata["clients_below_target"] == [NEW_YORK.id]
    entry = outcome.metadata["per_client"][NEW_YORK.id]
    assert (entry["target_pct"], entry["missing_dates"], entry["missing_days_30d"]) == (
        99.5,
        ["2025-03-20"],
        1,
    )
    assert outcome.metadata["per_client"][WARSAW.id]["missing_dates"] == []


def test_per_client_missing_dates_are_capped_and_counted(warehouse):
    loose = replace(NEW_YORK, settings=ClientSettings(completeness_target=0.5))
    warehouse.upsert_clients([loose.to_row()])
    store(warehouse, loose, date(2025, 3, 30), date(2025, 3, 31))

    outcome = evaluate_warehouse_checks(warehouse=warehouse, clients=[loose], now_utc=NIGHT)[0]
    entry = outcome.metadata["per_client"][loose.id]
    assert entry["missing_days_30d"] == 28
    assert entry["target_pct"] == 50.0
    assert entry["missing_dates"][0] == "2025-03-02" and len(entry["missing_dates"]) == 28


def test_a_late_client_fails_freshness_warn_and_completeness_error_for_its_due_day(warehouse):
    # At noon UTC Warsaw's 2025-04-01 is due (14:00 local); New York's is not yet (08:00 local).
    fill(warehouse, NOON, short_by_days={WARSAW.id: 1})

    outcomes = evaluate(warehouse, NOON)
    late = failed(outcomes["fresh_per_client"], CheckSeverity.WARN)
    assert [(c["client_id"], c["kpi_date"], c["observed"]) for c in late] == [
        (WARSAW.id, "2025-04-01", "2025-03-31")
    ]
    assert late[0]["hours_late"] == 5.0
    missing = failed(outcomes["completeness_meets_target"], CheckSeverity.ERROR)
    assert {(c["client_id"], c["kpi_date"]) for c in missing} == {(WARSAW.id, "2025-04-01")}


def test_a_clients_own_deadline_hour_moves_its_freshness_and_completeness_deadline(warehouse):
    noon_deadline = replace(WARSAW, settings=ClientSettings(freshness_deadline_hour=12))
    clients = (noon_deadline, NEW_YORK)
    before = datetime(2025, 4, 2, 9, 30, tzinfo=UTC)  # 11:30 in Warsaw: past 09:00, before its own 12:00
    at = datetime(2025, 4, 2, 10, 0, tzinfo=UTC)  # 12:00 in Warsaw, 06:00 in New York
    assert client_required_day(noon_deadline, before) == date(2025, 3, 31)
    fill(warehouse, before, clients)

    outcomes = evaluate(warehouse, before, clients)
    assert outcomes["fresh_per_client"].passed and outcomes["completeness_meets_target"].passed
    assert outcomes["fresh_per_client"].metadata["deadline_hour_by_client"] == {
        WARSAW.id: 12,
        NEW_YORK.id: settings.FRESHNESS_DEADLINE_HOUR,
    }

    outcomes = evaluate(warehouse, at, clients)
    late = failed(outcomes["fresh_per_client"], CheckSeverity.WARN)
    assert [(c["client_id"], c["kpi_date"], c["deadline_hour"]) for c in late] == [
        (WARSAW.id, "2025-04-01", 12)
    ]
    missing = failed(outcomes["completeness_meets_target"], CheckSeverity.ERROR)
    assert {(c["client_id"], c["kpi_date"]) for c in missing} == {(WARSAW.id, "2025-04-01")}


# --- the other checks -------------------------------------------------------------------------------------------


def test_spend_without_conversions_fails_split_days(warehouse):
    split = date(2025, 3, 24)
    fill(warehouse, NIGHT, edits={NEW_YORK.id: on_day(split, calls=0, leads=0)})

    culprits = failed(evaluate(warehouse, NIGHT)["no_split_days"], CheckSeverity.ERROR)
    assert [(c["client_id"], c["kpi_date"], c["rule"]) for c in culprits] == [
        (NEW_YORK.id, "2025-03-24", "spend_without_conversions")
    ]


def test_a_client_outside_its_thresholds_fails_the_quality_score_with_warn(warehouse):
    # CTR (about 2 %) and CPC (about 0.50) both outside these limits: every day passes 3 of 5 checks, scoring 60.
    strict = replace(WARSAW, settings=ClientSettings(ctr_pct_max=1.0, cpc_max=0.2))
    fill(warehouse, NIGHT, (strict, NEW_YORK))

    outcome = evaluate(warehouse, NIGHT, (strict, NEW_YORK))["quality_score_acceptable"]
    assert not outcome.passed and outcome.severity is CheckSeverity.WARN
    meta = outcome.metadata
    assert meta["clients_below_target"] == [WARSAW.id] and meta["target_score"] == 95.0
    assert meta["per_client"] == {WARSAW.id: 60.0, NEW_YORK.id: 100.0}
    window_days = (date(2025, 3, 31) - date(2025, 3, 3)).days + 1  # the 30-day window's stored days at NIGHT
    assert meta["n_days_with_issues"] == meta["n_ctr_issues"] == meta["n_cpc_issues"] == window_days
    assert meta["n_spend_issues"] == meta["n_has_data_issues"] == 0
    listed = meta["days_with_issues"]
    assert len(listed) == min(window_days, METADATA_ISSUE_DAYS)
    assert listed[0] == {
        "client_id": WARSAW.id,
        "kpi_date": "2025-03-31",
        "quality_score": 60.0,
        "issues": ["ctr 2.00 % above 1.00 %", "cpc 0.50 above 0.20 PLN"],
    }
    assert [d["kpi_date"] for d in listed] == sorted((d["kpi_date"] for d in listed), reverse=True)


def on_days(days: list[date], **values) -> Edit:
    """An edit setting `values` on every campaign row of each of `days`."""

    def edit(campaigns: pd.DataFrame) -> pd.DataFrame:
        out = campaigns.copy()
        out.loc[out["kpi_date"].isin(days), list(values)] = list(values.values())
        return out

    return edit


@pytest.mark.parametrize(
    ("low_days", "target", "passed"), [(7, None, True), (8, None, False), (8, 90.0, True)]
)
def test_the_quality_score_must_average_above_the_target(warehouse, low_days, target, passed):
    # 29 stored days in the window; a day whose CTR is below 0.1 % passes 4 of 5 checks: 80.
    # 7 such days average 95.17, 8 average 94.48: above and below the default target of 95.
    low = [date(2025, 3, 31) - timedelta(days=i) for i in range(low_days)]
    client = (
        WARSAW if target is None else replace(WARSAW, settings=ClientSettings(quality_score_target=target))
    )
    fill(warehouse, NIGHT, (client, NEW_YORK), edits={WARSAW.id: on_days(low, impressions=200_000)})

    outcome = evaluate(warehouse, NIGHT, (client, NEW_YORK))["quality_score_acceptable"]
    assert outcome.passed is passed and outcome.severity is CheckSeverity.WARN
    meta = outcome.metadata
    assert meta["per_client"][WARSAW.id] == round((29 - low_days) * 100 / 29 + low_days * 80 / 29, 2)
    assert meta["clients_below_target"] == ([] if passed else [WARSAW.id])
    assert meta["target_by_client"] == ({} if target is None else {WARSAW.id: target})
    assert [(d["kpi_date"], d["quality_score"]) for d in meta["days_with_issues"]] == [
        (day.isoformat(), 80.0) for day in low
    ]
    assert all(
        len(d["issues"]) == 1 and d["issues"][0].startswith("ctr 0.0") for d in meta["days_with_issues"]
    )


def test_idle_days_are_not_scored_and_left_out_of_the_average(warehouse):
    dark = [date(2025, 3, 20) + timedelta(days=i) for i in range(5)]
    fill(warehouse, NIGHT, edits={NEW_YORK.id: lambda c: c[~c["kpi_date"].isin(dark)]})

    stored = warehouse.read_client_days(client_id=NEW_YORK.id, start=dark[0], end=dark[-1])
    assert (stored["delivery"] == "idle").all() and stored["quality_score"].isna().all()
    assert stored["quality_issues"].tolist() == [[]] * len(dark)
    outcome = evaluate(warehouse, NIGHT)["quality_score_acceptable"]
    assert outcome.passed
    assert outcome.metadata["per_client"] == {WARSAW.id: 100.0, NEW_YORK.id: 100.0}
    assert outcome.metadata["days_not_scored"] == len(dark) and outcome.metadata["n_days_with_issues"] == 0


def test_a_suspicious_conversion_rate_is_listed_but_not_scored(warehouse):
    day = date(2025, 3, 25)
    fill(warehouse, NIGHT, edits={WARSAW.id: on_days([day], leads=40)})  # 80 leads and 3 calls of 240 clicks

    outcome = evaluate(warehouse, NIGHT)["quality_score_acceptable"]
    assert outcome.passed and outcome.metadata["per_client"][WARSAW.id] == 100.0
    assert outcome.metadata["n_conversion_rate_issues"] == 1
    [listed] = outcome.metadata["days_with_issues"]
    assert (listed["client_id"], listed["kpi_date"], listed["quality_score"]) == (
        WARSAW.id,
        "2025-03-25",
        100.0,
    )
    assert listed["issues"] == ["conversion_rate 34.58 % above 10.00 %"]


def test_tracking_not_configured_is_told_apart_from_zero_conversions(warehouse):
    converting = replace(WARSAW, id="waw-converting", ad_account_id="act_3")
    no_conversions = {name: 0 for name in settings.CONVERSION_COUNT_COLUMNS}
    # Warsaw converted until the window began, then not once; New York never reported a conversion at all.
    window = [date(2025, 3, 3) + timedelta(days=i) for i in range(29)]
    clients = (WARSAW, NEW_YORK, converting)
    fill(
        warehouse,
        NIGHT,
        clients,
        edits={
            WARSAW.id: on_days(window, **no_conversions),
            NEW_YORK.id: lambda c: c.assign(**no_conversions),
        },
    )

    meta = evaluate(warehouse, NIGHT, clients)["quality_score_acceptable"].metadata
    assert meta["conversion_tracking"] == {
        converting.id: "converting",
        NEW_YORK.id: "tracking not configured",
        WARSAW.id: "zero conversions",
    }
    assert meta["clients_tracking_not_configured"] == [NEW_YORK.id]
    assert meta["clients_zero_conversions"] == [WARSAW.id]


def test_a_spend_spike_fails_no_anomalies_with_warn(warehouse):
    spike = date(2025, 3, 25)
    fill(warehouse, NIGHT, edits={WARSAW.id: on_day(spike, spend=400.0)})

    culprits = failed(evaluate(warehouse, NIGHT)["no_anomalies"], CheckSeverity.WARN)
    assert [(c["client_id"], c["kpi_date"], c["rule"]) for c in culprits] == [
        (WARSAW.id, "2025-03-25", "spend_anomaly")
    ]
    assert culprits[0]["observed"] == 800.0 and culprits[0]["z"] > 3


def test_a_day_total_that_differs_from_its_campaigns_fails_reconciliation(warehouse):
    fill(warehouse, NIGHT)
    wrong = date(2025, 3, 22)
    table = schema.client_daily_kpis
    with warehouse.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.client_id == NEW_YORK.id, table.c.kpi_date == wrong)
            .values(spend=table.c.spend + 10)
        )

    culprits = failed(evaluate(warehouse, NIGHT)["campaigns_reconcile_to_totals"], CheckSeverity.ERROR)
    assert [(c["client_id"], c["kpi_date"], c["column"], c["difference"]) for c in culprits] == [
        (NEW_YORK.id, "2025-03-22", "spend", 10.0)
    ]


def test_a_month_that_differs_from_its_days_fails_months_equal_sum_of_days(warehouse):
    fill(warehouse, NIGHT)
    table = schema.client_monthly_kpis
    with warehouse.engine.begin() as conn:
        conn.execute(
            table.update()
            .where(table.c.client_id == WARSAW.id, table.c.month == date(2025, 3, 1))
            .values(clicks=table.c.clicks + 1)
        )

    outcome = evaluate(warehouse, NIGHT)["months_equal_sum_of_days"]
    culprits = failed(outcome, CheckSeverity.ERROR)
    assert [(c["client_id"], c["kpi_date"], c["column"]) for c in culprits] == [
        (WARSAW.id, "2025-03-01", "clicks")
    ]


def test_completeness_reports_the_whole_history_and_starts_its_windows_at_start_date(warehouse):
    started = replace(WARSAW, start_date=date(2025, 3, 20))
    warehouse.upsert_clients([started.to_row(), NEW_YORK.to_row()])
    # At NOON Warsaw's due day is 2025-04-01 and New York's 2025-03-31. Warsaw starts on its start_date, so the
    # days before it are not missing; New York has no start_date and misses two days older than both windows.
    store(warehouse, started, date(2025, 3, 20), date(2025, 4, 1))
    store(warehouse, NEW_YORK, FIRST_DAY, date(2025, 2, 9))
    store(warehouse, NEW_YORK, date(2025, 2, 12), date(2025, 3, 31))

    outcome = evaluate_warehouse_checks(warehouse=warehouse, clients=[started, NEW_YORK], now_utc=NOON)[0]
    assert outcome.name == "completeness_meets_target"
    assert outcome.passed
    assert outcome.metadata["per_client"][started.id]["missing_days_30d"] == 0
    assert outcome.metadata["missing_days_history"] == 2
    assert outcome.metadata["missing_days_history_per_client"] == {NEW_YORK.id: 2}
    assert outcome.metadata["history_start_per_client"] == {
        NEW_YORK.id: "2025-02-01",
        started.id: "2025-03-20",
    }
    assert (outcome.metadata["oldest_missing_day"], outcome.metadata["oldest_missing_client"]) == (
        "2025-02-10",
        NEW_YORK.id,
    )
