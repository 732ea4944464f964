"""The `kpi-platform` command at its edges: every numeric option is bounded (argparse's usage and `error:`, exit 2,
nothing run), every command and option says what it is, errors go to stderr as `error: ...`, a client partition
added by hand can be removed (and no other), and the read-only commands never create or migrate a warehouse."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.cli import command as cli
from kpi_platform.cli.quickstart import earliest_day, max_days, run_quickstart
from kpi_platform.defs.partitions import CLIENTS_PARTITIONS_NAME
from kpi_platform.warehouse import Warehouse
from kpi_platform_tests.support.platform import CLIENTS_YAML

READ_ONLY_COMMANDS = [
    pytest.param(["breakers", "list"], id="breakers-list"),
    pytest.param(["health"], id="health"),
    pytest.param(["health", "--json"], id="health-json"),
    pytest.param(["export", "kpis", "--start", "2026-01-01", "--end", "2026-01-31"], id="export-kpis"),
    pytest.param(
        ["export", "activity", "--start", "2026-01-01", "--end", "2026-01-31"], id="export-activity"
    ),
]


@pytest.fixture
def local(tmp_path, monkeypatch) -> Path:
    """Every local path the CLI may write to lies under tmp_path/data (which does not exist yet)."""
    data = tmp_path / "data"
    monkeypatch.setenv("KPI_DATA_DIR", str(data))
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    monkeypatch.setenv("KPI_WAREHOUSE_URL", f"sqlite:///{data / 'warehouse.sqlite'}")
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(CLIENTS_YAML, encoding="utf-8")
    monkeypatch.setenv("KPI_CLIENTS_FILE", str(clients_file))
    for name in (
        "KPI_WAREHOUSE_READER_URL",
        "KPI_WAREHOUSE_OWNER_URL",
        "KPI_META_API_URL",
        "KPI_SIMULATOR_FAULTS",
        settings.ENV_CODE_SERVER_PORT,
    ):
        monkeypatch.delenv(name, raising=False)
    return data


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- bounds -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("days", ["0", "-5", "36500", "1.5", "ninety"])
def test_quickstart_days_out_of_bounds_is_a_usage_error_before_anything_runs(local, capsys, days):
    code, out, err = run(capsys, "quickstart", "--days", days)
    assert code == 2 and out == ""
    assert err.startswith("usage: kpi-platform quickstart")
    assert "error: argument --days:" in err and "Traceback" not in err
    assert not local.exists()  # no Dagster home, no warehouse, no run


def test_the_quickstart_day_limit_is_the_first_partition_or_metas_retention():
    today = date(2026, 12, 4)
    assert earliest_day(today) == date(2024, 1, 1)
    assert max_days(today) == (today - date(2024, 1, 1)).days
    # Once 37 months reach past the first partition, Meta's retention is the limit.
    later = date(2028, 3, 31)
    assert earliest_day(later) == date(2025, 2, 28)
    assert max_days(later) == (later - date(2025, 2, 28)).days


def test_the_error_names_the_bounds(local, capsys):
    code, _, err = run(capsys, "quickstart", "--days", "36500")
    assert code == 2
    assert "error: argument --days: 36500 is outside 1.." in err and "to yesterday" in err


def test_run_quickstart_refuses_bad_days_itself_before_creating_anything(local):
    for days in (0, -5, 36500):
        with pytest.raises(ValueError, match="days must be within 1.."):
            run_quickstart(days=days)
    assert not local.exists()


def test_an_invalid_clients_file_stops_the_quickstart_before_anything_runs(local, tmp_path, capsys):
    (tmp_path / "clients.yaml").write_text("clients:\n  - {id: Bad Id}\n", encoding="utf-8")
    code, _, err = run(capsys, "quickstart", "--days", "3")
    assert code == 2
    assert err.startswith("error: ") and "Traceback" not in err
    assert not local.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["ui", "--port", "0"],
        ["ui", "--port", "65536"],
        ["simulator", "serve", "--port", "-1"],
        ["simulator", "serve", "--port", "70000"],
        ["serve", "--port", "0"],
        ["serve", "--code-server-port", "99999"],
        ["serve", "--simulator-port", "0"],
        ["serve", "--simulator-port", "http"],
    ],
)
def test_ports_are_bounded(local, capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("usage: ") and "error: argument --" in err


def test_a_bad_code_server_port_in_the_environment_is_refused_like_the_option(local, monkeypatch, capsys):
    monkeypatch.setenv(settings.ENV_CODE_SERVER_PORT, "forty-two")
    code, _, err = run(capsys, "serve")
    assert code == 2
    assert "error: argument --code-server-port: 'forty-two' is not a whole number" in err


@pytest.mark.parametrize("faults", ["{not json", '{"no_such_field": 1}', '{"drop_rate": 3}', "[1, 2]"])
def test_simulator_faults_that_are_not_a_fault_config_are_a_usage_error(local, capsys, faults):
    code, _, err = run(capsys, "simulator", "serve", "--faults", faults)
    assert code == 2
    assert "error: argument --faults: not FaultConfig fields as JSON" in err


def _actions(
    parser: argparse.ArgumentParser, path: str = "kpi-platform"
) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:  # argparse exposes no public walk over its actions
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", argparse.Action([], name, help=helps.get(name))
                yield from _actions(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_command_and_option_has_help_and_every_number_is_bounded():
    actions = list(_actions(cli.build_parser()))
    assert len(actions) > 40
    without_help = [f"{path}: {a.dest}" for path, a in actions if not a.help]
    assert without_help == []
    unbounded = [f"{path}: {a.dest}" for path, a in actions if a.type in (int, float)]
    assert unbounded == []


@pytest.mark.parametrize("text", ["0", "-3", "11", "3.5", "x", ""])
def test_bounded_int_refuses_what_is_outside(text):
    parse = cli.bounded_int(1, 10)
    with pytest.raises(argparse.ArgumentTypeError):
        parse(text)
    assert parse("10") == 10 and parse(" 1 ") == 1


# --- clients remove-partition ---------------------------------------------------------------------------------------


@pytest.fixture
def registered(local, no_current_defs_state_storage) -> Iterator[Path]:
    """acme and globex registered (clients.yaml, warehouse, partitions), plus a former client in the warehouse and a
    partition 'acme-dentl' added by hand."""
    from kpi_platform.cli.local import ensure_dagster_home
    from kpi_platform.cli.quickstart import sync_clients
    from kpi_platform.clients import load_clients

    ensure_dagster_home()
    warehouse = Warehouse(settings.warehouse_url())
    warehouse.migrate()
    with dg.DagsterInstance.get() as instance:
        clients = load_clients(settings.clients_file())
        sync_clients(instance=instance, clients=clients, warehouse=warehouse)
        former = {**clients[0].to_row(), "client_id": "initech", "name": "Initech", "active": False}
        warehouse.upsert_clients([former])
        instance.add_dynamic_partitions(CLIENTS_PARTITIONS_NAME, ["initech", "acme-dentl"])
    warehouse.dispose()
    yield local


def partitions() -> list[str]:
    with dg.DagsterInstance.get() as instance:
        return instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)


def test_a_partition_added_by_hand_is_removed(registered, capsys):
    code, out, err = run(capsys, "clients", "remove-partition", "acme-dentl")
    assert (code, err) == (0, "")
    assert "acme-dentl" in out
    assert partitions() == ["acme", "globex", "initech"]


@pytest.mark.parametrize(
    ("client_id", "reason"),
    [
        ("acme", "is in clients.yaml"),
        ("initech", "registered in the warehouse"),
        ("nobody", "there is no client partition 'nobody'"),
    ],
)
def test_remove_partition_refuses_known_clients_and_unknown_partitions(registered, capsys, client_id, reason):
    code, out, err = run(capsys, "clients", "remove-partition", client_id)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and reason in err
    assert partitions() == ["acme", "globex", "initech", "acme-dentl"]


@pytest.mark.parametrize("argv", [["clients", "remove-partition"], ["clients", "validate", "acme"]])
def test_the_client_id_belongs_to_remove_partition_only(local, capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.startswith("error: ")
    assert not local.exists()


def test_remove_partition_without_a_warehouse_changes_nothing(local, capsys):
    code, _, err = run(capsys, "clients", "remove-partition", "acme-dentl")
    assert code == 2
    assert err.startswith("error: cannot tell whether 'acme-dentl' is a registered client: no warehouse at")
    assert not local.exists()


# --- read-only commands ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", READ_ONLY_COMMANDS)
def test_read_only_commands_create_no_sqlite_warehouse(local, capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    assert not local.exists()  # neither the warehouse file nor its folder


def test_breakers_on_a_missing_warehouse_say_so(local, capsys):
    code, out, err = run(capsys, "breakers", "list")
    assert (code, out) == (2, "")
    assert err.startswith("error: no warehouse at") and "kpi-platform quickstart" in err
    code, _, err = run(capsys, "breakers", "reset", "meta_api")
    assert code == 2 and err.startswith("error: no warehouse at")
    assert not local.exists()


def test_breakers_on_an_unmigrated_warehouse_name_the_fix(local, capsys):
    local.mkdir()
    (local / "warehouse.sqlite").touch()
    code, _, err = run(capsys, "breakers", "list")
    assert code == 2 and "run `kpi-platform migrate`" in err
    with sqlite3.connect(local / "warehouse.sqlite") as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


def test_breakers_on_a_migrated_warehouse(local, capsys):
    warehouse = Warehouse(settings.warehouse_url())
    warehouse.migrate()
    warehouse.dispose()
    code, out, _ = run(capsys, "breakers", "list")
    assert (code, out) == (0, "no breaker has recorded a failure\n")
    code, out, err = run(capsys, "breakers", "reset", "meta_api")
    assert (code, out) == (1, "")
    assert err.startswith("error: no breaker meta_api")


def _tables(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text(
                        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
                        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                    )
                ).scalars()
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("argv", READ_ONLY_COMMANDS)
def test_read_only_commands_create_no_table_in_an_empty_postgres_database(
    local, pg_url, monkeypatch, capsys, argv
):
    monkeypatch.setenv("KPI_WAREHOUSE_URL", pg_url)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err
    assert _tables(pg_url) == []
    assert not local.exists()
