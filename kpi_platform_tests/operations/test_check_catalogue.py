"""The check catalogue is the one description of every asset check: the code location, the warehouse checks and
the alerts all agree with it."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from kpi_platform.clients import Client
from kpi_platform.definitions import build_defs
from kpi_platform.defs.health import catalogue_check_keys
from kpi_platform.operations import check_catalogue
from kpi_platform.operations.alert_facts import CheckFact, check_alerts
from kpi_platform.operations.alerts import Severity
from kpi_platform.quality.warehouse_checks import evaluate_warehouse_checks
from kpi_platform.warehouse import Warehouse

#: The rows a warehouse-wide check judges (`CheckOutcome.asset`) and the asset that writes them.
JUDGED = {"daily": check_catalogue.DAILY_KPIS_ASSET, "monthly": check_catalogue.MONTHLY_SUMMARY_ASSET}


@pytest.mark.usefixtures("no_current_defs_state_storage")
def test_the_code_location_has_exactly_the_catalogued_checks_with_their_descriptions():
    graph = build_defs().resolve_asset_graph()
    assert sorted(graph.asset_check_keys, key=lambda k: k.to_user_string()) == catalogue_check_keys()
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        entry = check_catalogue.entry(key.name)
        assert entry is not None and entry.key_string == key.to_user_string()
        assert (spec.description, spec.blocking) == (entry.description, entry.blocking)
    # The warehouse-wide checks' asset stands for the rows they judge: the daily and the monthly asset's.
    judged = {dg.AssetKey(list(path)) for path in JUDGED.values()}
    assert graph.get(dg.AssetKey(list(check_catalogue.KPI_WAREHOUSE_ASSET))).parent_keys == judged


def test_the_warehouse_checks_are_the_catalogued_ones_with_the_catalogued_severity(tmp_path):
    warehouse = Warehouse(f"sqlite:///{tmp_path / 'warehouse.sqlite'}")
    warehouse.migrate()
    try:
        acme = Client(id="acme", name="Acme", ad_account_id="act_1", currency="EUR", timezone="Europe/Warsaw")
        outcomes = evaluate_warehouse_checks(warehouse=warehouse, clients=[acme], now_utc=datetime.now(UTC))
    finally:
        warehouse.dispose()
    catalogued = {e.name: e for e in check_catalogue.warehouse_wide()}
    assert sorted(o.name for o in outcomes) == sorted(catalogued)
    for outcome in outcomes:
        assert outcome.severity == catalogued[outcome.name].severity
        # Reported on the KPI warehouse asset, whatever rows it judges (never on a partitioned asset).
        assert catalogued[outcome.name].asset == check_catalogue.KPI_WAREHOUSE_ASSET
        assert outcome.asset in JUDGED


def test_an_alert_takes_its_urgency_and_advice_from_the_catalogue():
    [alert] = check_alerts(
        [CheckFact("meta_ads/kpi_warehouse", "no_split_days", False, {"summary": "1 day"})]
    )
    assert alert.severity is Severity.HIGH
    assert check_catalogue.advice("no_split_days") in alert.body
    [unknown] = check_alerts([CheckFact("x/y", "made_up", False, {})])
    assert unknown.severity is Severity.MEDIUM and "see the check result in the Dagster UI." in unknown.body
