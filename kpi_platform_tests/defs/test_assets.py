"""The daily asset end to end through Dagster: one-key and range runs, idempotency, all-or-nothing writes."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from kpi_platform.defs.collection import CLIENT_DAILY_KPIS
from kpi_platform.meta.pacing import WarehousePacingStore

OCT_1, OCT_10 = date(2026, 10, 1), date(2026, 10, 10)


def materialized(instance: dg.DagsterInstance) -> set[str]:
    return set(instance.get_materialized_partitions(CLIENT_DAILY_KPIS))


def run_totals(result: dg.ExecuteInProcessResult) -> dict:
    """The run's totals: the metadata of its one contract check result."""
    (evaluation,) = result.get_asset_check_evaluations()
    return {name: value.value for name, value in evaluation.metadata.items()}


def day_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    """Each partition's materialization metadata by partition key."""
    return {
        str(m.partition): {name: value.value for name, value in m.metadata.items()}
        for m in result.asset_materializations_for_node("meta_ads__client_daily_kpis")
    }


def test_definitions_load():
    from kpi_platform.definitions import defs

    dg.Definitions.validate_loadable(defs)
    sensors = {s.name: s for s in defs.sensors}
    assert sensors["clients_sync_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["monthly_summary_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    daily = defs.resolve_assets_def(CLIENT_DAILY_KPIS)
    assert daily.backfill_policy == dg.BackfillPolicy.single_run()
    assert daily.partitions_def.get_partition_key_from_str("acme|2026-10-01").keys_by_dimension == {
        "client": "acme",
        "date": "2026-10-01",
    }


def test_one_key_run(platform):
    result = platform.collect("acme", OCT_1, OCT_1)
    assert result.success
    assert materialized(platform.instance) == {"acme|2026-10-01"}
    days = platform.warehouse.read_client_days(client_id="acme", start=OCT_1, end=OCT_1)
    assert len(days) == 1
    assert days.iloc[0]["source"] == "simulator"
    assert days.iloc[0]["run_id"] == result.run_id
    (day,) = day_metadata(result).values()
    assert (day["source"], day["currency"]) == ("simulator", "EUR")
    assert day["spend"] == days.iloc[0]["spend"] and day["rows"] == days.iloc[0]["campaign_count"]
    assert (run_totals(result)["run_days"], run_totals(result)["run_spend"]) == (1, days.iloc[0]["spend"])


def test_range_run_is_one_run_with_one_request_stream(platform):
    result = platform.collect("globex", OCT_1, OCT_10)
    assert result.success
    assert len(platform.instance.get_runs()) == 1
    assert materialized(platform.instance) == {f"globex|2026-10-{d:02d}" for d in range(1, 11)}
    days = platform.warehouse.read_client_days(client_id="globex", start=OCT_1, end=OCT_10)
    campaigns = platform.warehouse.read_campaign_days(client_id="globex", start=OCT_1, end=OCT_10)
    assert len(days) == 10
    assert set(days["currency"]) == {"PLN"}
    assert days["campaign_count"].sum() == len(campaigns)
    by_key = day_metadata(result)
    assert len(by_key) == 10
    totals = run_totals(result)
    assert (totals["run_days"], totals["run_rows"], totals["run_api_requests"]) == (10, len(campaigns), 1)
    assert abs(totals["run_spend"] - round(days["spend"].sum(), 2)) < 0.01
    assert {k: m["spend"] for k, m in by_key.items()} == {
        f"globex|{d:%Y-%m-%d}": spend for d, spend in zip(days["kpi_date"], days["spend"], strict=True)
    }


def test_each_partition_of_a_range_run_shows_its_own_day(platform):
    result = platform.collect("acme", OCT_1, date(2026, 10, 3))
    assert result.success
    days = platform.warehouse.read_client_days(client_id="acme", start=OCT_1, end=date(2026, 10, 3))
    by_key = day_metadata(result)
    assert sorted(by_key) == ["acme|2026-10-01", "acme|2026-10-02", "acme|2026-10-03"]
    for row in days.to_dict("records"):
        day = by_key[f"acme|{row['kpi_date']:%Y-%m-%d}"]
        assert (day["spend"], day["currency"], day["rows"]) == (row["spend"], "EUR", row["campaign_count"])
        assert (day["impressions"], day["clicks"], day["leads"]) == (
            row["impressions"],
            row["clicks"],
            row["leads"],
        )
        assert day["delivery"] == row["delivery"]
        if row["delivery"] == "delivered":
            assert day["quality_score"] == round(row["quality_score"], 4)
        assert day["issues"] == len(row["quality_issues"])
        assert day["issues_text"] == ("; ".join(row["quality_issues"]) or "none")
        # Nothing of the run's size on a day: its totals are named as the run's, on the run.
        assert not any(name.startswith("run_") for name in day) and "days" not in day
    assert len({day["spend"] for day in by_key.values()}) == 3
    totals = run_totals(result)
    assert totals["run_days"] == 3 and totals["run_ranges"] == "acme 2026-10-01..2026-10-03"
    assert abs(totals["run_spend"] - sum(day["spend"] for day in by_key.values())) < 0.01
    logged = [e.user_message for e in platform.instance.all_logs(result.run_id) if e.dagster_event is None]
    assert any(m.startswith("run totals: ") and "run_days 3," in m for m in logged)


def test_rerun_leaves_the_same_rows(platform):
    platform.collect("acme", OCT_1, OCT_10)
    cols = [
        "client_id",
        "kpi_date",
        "campaign_id",
        "spend",
        "impressions",
        "clicks",
        "leads",
        "reservation_value",
    ]
    before = platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_10)[cols]
    second = platform.collect("acme", OCT_1, OCT_10)
    after = platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_10)
    assert after[cols].reset_index(drop=True).equals(before.reset_index(drop=True))
    assert set(after["run_id"]) == {second.run_id}


