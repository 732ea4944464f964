"""Data-quality rules over KPI frames as pure functions, each returning a frozen result with its culprits.

Every result has `.passed`, `.severity` (`CheckSeverity.ERROR` for a broken contract, `CheckSeverity.WARN` for something
a person should look at), `.culprits` (dicts naming `client_id`, `kpi_date` as an ISO string, `rule`, `observed`
and `expected`, plus rule-specific numbers) and `.metadata()`, a dict of plain JSON values whose top-level numbers
are int or float so they can be plotted. Frames follow the column names of the warehouse tables; `kpi_date` may
hold `datetime.date` objects, timestamps or ISO strings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
import pandas as pd

from kpi_platform import settings
from kpi_platform.quality.core import CheckSeverity, json_value, required_day

#: Additive KPI columns: a client-day total is the sum of its campaign rows, a month the sum of its days.
MONEY_COLUMNS: tuple[str, ...] = ("spend", "reservation_value")
#: Culprits listed in `metadata()`; the result object keeps all of them.
METADATA_CULPRITS = 20
#: Missing dates listed per client in completeness metadata: a whole month, so a 30-day window is never cut.
METADATA_MISSING_DATES = 31


# --- shared helpers ---------------------------------------------------------------------------------------------


def _culprit(*, client_id: Any, kpi_date: Any, rule: str, observed: Any, expected: Any, **extra: Any) -> dict:
    return json_value(
        {
            "client_id": client_id,
            "kpi_date": kpi_date,
            "rule": rule,
            "observed": observed,
            "expected": expected,
        }
        | extra
    )


def _as_datetime(values: pd.Series) -> pd.Series:
    """Dates of any accepted form as tz-naive datetime64 at midnight (NaT where unreadable)."""
    out = pd.to_datetime(values, errors="coerce")
    if isinstance(out.dtype, pd.DatetimeTZDtype):
        out = out.dt.tz_localize(None)
    return out.dt.normalize()


def _round(value: float | None, digits: int = 4) -> float | None:
    return round(float(value), digits) if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class RuleResult:
    """What every rule returns; subclasses add the rule's own numbers."""

    passed: bool
    severity: CheckSeverity
    culprits: list[dict[str, Any]]

    def metadata(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "severity": self.severity.value,
            "n_culprits": len(self.culprits),
            "culprits": self.culprits[:METADATA_CULPRITS],
        }


# --- 1. completeness --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WindowCompleteness:
    """One client over one window of due days `[start, end]` (`end` is the client's last due day)."""

    client_id: str
    window_days: int
    start: date
    end: date
    expected_days: int
    present_days: int
    share_pct: float
    target_pct: float
    missing_dates: tuple[str, ...]

    @property
    def passed(self) -> bool:
        # Shares are compared as fractions of days; the epsilon keeps 199/200 == 99.5 % from failing on rounding.
        return self.share_pct + 1e-9 >= self.target_pct


@dataclass(frozen=True)
class CompletenessResult(RuleResult):
    today: date
    windows: tuple[int, ...]
    per_client: list[WindowCompleteness]

    def overall_pct(self, window_days: int) -> float:
        """Present days over expected days of all clients in one window, in percent (100 when nothing is expected)."""
        rows = [w for w in self.per_client if w.window_days == window_days]
        expected = sum(w.expected_days for w in rows)
        present = sum(w.present_days for w in rows)
        return round(100.0 * present / expected, 4) if expected else 100.0

    def metadata(self) -> dict[str, Any]:
        """Totals per window, and per client: share and missing count per window, the client's target, the last
        day of its windows and the missing dates of its longest window (the first METADATA_MISSING_DATES; the
        full count is `missing_days_<longest>d`)."""
        per_client: dict[str, dict[str, Any]] = {}
        for w in self.per_client:
            entry = per_client.setdefault(w.client_id, {})
            entry[f"completeness_{w.window_days}d_pct"] = w.share_pct
            entry[f"missing_days_{w.window_days}d"] = len(w.missing_dates)
        longest = max(self.windows, default=None)
        for w in self.per_client:
            if w.window_days == longest:
                per_client[w.client_id] |= {
                    "target_pct": w.target_pct,
                    "window_end": w.end.isoformat(),
                    # The longest window contains every shorter one: they all end on the same day.
                    "missing_dates": list(w.missing_dates[:METADATA_MISSING_DATES]),
                }
        overall = {f"completeness_{n}d_pct": self.overall_pct(n) for n in self.windows}
        missing = {
            f"missing_days_{n}d": sum(len(w.missing_dates) for w in self.per_client if w.window_days == n)
            for n in self.windows
        }
        failing = sorted({w.client_id for w in self.per_client if not w.passed})
        return {
            **super().metadata(),
            **overall,
            **missing,
            "today": self.today.isoformat(),
            "n_clients": len(per_client),
            "n_clients_below_target": len(failing),
            "clients_below_target": failing,
            "per_client": per_client,
        }


