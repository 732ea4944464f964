"""The quickstart ends green: the example clients collected from the simulator, then every asset check evaluated and
passing, and the health report materialized."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

import kpi_platform
from kpi_platform.cli.quickstart import run_quickstart
from kpi_platform.defs import run_history
from kpi_platform.defs.health import HEALTH_REPORT, catalogue_check_keys
from kpi_platform.operations import check_catalogue
from kpi_platform.quality.warehouse_checks import HISTORY_DAYS

REPO = Path(kpi_platform.__file__).resolve().parents[1]


@pytest.mark.usefixtures("no_current_defs_state_storage")
def test_the_quickstart_ends_with_every_check_passing_and_the_health_report(tmp_path, monkeypatch):
    """`kpi-platform quickstart` on today's date, with the example clients.yaml and the embedded default (SQLite
    warehouse, in-process simulator, the top-level dagster.yaml), over every day the daily checks read (its
    default 90 days add older days they do not read, and older months). That it passes on any date is
    `test_the_example_clients_generate_no_anomaly_on_any_day` (simulator tests)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("KPI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KPI_CLIENTS_FILE", str(REPO / "clients.yaml"))
    for name in ("KPI_WAREHOUSE_URL", "KPI_APP_DB_URL", "KPI_META_API_URL", "KPI_SIMULATOR_FAULTS"):
        monkeypatch.delenv(name, raising=False)

    summary = run_quickstart(days=HISTORY_DAYS + 1)

    assert summary.failed_runs == []
    assert {client: rows["days"] for client, rows in summary.rows_by_client.items()} == {
        "acme-dental": HISTORY_DAYS + 1,
        "globex-realty": HISTORY_DAYS + 1,
        "initech-fitness": HISTORY_DAYS + 1,
    }
    # Every asset check the UI lists, evaluated and green: the first screen a newcomer opens.
    assert summary.checks == {entry.name: "passed" for entry in check_catalogue.CHECKS}
    assert summary.ok
    with dg.DagsterInstance.get() as instance:
        for key in catalogue_check_keys():
            assert run_history.check_result(instance, key).passed, key
        report = instance.get_latest_materialization_event(HEALTH_REPORT)
    assert report is not None and report.asset_materialization is not None
    assert report.asset_materialization.metadata["report"].value.startswith("**")
    assert summary.health.startswith(report.asset_materialization.metadata["status"].value)
    assert "asset checks: " in summary.render() and "health report: " in summary.render()
