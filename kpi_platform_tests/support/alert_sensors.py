"""Driving the alert sensors by hand: a run-failure tick, the Slack texts sent, a month with a day gone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from kpi_platform.defs.alerting import collection_failure_alert_sensor
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.warehouse import schema


def texts(sink) -> list[str]:
    """The texts of the messages a Slack sink (`support.sinks.slack_sink`) received."""
    return [body["text"] for body in sink.bodies("/slack")]


def run_failure_tick(platform, result):
    """One tick of `collection_failure_alert_sensor` for the failed run `result`."""
    run = platform.instance.get_run_by_id(result.run_id)
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    context = dg.build_run_status_sensor_context(
        sensor_name="collection_failure_alert_sensor",
        dagster_event=failure,
        dagster_instance=platform.instance,
        dagster_run=run,
        resources={"warehouse": WarehouseResource(url=platform.warehouse_url)},
    ).for_run_failure()
    collection_failure_alert_sensor(context)


def collect_a_month_with_a_lost_day(platform) -> date:
    """30 days for acme and globex, then one of acme's days deleted from the warehouse; returns that day."""
    today = datetime.now(UTC).date()
    for client_id in ("acme", "globex"):
        assert platform.collect(client_id, today - timedelta(days=31), today - timedelta(days=1)).success
    gone = today - timedelta(days=4)
    with platform.warehouse.engine.begin() as conn:
        for table in (schema.campaign_daily_kpis, schema.client_daily_kpis):
            conn.execute(sa.delete(table).where(table.c.client_id == "acme", table.c.kpi_date == gone))
    return gone
