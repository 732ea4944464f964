"""`query_kpis` answers the same on SQLite and PostgreSQL: the same varied rows give equal frames and gaps at
every grain, whichever way each backend moves the rows (DB-API fetch on SQLite, streamed COPY on PostgreSQL)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta

import pandas as pd
import pytest

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse.queries import GRAINS, query_kpis
from kpi_platform_tests.support.warehouse_data import INDICATORS_NOW, client, day_row, span, store_days

#: Client ids whose order differs between a locale collation and code points (case, accents, digits).
CLIENTS = ("acme", "Bistro", "bistro_2", "café", "cafe", "zeta")
DAYS = span(date(2026, 1, 1), date(2026, 2, 28))
ISSUES: tuple[list[str] | None, ...] = (
    None,
    [],
    [],
    [],
    ["no_anomalies"],
    ["cpc 72.10 above 50.00 EUR", "x"],
)


def _rows(client_id: str, rng: random.Random) -> list[dict]:
    """About one day in eight missing, one in ten idle; scores, issues, fetch times (to the microsecond),
    currency and source varying by day; `zeta` never reports a conversion, `cafe` stops converting in
    February."""
    rows = []
    for day in DAYS:
        if rng.random() < 0.12:
            continue
        row = day_row(client_id, day, currency="PLN" if client_id == "bistro_2" and day.day > 20 else "EUR")
        idle = rng.random() < 0.1
        impressions = 0 if idle else rng.randint(100, 5000)
        clicks = 0 if idle else rng.randint(0, impressions // 50)
        spend = 0.0 if idle else round(rng.uniform(0.0, 90.0), 2)
        converts = not idle and client_id != "zeta" and not (client_id == "cafe" and day.month == 2)
        counts = {name: rng.randint(0, 3) if converts else 0 for name in settings.CONVERSION_COUNT_COLUMNS}
        row |= {
            "impressions": impressions,
            "clicks": clicks,
            "spend": spend,
            "ctr_pct": clicks / impressions * 100 if impressions else None,
            "cpc": round(spend / clicks, 4) if clicks else None,
            **counts,
            "reservation_value": round(counts["reservations"] * rng.uniform(10, 60), 2),
            "delivery": "idle" if idle else "delivered",
            "campaign_count": 0 if idle else 3,
            # Whole scores: a period's mean is then the same float on both backends, whatever the order of the
            # sum (means of fractional scores can round apart at a tie, 72.075 → 72.07 / 72.08).
            "quality_score": None if rng.random() < 0.2 else float(rng.randint(50, 100)),
            "quality_issues": rng.choice(ISSUES),
            "source": settings.SOURCE_META if rng.random() < 0.3 else settings.SOURCE_SIMULATOR,
            "fetched_at": INDICATORS_NOW
            - timedelta(seconds=rng.randint(0, 4 * 86_400), microseconds=rng.randint(0, 999_999)),
        }
        rows.append(row)
    return rows


def _load(url: str) -> Warehouse:
    wh = Warehouse(url)
    wh.migrate()
    wh.upsert_clients([client(c) for c in CLIENTS] + [client("closed", active=False)])
    rng = random.Random(7)
    for client_id in CLIENTS:
        store_days(wh, client_id, _rows(client_id, rng))
    return wh


@pytest.fixture
def both(tmp_path, migrated_pg_url) -> Iterator[tuple[Warehouse, Warehouse]]:
    sqlite, postgres = _load(f"sqlite:///{tmp_path / 'warehouse.sqlite'}"), _load(migrated_pg_url)
    yield sqlite, postgres
    sqlite.dispose()
    postgres.dispose()


@pytest.mark.parametrize("grain", GRAINS)
@pytest.mark.parametrize(
    ("start", "end", "client_ids"),
    [
        (date(2026, 2, 1), date(2026, 2, 28), None),
        (date(2026, 1, 3), date(2026, 2, 17), None),
        (date(2026, 2, 10), date(2026, 2, 12), ["cafe", "zeta"]),
    ],
)
def test_both_backends_give_the_same_answer(both, grain, start, end, client_ids):
    sqlite, postgres = both
    answers = [
        query_kpis(wh, start=start, end=end, grain=grain, client_ids=client_ids, now=INDICATORS_NOW)
        for wh in (sqlite, postgres)
    ]
    assert not answers[0].frame.empty
    pd.testing.assert_frame_equal(answers[0].frame, answers[1].frame)
    pd.testing.assert_frame_equal(answers[0].gaps, answers[1].gaps)
    assert answers[0].to_records() == answers[1].to_records()
