"""Forecasts for client-days without collected data: a weekday-aware model fitted on each client's own history,
and the refresh that stores them apart from the data (warehouse table `kpi_forecasts`), never in it.

The model (`MODEL_NAME`), per client and KPI, deliberately simple so a person can redo it by hand:

1. History: the client's collected days (idle days included) in the `HISTORY_DAYS` (8 weeks) up to its last
   complete local day.
2. Weekday profile: the median of each weekday's values (Mondays with Mondays, ...), which one odd day does not
   move.
3. Level: the sum of the last `LEVEL_DAYS` collected days over the profile's values for those same weekdays, so a
   client whose spend moved in the last two weeks is forecast at its new level with its usual weekly shape.
4. Forecast of day d: level × profile[weekday of d].
5. Interval (`INTERVAL_PCT` = 80 %): each history day is predicted as the model would have without it (level ×
   the median of the *other* days of its weekday); the 10th and 90th percentiles of those errors, relative to
   the prediction (absolute when fewer than `MIN_RESIDUALS` predictions are above zero), are put around the
   forecast, never below zero.

Too little history, no forecast: a client needs `MIN_HISTORY_DAYS` collected days in the window and each weekday
at least `MIN_PER_WEEKDAY` times; otherwise the refresh skips it and says why (`ForecastRefresh.skipped`).

Which days: each active client's days without a row from `MISSING_WINDOW_DAYS` before its local today (missing:
not collected) to `HORIZON_DAYS` after it (not yet due). A refresh replaces all of a client's forecasts; writing a
real day removes its forecast and records the error (`Warehouse.replace_client_range`), so a forecast is never
counted as data: summaries, checks and alerts read `client_daily_kpis` only, and queries and exports show
forecasts only when asked, each row labelled `source='forecast'`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.warehouse import Warehouse, schema

MODEL_NAME = "weekday_median_v1"
#: Days of history the model is fitted on: 8 weeks, 8 values per weekday.
HISTORY_DAYS = 56
#: Collected days (the most recent ones) that set the level.
LEVEL_DAYS = 14
#: Below these, no forecast: 3 weeks of collected days, each weekday seen twice (a median of one value is no
#: profile, and its leave-one-out error is undefined).
MIN_HISTORY_DAYS = 21
MIN_PER_WEEKDAY = 2
#: Nominal coverage of the interval, and the error percentiles that bound it.
INTERVAL_PCT = 80.0
_QUANTILES = (0.10, 0.90)
#: Relative errors need this many history days predicted above zero; fewer, and absolute errors are used.
MIN_RESIDUALS = 7
#: Missing days this far back are forecast (the health report's 30-day window), and days this far ahead.
MISSING_WINDOW_DAYS = 30
HORIZON_DAYS = 7


@dataclass(frozen=True)
class WeekdayModel:
    """A fitted model of one KPI: the weekday profile (Monday first), the level and the relative (or absolute)
    error bounds."""

    profile: tuple[float, ...]
    level: float
    low: float
    high: float
    relative: bool
    history_days: int

    def predict(self, days: Sequence[date]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(forecast, lower, upper) of each day; never negative, lower ≤ forecast ≤ upper."""
        point = np.array([self.level * self.profile[d.weekday()] for d in days], dtype="float64")
        if self.relative:
            lower, upper = point * (1 + self.low), point * (1 + self.high)
        else:
            lower, upper = point + self.low, point + self.high
        lower = np.clip(np.minimum(lower, point), 0.0, None)
        upper = np.maximum(upper, point)
        return point, lower, upper


class ShortHistoryError(ValueError):
    """Too few collected days to fit the model; the message says how many there are and how many it needs."""


def fit_weekday_model(days: Sequence[date], values: Sequence[float]) -> WeekdayModel:
    """Fit the model on one KPI's collected days (any order, no duplicates); ShortHistoryError below the minimum."""
    if len(days) != len(values):
        raise ValueError(f"{len(days)} days but {len(values)} values")
    if len(set(days)) != len(days):
        raise ValueError("a day is given more than once")
    order = np.argsort(np.array([d.toordinal() for d in days]))
    ordered_days = [days[i] for i in order]
    y = np.asarray(values, dtype="float64")[order]
    if not np.isfinite(y).all():
        raise ValueError("history values must be finite numbers")
    weekdays = np.array([d.weekday() for d in ordered_days])
    counts = np.bincount(weekdays, minlength=7)
    if len(y) < MIN_HISTORY_DAYS or counts.min() < MIN_PER_WEEKDAY:
        raise ShortHistoryError(
            f"{len(y)} collected days with {int(counts.min())} of the rarest weekday; the model needs "
            f"{MIN_HISTORY_DAYS} days and every weekday {MIN_PER_WEEKDAY} times"
        )
    profile = np.array([np.median(y[weekdays == w]) for w in range(7)])
    recent = slice(max(0, len(y) - LEVEL_DAYS), len(y))
    expected = profile[weekdays[recent]].sum()
    actual = y[recent].sum()
    if expected > 0:
        level = actual / expected
    elif actual > 0:
        # Typically idle for weeks, delivering again lately: the recent mean, flat over the week.
        profile = np.full(7, actual / len(y[recent]))
        level = 1.0
    else:
        level = 1.0
    # Leave-one-out: each day predicted from the other days of its weekday.
    loo = np.empty_like(y)
    for w in range(7):
        positions = np.flatnonzero(weekdays == w)
        k = len(positions)
        # Row i: the weekday's values but the i-th (k × (k - 1)), so one median call per weekday.
        others = np.broadcast_to(y[positions], (k, k))[~np.eye(k, dtype=bool)].reshape(k, k - 1)
        loo[positions] = np.median(others, axis=1)
    predicted = level * loo
    positive = predicted > 0
    relative = int(positive.sum()) >= MIN_RESIDUALS
    errors = y[positive] / predicted[positive] - 1 if relative else y - predicted
    low, high = np.quantile(errors, _QUANTILES)
    return WeekdayModel(
        profile=tuple(float(v) for v in profile),
        level=float(level),
        low=float(low),
        high=float(high),
        relative=relative,
        history_days=len(y),
    )


