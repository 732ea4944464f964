"""clients.yaml validation and the sync plan."""

from __future__ import annotations

import textwrap

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
