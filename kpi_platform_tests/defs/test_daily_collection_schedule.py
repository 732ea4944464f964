"""The daily collection schedule ticked at fixed times: which clients get a run, over which range, with which tags."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from kpi_platform.clients import Client, ClientSettings
from kpi_platform.defs.collection import daily_collection_schedule
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG
from kpi_platform.warehouse import Warehouse

CLIENTS = [
    Client("warsaw", "Warsaw", "act_1", "PLN", "Europe/Warsaw"),
    Client(
        "ny",
        "New York",
        "act_2",
        "USD",
        "America/New_York",
        settings=ClientSettings(collection_hour=7, lookback_days=3),
    ),
    Client("mumbai", "Mumbai", "act_3", "USD", "Asia/Kolkata"),
    Client("off", "Off", "act_4", "EUR", "Europe/Warsaw", active=False),
]


@pytest.fixture
def warehouse_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    warehouse = Warehouse(url)
    warehouse.migrate()
    warehouse.upsert_clients([c.to_row() for c in CLIENTS])
    warehouse.dispose()
    return url


def tick(warehouse_url, when: datetime):
    # Both as context managers, closed innermost first: the schedule context enters the instance too, and an
    # instance left entered leaves Dagster's current defs-state storage pointing at it after it is gone.
    with (
        dg.instance_for_test() as instance,
        dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=when,
            resources={"warehouse": WarehouseResource(url=warehouse_url)},
        ) as context,
    ):
        return daily_collection_schedule(context)


def requested(result) -> dict[str, tuple[str, str, str]]:
    assert isinstance(result, list), result
    return {r.tags["kpi/client"]: (r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG], r.run_key) for r in result}


def test_the_client_at_its_local_collection_hour_gets_one_run_over_its_lookback(warehouse_url):
    # 05:05 UTC = 06:05 in Warsaw (CET): warsaw is due; "off" has the same hour but is inactive.
    result = tick(warehouse_url, datetime(2026, 11, 23, 5, 5, tzinfo=UTC))
    assert requested(result) == {
        "warsaw": ("warsaw|2026-10-26", "warsaw|2026-11-22", "daily:warsaw:2026-11-23"),
    }
    (request,) = result
    assert request.tags["kpi/reason"] == "daily"

    # 12:05 UTC = 07:05 in New York (EST): ny's own hour and its 3-day lookback.
    assert requested(tick(warehouse_url, datetime(2026, 11, 23, 12, 5, tzinfo=UTC))) == {
        "ny": ("ny|2026-11-20", "ny|2026-11-22", "daily:ny:2026-11-23"),
    }

    # 01:05 UTC = 06:35 in Mumbai (UTC+5:30): a half-hour zone is due in the tick inside its hour.
    assert requested(tick(warehouse_url, datetime(2026, 11, 23, 1, 5, tzinfo=UTC))) == {
        "mumbai": ("mumbai|2026-10-26", "mumbai|2026-11-22", "daily:mumbai:2026-11-23"),
    }


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 11, 23, 3, 5, tzinfo=UTC),  # nobody's hour
        # 19:05 on the 23rd in New York, 01:05 on the 24th in Warsaw
        datetime(2026, 11, 24, 0, 5, tzinfo=UTC),
    ],
)
def test_a_tick_in_nobodys_collection_hour_skips(warehouse_url, when):
    result = tick(warehouse_url, when)
    assert isinstance(result, dg.SkipReason)


def test_the_hour_repeated_at_the_end_of_summer_time_requests_the_same_run_twice(warehouse_url):
    warehouse = Warehouse(warehouse_url)
    night = Client(
        "night", "Night", "act_5", "PLN", "Europe/Warsaw", settings=ClientSettings(collection_hour=2)
    )
    warehouse.upsert_clients([night.to_row()])
    warehouse.dispose()
    # 25 Oct 2026: 00:05 UTC is 02:05 CEST and 01:05 UTC is 02:05 CET. Both ticks ask for the same run key,
    # which Dagster launches once.
    first = requested(tick(warehouse_url, datetime(2026, 10, 25, 0, 5, tzinfo=UTC)))
    second = requested(tick(warehouse_url, datetime(2026, 10, 25, 1, 5, tzinfo=UTC)))
    assert (
        first["night"]
        == second["night"]
        == ("night|2026-09-27", "night|2026-10-24", "daily:night:2026-10-25")
    )
