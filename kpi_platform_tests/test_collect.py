"""Collection scores each client-day and stores its quality issues beside the score, on SQLite and PostgreSQL:
the issues read back as the lists computed, idle days are not scored, and the client's own limits apply."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client, ClientSettings
from kpi_platform.collect import collect_range, day_figures, prepare_range
from kpi_platform.meta.client import InsightsFetch
from kpi_platform.warehouse import Warehouse, schema

CLIENT = Client(
    "globex", "Globex", "act_100000000002", "PLN", "Europe/Warsaw", settings=ClientSettings(cpc_max=60.0)
)
START, END = date(2026, 3, 1), date(2026, 3, 4)
FETCHED_AT = datetime(2026, 3, 5, 6, 0, tzinfo=UTC)


def api_row(day: date, *, spend: str, clicks: str, leads: str) -> dict:
    return {
        "account_currency": "PLN",
        "campaign_id": "42",
        "campaign_name": "Spring",
        "date_start": day.isoformat(),
        "date_stop": day.isoformat(),
        "impressions": "5000",
        "clicks": clicks,
        "spend": spend,
        "actions": [{"action_type": "lead", "value": leads}],
    }


#: Mar 1 within every limit; Mar 2 CPC 72.10 (above the client's 60); Mar 3 idle (no rows); Mar 4 a conversion
#: rate of 20 % (suspicious, not scored).
ROWS = (
    api_row(date(2026, 3, 1), spend="50.00", clicks="100", leads="2"),
    api_row(date(2026, 3, 2), spend="7210.00", clicks="100", leads="2"),
    api_row(date(2026, 3, 4), spend="50.00", clicks="100", leads="20"),
)


class RecordedInsights:
    """An `InsightsSource` answering from fixed API rows."""

    def fetch_campaign_insights(
        self, *, client_id: str, ad_account_id: str, since: date, until: date
    ) -> InsightsFetch:
        rows = tuple(r for r in ROWS if since <= date.fromisoformat(r["date_start"]) <= until)
        return InsightsFetch(
            rows=rows,
            requests=1,
            retries=0,
            throttle_wait_s=0.0,
            source=settings.SOURCE_META,
            splits=0,
            used_async=False,
        )


@pytest.fixture
def warehouse(migrated_warehouse_url) -> Iterator[Warehouse]:
    wh = Warehouse(migrated_warehouse_url)
    wh.migrate()
    wh.upsert_clients([CLIENT.to_row()])
    try:
        yield wh
    finally:
        wh.dispose()


def test_each_day_is_stored_with_its_score_and_issues(warehouse):
    result = collect_range(
        client=CLIENT,
        start=START,
        end=END,
        meta=RecordedInsights(),
        warehouse=warehouse,
        run_id="r1",
        now=FETCHED_AT,
    )

    stored = warehouse.read_client_days(client_id=CLIENT.id, start=START, end=END)
    assert stored["delivery"].tolist() == ["delivered", "delivered", "idle", "delivered"]
    assert stored["quality_score"].tolist()[:2] == [100.0, 80.0] and stored["quality_score"].iloc[3] == 100.0
    assert stored["quality_score"].isna().tolist() == [
        False,
        False,
        True,
        False,
    ]  # the idle day is not scored
    assert stored["quality_issues"].tolist() == [
        [],
        ["cpc 72.10 above 60.00 PLN"],
        [],
        ["conversion_rate 20.00 % above 10.00 %"],
    ]
    table = schema.client_daily_kpis
    with warehouse.engine.connect() as conn:
        texts = conn.execute(
            sa.select(sa.cast(table.c.quality_issues, sa.Text)).order_by(table.c.kpi_date)
        ).scalars()
        # Stored as JSON text of a list on both backends, never as Python's repr of one.
        assert [t.replace(" ", "") for t in texts][:2] == ["[]", '["cpc72.10above60.00PLN"]']
    assert (result.quality_score_mean, result.scored_days, result.days_with_issues) == (93.33, 3, 2)


def test_a_recollection_replaces_the_issues(warehouse):
    meta = RecordedInsights()
    collect_range(
        client=CLIENT, start=START, end=END, meta=meta, warehouse=warehouse, run_id="r1", now=FETCHED_AT
    )
    # The client's CPC limit is raised: the same day, collected again, has no issue left.
    relaxed = Client(
        CLIENT.id,
        CLIENT.name,
        CLIENT.ad_account_id,
        "PLN",
        CLIENT.timezone,
        settings=ClientSettings(cpc_max=80.0),
    )
    collect_range(
        client=relaxed, start=START, end=END, meta=meta, warehouse=warehouse, run_id="r2", now=FETCHED_AT
    )

    stored = warehouse.read_client_days(client_id=CLIENT.id, start=date(2026, 3, 2), end=date(2026, 3, 2))
    assert stored["quality_issues"].tolist() == [[]] and stored["quality_score"].tolist() == [100.0]


def test_day_figures_are_each_days_own_from_the_prepared_frames():
    prepared = prepare_range(client=CLIENT, start=START, end=END, meta=RecordedInsights(), run_id="r1")
    figures = day_figures(prepared)
    assert [f["kpi_date"] for f in figures] == [START, date(2026, 3, 2), date(2026, 3, 3), END]
    mar_2, idle = figures[1], figures[2]
    assert (mar_2["spend"], mar_2["currency"], mar_2["campaign_rows"], mar_2["clicks"], mar_2["leads"]) == (
        7210.0,
        "PLN",
        1,
        100,
        2,
    )
    assert (mar_2["quality_score"], mar_2["issues"], mar_2["source"]) == (
        80.0,
        ["cpc 72.10 above 60.00 PLN"],
        settings.SOURCE_META,
    )
    # An idle day: zero delivery, no score, ratios undefined rather than 0.
    assert (idle["delivery"], idle["spend"], idle["campaign_rows"], idle["issues"]) == ("idle", 0.0, 0, [])
    assert (idle["quality_score"], idle["ctr_pct"], idle["cpc"]) == (None, None, None)
    assert all(type(f["impressions"]) is int and type(f["spend"]) is float for f in figures)
