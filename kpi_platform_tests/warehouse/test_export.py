"""Export of KPIs and activity as CSV and JSON, and the `kpi-platform export` command, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date

import pytest

from kpi_platform.cli import command as cli
from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse.export import export
from kpi_platform.warehouse.queries import InvalidQueryError
from kpi_platform_tests.support.warehouse_data import ACME_ROWS, client, metric_rows, span, store_days


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([client("acme"), client("cafe")])
    store_days(wh, "acme", ACME_ROWS)
    wh.record_daily_metrics(metric_rows(span(date(2026, 1, 1), date(2026, 1, 14)), skip={}))
    yield wh
    wh.dispose()


def test_kpis_as_csv(warehouse):
    out = io.StringIO()
    summary = export(
        warehouse, kind="kpis", start="2026-01-05", end="2026-01-08", client_ids=["acme"], out=out
    )
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["period"] for r in rows] == ["2026-01-05", "2026-01-06", "2026-01-08"]
    assert rows[0]["client_id"] == "acme" and int(rows[0]["impressions"]) == ACME_ROWS[4]["impressions"]
    assert (summary.rows, summary.gap_ranges, summary.days_missing) == (3, 1, 1)


def test_kpis_as_json_carry_the_query_and_the_gaps(warehouse):
    out = io.StringIO()
    export(warehouse, kind="kpis", start="2026-01-01", end="2026-01-31", grain="monthly", fmt="json", out=out)
    document = json.loads(out.getvalue())
    assert (document["kind"], document["grain"], document["start"], document["end"]) == (
        "kpis",
        "monthly",
        "2026-01-01",
        "2026-01-31",
    )
    assert [
        (r["client_id"], r["period"], r["days_present"], r["days_expected"]) for r in document["rows"]
    ] == [("acme", "2026-01-01", 28, 31)]
    assert {"client_id": "cafe", "gap_start": "2026-01-01", "gap_end": "2026-01-31", "days": 31} in document[
        "gaps"
    ]


def test_activity_as_json_with_nulls_not_nan(warehouse):
    out = io.StringIO()
    export(
        warehouse,
        kind="activity",
        start="2026-01-12",
        end="2026-01-18",
        grain="weekly",
        types=["users_total"],
        fmt="json",
        out=out,
    )
    document = json.loads(out.getvalue())
    assert [(r["metric_type"], r["value"], r["as_of"], r["days_present"]) for r in document["rows"]] == [
        ("users_total", 113.0, "2026-01-14", 3)
    ]
    assert document["gaps"][0]["gap_start"] == "2026-01-15"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "clients"}, "export kind 'clients'"),
        ({"kind": "kpis", "fmt": "xml"}, "format 'xml'"),
        ({"kind": "activity", "client_ids": ["acme"]}, "client filter applies to kpis"),
        ({"kind": "kpis", "types": ["users_total"]}, "filter activity exports"),
        ({"kind": "kpis", "end": "2025-12-31"}, "is after end"),
    ],
)
def test_invalid_exports_write_nothing(warehouse, kwargs, message):
    out = io.StringIO()
    with pytest.raises(InvalidQueryError, match=message):
        export(warehouse, **{"start": "2026-01-01", "end": "2026-01-31", "out": out, **kwargs})
    assert out.getvalue() == ""


# --- the command ---


@pytest.fixture
def cli_env(warehouse, migrated_warehouse_url, monkeypatch):
    monkeypatch.setenv("KPI_WAREHOUSE_URL", migrated_warehouse_url)
    return warehouse


def test_cli_writes_a_file(cli_env, tmp_path, capsys):
    target = tmp_path / "kpis.csv"
    code = cli.main(
        [
            "export",
            "kpis",
            "--client",
            "acme",
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-31",
            "--grain",
            "weekly",
            "--output",
            str(target),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [r["period"] for r in rows] == [
        "2025-12-29",
        "2026-01-05",
        "2026-01-12",
        "2026-01-19",
        "2026-01-26",
    ]
    err = capsys.readouterr().err
    assert "exported 5 kpis rows" in err and "3 day(s) missing" in err


def test_cli_writes_json_to_stdout(cli_env, capsys):
    code = cli.main(
        [
            "export",
            "activity",
            "--start",
            "2026-01-01",
            "--end",
            "2026-01-02",
            "--type",
            "posts_created",
            "--format",
            "json",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    assert [r["value"] for r in document["rows"]] == [10.0, 11.0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--start", "2026-13-01", "--end", "2026-12-31"], "start '2026-13-01' is not a valid date"),
        (["--start", "2026-02-01", "--end", "2026-01-01"], "start 2026-02-01 is after end 2026-01-01"),
        (["--start", "2024-01-01", "--end", "2026-01-01"], "--allow-long-range"),
        (
            ["--start", "2026-01-01", "--end", "2026-01-31", "--client", "nobody"],
            "unknown client ids ['nobody']",
        ),
    ],
)
def test_cli_errors_exit_2_with_a_message_and_no_file(cli_env, tmp_path, capsys, argv, message):
    target = tmp_path / "out.csv"
    code = cli.main(["export", "kpis", *argv, "--output", str(target)])
    captured = capsys.readouterr()
    assert code == 2
    assert message in captured.err and "Traceback" not in captured.err
    assert not target.exists()


def test_cli_long_range_when_asked_for(cli_env, capsys):
    code = cli.main(
        [
            "export",
            "kpis",
            "--start",
            "2024-01-01",
            "--end",
            "2026-01-31",
            "--grain",
            "monthly",
            "--allow-long-range",
        ]
    )
    assert code == 0
    assert "exported" in capsys.readouterr().err


def test_cli_missing_warehouse_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KPI_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'none' / 'warehouse.sqlite'}")
    code = cli.main(["export", "kpis", "--start", "2026-01-01", "--end", "2026-01-31"])
    assert code == 2
    assert "no warehouse at" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_cli_unmigrated_warehouse_is_a_clear_error(tmp_path, monkeypatch, capsys):
    path = tmp_path / "empty.sqlite"
    path.touch()
    monkeypatch.setenv("KPI_WAREHOUSE_URL", f"sqlite:///{path}")
    code = cli.main(["export", "kpis", "--start", "2026-01-01", "--end", "2026-01-31"])
    assert code == 2
    assert "run `kpi-platform migrate`" in capsys.readouterr().err


def test_cli_database_errors_exit_2_with_the_reason_not_a_traceback(tmp_path, monkeypatch, capsys):
    import sqlalchemy as sa

    from kpi_platform.warehouse import Warehouse

    path = tmp_path / "broken.sqlite"
    warehouse = Warehouse(f"sqlite:///{path}")
    warehouse.migrate()
    with warehouse.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE client_daily_kpis"))
    warehouse.dispose()
    monkeypatch.setenv("KPI_WAREHOUSE_URL", f"sqlite:///{path}")
    code = cli.main(["export", "kpis", "--start", "2026-01-01", "--end", "2026-01-31"])
    assert code == 2
    err = capsys.readouterr().err
    assert "could not answer the export" in err and "client_daily_kpis" in err
    assert "Traceback" not in err
