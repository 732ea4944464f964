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
from kpi_platform_tests.support.forecast_data import forecast_frame
from kpi_platform_tests.support.warehouse_data import (
    ACME_ROWS,
    INDICATORS_NOW,
    client,
    day_row,
    metric_rows,
    scored_rows,
    span,
    store_days,
)


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
        categories=["users_total"],
        types=["count"],
        fmt="json",
        out=out,
    )
    document = json.loads(out.getvalue())
    assert [(r["metric_category"], r["value"], r["as_of"], r["days_present"]) for r in document["rows"]] == [
        ("users_total", 113.0, "2026-01-14", 3)
    ]
    (row,) = document["rows"]
    assert (row["metric_type"], row["issues"], row["quality_score"]) == ("count", [], 100.0)
    assert row["fetched_at"].startswith("2026-") and row["freshness"] == "older"
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
            "--category",
            "posts_created",
            "--type",
            "count",
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


@pytest.fixture
def scored(migrated_warehouse_url) -> Iterator[Warehouse]:
    """`delta` with scores, issues and fetch times (`scored_rows`); `echo` with neither score nor issues."""
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([client("delta"), client("echo")])
    store_days(wh, "delta", scored_rows("delta"))
    store_days(wh, "echo", [day_row("echo", d) for d in span(date(2026, 1, 25), date(2026, 1, 31))])
    yield wh
    wh.dispose()


def test_kpis_csv_rows_carry_the_indicators_with_issues_in_one_cell(scored):
    out = io.StringIO()
    export(
        scored,
        kind="kpis",
        start="2026-02-01",
        end="2026-02-05",
        client_ids=["delta"],
        out=out,
        now=INDICATORS_NOW,
    )
    rows = {r["period"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    feb_2 = rows["2026-02-02"]
    assert feb_2["issues"] == "no_split_days; no_anomalies"
    assert (feb_2["quality_score"], feb_2["days_final"], feb_2["source"]) == ("82.0", "1", "simulator")
    assert (feb_2["fetched_at"], feb_2["freshness"]) == ("2026-03-02T09:00:00+00:00", "< 6 h")
    assert (rows["2026-02-05"]["fetched_at"], rows["2026-02-05"]["freshness"]) == (
        "2026-03-02T11:30:00+00:00",
        "< 1 h",
    )
    assert rows["2026-02-01"]["issues"] == ""


def test_kpis_json_months_carry_lists_nulls_and_final_days(scored):
    out = io.StringIO()
    export(
        scored,
        kind="kpis",
        start="2026-01-01",
        end="2026-02-28",
        grain="monthly",
        fmt="json",
        out=out,
        now=INDICATORS_NOW,
    )
    rows = {(r["client_id"], r["period"]): r for r in json.loads(out.getvalue())["rows"]}
    feb = rows[("delta", "2026-02-01")]
    assert (feb["days_present"], feb["days_final"], feb["issues"]) == (
        5,
        2,
        ["2026-02-02: no_split_days", "2026-02-02: no_anomalies"],
    )
    assert (feb["fetched_at"], feb["freshness"]) == ("2026-03-02T11:30:00+00:00", "< 1 h")
    assert feb["quality_score"] == 83.0  # the mean of 81..85
    echo = rows[("echo", "2026-01-01")]
    assert (echo["quality_score"], echo["issues"], echo["days_final"], echo["freshness"]) == (
        None,
        None,
        7,
        "older",
    )


# --- forecasts ----------------------------------------------------------------------------------------------------


def test_forecasts_are_exported_only_when_asked_and_labelled(warehouse):
    warehouse.replace_forecasts(client_id="acme", forecasts=forecast_frame("acme", [date(2026, 1, 7)], 50.0))
    plain, asked = io.StringIO(), io.StringIO()
    export(warehouse, kind="kpis", start="2026-01-06", end="2026-01-08", client_ids=["acme"], out=plain)
    summary = export(
        warehouse,
        kind="kpis",
        start="2026-01-06",
        end="2026-01-08",
        client_ids=["acme"],
        out=asked,
        forecast=True,
    )
    assert "forecast" not in next(csv.reader(io.StringIO(plain.getvalue())))
    rows = list(csv.DictReader(io.StringIO(asked.getvalue())))
    assert [(r["period"], r["source"], r["forecast"]) for r in rows] == [
        ("2026-01-06", "simulator", "False"),
        ("2026-01-07", "forecast", "True"),
        ("2026-01-08", "simulator", "False"),
    ]
    assert (rows[1]["spend"], rows[1]["spend_lower"], rows[1]["spend_upper"]) == ("50.0", "40.0", "60.0")
    assert (summary.rows, summary.forecast_rows, summary.days_missing) == (3, 1, 1)
    with pytest.raises(InvalidQueryError, match="activity exports have none"):
        export(
            warehouse, kind="activity", start="2026-01-06", end="2026-01-08", out=io.StringIO(), forecast=True
        )


def test_cli_forecast_flag_says_which_rows_are_forecasts(cli_env, capsys):
    cli_env.replace_forecasts(client_id="acme", forecasts=forecast_frame("acme", [date(2026, 1, 7)], 50.0))
    args = [
        "export",
        "kpis",
        "--client",
        "acme",
        "--start",
        "2026-01-06",
        "--end",
        "2026-01-08",
        "--format",
        "json",
    ]
    assert cli.main([*args, "--forecast"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert [r["forecast"] for r in document["rows"]] == [False, True, False]
    assert document["gaps"] == [
        {"client_id": "acme", "gap_start": "2026-01-07", "gap_end": "2026-01-07", "days": 1}
    ]
    assert "1 row(s) are forecasts, not data" in captured.err
    assert cli.main([*args, "--grain", "weekly", "--forecast"]) == 2
    assert "forecasts are per day" in capsys.readouterr().err
