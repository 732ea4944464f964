"""The embedded default's DAGSTER_HOME: seeded from the top-level dagster.yaml once, never overwritten."""

from __future__ import annotations

import dagster as dg

from kpi_platform.cli.local import ensure_dagster_home
from kpi_platform.operations.plans import MAX_RUNTIME_CAP_S


def test_home_is_seeded_once_and_an_operator_edit_survives(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("KPI_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")

    home = ensure_dagster_home()
    assert home == (tmp_path / "data" / "dagster_home").resolve()
    assert (home / "dagster.yaml").read_text(encoding="utf-8") == "telemetry:\n  enabled: false\n"

    edited = "telemetry:\n  enabled: false\nrun_monitoring:\n  enabled: true\n"
    (home / "dagster.yaml").write_text(edited, encoding="utf-8")
    assert ensure_dagster_home() == home
    assert (home / "dagster.yaml").read_text(encoding="utf-8") == edited


def test_without_the_template_the_home_still_monitors_runs(tmp_path, monkeypatch) -> None:
    """An installed package has no top-level dagster.yaml: the seeded instance still ends runs past their bound."""
    monkeypatch.setenv("DAGSTER_HOME", "")  # restored after the test: ensure_dagster_home sets it
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.setenv("KPI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("kpi_platform.settings.project_root", lambda: tmp_path / "no_project")
    home = ensure_dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == MAX_RUNTIME_CAP_S
        assert "MONITORING" in instance.get_required_daemon_types()
