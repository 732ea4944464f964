"""The embedded default's DAGSTER_HOME: seeded from the top-level dagster.yaml once, never overwritten; paced like
production and quiet on the console; `kpi-platform ui` runs the production processes on it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import dagster as dg
import pytest
import yaml

import kpi_platform
from kpi_platform.cli import supervisor
from kpi_platform.cli.local import FALLBACK_INSTANCE_YAML, ensure_dagster_home, run_ui
from kpi_platform.operations.plans import MAX_RUNTIME_CAP_S

REPO = Path(kpi_platform.__file__).resolve().parents[1]


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


@dg.op
def _step(context) -> None:
    context.log.info("step says hello")


@dg.job
def _console_job() -> None:
    _step()


@pytest.mark.parametrize("template", ["top-level", "fallback"])
def test_the_ui_instance_paces_the_queue_and_keeps_run_events_off_the_console(
    template, tmp_path, monkeypatch
) -> None:
    """The seeded instance checks the queue every 2 s (production's pace), and a run's console logger (the one
    every run without loggers of its own gets) starts at INFO, not one DEBUG line per event; the events are still
    stored, for the UI."""
    monkeypatch.setenv("DAGSTER_HOME", "")  # restored after the test: ensure_dagster_home sets it
    monkeypatch.delenv("DAGSTER_HOME")
    monkeypatch.setenv("KPI_DATA_DIR", str(tmp_path / "data"))
    if template == "fallback":
        monkeypatch.setattr("kpi_platform.settings.project_root", lambda: tmp_path / "no_project")
    else:
        monkeypatch.setattr("kpi_platform.settings.project_root", lambda: REPO)
    home = ensure_dagster_home()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.run_coordinator.dequeue_interval_seconds == 2  # type: ignore[attr-defined]
        assert instance.python_log_level == "INFO"
        [(console, config)] = dg.default_system_loggers(instance)
        assert console is dg.colored_console_logger and config["log_level"] == "INFO"
        assert _console_job.execute_in_process(instance=instance).success
        [record] = instance.get_records_for_run(
            instance.get_runs(limit=1)[0].run_id, of_type=dg.DagsterEventType.STEP_START
        ).records
        assert record.event_log_entry.dagster_event is not None


def test_the_top_level_instance_is_the_fallback_with_storage_and_limits(tmp_path) -> None:
    """The fallback (an installed package) keeps every setting the ui relies on that is not about storage."""
    top = yaml.safe_load((REPO / "dagster.yaml").read_text(encoding="utf-8"))
    fallback = yaml.safe_load(FALLBACK_INSTANCE_YAML)
    for key in ("run_coordinator", "auto_materialize", "python_logs", "telemetry"):
        assert fallback[key] == top[key], key
    assert fallback["run_monitoring"].items() <= top["run_monitoring"].items()


def test_ui_runs_the_production_processes_on_the_embedded_instance(tmp_path, monkeypatch) -> None:
    """`kpi-platform ui` is `serve` on the seeded instance: our daemon (the 5 s backfill pace) at warnings only, a
    local code server whatever KPI_CODE_SERVER_HOST the shell holds, and no DAGSTER_PG_* needed."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KPI_CODE_SERVER_HOST", "code.example.internal")
    calls: list[dict] = []
    monkeypatch.setattr(supervisor, "serve", lambda **kwargs: calls.append(kwargs) or 0)
    out = io.StringIO()

    assert run_ui(host="127.0.0.1", port=3999, out=out) == 0

    [kwargs] = calls
    assert kwargs["embedded"] is True
    assert (kwargs["host"], kwargs["webserver_port"], kwargs["simulator_port"]) == ("127.0.0.1", 3999, None)
    assert os.environ["KPI_CODE_SERVER_HOST"] == "127.0.0.1"
    assert f"DAGSTER_HOME={tmp_path / 'home'}" in out.getvalue()
    daemon = supervisor.daemon_spec(
        workspace=tmp_path / "w.yaml", log_level=supervisor.EMBEDDED_DAEMON_LOG_LEVEL
    )
    assert daemon.argv[1:3] == ("-m", "kpi_platform.runtime.daemon")
    assert daemon.argv[-2:] == ("--log-level", "warning")
    assert (
        supervisor.missing_env(
            {"KPI_CODE_SERVER_HOST": "127.0.0.1", "KPI_CODE_SERVER_PORT": "1"},
            supervisor.EMBEDDED_REQUIRED_ENV,
        )
        == []
    )


def test_the_embedded_commands_batch_event_writes_unless_told_otherwise(tmp_path, monkeypatch) -> None:
    """ensure_dagster_home (the quickstart, `ui`, the other commands) applies the deployment's Dagster settings,
    so the instance's batched SQLite storage gets its batches; a value in the environment wins."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE", raising=False)
    ensure_dagster_home()
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == supervisor.DAGSTER_TUNING_ENV["DAGSTER_EVENT_BATCH_SIZE"]
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    ensure_dagster_home()
    assert os.environ["DAGSTER_EVENT_BATCH_SIZE"] == "0"
