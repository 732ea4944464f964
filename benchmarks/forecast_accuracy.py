"""Forecast error on the simulator's data: N clients collected from the in-process simulator, the last H days of
each forecast from the days before them (`kpi_platform.forecast`, the refresh's model), compared with what was
collected.

Each client is collected with one `collect_range` over the whole span, through the asset's own path (the Meta
client as `MetaApiResource.get_client(accounts=...)` builds it, default contract validation) into a temporary
SQLite warehouse. Printed per KPI: the mean absolute percentage error (days with an actual 0 left out, as in
`forecast_accuracy`), the share of collected values inside the 80 % interval, and two baselines for scale: the same
weekday a week before, and the flat mean of the last 28 days.

    .venv/bin/python benchmarks/forecast_accuracy.py                    # 10 clients, the last 14 days
    .venv/bin/python benchmarks/forecast_accuracy.py --clients 30 --holdout 7
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.collect import collect_range
from kpi_platform.defs.resources import SIMULATOR_TOKEN, MetaApiResource
from kpi_platform.forecast import HISTORY_DAYS, INTERVAL_PCT, forecast_client
from kpi_platform.meta.client import MetaInsightsClient
from kpi_platform.warehouse import Warehouse, schema

HEADLINE = ("spend", "impressions", "clicks")
CURRENCIES = ("EUR", "PLN", "USD", "GBP")


def clients(count: int) -> list[Client]:
    return [
        Client(
            id=f"fc-{i:03d}",
            name=f"Forecast client {i}",
            ad_account_id=f"act_{920_000_000_000 + i}",
            currency=CURRENCIES[i % len(CURRENCIES)],
            timezone="Europe/Warsaw",
        )
        for i in range(count)
    ]


def meta_client(chosen: list[Client]) -> MetaInsightsClient:
    """What `MetaApiResource.get_client(accounts=...)` returns for the in-process simulator, faults off."""
    resource = MetaApiResource(api_url=settings.SIMULATOR_BASE_URL, simulator_faults_json="{}")
    return MetaInsightsClient(
        base_url=resource.resolved_url(),
        access_token=os.environ.get(resource.token_env_var) or SIMULATOR_TOKEN,
        session=resource.build_session({c.ad_account_id: c.currency for c in chosen}),
        timeout=(resource.connect_timeout_s, resource.read_timeout_s),
        max_attempts=resource.max_attempts,
    )


def mape(predicted: np.ndarray, actual: np.ndarray) -> float:
    defined = actual != 0
    return float(np.mean(np.abs(predicted[defined] - actual[defined]) / np.abs(actual[defined])) * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--holdout", type=int, default=14, help="last days forecast and compared")
    parser.add_argument(
        "--end", type=date.fromisoformat, default=date(2026, 11, 30), help="last collected day"
    )
    args = parser.parse_args()
    chosen = clients(args.clients)
    first_forecast = args.end - timedelta(days=args.holdout - 1)
    start = first_forecast - timedelta(days=HISTORY_DAYS)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(f"sqlite:///{Path(tmp) / 'warehouse.sqlite'}")
        warehouse.migrate()
        warehouse.upsert_clients(
            [
                {
                    "client_id": c.id,
                    "name": c.name,
                    "ad_account_id": c.ad_account_id,
                    "currency": c.currency,
                    "timezone": c.timezone,
                }
                for c in chosen
            ]
        )
        meta = meta_client(chosen)
        for client in chosen:
            collect_range(
                client=client, start=start, end=args.end, meta=meta, warehouse=warehouse, run_id="bench"
            )
        stored = warehouse.read_client_days(start=start, end=args.end)
        warehouse.dispose()

    coming = [first_forecast + timedelta(days=i) for i in range(args.holdout)]
    found: dict[str, dict[str, list[np.ndarray]]] = {}
    for client in chosen:
        rows = stored[stored["client_id"] == client.id].set_index("kpi_date", drop=False)
        history = rows[rows["kpi_date"] < first_forecast]
        forecast = forecast_client(history, coming, generated_at=pd.Timestamp.now(tz="UTC").to_pydatetime())
        forecast = forecast.set_index("kpi_date")
        for metric in schema.FORECAST_METRICS:
            actual = rows.loc[coming, metric].to_numpy(dtype="float64")
            series = rows[metric]
            # The same weekday of the last history week: a forecast made at the start of the holdout cannot see
            # the held-out days.
            week_before = np.array(
                [
                    series.loc[first_forecast - timedelta(days=7 - (d - first_forecast).days % 7)]
                    for d in coming
                ],
                dtype="float64",
            )
            flat = np.full(len(coming), history[metric].iloc[-28:].astype("float64").mean())
            entry = found.setdefault(
                metric, {"actual": [], "model": [], "lower": [], "upper": [], "week": [], "flat": []}
            )
            entry["actual"].append(actual)
            entry["model"].append(forecast.loc[coming, metric].to_numpy(dtype="float64"))
            entry["lower"].append(forecast.loc[coming, f"{metric}_lower"].to_numpy(dtype="float64"))
            entry["upper"].append(forecast.loc[coming, f"{metric}_upper"].to_numpy(dtype="float64"))
            entry["week"].append(week_before)
            entry["flat"].append(flat)

    print(
        f"{args.clients} simulated clients, {HISTORY_DAYS} days of history each, the {args.holdout} days "
        f"{first_forecast}..{args.end} forecast and compared\n"
    )
    print(
        f"{'KPI':<18}{'MAPE model':>12}{'in ' + format(INTERVAL_PCT, 'g') + ' % interval':>20}"
        f"{'week before':>13}{'flat 28-day mean':>18}"
    )
    headline: dict[str, list[float]] = {"model": [], "week": [], "flat": []}
    for metric, entry in found.items():
        actual = np.concatenate(entry["actual"])
        values = {k: np.concatenate(entry[k]) for k in ("model", "week", "flat", "lower", "upper")}
        inside = float(np.mean((actual >= values["lower"]) & (actual <= values["upper"])) * 100)
        errors = {k: mape(values[k], actual) for k in ("model", "week", "flat")}
        if metric in HEADLINE:
            defined = actual != 0
            for k in headline:
                headline[k] += list(np.abs(values[k][defined] - actual[defined]) / actual[defined] * 100)
        print(
            f"{metric:<18}{errors['model']:>11.1f}%{inside:>19.1f}%{errors['week']:>12.1f}%{errors['flat']:>17.1f}%"
        )
    print(
        f"\nheadline MAPE (spend, impressions, clicks, as the health report): model {np.mean(headline['model']):.1f} %, "
        f"week before {np.mean(headline['week']):.1f} %, flat mean {np.mean(headline['flat']):.1f} %"
    )


if __name__ == "__main__":
    main()