def _as_date(value: date) -> date:
    return value.date() if isinstance(value, datetime) else value


def completeness(
    present: Mapping[str, set[date]],
    *,
    clients: Mapping[str, float],
    today: date,
    windows: Iterable[int] = (7, 30),
    first_day: Mapping[str, date] | None = None,
    window_end: Mapping[str, date] | None = None,
) -> CompletenessResult:
    """Share of each client's last `windows` due days it has rows for.

    `present` maps client_id → the days with a client-day row (idle days are rows, so they count). `clients`
    maps each client to check → its target share (a fraction, e.g. 0.995); clients of `present` not in
    `clients` are ignored. A client's windows end on its `window_end` day (its `required_day` in its own
    timezone), or the day before `today` when it has none, and start no earlier than its `first_day`, if
    given; a window with no expected day is 100 %. Passes when every client meets its target in every window.
    CheckSeverity ERROR. Culprits: one per client × window below target, `kpi_date` being the earliest missing day.
    """
    windows = tuple(sorted({int(n) for n in windows}))
    today = _as_date(today)
    first_day = first_day or {}
    window_end = window_end or {}
    per_client: list[WindowCompleteness] = []
    culprits: list[dict[str, Any]] = []
    for client_id, target in clients.items():
        days = present.get(client_id) or set()
        if any(isinstance(d, datetime) for d in days):
            days = {_as_date(d) for d in days}
        end = _as_date(window_end.get(client_id, today - timedelta(days=1)))
        for n in windows:
            start = end - timedelta(days=n - 1)
            if client_id in first_day:
                start = max(start, _as_date(first_day[client_id]))
            expected = [start + timedelta(days=i) for i in range((end - start).days + 1)]
            missing = tuple(d.isoformat() for d in expected if d not in days)
            n_expected = len(expected)
            n_present = n_expected - len(missing)
            window = WindowCompleteness(
                client_id=client_id,
                window_days=n,
                start=start,
                end=end,
                expected_days=n_expected,
                present_days=n_present,
                share_pct=round(100.0 * n_present / n_expected, 4) if n_expected else 100.0,
                target_pct=round(100.0 * float(target), 4),
                missing_dates=missing,
            )
            per_client.append(window)
            if not window.passed:
                culprits.append(
                    _culprit(
                        client_id=client_id,
                        kpi_date=missing[0],
                        rule=f"completeness_{n}d",
                        observed=window.share_pct,
                        expected=window.target_pct,
                        present_days=n_present,
                        expected_days=n_expected,
                        missing_dates=list(missing),
                    )
                )
    return CompletenessResult(
        passed=not culprits,
        severity=CheckSeverity.ERROR,
        culprits=culprits,
        today=today,
        windows=windows,
        per_client=per_client,
    )


# --- 2. split days ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitResult(RuleResult):
    days_checked: int
    spend_without_conversions: int
    conversions_without_spend: int

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "days_checked": self.days_checked,
            "n_split_days": self.spend_without_conversions + self.conversions_without_spend,
            "n_spend_without_conversions": self.spend_without_conversions,
            "n_conversions_without_spend": self.conversions_without_spend,
            "n_clients_affected": len({c["client_id"] for c in self.culprits}),
        }


def conversion_counts(days: pd.DataFrame) -> pd.Series:
    """Conversions per row: the sum of the conversion count columns (money columns excluded)."""
    return days[list(settings.CONVERSION_COUNT_COLUMNS)].sum(axis=1)


