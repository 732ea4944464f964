"""The roadmap's success metrics, measured per day and over 7 and 30 days against their targets.

| rate | target | measured over |
|---|---|---|
| `collection_success` | ≥ 99 % | collection runs that ended in the window, backfills and healing left out |
| `backfill_healing_success` | 100 % | runs of the gap healer (`kpi/reason=heal`) and of UI backfills (`dagster/backfill`) |
| `completeness` | ≥ 99.5 % | client-days present / client-days due, per active client over its last due days |
| `quality_avg` | > 95 | mean `quality_score` of the delivered client-days in the window |
| `freshness` | ≥ 95 % | client-days whose data was under 6 hours old at their deadline |

Windows. `1d`, `7d` and `30d`. The two run rates count the runs that *ended* in the last 24 hours, 7 or 30 days
before the report. The three data rates count each active client's last 1, 7 or 30 *due* days (local yesterday
from its `freshness_deadline_hour` on, the day before until then; never before the first partition): the same days
the `missing_days` check judges, so both read the same client-days.

Definitions.

* **Collection success** = succeeded / (succeeded + failed) collection runs: runs of the daily asset (its job, or
  any run whose selection holds it) for an active client (`kpi/client` tag) that are neither healing nor backfill
  runs, i.e. the schedule's daily runs and runs launched by hand. A canceled run is someone's decision, not a
  failure, and is not counted; a failed run that Dagster's run retries re-run is not counted either (its retry is).
  Healing runs are not counted here: they re-try what failed, so a failing day would count once per attempt.
* **Backfill/healing success** = repairs that ended stored / repairs, over the gap healer's runs and the runs of UI
  backfills (the runs that repair history). A repair run that failed counts as succeeded once later successful
  runs of its client cover its whole range (the healer's retry, or the daily run's lookback, stored the days): the
  target is 100 %, so what it measures is whether every repair ended with the data stored, not whether the first
  attempt did. A failed repair nothing has covered since counts against it, and keeps the rate below target (and
  its alert open) until it is covered.
* **Completeness** = present / expected client-days, expected = Σ over active clients of their due days in the
  window, present = those with a `client_daily_kpis` row (an idle day is a row, so present).
* **Average quality** = mean `quality_score` of the window's days with `delivery = 'delivered'` and a score (idle
  days carry no delivery to judge). Target strictly above 95.
* **Freshness** = client-days fresh at their deadline / client-days due since the client was first collected (days
  that fell due before its first collection run ended could not have been fresh, and are not counted). Day D of a client falls due at the
  client's deadline hour (local) on D + 1; it is *fresh* when a collection run of that client covering D succeeded
  within the 6 hours before that deadline, so at the moment the day was needed its data was under 6 hours old.
  The warehouse alone cannot answer this: every daily run re-writes its whole lookback window (Meta restates
  conversions for 28 days), so a row's `fetched_at` is the latest re-collection, not when the day first arrived.
  Dagster's run history is the collection log (the same one the gap healer learns from) and keeps every run's end.

A rate with nothing to count (no run ended in the window, no client due) has no value and is neither met nor
missed. The alert judges the 7-day value (`ALERT_WINDOW_DAYS`): one day's handful of runs is too noisy (one failure
among 50 daily runs is 98 %), and 30 days would keep one bad day open for a month.

Cost. One grouped warehouse query (rows per due-day group × day, not per client) and one run-history query bounded
by the `kpi/client` tag and the runs' update time; the per-client work is set lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from kpi_platform.clients import Client
from kpi_platform.operations.health.report import Finding, HealthContext, HealthStatus
from kpi_platform.warehouse import Warehouse, schema

#: The windows every rate is measured over, in days.
WINDOWS: tuple[int, ...] = (1, 7, 30)
#: The window whose value is alerted on and counted as "below target" in the report's status line.
ALERT_WINDOW_DAYS = 7
#: Data at most this old at its deadline is fresh.
FRESH_MAX_AGE = timedelta(hours=6)
#: Run kinds: which runs repair history (backfills, gap healing) and which collect (the schedule, by hand).
KIND_DAILY, KIND_HEAL, KIND_BACKFILL, KIND_MANUAL = "daily", "heal", "backfill", "manual"
REPAIR_KINDS = frozenset({KIND_HEAL, KIND_BACKFILL})


@dataclass(frozen=True)
class RateTarget:
    """A roadmap target: `name`, its label, the threshold and whether the value must be strictly above it;
    `unit` is "%" for shares, "" for the quality score."""

    name: str
    label: str
    threshold: float
    strict: bool = False
    unit: str = "%"

    def met(self, value: float) -> bool:
        return value > self.threshold if self.strict else value >= self.threshold

    def describe(self) -> str:
        """`≥ 99 %`, `> 95`; `100 %` for a target nothing may miss."""
        value = f"{self.threshold:g}{' ' + self.unit if self.unit else ''}"
        if self.unit == "%" and self.threshold == 100.0 and not self.strict:
            return value
        return f"{'>' if self.strict else '≥'} {value}"


TARGETS: tuple[RateTarget, ...] = (
    RateTarget("collection_success", "collection success", 99.0),
    RateTarget("backfill_healing_success", "backfill/healing success", 100.0),
    RateTarget("completeness", "completeness", 99.5),
    RateTarget("quality_avg", "average quality", 95.0, strict=True, unit=""),
    RateTarget("freshness", "data under 6 h old at deadline", 95.0),
)
TARGETS_BY_NAME: Mapping[str, RateTarget] = {t.name: t for t in TARGETS}


class CollectionRun(NamedTuple):
    """A finished collection run as the rates read it: one client × range, its outcome, when it ended, its kind.
    A named tuple, not a frozen dataclass: a report reads a month of a thousand clients' runs, some 30,000, and
    builds each in a third of the time."""

    run_id: str
    client_id: str
    start: date
    end: date
    succeeded: bool
    ended_at: datetime
    kind: str

    @property
    def repairs(self) -> bool:
        """True for a gap-healing or backfill run."""
        return self.kind in REPAIR_KINDS


@dataclass(frozen=True)
class Rate:
    """One rate over one window: `value` (None when nothing was counted) = 100 × `good` / `total` (for the
    quality average: the mean score of `total` days, `good` their sum)."""

    name: str
    window_days: int
    value: float | None
    good: float
    total: int

    @property
    def target(self) -> RateTarget:
        return TARGETS_BY_NAME[self.name]

    @property
    def met(self) -> bool | None:
        """True / False against the target; None without a value."""
        return None if self.value is None else self.target.met(self.value)

    @property
    def metric(self) -> str:
        """Its plottable name: `collection_success_pct_7d`, `quality_avg_7d`."""
        suffix = "_pct" if self.target.unit == "%" else ""
        return f"{self.name}{suffix}_{self.window_days}d"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.name,
            "window_days": self.window_days,
            "value": self.value,
            "good": round(self.good, 2),
            "total": self.total,
            "target": self.target.describe(),
            "met": self.met,
        }


def _share(good: int, total: int) -> float | None:
    return round(100.0 * good / total, 2) if total else None


# --- run rates --------------------------------------------------------------------------------------------------


def run_rates(runs: Iterable[CollectionRun], *, now_utc: datetime) -> list[Rate]:
    """Collection and backfill/healing success over each window of `WINDOWS`, from the runs that ended in it."""
    finished = list(runs)
    covered = _covered_later(finished)
    rates: list[Rate] = []
    for name, repairs in (("collection_success", False), ("backfill_healing_success", True)):
        # One pass per kind, then each window over its runs only: a month of runs is tens of thousands.
        of_kind = [r for r in finished if r.repairs == repairs and r.ended_at <= now_utc]
        for days in WINDOWS:
            since = now_utc - timedelta(days=days)
            counted = [r for r in of_kind if since < r.ended_at]
            good = sum(r.succeeded or (repairs and r.run_id in covered) for r in counted)
            rates.append(Rate(name, days, _share(good, len(counted)), good, len(counted)))
    return rates


def _covered_later(runs: Sequence[CollectionRun]) -> set[str]:
    """Run ids of the failed repair runs whose every day a later successful run of the same client stored."""
    stored: dict[str, list[CollectionRun]] = {}
    for run in runs:
        if run.succeeded:
            stored.setdefault(run.client_id, []).append(run)
    covered: set[str] = set()
    for run in runs:
        if run.succeeded or not run.repairs:
            continue
        days = {run.start + timedelta(days=i) for i in range((run.end - run.start).days + 1)}
        for later in stored.get(run.client_id, ()):
            if later.ended_at > run.ended_at and later.start <= run.end and later.end >= run.start:
                days -= {d for d in days if later.start <= d <= later.end}
        if not days:
            covered.add(run.run_id)
    return covered


def deadline_of(client: Client, day: date, *, deadline_hour: int) -> datetime:
    """When `day` falls due for `client` (UTC): its deadline hour, local time, on the next day."""
    return _deadline(client.timezone, day, deadline_hour)


@lru_cache(maxsize=65536)
def _deadline(timezone: str, day: date, deadline_hour: int) -> datetime:
    # Clients share timezones and deadline hours: a month of runs of a thousand clients asks for a few hundred
    # distinct deadlines, tens of thousands of times.
    local = datetime.combine(day + timedelta(days=1), time(deadline_hour), tzinfo=ZoneInfo(timezone))
    return local.astimezone(UTC)


def fresh_days(
    runs: Iterable[CollectionRun], clients: Mapping[str, Client], *, deadline_hours: Mapping[str, int]
) -> set[tuple[str, date]]:
    """(client, day) pairs that were fresh at their deadline: a successful run of the client covering the day
    ended at most `FRESH_MAX_AGE` before the day's deadline. A deadline comes once a day, so a run can make at
    most one day fresh: the one whose deadline is the first at or after the run's end."""
    fresh: set[tuple[str, date]] = set()
    zones: dict[str, ZoneInfo] = {}
    for run in runs:
        client = clients.get(run.client_id)
        if not run.succeeded or client is None:
            continue
        hour = deadline_hours[client.id]
        zone = zones.get(client.timezone) or zones.setdefault(client.timezone, ZoneInfo(client.timezone))
        local_end = run.ended_at.astimezone(zone)
        # The deadline on the local day of the run's end is for the day before it.
        day = local_end.date() - timedelta(days=1)
        if deadline_of(client, day, deadline_hour=hour) < run.ended_at:
            day += timedelta(days=1)
        if not run.start <= day <= run.end:
            continue
        if deadline_of(client, day, deadline_hour=hour) - run.ended_at <= FRESH_MAX_AGE:
            fresh.add((client.id, day))
    return fresh


