"""Warehouse writes and reads on SQLite and PostgreSQL: idempotent range replacement, all-or-nothing, clients."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse, schema
from kpi_platform_tests.support.forecast_data import forecast_frame

CAMPAIGN_COLUMNS = [
    "client_id",
    "kpi_date",
    "campaign_id",
    "campaign_name",
    "spend",
    "impressions",
    "clicks",
    "ctr_pct",
    "cpc",
    "calls",
    "contacts",
    "leads",
    "reservations",
    "reservation_value",
    "currency",
]
SUMS = ["spend", "impressions", "clicks", *settings.CONVERSION_COLUMNS]
FETCHED_AT = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


def client_row(client_id: str = "acme", **overrides) -> dict:
    row = {
        "client_id": client_id,
        "name": f"{client_id.title()} Ltd",
        "ad_account_id": f"act_{zlib.crc32(client_id.encode()) % 10**9}",  # stable across runs, unlike hash()
        "currency": "EUR",
        "timezone": "Europe/Prague",
        "active": True,
        "settings": {"lookback_days": 28},
    }
    return {**row, **overrides}


def days(start: date, count: int) -> list[date]:
    return [start + timedelta(days=i) for i in range(count)]


def campaign_frame(
    client_id: str, dates: list[date], campaign_ids: list[str], *, scale: float = 1.0
) -> pd.DataFrame:
    rows = []
    for d in dates:
        for n, campaign_id in enumerate(campaign_ids, start=1):
            impressions = int(1000 * n * scale)
            clicks = int(40 * n * scale)
            spend = round(12.34 * n * scale, 2)
            rows.append(
                {
                    "client_id": client_id,
                    "kpi_date": d,
                    "campaign_id": campaign_id,
                    "campaign_name": f"Campaign {campaign_id}",
                    "spend": spend,
                    "impressions": impressions,
                    "clicks": clicks,
                    "ctr_pct": clicks / impressions * 100,
                    "cpc": round(spend / clicks, 4),
                    "calls": n,
                    "contacts": 0,
                    "leads": 2 * n,
                    "reservations": 1,
                    "reservation_value": 50.5,
                    "currency": "EUR",
                }
            )
    return stamp(pd.DataFrame(rows, columns=CAMPAIGN_COLUMNS))


def stamp(frame: pd.DataFrame, run_id: str = "run-1") -> pd.DataFrame:
    return frame.assign(source=settings.SOURCE_SIMULATOR, fetched_at=FETCHED_AT, run_id=run_id)


def daily_frame(campaigns: pd.DataFrame, *, client_id: str, dates: list[date]) -> pd.DataFrame:
    """Client-day totals for every date; dates without campaign rows become idle days."""
    grouped = campaigns.groupby("kpi_date").agg(
        **{c: (c, "sum") for c in SUMS}, campaign_count=("campaign_id", "nunique")
    )
    totals = pd.DataFrame({"kpi_date": dates}).merge(grouped.reset_index(), on="kpi_date", how="left")
    totals = totals.fillna(0)
    for column in [*SUMS, "campaign_count"]:
        if column not in ("spend", "reservation_value"):
            totals[column] = totals[column].astype("int64")
    impressions = totals["impressions"].where(totals["impressions"] > 0)
    clicks = totals["clicks"].where(totals["clicks"] > 0)
    totals["ctr_pct"] = totals["clicks"] / impressions * 100
    totals["cpc"] = totals["spend"] / clicks
    totals["client_id"] = client_id
    totals["currency"] = "EUR"
    totals["delivery"] = np.where(totals["campaign_count"] > 0, "delivered", "idle")
    return stamp(totals)


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([client_row("acme"), client_row("bistro")])
    yield wh
    wh.dispose()


def write(
    wh: Warehouse,
    client_id: str,
    dates: list[date],
    campaigns: pd.DataFrame,
    totals: pd.DataFrame | None = None,
):
    """Replace [dates[0], dates[-1]]; totals default to those of `campaigns`, idle where it has no rows."""
    if totals is None:
        totals = daily_frame(campaigns, client_id=client_id, dates=dates)
    return wh.replace_client_range(
        client_id=client_id, start=dates[0], end=dates[-1], campaign_rows=campaigns, daily_totals=totals
    )


def count(wh: Warehouse, table: sa.Table, *where) -> int:
    with wh.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()


MARCH = days(date(2026, 3, 1), 5)


def test_replace_is_idempotent(warehouse):
    campaigns = campaign_frame("acme", MARCH, ["c1", "c2"])
    totals = daily_frame(campaigns, client_id="acme", dates=MARCH)
    stats = write(warehouse, "acme", MARCH, campaigns, totals)
    assert (stats.campaign_rows, stats.day_rows) == (10, 5)
    first_days = warehouse.read_client_days(client_id="acme", start=MARCH[0], end=MARCH[-1])
    first_campaigns = warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[-1])

    write(warehouse, "acme", MARCH, campaigns, totals)

    pd.testing.assert_frame_equal(
        warehouse.read_client_days(client_id="acme", start=MARCH[0], end=MARCH[-1]), first_days
    )
    pd.testing.assert_frame_equal(
        warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[-1]), first_campaigns
    )
    assert count(warehouse, schema.campaign_daily_kpis) == 10


def test_read_types_and_values_round_trip(warehouse):
    campaigns = campaign_frame("acme", MARCH[:1], ["c1"])
    write(warehouse, "acme", MARCH[:1], campaigns)
    row = warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[0]).iloc[0]
    assert type(row["kpi_date"]) is date and row["kpi_date"] == MARCH[0]
    assert isinstance(row["impressions"], np.integer) and row["impressions"] == 1000
    assert row["spend"] == pytest.approx(12.34) and row["cpc"] == pytest.approx(0.3085)
    assert row["fetched_at"] == pd.Timestamp(FETCHED_AT)
    days_frame = warehouse.read_client_days(client_id="acme", start=MARCH[0], end=MARCH[0])
    assert days_frame["clicks"].dtype == "int64" and days_frame["campaign_count"].dtype == "int64"


def test_restatement_replaces_values_and_drops_vanished_campaigns(warehouse):
    march = days(date(2026, 3, 1), 10)
    campaigns = campaign_frame("acme", march, ["c1", "c2", "c3"])
    write(warehouse, "acme", march, campaigns)

    window = march[3:6]
    restated = campaign_frame("acme", window, ["c1", "c2"], scale=2.0)
    stats = write(warehouse, "acme", window, restated)
    assert stats.campaign_rows == 6

    inside = warehouse.read_campaign_days(client_id="acme", start=window[0], end=window[-1])
    assert set(inside["campaign_id"]) == {"c1", "c2"}
    assert inside.loc[inside["campaign_id"] == "c1", "impressions"].tolist() == [2000, 2000, 2000]
    outside = warehouse.read_campaign_days(client_id="acme", start=march[0], end=march[2])
    assert set(outside["campaign_id"]) == {"c1", "c2", "c3"} and len(outside) == 9
    totals = warehouse.read_client_days(client_id="acme", start=march[0], end=march[-1]).set_index("kpi_date")
    assert totals.loc[window[0], "campaign_count"] == 2
    assert totals.loc[march[0], "campaign_count"] == 3
    assert totals.loc[window[0], "impressions"] == 2000 + 4000


def test_failure_mid_write_keeps_previous_rows(warehouse, monkeypatch):
    campaigns = campaign_frame("acme", MARCH, ["c1", "c2"])
    totals = daily_frame(campaigns, client_id="acme", dates=MARCH)
    write(warehouse, "acme", MARCH, campaigns, totals)
    before_days = warehouse.read_client_days(client_id="acme", start=MARCH[0], end=MARCH[-1])
    before_campaigns = warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[-1])

    original = Warehouse._insert_frame
    calls = []

    def insert_then_fail(self, conn, table, frame):
        calls.append(table.name)
        if table is schema.client_daily_kpis:
            # Part of the second insert lands, then the write dies.
            original(self, conn, table, frame.iloc[:2])
            raise RuntimeError("connection lost")
        original(self, conn, table, frame)

    monkeypatch.setattr(Warehouse, "_insert_frame", insert_then_fail)
    restated = campaign_frame("acme", MARCH, ["c9"], scale=3.0)
    with pytest.raises(RuntimeError, match="connection lost"):
        write(warehouse, "acme", MARCH, restated)
    assert calls == ["campaign_daily_kpis", "client_daily_kpis"]

    pd.testing.assert_frame_equal(
        warehouse.read_client_days(client_id="acme", start=MARCH[0], end=MARCH[-1]), before_days
    )
    pd.testing.assert_frame_equal(
        warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[-1]), before_campaigns
    )


def test_database_error_in_second_insert_keeps_previous_rows(warehouse):
    campaigns = campaign_frame("acme", MARCH, ["c1"])
    write(warehouse, "acme", MARCH, campaigns)
    restated = campaign_frame("acme", MARCH, ["c2"])
    bad_totals = daily_frame(restated, client_id="acme", dates=MARCH)
    bad_totals.loc[3, "delivery"] = "unknown"  # violates the CHECK constraint on the last insert

    with pytest.raises(sa.exc.IntegrityError):
        write(warehouse, "acme", MARCH, restated, bad_totals)

    stored = warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[-1])
    assert set(stored["campaign_id"]) == {"c1"} and len(stored) == 5
    assert count(warehouse, schema.client_daily_kpis) == 5


def test_rows_outside_range_or_of_another_client_are_rejected_before_writing(warehouse):
    campaigns = campaign_frame("acme", MARCH, ["c1"])
    write(warehouse, "acme", MARCH, campaigns)

    late = campaign_frame("acme", [MARCH[1], date(2026, 3, 9)], ["c2"])
    with pytest.raises(
        ValueError,
        match=r"campaign_rows row 1 .*campaign_id='c2'.*2026-03-09 is outside .*2026-03-01, 2026-03-02",
    ):
        write(warehouse, "acme", MARCH[:2], late)

    foreign = daily_frame(campaigns, client_id="acme", dates=MARCH)
    foreign.loc[2, "client_id"] = "bistro"
    with pytest.raises(ValueError, match=r"daily_totals row 2 .*client_id 'bistro' is not 'acme'"):
        write(warehouse, "acme", MARCH, campaigns, foreign)

    stored = warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[-1])
    assert set(stored["campaign_id"]) == {"c1"} and len(stored) == 5
    assert count(warehouse, schema.client_daily_kpis) == 5
    assert count(warehouse, schema.client_daily_kpis, schema.client_daily_kpis.c.client_id == "bistro") == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns=["spend"]), r"required columns \['spend'\]"),
        (lambda f: f.assign(spnd=1.0), r"columns \['spnd'\] are not in table"),
        (
            lambda f: f.assign(clicks=f["clicks"].astype(float).where(f.index != 1)),
            r"row 1 .*clicks is required",
        ),
        (
            lambda f: f.assign(clicks=f["clicks"].astype("Int64").where(f.index != 2)),
            r"row 2 .*clicks is required",
        ),
        (lambda f: f.assign(spend=f["spend"].where(f.index != 3, np.inf)), r"row 3 .*spend is not finite"),
        (lambda f: f.assign(clicks=f["clicks"] + 0.5), r"clicks must be a whole number"),
        (lambda f: pd.concat([f, f.iloc[[0]]]), r"duplicate primary key"),
    ],
)
def test_malformed_frames_are_rejected(warehouse, mutate, message):
    campaigns = campaign_frame("acme", MARCH, ["c1"])
    with pytest.raises(ValueError, match=message):
        write(
            warehouse, "acme", MARCH, mutate(campaigns), daily_frame(campaigns, client_id="acme", dates=MARCH)
        )
    assert count(warehouse, schema.campaign_daily_kpis) == 0


def test_unregistered_client_is_refused_by_the_foreign_key(warehouse):
    campaigns = campaign_frame("ghost", MARCH[:1], ["c1"])
    with pytest.raises(sa.exc.IntegrityError):
        write(warehouse, "ghost", MARCH[:1], campaigns)


def test_a_fact_row_cannot_be_moved_to_an_unregistered_client(warehouse):
    write(warehouse, "acme", MARCH[:1], campaign_frame("acme", MARCH[:1], ["c1"]))
    for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
        with pytest.raises(sa.exc.IntegrityError), warehouse.engine.begin() as conn:
            conn.execute(sa.update(table).values(client_id="ghost"))
        assert count(warehouse, table, table.c.client_id == "acme") == 1


def test_a_referenced_client_cannot_be_deleted_or_renamed(warehouse):
    write(warehouse, "acme", MARCH[:1], campaign_frame("acme", MARCH[:1], ["c1"]))
    clients = schema.clients
    for statement in (
        sa.delete(clients).where(clients.c.client_id == "acme"),
        sa.update(clients).where(clients.c.client_id == "acme").values(client_id="acme-renamed"),
    ):
        with pytest.raises(sa.exc.IntegrityError), warehouse.engine.begin() as conn:
            conn.execute(statement)
    assert warehouse.get_client("acme") is not None
    assert count(warehouse, schema.campaign_daily_kpis) == 1

    # Only the day rows left: still referenced.
    with warehouse.engine.begin() as conn:
        conn.execute(sa.delete(schema.campaign_daily_kpis))
    with pytest.raises(sa.exc.IntegrityError), warehouse.engine.begin() as conn:
        conn.execute(sa.delete(clients).where(clients.c.client_id == "acme"))

    # A client without facts can be renamed or deleted; other columns of a referenced one can change.
    with warehouse.engine.begin() as conn:
        conn.execute(sa.update(clients).where(clients.c.client_id == "acme").values(name="Acme Group"))
        conn.execute(sa.update(clients).where(clients.c.client_id == "bistro").values(client_id="bistro-2"))
        conn.execute(sa.delete(clients).where(clients.c.client_id == "bistro-2"))
    assert warehouse.get_client("acme")["name"] == "Acme Group"
    assert warehouse.get_client("bistro-2") is None


def test_idle_day_is_stored_explicitly(warehouse):
    delivered = MARCH[:2]
    campaigns = campaign_frame("acme", delivered, ["c1"])
    totals = daily_frame(campaigns, client_id="acme", dates=MARCH[:3])
    write(warehouse, "acme", MARCH[:3], campaigns, totals)

    stored = warehouse.read_client_days(client_id="acme", start=MARCH[0], end=MARCH[2]).set_index("kpi_date")
    idle = stored.loc[MARCH[2]]
    assert idle["delivery"] == "idle"
    assert idle[[c for c in SUMS if c not in ("spend", "reservation_value")]].tolist() == [0] * 6
    assert idle["spend"] == 0.0 and idle["campaign_count"] == 0
    assert pd.isna(idle["ctr_pct"]) and pd.isna(idle["cpc"])
    assert stored.loc[MARCH[0], "delivery"] == "delivered"
    present = warehouse.present_days(start=MARCH[0], end=MARCH[-1])
    assert present == {"acme": set(MARCH[:3]), "bistro": set()}
    assert warehouse.present_days(start=MARCH[0], end=MARCH[-1], client_ids=["bistro"]) == {"bistro": set()}


def test_nan_is_stored_as_null(warehouse):
    campaigns = campaign_frame("acme", MARCH[:1], ["c1", "c2", "c3"])
    campaigns.loc[0, ["ctr_pct", "cpc"]] = np.nan
    campaigns.loc[1, "campaign_name"] = None
    campaigns.loc[2, "campaign_name"] = ""
    write(warehouse, "acme", MARCH[:1], campaigns)

    table = schema.campaign_daily_kpis
    with warehouse.engine.connect() as conn:
        rows = {
            r.campaign_id: r
            for r in conn.execute(
                sa.select(table.c.campaign_id, table.c.ctr_pct, table.c.cpc, table.c.campaign_name)
            )
        }
    assert rows["c1"].ctr_pct is None and rows["c1"].cpc is None
    assert rows["c2"].campaign_name is None
    assert rows["c3"].campaign_name == ""  # an empty name is not a missing one
    assert rows["c2"].ctr_pct == pytest.approx(4.0)


def test_text_equal_to_the_copy_null_marker_survives(warehouse):
    campaigns = campaign_frame("acme", MARCH[:1], ["c1"])
    campaigns.loc[0, "campaign_name"] = "\\N"
    write(warehouse, "acme", MARCH[:1], campaigns)
    stored = warehouse.read_campaign_days(client_id="acme", start=MARCH[0], end=MARCH[0])
    assert stored["campaign_name"].tolist() == ["\\N"]


def test_upsert_clients_reports_changes_and_never_deletes(warehouse):
    first = warehouse.get_client("acme")
    assert first["settings"] == {"lookback_days": 28} and first["active"] is True
    assert first["created_at"].tzinfo is not None

    sync = warehouse.upsert_clients(
        [client_row("acme"), client_row("bistro", name="Bistro Nova"), client_row("cafe")]
    )
    assert (sync.added, sync.updated, sync.unchanged) == (("cafe",), ("bistro",), ("acme",))
    assert warehouse.get_client("bistro")["name"] == "Bistro Nova"
    assert warehouse.get_client("acme")["updated_at"] == first["updated_at"]

    sync = warehouse.upsert_clients([client_row("cafe", active=False)])
    assert sync.updated == ("cafe",)
    assert [c["client_id"] for c in warehouse.list_clients()] == ["acme", "bistro", "cafe"]
    assert [c["client_id"] for c in warehouse.list_clients(active_only=True)] == ["acme", "bistro"]

    sync = warehouse.upsert_clients([client_row("acme", settings={"lookback_days": 14})])
    assert sync.updated == ("acme",)
    assert warehouse.get_client("acme")["settings"] == {"lookback_days": 14}
    assert warehouse.get_client("nobody") is None


def test_monthly_totals_and_summary_upsert(warehouse):
    late_feb = days(date(2026, 2, 27), 2)
    march = days(date(2026, 3, 1), 4)
    feb_campaigns = campaign_frame("acme", late_feb, ["c1"], scale=5)
    write(warehouse, "acme", late_feb, feb_campaigns)
    campaigns = campaign_frame("acme", march[:3], ["c1", "c2"])
    write(warehouse, "acme", march, campaigns)

    totals = warehouse.monthly_totals_from_days(client_id="acme", month=date(2026, 3, 17))
    assert totals["month"] == date(2026, 3, 1)
    assert totals["spend"] == pytest.approx(3 * (12.34 + 24.68))
    assert (totals["impressions"], totals["clicks"], totals["leads"], totals["calls"]) == (9000, 360, 18, 9)
    assert totals["reservation_value"] == pytest.approx(6 * 50.5)
    assert (totals["days_present"], totals["idle_days"], totals["days_in_month"]) == (4, 1, 31)
    assert totals["currency"] == "EUR"
    assert totals["ctr_pct"] == pytest.approx(4.0) and totals["cpc"] == pytest.approx(0.3085)
    assert all(isinstance(totals[c], int) for c in ("impressions", "clicks", "days_present", "idle_days"))

    empty = warehouse.monthly_totals_from_days(client_id="bistro", month=date(2026, 3, 1))
    assert (empty["days_present"], empty["spend"], empty["currency"], empty["ctr_pct"]) == (
        0,
        0.0,
        None,
        None,
    )

    summary = {
        **{
            k: totals[k]
            for k in (*SUMS, "ctr_pct", "cpc", "currency", "days_present", "days_in_month", "idle_days")
        },
        "client_id": "acme",
        "month": date(2026, 3, 1),
        "status": "provisional",
        "source": settings.SOURCE_SIMULATOR,
        "run_id": "run-1",
    }
    warehouse.upsert_monthly_summary(summary)
    warehouse.upsert_monthly_summary(
        {**summary, "status": "final", "spend": 1.5, "cpc": float("nan"), "run_id": "run-2"}
    )
    monthly = warehouse.read_monthly(client_id="acme")
    assert len(monthly) == 1
    row = monthly.iloc[0]
    assert (row["status"], row["spend"], row["run_id"], row["month"]) == (
        "final",
        1.5,
        "run-2",
        date(2026, 3, 1),
    )
    assert pd.isna(row["cpc"]) and row["impressions"] == 9000
    with pytest.raises(ValueError, match="first-of-month"):
        warehouse.upsert_monthly_summary({**summary, "month": date(2026, 3, 2)})


def test_large_write_goes_through_copy_on_postgres(warehouse, monkeypatch):
    copied: list[tuple[str, int]] = []
    original = Warehouse._copy_frame

    def spy(self, conn, table, frame):
        copied.append((table.name, len(frame)))
        return original(self, conn, table, frame)

    monkeypatch.setattr(Warehouse, "_copy_frame", spy)
    dates = days(date(2025, 1, 1), 200)
    campaigns = campaign_frame("acme", dates, [f"c{i}" for i in range(100)])
    assert len(campaigns) == 20_000
    stats = write(warehouse, "acme", dates, campaigns)

    assert (stats.campaign_rows, stats.day_rows) == (20_000, 200)
    assert count(warehouse, schema.campaign_daily_kpis) == 20_000
    if warehouse.is_postgres:
        assert copied == [("campaign_daily_kpis", 20_000), ("client_daily_kpis", 200)]
    else:
        assert copied == []
    stored = warehouse.read_client_days(client_id="acme", start=dates[0], end=dates[-1])
    assert stored["impressions"].sum() == campaigns["impressions"].sum()


def test_concurrent_writers_of_different_clients(migrated_warehouse_url, warehouse):
    errors: list[BaseException] = []

    def run(client_id: str) -> None:
        wh = Warehouse(migrated_warehouse_url)
        try:
            for offset in range(0, 20, 5):
                window = days(date(2026, 1, 1) + timedelta(days=offset), 5)
                campaigns = campaign_frame(client_id, window, ["c1", "c2"])
                write(wh, client_id, window, campaigns)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)
        finally:
            wh.dispose()

    threads = [threading.Thread(target=run, args=(c,)) for c in ("acme", "bistro")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert {
        k: len(v) for k, v in warehouse.present_days(start=date(2026, 1, 1), end=date(2026, 1, 31)).items()
    } == {
        "acme": 20,
        "bistro": 20,
    }


# --- forecasts: real data replaces them ---------------------------------------------------------------------------


def test_writing_a_day_replaces_its_forecast_and_records_the_error(warehouse):
    assert warehouse.replace_forecasts(client_id="acme", forecasts=forecast_frame("acme", MARCH, 100.0)) == 5
    assert (
        warehouse.replace_forecasts(client_id="bistro", forecasts=forecast_frame("bistro", MARCH, 1.0)) == 5
    )
    written = MARCH[:3]
    campaigns = campaign_frame("acme", written, ["c1", "c2"])
    # The range covers all five days; only three are written: the other two are still missing, and keep their forecast.
    stats = warehouse.replace_client_range(
        client_id="acme",
        start=MARCH[0],
        end=MARCH[-1],
        campaign_rows=campaigns,
        daily_totals=daily_frame(campaigns, client_id="acme", dates=written),
    )
    assert stats.forecasts_retired == 3
    remaining = warehouse.read_forecasts(start=MARCH[0], end=MARCH[-1])
    assert list(zip(remaining["client_id"], remaining["kpi_date"], strict=True)) == [
        ("acme", MARCH[3]),
        ("acme", MARCH[4]),
        *[("bistro", d) for d in MARCH],
    ]

    errors = warehouse.read_forecast_accuracy(start=MARCH[0], end=MARCH[-1])
    assert len(errors) == 3 * len(schema.FORECAST_METRICS)
    assert set(errors["client_id"]) == {"acme"} and sorted(set(errors["kpi_date"])) == written
    by_metric = errors[errors["kpi_date"] == MARCH[0]].set_index("metric")
    # Actual day: spend 37.02, clicks 120, contacts 0 (two campaigns, see campaign_frame).
    assert by_metric.loc["spend", "actual"] == pytest.approx(37.02)
    assert by_metric.loc["spend", "abs_pct_error"] == pytest.approx(abs(100 - 37.02) / 37.02 * 100)
    assert by_metric.loc["clicks", "abs_pct_error"] == pytest.approx(abs(100 - 120) / 120 * 100)
    assert by_metric.loc["clicks", ["forecast", "lower", "upper"]].tolist() == [100.0, 80.0, 120.0]
    assert pd.isna(by_metric.loc["contacts", "abs_pct_error"]), "no percentage of an actual 0"
    assert by_metric.loc["spend", "generated_at"] == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)

    # A re-run of the same write finds no forecast left: nothing more is recorded.
    again = write(warehouse, "acme", written, campaigns)
    assert again.forecasts_retired == 0
    assert len(warehouse.read_forecast_accuracy(start=MARCH[0], end=MARCH[-1])) == len(errors)


def test_money_of_another_currency_is_not_compared(warehouse):
    warehouse.replace_forecasts(
        client_id="acme", forecasts=forecast_frame("acme", MARCH[:1], 10.0, currency="PLN")
    )
    write(warehouse, "acme", MARCH[:1], campaign_frame("acme", MARCH[:1], ["c1"]))
    metrics = set(warehouse.read_forecast_accuracy(start=MARCH[0], end=MARCH[0])["metric"])
    assert metrics == set(schema.FORECAST_METRICS) - {"spend", "reservation_value"}


def test_a_failed_write_keeps_the_forecast_and_records_nothing(warehouse, monkeypatch):
    from kpi_platform.warehouse import store

    warehouse.replace_forecasts(client_id="acme", forecasts=forecast_frame("acme", MARCH, 100.0))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "forecast_errors", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write(warehouse, "acme", MARCH, campaign_frame("acme", MARCH, ["c1"]))
    assert count(warehouse, schema.client_daily_kpis) == 0
    assert len(warehouse.read_forecasts(start=MARCH[0], end=MARCH[-1])) == 5
    assert count(warehouse, schema.forecast_accuracy) == 0


def test_a_forecast_is_never_stored_beside_collected_data(warehouse):
    write(warehouse, "acme", MARCH[:2], campaign_frame("acme", MARCH[:2], ["c1"]))
    assert warehouse.replace_forecasts(client_id="acme", forecasts=forecast_frame("acme", MARCH, 5.0)) == 3
    assert list(warehouse.read_forecasts(start=MARCH[0], end=MARCH[-1])["kpi_date"]) == MARCH[2:]
    # Replacing with nothing removes them; the data stays.
    assert warehouse.replace_forecasts(client_id="acme", forecasts=pd.DataFrame()) == 0
    assert count(warehouse, schema.kpi_forecasts) == 0 and count(warehouse, schema.client_daily_kpis) == 2


def test_malformed_forecasts_are_refused(warehouse):
    bad = forecast_frame("acme", MARCH[:1], 5.0).drop(columns=["clicks_upper"])
    with pytest.raises(ValueError, match=r"required columns \['clicks_upper'\]"):
        warehouse.replace_forecasts(client_id="acme", forecasts=bad)
    with pytest.raises(ValueError, match="is not 'acme'"):
        warehouse.replace_forecasts(client_id="acme", forecasts=forecast_frame("bistro", MARCH[:1], 5.0))


def test_quality_issues_round_trip_as_json_lists_and_none_is_null(warehouse, monkeypatch):
    copied: list[str] = []
    original = Warehouse._copy_frame

    def spy(self, conn, table, frame):
        copied.append(table.name)
        return original(self, conn, table, frame)

    monkeypatch.setattr(Warehouse, "_copy_frame", spy)
    dates = MARCH[:3]
    campaigns = campaign_frame("acme", dates, ["c1"])
    # Text the COPY CSV stream must quote and escape: quotes, commas, a backslash, the NULL marker, non-ASCII.
    issues = [["cpc 72.10 above 50.00 EUR", 'a "quoted", text \\N with ü'], [], None]
    totals = daily_frame(campaigns, client_id="acme", dates=dates).assign(
        quality_score=[80.0, 100.0, np.nan], quality_issues=pd.Series(issues, dtype=object)
    )
    write(warehouse, "acme", dates, campaigns, totals)

    stored = warehouse.read_client_days(client_id="acme", start=dates[0], end=dates[-1])
    assert stored["quality_issues"].tolist() == issues
    table = schema.client_daily_kpis
    # Not recorded is SQL NULL on both write paths, not the JSON value null.
    assert count(warehouse, table, table.c.quality_issues.is_(None)) == 1
    assert copied == (["campaign_daily_kpis", "client_daily_kpis"] if warehouse.is_postgres else [])


def test_a_quality_issues_value_json_cannot_hold_is_refused_before_writing(warehouse):
    campaigns = campaign_frame("acme", MARCH[:2], ["c1"])
    totals = daily_frame(campaigns, client_id="acme", dates=MARCH[:2]).assign(
        quality_issues=pd.Series([[], {"cpc"}], dtype=object)
    )
    with pytest.raises(ValueError, match=r"row 1 .*quality_issues is not a JSON value, got \{'cpc'\}"):
        write(warehouse, "acme", MARCH[:2], campaigns, totals)
    assert count(warehouse, schema.client_daily_kpis) == 0
