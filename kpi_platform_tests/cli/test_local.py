"""The embedded default's DAGSTER_HOME: seeded from the top-level dagster.yaml once, never overwritten."""

from __future__ import annotations

from kpi_platform.cli.local import ensure_dagster_home


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