def split_days(
    days: pd.DataFrame, *, min_converting_share: float = 0.5, min_expected_conversions: float = 5.0
) -> SplitResult:
    """Client-days where spend and conversions disagree: spend without conversions, or conversions without spend.

    `days` has one row per client × day. A day with spend > 0 and no conversions is a culprit only when the
    client normally converts (at least `min_converting_share` of its spend days in `days` have conversions) and
    the day's spend should have bought at least `min_expected_conversions` (spend × the client's conversions per
    unit of spend on its converting days; `expected`). With a Poisson count, 5 expected conversions leave a
    0.7 % chance of a genuine zero, so a small-spend day without conversions is not flagged, while a normal
    day saved without its conversions is. A day with conversions but zero spend is always a culprit
    (`expected` 0). Conversions are the count columns (settings.CONVERSION_COUNT_COLUMNS). CheckSeverity ERROR.
    """
    days = days.reset_index(drop=True)  # label lookups below must not meet a duplicated index
    conversions = conversion_counts(days)
    spend = days["spend"].astype("float64")
    client = days["client_id"]
    spend_day = spend > 0
    converting = spend_day & (conversions > 0)
    spend_days = spend_day.groupby(client).transform("sum")
    converting_days = converting.groupby(client).transform("sum")
    converting_share = (converting_days / spend_days.where(spend_days > 0)).fillna(0.0)
    normally_converts = (spend_days > 0) & (converting_share >= min_converting_share)
    converting_spend = spend.where(converting, 0.0).groupby(client).transform("sum")
    converting_conversions = conversions.where(converting, 0).groupby(client).transform("sum")
    rate = (converting_conversions / converting_spend.where(converting_spend > 0)).fillna(0.0)
    typical = spend * rate

    no_conversions = (
        spend_day & (conversions == 0) & normally_converts & (typical >= min_expected_conversions)
    )
    no_spend = ~spend_day & (conversions > 0)
    dates = _as_datetime(days["kpi_date"])
    culprits: list[dict[str, Any]] = []
    for i in days.index[no_conversions | no_spend]:
        if no_conversions[i]:
            culprits.append(
                _culprit(
                    client_id=client[i],
                    kpi_date=dates[i],
                    rule="spend_without_conversions",
                    observed=int(conversions[i]),
                    expected=_round(float(typical[i]), 2),
                    spend=_round(spend[i], 2),
                    client_converting_share_pct=_round(100 * converting_share[i], 2),
                )
            )
        else:
            culprits.append(
                _culprit(
                    client_id=client[i],
                    kpi_date=dates[i],
                    rule="conversions_without_spend",
                    observed=int(conversions[i]),
                    expected=0,
                    spend=_round(spend[i], 2),
                )
            )
    culprits.sort(key=lambda c: (str(c["client_id"]), c["kpi_date"] or ""))
    return SplitResult(
        passed=not culprits,
        severity=CheckSeverity.ERROR,
        culprits=culprits,
        days_checked=len(days),
        spend_without_conversions=int(no_conversions.sum()),
        conversions_without_spend=int(no_spend.sum()),
    )


# --- 3. quality score -------------------------------------------------------------------------------------------

#: The checks a client-day's quality score is the share of, in the order its issues are listed.
SCORED_CHECKS: tuple[str, ...] = ("has_data", "spend", "clicks", "ctr", "cpc")
#: Consistency rules: a failure is listed among the day's issues but does not lower its score.
CONSISTENCY_CHECKS: tuple[str, ...] = ("conversion_rate",)
QUALITY_CHECKS: tuple[str, ...] = (*SCORED_CHECKS, *CONSISTENCY_CHECKS)
#: Inclusive limits tolerate this relative rounding residue of a recomputed ratio (0.1 % from 1 click in 1,000).
_LIMIT_RTOL = 1e-9


@dataclass(frozen=True)
class Thresholds:
    """One client's limits for its delivered days; money in the client's currency, every range inclusive.

    The defaults are the platform's (clients.yaml overrides them per client, `collect.client_thresholds`):
    spend 0-10,000 and above 0, clicks 0-100,000, CTR 0.1-10 %, CPC 0.10-50, and conversions at most 10 % of the
    clicks (more is suspicious: usually events counted twice or clicks counted as conversions).
    """

    min_daily_spend: float = 0.0
    max_daily_spend: float = 10_000.0
    min_daily_clicks: float = 0
    max_daily_clicks: float = 100_000
    ctr_pct_min: float = 0.1
    ctr_pct_max: float = 10.0
    cpc_min: float = 0.10
    cpc_max: float = 50.0
    max_conversion_rate_pct: float = 10.0


def _idle(days: pd.DataFrame) -> pd.Series:
    if "delivery" in days.columns:
        return days["delivery"] == "idle"
    return (days["spend"] == 0) & (days["impressions"] == 0)


def _within(values: pd.Series, low: pd.Series, high: pd.Series) -> pd.Series:
    return (values >= low - _LIMIT_RTOL * low.abs()) & (values <= high + _LIMIT_RTOL * high.abs())


def _limits(days: pd.DataFrame, thresholds: Mapping[str, Thresholds]) -> pd.DataFrame:
    """Each row's Thresholds as columns (clients missing from `thresholds` get `Thresholds()`)."""
    client = days["client_id"]
    known = pd.DataFrame(
        [asdict(thresholds.get(c, Thresholds())) for c in client.unique()],
        index=client.unique(),
        dtype="float64",
    )
    limits = known.reindex(client.to_numpy())
    limits.index = days.index
    return limits