def runs_since(ctx: HealthContext) -> datetime:
    """How far back the run history must be read: the 30-day run window, and the earliest due day's fresh span."""
    longest = max(WINDOWS)
    earliest = min(
        (deadline_of(c, ctx.window(c, longest)[0], deadline_hour=ctx.deadline_for(c)) for c in ctx.clients),
        default=ctx.now_utc,
    )
    return min(ctx.now_utc - timedelta(days=longest), earliest - FRESH_MAX_AGE)


# --- data rates -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DayCounts:
    present: int
    scored: int
    score_sum: float


def _read_day_counts(
    warehouse: Warehouse, groups: Sequence[Sequence[str]], start: date, end: date
) -> dict[tuple[int, date], _DayCounts]:
    """Rows, scored delivered rows and their score sum per (client group, day), in one grouped query."""
    table = schema.client_daily_kpis
    delivered = sa.and_(table.c.delivery == "delivered", table.c.quality_score.is_not(None))
    columns: list[Any] = [
        table.c.kpi_date,
        sa.func.count().label("present"),
        sa.func.count(sa.case((delivered, 1))).label("scored"),
        sa.func.sum(sa.case((delivered, table.c.quality_score))).label("score_sum"),
    ]
    group_by: list[Any] = [table.c.kpi_date]
    if len(groups) > 1:
        group = sa.case(
            *((table.c.client_id.in_(list(ids)), i) for i, ids in enumerate(groups[:-1])),
            else_=len(groups) - 1,
        ).label("client_group")
        columns.insert(0, group)
        group_by.insert(0, group)
    all_ids = [cid for ids in groups for cid in ids]
    query = (
        sa.select(*columns)
        .where(table.c.client_id.in_(all_ids), table.c.kpi_date.between(start, end))
        .group_by(*group_by)
    )
    out: dict[tuple[int, date], _DayCounts] = {}
    with warehouse.engine.connect() as conn:
        for row in conn.execute(query):
            index = int(row.client_group) if len(groups) > 1 else 0
            out[(index, row.kpi_date)] = _DayCounts(
                int(row.present), int(row.scored), float(row.score_sum or 0.0)
            )
    return out


