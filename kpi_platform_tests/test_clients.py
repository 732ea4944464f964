"""clients.yaml validation and the sync plan."""

from __future__ import annotations

import textwrap
from datetime import date, datetime

import pytest

from kpi_platform import settings
from kpi_platform.clients import (
    Client,
    ClientConfigError,
    load_clients,
    parse_clients,
    partition_removal_refusal,
    plan_sync,
)

GOOD = {
    "id": "acme",
    "name": "Acme",
    "ad_account_id": "act_123",
    "currency": "EUR",
    "timezone": "Europe/Warsaw",
}


def doc(*entries):
    return {"clients": list(entries)}


def test_shipped_example_is_valid():
    clients = load_clients("clients.yaml")
    assert len(clients) >= 3
    assert all(c.active for c in clients)
    assert {c.currency for c in clients} >= {"EUR", "PLN"}


def test_defaults_and_overrides():
    (client,) = parse_clients(doc({**GOOD, "settings": {"lookback_days": 14, "cpc_max": 20}}))
    assert client.settings.lookback_days == 14
    assert client.settings.cpc_max == 20
    assert client.settings.completeness_target == 0.995
    assert client.settings.freshness_deadline_hour == settings.FRESHNESS_DEADLINE_HOUR
    assert client.active is True


def test_freshness_deadline_hour_is_a_per_client_setting():
    (client,) = parse_clients(doc({**GOOD, "settings": {"freshness_deadline_hour": 11}}))
    assert client.settings.freshness_deadline_hour == 11
    assert Client.from_row(client.to_row()) == client
    # Rows stored before the setting existed read as the platform default.
    row = client.to_row()
    del row["settings"]["freshness_deadline_hour"]
    assert Client.from_row(row).settings.freshness_deadline_hour == settings.FRESHNESS_DEADLINE_HOUR


@pytest.mark.parametrize("bad", [24, -1, 9.5, "9", True, None])
def test_invalid_freshness_deadline_hour_names_entry_and_field(bad):
    with pytest.raises(ClientConfigError) as exc:
        parse_clients(doc({**GOOD, "settings": {"freshness_deadline_hour": bad}}))
    message = str(exc.value)
    assert "entry #1 (id 'acme'), field 'settings.freshness_deadline_hour'" in message
    assert repr(bad) in message


@pytest.mark.parametrize(
    ("bad_id", "fragment"),
    [
        ("acme|x", "'|' and ','"),
        ("acme,x", "'|' and ','"),
        ("Acme", "lowercase"),
        ("", "required"),
        ("-x", "not a valid id"),
    ],
)
def test_invalid_ids_name_entry_and_field(bad_id, fragment):
    with pytest.raises(ClientConfigError) as exc:
        parse_clients(doc(GOOD | {"id": "ok-1", "ad_account_id": "act_1"}, {**GOOD, "id": bad_id}))
    message = str(exc.value)
    assert "entry #2" in message
    assert "field 'id'" in message
    assert fragment in message


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"currency": "XXX"}, "currency"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"ad_account_id": "123"}, "ad_account_id"),
        ({"active": "yes"}, "active"),
        ({"settings": {"lookback_days": 400}}, "settings.lookback_days"),
        ({"settings": {"freshness_deadline_hour": 24}}, "settings.freshness_deadline_hour"),
        ({"settings": {"ctr_pct_min": 5, "ctr_pct_max": 1}}, "settings.ctr_pct_min"),
        ({"settings": {"unknown": 1}}, "settings.unknown"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_fields_are_named(override, field):
    with pytest.raises(ClientConfigError, match=rf"entry #1 \(id 'acme'\), field '{field}'"):
        parse_clients(doc({**GOOD, **override}))


def test_quality_limits_are_per_client_settings_in_its_currency():
    limits = {
        "min_daily_spend": 5,
        "max_daily_spend": 40_000.5,
        "min_daily_clicks": 10,
        "max_daily_clicks": 250_000,
        "max_conversion_rate_pct": 25,
        "quality_score_target": 90,
    }
    (client,) = parse_clients(doc({**GOOD, "currency": "PLN", "settings": limits}))
    assert {k: getattr(client.settings, k) for k in limits} == limits
    assert Client.from_row(client.to_row()) == client
    (default,) = parse_clients(doc(GOOD))
    assert (default.settings.max_daily_spend, default.settings.max_daily_clicks) == (10_000.0, 100_000)
    assert default.settings.quality_score_target == settings.DEFAULT_QUALITY_SCORE_TARGET == 95.0


def test_rows_stored_without_spend_and_clicks_ceilings_read_as_the_defaults():
    # Before the ceilings had defaults a row held None for them (then: 5 × the client's median).
    row = parse_clients(doc(GOOD))[0].to_row()
    row["settings"] |= {"max_daily_spend": None, "max_daily_clicks": None}
    for key in ("min_daily_spend", "min_daily_clicks", "max_conversion_rate_pct", "quality_score_target"):
        del row["settings"][key]
    restored = Client.from_row(row).settings
    assert (restored.max_daily_spend, restored.max_daily_clicks, restored.min_daily_spend) == (
        10_000.0,
        100_000,
        0.0,
    )


@pytest.mark.parametrize(
    ("limits", "field", "problem"),
    [
        ({"max_daily_spend": -1}, "max_daily_spend", "must not be negative, got -1"),
        ({"cpc_min": -0.5}, "cpc_min", "must not be negative"),
        (
            {"min_daily_spend": 500, "max_daily_spend": 100},
            "min_daily_spend",
            "must be below max_daily_spend",
        ),
        ({"min_daily_spend": 20_000}, "min_daily_spend", r"\(20000 is not below 10000.0\)"),
        (
            {"min_daily_clicks": 10, "max_daily_clicks": 10},
            "min_daily_clicks",
            "must be below max_daily_clicks",
        ),
        ({"max_daily_clicks": 1000.5}, "max_daily_clicks", "must be a whole number of clicks"),
        ({"cpc_min": 2, "cpc_max": 1}, "cpc_min", "must be below cpc_max"),
        ({"max_conversion_rate_pct": 0}, "max_conversion_rate_pct", r"percentage in \(0, 100\]"),
        ({"quality_score_target": 100}, "quality_score_target", r"score in \[0, 100\)"),
        ({"max_daily_spend": "10k"}, "max_daily_spend", "must be a number"),
    ],
)
def test_invalid_quality_limits_say_what_is_wrong(limits, field, problem):
    with pytest.raises(ClientConfigError, match=rf"field 'settings.{field}': .*{problem}"):
        parse_clients(doc({**GOOD, "settings": limits}))


def test_duplicates_are_refused():
    with pytest.raises(ClientConfigError, match="duplicate of entry #1"):
        parse_clients(doc(GOOD, {**GOOD, "ad_account_id": "act_999"}))
    with pytest.raises(ClientConfigError, match="already used by client 'acme'"):
        parse_clients(doc(GOOD, {**GOOD, "id": "other"}))


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "clients.yaml"
    bad.write_text("clients: [", encoding="utf-8")
    with pytest.raises(ClientConfigError, match="not valid YAML"):
        load_clients(bad)
    with pytest.raises(ClientConfigError, match="not found"):
        load_clients(tmp_path / "missing.yaml")
    bad.write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ClientConfigError, match="'clients:' list"):
        load_clients(bad)