def quality_checks(days: pd.DataFrame, thresholds: Mapping[str, Thresholds]) -> pd.DataFrame:
    """The outcome of every QUALITY_CHECKS check per client-day, aligned to `days.index`: True passed, False
    failed, <NA> not applicable (nullable boolean columns).

    - has_data: the day delivered something (impressions, clicks or spend above 0);
    - spend: above 0 and within [min_daily_spend, max_daily_spend];
    - clicks: within [min_daily_clicks, max_daily_clicks];
    - ctr: clicks / impressions × 100 within [ctr_pct_min, ctr_pct_max], judged only with impressions;
    - cpc: spend / clicks within [cpc_min, cpc_max], judged only with clicks;
    - conversion_rate (consistency, not scored): conversions (the count columns) / clicks × 100 at most
      max_conversion_rate_pct, judged only with clicks.

    CTR and CPC are recomputed from the counts, so a stored ratio cannot hide a problem. An idle day (recorded
    as idle: `delivery` 'idle') has nothing to judge: zero spend and clicks are what it records, so no check
    applies to it.
    """
    original_index = days.index
    days = days.reset_index(drop=True)  # the limits align on the index, which may repeat
    limits = _limits(days, thresholds)
    spend = days["spend"].astype("float64")
    clicks = days["clicks"].astype("float64")
    impressions = days["impressions"].astype("float64")
    conversions = conversion_counts(days).astype("float64")
    ctr = clicks / impressions.where(impressions > 0) * 100
    cpc = spend / clicks.where(clicks > 0)
    rate = conversions / clicks.where(clicks > 0) * 100
    active = ~_idle(days).to_numpy(dtype=bool)
    outcomes = {
        "has_data": ((impressions > 0) | (clicks > 0) | (spend > 0), active),
        "spend": ((spend > 0) & _within(spend, limits["min_daily_spend"], limits["max_daily_spend"]), active),
        "clicks": (_within(clicks, limits["min_daily_clicks"], limits["max_daily_clicks"]), active),
        "ctr": (_within(ctr, limits["ctr_pct_min"], limits["ctr_pct_max"]), active & ctr.notna().to_numpy()),
        "cpc": (_within(cpc, limits["cpc_min"], limits["cpc_max"]), active & cpc.notna().to_numpy()),
        "conversion_rate": (
            rate <= limits["max_conversion_rate_pct"] * (1 + _LIMIT_RTOL),
            active & rate.notna().to_numpy(),
        ),
    }
    columns = {}
    for name, (passed, applies) in outcomes.items():
        # A comparison with NaN (no denominator) is False; those rows are marked not applicable here.
        values = pd.array(passed.to_numpy(dtype=bool), dtype="boolean")
        values[~applies] = pd.NA
        columns[name] = values
    return pd.DataFrame(columns, index=original_index)[list(QUALITY_CHECKS)]


def _decimals(observed: float, limit: float, digits: int) -> tuple[str, str]:
    """Both numbers with `digits` decimals, more (up to 6) where they would otherwise read the same."""
    while digits < 6 and f"{observed:.{digits}f}" == f"{limit:.{digits}f}" and observed != limit:
        digits += 1
    return f"{observed:.{digits}f}", f"{limit:.{digits}f}"


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"


#: The limits of each range check (the Thresholds fields) and the unit its issue shows ("money": the currency).
_RANGES: dict[str, tuple[str, str, str]] = {
    "spend": ("min_daily_spend", "max_daily_spend", "money"),
    "clicks": ("min_daily_clicks", "max_daily_clicks", ""),
    "ctr": ("ctr_pct_min", "ctr_pct_max", " %"),
    "cpc": ("cpc_min", "cpc_max", "money"),
}


def _issue(check: str, row: Mapping[str, Any], limits: Mapping[str, float], currency: str) -> str:
    """The issue text of one failed check: its name, the observed value and the limit it broke, e.g.
    "cpc 72.10 above 50.00 EUR", "ctr 0.05 % below 0.10 %", "clicks 120000 above 100000"."""
    money = f" {currency}" if currency else ""
    if check == "has_data":
        return (
            f"has_data: {_count(row['impressions'])} impressions, {_count(row['clicks'])} clicks and "
            f"spend {row['spend']:.2f}{money} on a day not recorded as idle"
        )
    if check == "conversion_rate":
        rate = 100.0 * float(sum(row[c] for c in settings.CONVERSION_COUNT_COLUMNS)) / float(row["clicks"])
        shown, most = _decimals(rate, limits["max_conversion_rate_pct"], 2)
        return f"conversion_rate {shown} % above {most} %"
    low, high, unit = _RANGES[check]
    # Only a check that applied fails: CTR has impressions and CPC clicks to divide by.
    if check == "ctr":
        value = 100.0 * float(row["clicks"]) / float(row["impressions"])
    elif check == "cpc":
        value = float(row["spend"]) / float(row["clicks"])
    else:
        value = float(row[check])
    limit: float
    if value > limits[high]:
        relation, limit = "above", limits[high]
    elif value < limits[low]:
        relation, limit = "below", limits[low]
    else:  # only spend fails inside its range: a day that delivered must have spent something
        relation, limit = "not above", 0.0
    unit = money if unit == "money" else unit
    if check == "clicks":
        return f"clicks {_count(value)} {relation} {_count(limit)}"
    shown, limit_text = _decimals(value, limit, 2)
    observed = f"{shown} %" if check == "ctr" else shown
    return f"{check} {observed} {relation} {limit_text}{unit}"