def first_countable_days(
    runs: Iterable[CollectionRun], clients: Mapping[str, Client], *, deadline_hours: Mapping[str, int]
) -> dict[str, date]:
    """Per client, the first day whose deadline came after its first collection run in `runs` ended: the days
    freshness can judge. A day that fell due before the platform collected the client at all could not have been
    fresh, so a new deployment (or a new client) is not reported stale for the week before it started; a client
    without any run has no countable day (absent)."""
    first_end: dict[str, datetime] = {}
    for run in runs:
        if run.client_id in clients and (
            run.client_id not in first_end or run.ended_at < first_end[run.client_id]
        ):
            first_end[run.client_id] = run.ended_at
    out: dict[str, date] = {}
    for client_id, ended in first_end.items():
        client = clients[client_id]
        day = ended.astimezone(ZoneInfo(client.timezone)).date() - timedelta(days=1)
        while deadline_of(client, day, deadline_hour=deadline_hours[client_id]) < ended:
            day += timedelta(days=1)
        out[client_id] = day
    return out


def data_rates(
    ctx: HealthContext, fresh: set[tuple[str, date]], *, countable_from: Mapping[str, date] | None = None
) -> list[Rate]:
    """Completeness, average quality and freshness over each client's last due days, per window of `WINDOWS`.

    Clients are grouped by their due day and explicit start_date (the windows of one group are the same days), so the warehouse answers
    per group and day; `fresh` are the (client, day) pairs fresh at their deadline (`fresh_days`). Freshness counts
    a client's days from `countable_from` (`first_countable_days`) on; without it, every due day."""
    longest = max(WINDOWS)
    # A client's windows are set by its due day and its explicit start_date (no day before it is expected).
    by_window: dict[tuple[date, date | None], list[Client]] = {}
    for client in ctx.clients:
        by_window.setdefault((ctx.due_day(client), client.start_date), []).append(client)
    groups = [
        sorted(by_window[k], key=lambda c: c.id)
        for k in sorted(by_window, key=lambda k: (k[0], k[1] or date.min))
    ]
    counts: dict[tuple[int, date], _DayCounts] = {}
    if groups:
        first = min(ctx.window(c, longest)[0] for c in ctx.clients)
        last = max(due for due, _ in by_window)
        counts = _read_day_counts(ctx.warehouse, [[c.id for c in g] for g in groups], first, last)
    rates: list[Rate] = []
    for days in WINDOWS:
        expected = present = scored = n_fresh = due_fresh = 0
        score_sum = 0.0
        for index, members in enumerate(groups):
            start, end = ctx.window(members[0], days)
            span = [start + timedelta(days=i) for i in range((end - start).days + 1)]
            expected += len(span) * len(members)
            for day in span:
                c = counts.get((index, day))
                if c is not None:
                    present += c.present
                    scored += c.scored
                    score_sum += c.score_sum
                n_fresh += sum((m.id, day) in fresh for m in members)
            for m in members:
                if countable_from is None:
                    due_fresh += len(span)
                elif m.id in countable_from:
                    due_fresh += max(0, (end - max(start, countable_from[m.id])).days + 1)
        quality = round(score_sum / scored, 2) if scored else None
        rates += [
            Rate("completeness", days, _share(present, expected), present, expected),
            Rate("quality_avg", days, quality, score_sum, scored),
            Rate("freshness", days, _share(n_fresh, due_fresh), n_fresh, due_fresh),
        ]
    return rates