def forecast_days(client: Client, local_today: date, collected: set[date]) -> list[date]:
    """The client's days to forecast: without a collected row, from `MISSING_WINDOW_DAYS` before `local_today`
    to `HORIZON_DAYS` after it, never before the first partition."""
    first = max(
        local_today - timedelta(days=MISSING_WINDOW_DAYS), date.fromisoformat(settings.PARTITIONS_START_DATE)
    )
    last = local_today + timedelta(days=HORIZON_DAYS)
    return [
        first + timedelta(days=i)
        for i in range((last - first).days + 1)
        if first + timedelta(days=i) not in collected
    ]


def forecast_client(history: pd.DataFrame, days: Sequence[date], *, generated_at: datetime) -> pd.DataFrame:
    """kpi_forecasts rows for `days` from one client's collected days (client_daily_kpis rows, `history`);
    ShortHistoryError when the history is too short. Money is forecast in the currency of the latest day."""
    columns = [c.name for c in schema.kpi_forecasts.columns]
    if not days:
        return pd.DataFrame(columns=columns)
    if history.empty:
        raise ShortHistoryError(f"no collected days; the model needs {MIN_HISTORY_DAYS}")
    history = history.reset_index(drop=True).sort_values("kpi_date")
    out: dict[str, object] = {"client_id": str(history["client_id"].iloc[-1]), "kpi_date": list(days)}
    history_days = list(history["kpi_date"])
    model_days = 0
    for metric in schema.FORECAST_METRICS:
        model = fit_weekday_model(history_days, history[metric].astype("float64").tolist())
        point, lower, upper = model.predict(days)
        out[metric], out[f"{metric}_lower"], out[f"{metric}_upper"] = point, lower, upper
        model_days = model.history_days
    out.update(
        currency=str(history["currency"].iloc[-1]),
        interval_pct=INTERVAL_PCT,
        model=MODEL_NAME,
        history_days=model_days,
        generated_at=generated_at,
    )
    return pd.DataFrame(out)[columns]


@dataclass(frozen=True)
class ForecastRefresh:
    """What one refresh stored: forecast days per client, the clients skipped and why, those cleared (inactive)."""

    generated_at: datetime
    forecast_days: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    cleared: tuple[str, ...] = ()

    @property
    def total_days(self) -> int:
        return sum(self.forecast_days.values())


def refresh_forecasts(
    warehouse: Warehouse, clients: Sequence[Client], *, now_utc: datetime
) -> ForecastRefresh:
    """Replace every client's stored forecasts: active clients with enough history get a forecast of each day to
    forecast (`forecast_days`), others none (skipped, with the reason); inactive clients' forecasts are removed.
    One read of the history for all clients, one transaction per client."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    generated_at = now_utc.astimezone(UTC)
    active = [c for c in clients if c.active]
    local_today = {c.id: generated_at.astimezone(ZoneInfo(c.timezone)).date() for c in active}
    by_client: dict[str, pd.DataFrame] = {}
    if active:
        start = min(local_today.values()) - timedelta(days=HISTORY_DAYS + MISSING_WINDOW_DAYS)
        end = max(local_today.values()) + timedelta(days=HORIZON_DAYS)
        stored = warehouse.read_client_days(start=start, end=end)
        by_client = {str(client_id): rows for client_id, rows in stored.groupby("client_id")}
    stored_days: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for client in active:
        today = local_today[client.id]
        rows = by_client.get(client.id)
        collected = set() if rows is None else set(rows["kpi_date"])
        history = (
            pd.DataFrame()
            if rows is None
            else rows[(rows["kpi_date"] >= today - timedelta(days=HISTORY_DAYS)) & (rows["kpi_date"] < today)]
        )
        try:
            frame = forecast_client(
                history, forecast_days(client, today, collected), generated_at=generated_at
            )
        except ShortHistoryError as exc:
            skipped[client.id] = str(exc)
            frame = pd.DataFrame()
        stored_days[client.id] = warehouse.replace_forecasts(client_id=client.id, forecasts=frame)
    cleared = [c.id for c in clients if not c.active]
    for client_id in cleared:
        warehouse.replace_forecasts(client_id=client_id, forecasts=pd.DataFrame())
    return ForecastRefresh(
        generated_at=generated_at,
        forecast_days={k: v for k, v in stored_days.items() if k not in skipped},
        skipped=skipped,
        cleared=tuple(cleared),
    )