@dataclass(frozen=True)
class QualityAssessment:
    """The checks of a frame of client-days: their outcomes, and per day its score and issues."""

    checks: pd.DataFrame
    #: 0-100: the share of the SCORED_CHECKS that apply to the day and passed; NaN where none applies (idle days).
    scores: pd.Series
    #: The day's issue texts (a list of str, empty when every check passed or none applied), QUALITY_CHECKS order;
    #: each starts with its check's name, which the warehouse check counts them by.
    issues: pd.Series


def assess_quality(days: pd.DataFrame, thresholds: Mapping[str, Thresholds]) -> QualityAssessment:
    """Score each client-day on SCORED_CHECKS and list its failed checks (consistency rules included), e.g.
    `["cpc 72.10 above 50.00 EUR", "conversion_rate 14.29 % above 10.00 %"]`; aligned to `days.index`.

    The score is 100 × passed / applicable scored checks. An idle day has no applicable check: it is not scored
    (NaN) and so left out of every average, with an empty issues list. Money in the issues is in the day's
    `currency` when the frame has that column.
    """
    checks = quality_checks(days, thresholds)
    scored = checks[list(SCORED_CHECKS)]
    applicable = scored.notna().sum(axis=1).astype("float64")
    passed = scored.fillna(False).astype(bool).sum(axis=1).astype("float64")
    scores = (100.0 * passed / applicable.where(applicable > 0)).round(2).rename("quality_score")
    failed = (checks == False).fillna(False).to_numpy(dtype=bool)  # noqa: E712  # element-wise, nullable
    issues: list[list[str]] = [[] for _ in range(len(days))]
    positions = np.flatnonzero(failed.any(axis=1))
    if len(positions):
        flat = days.reset_index(drop=True)
        limits = _limits(flat, thresholds)
        has_currency = "currency" in flat.columns
        for position in positions:
            row = {str(k): v for k, v in flat.iloc[position].items()}
            currency = str(row["currency"]) if has_currency else ""
            row_limits = {str(k): float(v) for k, v in limits.iloc[position].items()}
            issues[position] = [
                _issue(check, row, row_limits, currency)
                for i, check in enumerate(QUALITY_CHECKS)
                if failed[position, i]
            ]
    return QualityAssessment(
        checks=checks,
        scores=scores,
        issues=pd.Series(issues, index=days.index, dtype=object, name="quality_issues"),
    )


def quality_scores(days: pd.DataFrame, thresholds: Mapping[str, Thresholds]) -> pd.Series:
    """The 0-100 score per client-day of `assess_quality` (NaN for idle days), aligned to `days.index`."""
    return assess_quality(days, thresholds).scores


def quality_summary(days: pd.DataFrame, scores: pd.Series) -> dict[str, Any]:
    """Average score of the scored days overall and per client, the lowest client, the days below 100 and the
    days not scored (idle, or stored before scores were) (JSON values). Clients without a scored day have no
    average."""
    scored = scores.notna().to_numpy()
    per_client = scores[scored].groupby(days["client_id"].to_numpy()[scored]).mean().round(2)
    lowest = per_client.idxmin() if len(per_client) else None
    return {
        "quality_score_mean": _round(scores[scored].mean(), 2) if scored.any() else None,
        "days_scored": int(scored.sum()),
        "days_not_scored": int((~scored).sum()),
        "days_below_100": int((scores[scored] < 100).sum()),
        "lowest_client": lowest,
        "lowest_client_score": float(per_client[lowest]) if lowest is not None else None,
        "per_client": {str(c): float(v) for c, v in per_client.items()},
    }


# --- 4. anomalies -----------------------------------------------------------------------------------------------

ANOMALY_METRICS: tuple[str, ...] = ("spend", "clicks", "conversions")
#: The least change from the trailing mean, as a fraction of it, that counts as an anomaly.
ANOMALY_MIN_CHANGE = 0.5


@dataclass(frozen=True)
class AnomalyResult(RuleResult):
    days_checked: int
    #: Idle client-days left out: neither judged nor in any day's history.
    idle_days_excluded: int
    window: int
    sigma: float
    min_change: float
    per_metric: dict[str, int]

    def metadata(self) -> dict[str, Any]:
        zs = [abs(c["z"]) for c in self.culprits]
        return {
            **super().metadata(),
            "days_checked": self.days_checked,
            "idle_days_excluded": self.idle_days_excluded,
            "n_anomalies": len(self.culprits),
            **{f"n_{metric}_anomalies": n for metric, n in self.per_metric.items()},
            "n_clients_affected": len({c["client_id"] for c in self.culprits}),
            "max_abs_z": max(zs) if zs else 0.0,
            "window_days": self.window,
            "sigma": self.sigma,
            "min_change_pct": round(100.0 * self.min_change, 2),
        }