def test_a_page_failing_mid_range_writes_nothing(platform):
    platform.collect("acme", OCT_1, OCT_10)
    before = platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_10)
    # A year has more than one 500-row page; its second page always fails (code 2: retried, then given up).
    faults = json.dumps({"fail_page": 2})
    result = platform.collect("acme", date(2025, 11, 1), OCT_10, simulator_faults_json=faults, max_attempts=2)
    assert not result.success
    after = platform.warehouse.read_campaign_days(client_id="acme", start=OCT_1, end=OCT_10)
    assert after.equals(before)
    assert platform.warehouse.read_client_days(
        client_id="acme", start=date(2025, 11, 1), end=date(2026, 9, 30)
    ).empty
    assert not any(k.endswith(("-08-15", "-09-30")) for k in materialized(platform.instance))
    status = platform.instance.get_status_by_partition(
        CLIENT_DAILY_KPIS,
        ["acme|2026-08-15"],
        platform.defs().resolve_assets_def(CLIENT_DAILY_KPIS).partitions_def,
    )
    assert status["acme|2026-08-15"] == dg.AssetPartitionStatus.FAILED


def test_token_error_fails_fast_and_names_the_client(platform, monkeypatch):
    monkeypatch.setenv("META_ACCESS_TOKEN", "invalid-token")
    result = platform.collect("acme", OCT_1, OCT_1)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = failure.step_failure_data.error.message
    assert "acme" in message
    assert "META_ACCESS_TOKEN" in message
    assert "invalid-token" not in message


def test_a_permanent_api_failure_names_the_client_range_and_page(platform):
    # A long range goes through an async report; its second page fails on every attempt.
    faults = json.dumps({"fail_page": 2})
    result = platform.collect("acme", date(2025, 11, 1), OCT_10, simulator_faults_json=faults, max_attempts=2)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("client 'acme' (act_100000000001):")
    where = r"\[async report \d+ for 2025-11-01\.\.2026-10-10, page 2 after cursor [\w-]+\]$"
    assert re.search(where, description), description


def test_a_partition_of_a_client_not_in_clients_yaml_fails_with_one_sentence(platform):
    platform.instance.add_dynamic_partitions("clients", ["acme-dentl"])
    result = platform.collect("acme-dentl", OCT_1, OCT_1)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    user = failure.step_failure_data.user_failure_data
    assert user is not None  # a Failure with a description, not an exception with a stack trace
    assert user.description == (
        "client 'acme-dentl' is not registered (it is not in clients.yaml), so its partition cannot be collected: "
        "add the client to clients.yaml (clients_sync_sensor registers it within a minute), or remove the "
        "partition with `kpi-platform clients remove-partition acme-dentl` (README › Runbook › A client "
        "partition that is not in clients.yaml)."
    )
    assert user.metadata["error"].value == "UnknownClientError"
    assert user.metadata["transient"].value is False
    assert not materialized(platform.instance)


def test_a_run_paces_from_usage_another_run_stored_and_records_its_own(platform):
    # Another run's latest response said acme's ad account is at 100 % until 4 s from now: this run waits for
    # that before its first call instead of provoking a throttle error.
    regain_at = datetime.now(UTC) + timedelta(seconds=4)
    WarehousePacingStore(platform.warehouse).record(
        "act_100000000001",
        usage_pct=100.0,
        regain_at=regain_at,
        headers={"ad_account_usage": {"acc_id_util_pct": 100.0}},
        at=datetime.now(UTC),
    )
    result = platform.collect("acme", OCT_1, OCT_1)
    assert result.success
    assert datetime.now(UTC) >= regain_at
    totals = run_totals(result)
    paced = totals["run_api_paced_s:act_100000000001"]
    assert 0.0 < paced <= 4.0 and totals["run_api_paced_s"] == paced
    usage = totals["run_api_usage_max_pct:act_100000000001"]
    assert 0.0 < usage < 75.0 and totals["run_api_usage_max_pct"] == usage
    # Its own response replaced the stored usage, for the next run.
    (state,) = WarehousePacingStore(platform.warehouse).get(["act_100000000001"])
    assert state.usage_pct == usage and state.headers["ad_account_usage"]["acc_id_util_pct"] == usage