# --- the report's entry ---------------------------------------------------------------------------------------------


def success_rates(ctx: HealthContext, runs: Sequence[CollectionRun]) -> list[Rate]:
    """Every rate of `TARGETS` over every window of `WINDOWS`, as of `ctx.now_utc`, target order then window."""
    clients = {c.id: c for c in ctx.clients}
    runs = [r for r in runs if r.client_id in clients]
    hours = {c.id: ctx.deadline_for(c) for c in ctx.clients}
    fresh = fresh_days(runs, clients, deadline_hours=hours)
    by_key = {
        (r.name, r.window_days): r
        for r in (
            *run_rates(runs, now_utc=ctx.now_utc),
            *data_rates(ctx, fresh, countable_from=first_countable_days(runs, clients, deadline_hours=hours)),
        )
    }
    return [by_key[(t.name, days)] for t in TARGETS for days in WINDOWS]


def _value(rate: Rate) -> str:
    if rate.value is None:
        return "–"
    text = f"{rate.value:g}{' %' if rate.target.unit == '%' else ''}"
    return text if rate.met else f"{text} (below)"


def rates_finding(rates: Sequence[Rate]) -> Finding:
    """The report's `success_rates` entry: a table of every rate per window against its target, each value a
    plottable metric, and the rates whose 7-day value is below target.

    Informational (always healthy, weight 0): the rates restate what the other checks judge (missing days, late
    and failed collections), so scoring them too would count one missing day twice in the score; a rate below its
    target raises its own alert (`operations/watchdog.py`)."""
    below = [r for r in rates if r.window_days == ALERT_WINDOW_DAYS and r.met is False]
    header = ("rate", "target", *(f"{d} d" for d in WINDOWS))
    table = [header]
    for target in TARGETS:
        row = [r for r in rates if r.name == target.name]
        table.append((target.label, target.describe(), *(_value(r) for r in row)))
    parts = [
        f"{r.target.label} {_value(r)}"
        for r in rates
        if r.window_days == ALERT_WINDOW_DAYS and r.value is not None
    ]
    summary = f"{ALERT_WINDOW_DAYS} d: " + (", ".join(parts) if parts else "nothing to measure yet")
    summary += f"; {len(below)} below target" if below else "; all on target"
    metrics: dict[str, float] = {r.metric: r.value for r in rates if r.value is not None}
    metrics["success_rates_below_target"] = len(below)
    return Finding(
        status=HealthStatus.HEALTHY,
        score=100.0,
        summary=summary,
        details={
            "alert_window_days": ALERT_WINDOW_DAYS,
            "below_target": [r.name for r in below],
            "rates": [r.to_dict() for r in rates],
        },
        metrics=metrics,
        table=tuple(table),
    )