def anomalies(
    days: pd.DataFrame,
    *,
    window: int = 14,
    sigma: float = 3.0,
    min_history: int = 7,
    min_change: float = ANOMALY_MIN_CHANGE,
) -> AnomalyResult:
    """Client-days whose spend, clicks or conversions lie more than `sigma` standard deviations from the
    client's trailing mean and differ from it by at least `min_change` of it (0.5: half as much again, or half).

    Both conditions, because σ is estimated from at most `window` days: with 14 normal ones, 1.2 % of ordinary
    days lie beyond 3σ (Student's t with 13 degrees of freedom, not the normal 0.27 %), so 3σ alone flags a few
    ordinary days on nearly every evaluation of a handful of clients. The change floor keeps the days a person
    should look at: a budget doubled, a large campaign gone dark, conversions no longer tracked.

    Idle days (zero delivery: `delivery` 'idle', or no spend and no impressions without that column) are
    stored facts, not anomalies: they are neither judged nor part of any history, so the days around one
    are measured against the client's delivering days only. The history of a day is the client's
    delivering rows of the `window` calendar days before it (the day itself excluded); a day with fewer
    than `min_history` such rows is not judged. A history without spread (std 0, e.g. a fixed budget or a
    client that never converts) has nothing to measure against, so its days are not flagged. Culprits
    carry observed, mean (= expected), std, z and change_pct. CheckSeverity WARN.
    """
    idle = _idle(days).to_numpy(dtype=bool)
    work = pd.DataFrame(
        {
            "client_id": days["client_id"].to_numpy(),
            "ts": _as_datetime(days["kpi_date"]).to_numpy(),
            "spend": days["spend"].astype("float64").to_numpy(),
            "clicks": days["clicks"].astype("float64").to_numpy(),
            "conversions": conversion_counts(days).astype("float64").to_numpy(),
        }
    )
    dated = work["ts"].notna().to_numpy()
    work = work[dated & ~idle].sort_values(["client_id", "ts"], kind="stable")
    metrics = list(ANOMALY_METRICS)
    rolling = (
        work.set_index("ts")
        .groupby("client_id", sort=True)[metrics]
        .rolling(f"{window}D", closed="left", min_periods=min_history)
    )
    # Groups come out in key order, rows in date order: the same order as `work`.
    mean = rolling.mean().to_numpy()
    std = rolling.std().to_numpy()
    observed = work[metrics].to_numpy()
    # Rolling sums leave rounding residue where the history is constant; treat that as no spread.
    has_spread = std > 1e-9 * (np.abs(mean) + 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(has_spread, (observed - mean) / np.where(has_spread, std, 1.0), np.nan)
        change = (observed - mean) / np.abs(mean)  # ±inf from a zero mean, which has no spread anyway
    flagged = (np.abs(z) > sigma) & (np.abs(change) >= min_change)  # NaN compares False
    culprits: list[dict[str, Any]] = []
    rows, cols = np.nonzero(flagged)
    clients = work["client_id"].to_numpy()
    stamps = work["ts"].to_numpy()
    for r, c in zip(rows, cols, strict=True):
        metric = metrics[c]
        culprits.append(
            _culprit(
                client_id=clients[r],
                kpi_date=pd.Timestamp(stamps[r]).date(),
                rule=f"{metric}_anomaly",
                observed=_round(observed[r, c], 2),
                expected=_round(mean[r, c], 4),
                metric=metric,
                mean=_round(mean[r, c], 4),
                std=_round(std[r, c], 4),
                z=_round(z[r, c], 2),
                change_pct=_round(100.0 * change[r, c], 1),
            )
        )
    culprits.sort(key=lambda c: (str(c["client_id"]), c["kpi_date"], c["rule"]))
    return AnomalyResult(
        passed=not culprits,
        severity=CheckSeverity.WARN,
        culprits=culprits,
        days_checked=int((~np.isnan(mean[:, 0])).sum()) if len(work) else 0,
        idle_days_excluded=int((dated & idle).sum()),
        window=window,
        sigma=float(sigma),
        min_change=float(min_change),
        per_metric={metric: int(flagged[:, i].sum()) for i, metric in enumerate(metrics)},
    )


# --- 5. reconciliation ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationResult(RuleResult):
    rows_checked: int
    mismatches_by_column: dict[str, int]
    #: None for a column whose largest difference is not finite.
    max_abs_diff: dict[str, float | None]

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "rows_checked": self.rows_checked,
            "n_mismatches": len(self.culprits),
            **{f"n_{column}_mismatches": n for column, n in self.mismatches_by_column.items()},
            "max_abs_diff": self.max_abs_diff,
        }


