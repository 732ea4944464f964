"""The quickstart ends green: the example clients collected from the simulator, then every warehouse check passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import kpi_platform
from kpi_platform.cli.quickstart import run_quickstart
from kpi_platform.operations import check_catalogue
from kpi_platform.quality.warehouse_checks import HISTORY_DAYS

REPO = Path(kpi_platform.__file__).resolve().parents[1]


@pytest.mark.usefixtures("no_current_defs_state_storage")
def test_the_quickstart_ends_with_every_warehouse_check_passing(tmp_path, monkeypatch):
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
    assert summary.checks == {entry.name: "passed" for entry in check_catalogue.warehouse_wide()}