def test_row_round_trip():
    (client,) = parse_clients(doc({**GOOD, "settings": {"collection_hour": 7}}))
    assert Client.from_row(client.to_row()) == client


def test_start_date_is_read_as_a_day_and_kept_in_the_warehouse_row(tmp_path):
    path = tmp_path / "clients.yaml"
    path.write_text(
        textwrap.dedent(
            """
            clients:
              - {id: acme, name: Acme, ad_account_id: act_1, currency: EUR, timezone: UTC, start_date: 2024-03-01}
              - {id: globex, name: Globex, ad_account_id: act_2, currency: EUR, timezone: UTC, start_date: "2025-01-31"}
              - {id: initech, name: Initech, ad_account_id: act_3, currency: EUR, timezone: UTC}
            """
        ),
        encoding="utf-8",
    )
    acme, globex, initech = load_clients(path)
    assert (acme.start_date, globex.start_date, initech.start_date) == (
        date(2024, 3, 1),
        date(2025, 1, 31),
        None,
    )
    # The clients table has no column for it: it rides in the settings JSON, and comes back out of it.
    row = acme.to_row()
    assert row["settings"]["start_date"] == "2024-03-01"
    assert Client.from_row(row) == acme
    assert "start_date" not in initech.to_row()["settings"]
    assert Client.from_row(initech.to_row()) == initech


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("2024-02-30", "'2024-02-30' is not a date; write it as YYYY-MM-DD"),
        ("March 2024", "'March 2024' is not a date"),
        (20240301, "must be a date written as YYYY-MM-DD, got 20240301"),
        (datetime(2024, 3, 1, 12, 0), "must be a date written as YYYY-MM-DD"),
        (
            date(2023, 12, 31),
            f"2023-12-31 is before the first daily partition, {settings.PARTITIONS_START_DATE}: days before it "
            f"cannot be collected; use {settings.PARTITIONS_START_DATE} or later",
        ),
    ],
)
def test_invalid_start_date_is_refused_naming_entry_and_field(value, fragment):
    with pytest.raises(ClientConfigError, match=r"entry #1 \(id 'acme'\), field 'start_date'") as refused:
        parse_clients(doc({**GOOD, "start_date": value}))
    assert fragment in str(refused.value)


def test_plan_only_adds_partitions(tmp_path):
    path = tmp_path / "clients.yaml"
    path.write_text(
        textwrap.dedent(
            """
            clients:
              - {id: a, name: A, ad_account_id: act_1, currency: EUR, timezone: UTC}
              - {id: b, name: B, ad_account_id: act_2, currency: EUR, timezone: UTC, active: false}
            """
        ),
        encoding="utf-8",
    )
    plan = plan_sync(load_clients(path), existing_partitions=["a", "gone"])
    assert plan.partitions_to_add == ("b",)
    assert plan.active_ids == ("a",)


def test_only_a_partition_nobody_knows_may_be_removed():
    clients = parse_clients(doc(GOOD))
    partitions = ["acme", "initech", "acme-dentl"]

    def refusal(client_id: str) -> str | None:
        return partition_removal_refusal(
            client_id, clients=clients, registered=["acme", "initech"], partitions=partitions
        )

    assert refusal("acme-dentl") is None
    assert "is in clients.yaml" in refusal("acme")
    assert "registered in the warehouse" in refusal("initech")
    missing = refusal("nobody")
    assert missing == "there is no client partition 'nobody' (partitions: acme, initech, acme-dentl)"