def _compare(
    merged: pd.DataFrame,
    *,
    columns: Iterable[str],
    rule: str,
    date_column: str,
    money_tolerance: float,
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, float | None]]:
    """Compare `<column>_obs` with `<column>_exp` in `merged`: money within `money_tolerance`, counts exactly."""
    culprits: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    max_diff: dict[str, float | None] = {}
    for column in columns:
        obs = merged[f"{column}_obs"].astype("float64")
        exp = merged[f"{column}_exp"].astype("float64")
        tolerance = money_tolerance if column in MONEY_COLUMNS else 0.0
        diff = (obs - exp).abs()
        bad = ~(diff <= tolerance + 1e-9 * exp.abs())
        counts[column] = int(bad.sum())
        max_diff[column] = _round(diff.max(), 4) if diff.notna().any() else 0.0
        for i in merged.index[bad]:
            culprits.append(
                _culprit(
                    client_id=merged.at[i, "client_id"],
                    kpi_date=merged.at[i, date_column],
                    rule=rule,
                    observed=obs[i],
                    expected=exp[i],
                    column=column,
                    difference=_round(obs[i] - exp[i], 4),
                )
            )
    return culprits, counts, max_diff


def reconcile_campaigns(
    campaigns: pd.DataFrame, days: pd.DataFrame, *, money_tolerance: float = 0.01
) -> ReconciliationResult:
    """Client-day totals (`observed`) against their campaign rows summed (`expected`), per additive column.

    Also compares `campaign_count` with the distinct campaigns when `days` has it. A client-day without
    campaign rows is expected to be all zeros (an idle day); campaign rows without a client-day row give a
    culprit with column "row" (observed 0 rows, expected 1). Money may differ by `money_tolerance`, counts
    not at all. CheckSeverity ERROR.
    """
    columns = [c for c in settings.SUM_COLUMNS if c in campaigns.columns and c in days.columns]
    key = ["client_id", "kpi_date"]
    camp = campaigns.assign(kpi_date=_as_datetime(campaigns["kpi_date"]))
    expected = camp.groupby(key, sort=False)[columns].sum()
    if "campaign_count" in days.columns:
        expected["campaign_count"] = camp.groupby(key, sort=False)["campaign_id"].nunique()
        columns.append("campaign_count")
    observed = days.assign(kpi_date=_as_datetime(days["kpi_date"])).set_index(key)[columns]
    merged = observed.add_suffix("_obs").join(expected.add_suffix("_exp"), how="outer")
    only_campaigns = merged[[f"{c}_obs" for c in columns]].isna().all(axis=1)
    merged = merged.reset_index()
    merged.loc[:, [f"{c}_exp" for c in columns]] = merged[[f"{c}_exp" for c in columns]].fillna(0)
    culprits = [
        _culprit(
            client_id=row.client_id,
            kpi_date=row.kpi_date,
            rule="campaigns_reconcile",
            observed=0,
            expected=1,
            column="row",
        )
        for row in merged[only_campaigns.to_numpy()].itertuples()
    ]
    compared, counts, max_diff = _compare(
        merged[~only_campaigns.to_numpy()],
        columns=columns,
        rule="campaigns_reconcile",
        date_column="kpi_date",
        money_tolerance=money_tolerance,
    )
    culprits.extend(compared)
    culprits.sort(key=lambda c: (str(c["client_id"]), c["kpi_date"] or "", c["column"]))
    return ReconciliationResult(
        passed=not culprits,
        severity=CheckSeverity.ERROR,
        culprits=culprits,
        rows_checked=len(merged),
        mismatches_by_column={"row": int(only_campaigns.sum()), **counts},
        max_abs_diff=max_diff,
    )


def reconcile_months(
    months: pd.DataFrame, days: pd.DataFrame, *, money_tolerance: float = 0.01
) -> ReconciliationResult:
    """Each monthly row (`observed`) against the sum of its client-day rows (`expected`).

    Compares the additive columns and, when `months` has them, `days_present` (rows in the month) and
    `idle_days` (rows with delivery 'idle'). A month without any day in `days` is expected to be all zeros.
    Culprits name the month's first day as `kpi_date`. CheckSeverity ERROR.
    """
    key = ["client_id", "month"]
    day_dates = _as_datetime(days["kpi_date"])
    work = days.assign(month=day_dates - pd.to_timedelta(day_dates.dt.day - 1, unit="D"))
    columns = [c for c in settings.SUM_COLUMNS if c in months.columns and c in days.columns]
    grouped = work.groupby(key, sort=False)
    expected = grouped[columns].sum()
    if "days_present" in months.columns:
        expected["days_present"] = grouped.size()
        columns.append("days_present")
    if "idle_days" in months.columns and "delivery" in days.columns:
        expected["idle_days"] = (work["delivery"] == "idle").groupby([work["client_id"], work["month"]]).sum()
        columns.append("idle_days")
    observed = months.assign(month=_as_datetime(months["month"])).set_index(key)[columns]
    merged = observed.add_suffix("_obs").join(expected.add_suffix("_exp"), how="left").reset_index()
    merged.loc[:, [f"{c}_exp" for c in columns]] = merged[[f"{c}_exp" for c in columns]].fillna(0)
    culprits, counts, max_diff = _compare(
        merged, columns=columns, rule="months_reconcile", date_column="month", money_tolerance=money_tolerance
    )
    culprits.sort(key=lambda c: (str(c["client_id"]), c["kpi_date"] or "", c["column"]))
    return ReconciliationResult(
        passed=not culprits,
        severity=CheckSeverity.ERROR,
        culprits=culprits,
        rows_checked=len(merged),
        mismatches_by_column=counts,
        max_abs_diff=max_diff,
    )


# --- 6. freshness -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FreshnessResult(RuleResult):
    clients_checked: int
    late_clients: tuple[str, ...]
    deadline_hour: int
    deadline_hour_by_client: dict[str, int]

    def metadata(self) -> dict[str, Any]:
        hours = [c["hours_late"] for c in self.culprits]
        checked = self.clients_checked
        return {
            **super().metadata(),
            "n_active_clients": checked,
            "n_late_clients": len(self.late_clients),
            "fresh_pct": round(100.0 * (checked - len(self.late_clients)) / checked, 2) if checked else 100.0,
            "max_hours_late": max(hours) if hours else 0.0,
            "late_clients": list(self.late_clients),
            "deadline_hour": self.deadline_hour,
            "deadline_hour_by_client": dict(self.deadline_hour_by_client),
        }


def _hours_between(earlier: datetime, later: datetime) -> float:
    # Aware datetimes sharing a tzinfo subtract as wall-clock times; UTC makes a DST night count its real hours.
    if later.tzinfo is not None:
        earlier, later = earlier.astimezone(UTC), later.astimezone(UTC)
    return (later - earlier).total_seconds() / 3600.0


def freshness(
    last_day_by_client: Mapping[str, date | None],
    *,
    active_clients: Iterable[str],
    now_by_client: Mapping[str, datetime],
    deadline_hour: int = settings.FRESHNESS_DEADLINE_HOUR,
    deadline_hour_by_client: Mapping[str, int] | None = None,
) -> FreshnessResult:
    """Every active client has the day `required_day` asks for, judged in the client's local time.

    Day D is due at the client's deadline hour on D + 1 (local): from then on yesterday's data is required,
    before it the day before yesterday is enough. The deadline hour is the client's entry in
    `deadline_hour_by_client`, else `deadline_hour`. A late client's culprit has `observed` = its last day
    (None if it has none), `expected` = the required day, `hours_late` since its oldest missing day fell due,
    `days_behind` and its `deadline_hour`. Clients not in `active_clients` are ignored. CheckSeverity WARN, as
    Dagster's own freshness checks: late data is a delay to act on, not a broken contract.
    """
    active = sorted(set(active_clients))
    unknown = [c for c in active if c not in now_by_client]
    if unknown:
        raise ValueError(f"freshness: no local time given for active clients {unknown}")
    deadlines = {c: (deadline_hour_by_client or {}).get(c, deadline_hour) for c in active}
    culprits: list[dict[str, Any]] = []
    for client_id in active:
        now = now_by_client[client_id]
        client_deadline = deadlines[client_id]
        required = required_day(now, deadline_hour=client_deadline)
        last = last_day_by_client.get(client_id)
        last = _as_date(last) if last is not None else None
        if last is not None and last >= required:
            continue
        oldest_missing = last + timedelta(days=1) if last is not None else required
        due = datetime.combine(oldest_missing + timedelta(days=1), time(client_deadline), tzinfo=now.tzinfo)
        culprits.append(
            _culprit(
                client_id=client_id,
                kpi_date=required,
                rule="freshness",
                observed=last,
                expected=required,
                hours_late=round(_hours_between(due, now), 2),
                days_behind=(required - last).days if last is not None else None,
                deadline_hour=client_deadline,
            )
        )
    return FreshnessResult(
        passed=not culprits,
        severity=CheckSeverity.WARN,
        culprits=culprits,
        clients_checked=len(active),
        late_clients=tuple(c["client_id"] for c in culprits),
        deadline_hour=deadline_hour,
        deadline_hour_by_client=deadlines,
    )
