"""The platform health report: named checks over the warehouse and the Dagster instance, each with a status, a
0–100 score, a one-line summary and details, rolled up into one status, score and exit code.

Plain Python; the CLI (`kpi-platform health`) and the hourly asset `platform/health_report` both call
`build_health_report`. The instance is only read.

Scoring. Each check rates itself `healthy`, `degraded` or `unhealthy` by the thresholds below and scores itself
0–100. The report's **status is the worst check status** (one unhealthy check makes the platform unhealthy, however
good the rest), and its **score is the weighted mean of the check scores** (`HEALTH_CHECKS` weights), a number to
plot over time. Exit codes: 0 healthy, 1 degraded, 2 unhealthy.

Adding a check: write a function `(HealthContext) -> Finding` and append one `CheckSpec` to `HEALTH_CHECKS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.meta.errors import redact
from kpi_platform.quality import rules
from kpi_platform.warehouse import Warehouse, schema

if TYPE_CHECKING:
    import dagster as dg

# --- thresholds -------------------------------------------------------------------------------------------------

#: Missing-day windows (complete, due days per client).
MISSING_DAY_WINDOWS: tuple[int, int] = (7, 30)
#: A client missing this many of its last 7 due days is unhealthy: gap healing has not caught up for days.
MISSING_7D_UNHEALTHY = 3
#: Hours since a client's last successful collection. The daily run re-collects every client once a day, so up
#: to 24 h plus a run's duration is normal; one missed daily run is degraded, two are unhealthy.
COLLECTION_AGE_DEGRADED_H = 26.0
COLLECTION_AGE_UNHEALTHY_H = 50.0
#: Per-client check scores: a healthy client counts fully, a degraded one half.
CLIENT_SCORES = {"healthy": 100.0, "degraded": 50.0, "unhealthy": 0.0}
#: Run statuses counted as queued or running (a CANCELING run still holds its slot).
QUEUED_RUN_STATUSES = ("QUEUED", "NOT_STARTED")
RUNNING_RUN_STATUSES = ("STARTING", "STARTED", "CANCELING")
#: Backfill statuses that are still submitting or finishing runs.
ACTIVE_BACKFILL_STATUSES = ("REQUESTED", "CANCELING", "FAILING")
#: Names listed in a check's details are capped; the counts are not.
DETAILS_MAX_ITEMS = 20
#: Seconds after which a daemon's latest heartbeat is stale. A daemon writes one every 30 s; Dagster's own liveness
#: rule (the UI's daemon page, `dagster-daemon liveness-check`) allows 30 min more, because one long iteration (a
#: slow sensor, a backfill submitting many runs) delays the next heartbeat. The same rule, so the report and the
#: UI agree.
DAEMON_HEARTBEAT_UNHEALTHY_S = 30.0 + 30 * 60.0
#: Seconds the queue's oldest run may wait before the daemon check is degraded. A collection run takes minutes, so
#: half an hour in the queue means the run concurrency limits are saturated (a large backfill) or a slot is held.
RUN_QUEUE_AGE_DEGRADED_S = 30 * 60.0
#: The daemon that starts QUEUED runs (the instance's QueuedRunCoordinator); without it the queue never drains.
RUN_QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"


class HealthStatus(StrEnum):
    """Overall or per-check status, ordered healthy < degraded < unhealthy (`exit_code` 0, 1, 2)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 degraded, 2 unhealthy."""
        return _RANK[self]


_RANK = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}


def worst(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """The worst of `statuses`; healthy when there are none."""
    return max(statuses, key=lambda s: s.rank, default=HealthStatus.HEALTHY)


# --- results ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """What a check function returns: its verdict, plus `metrics` (numbers the UI plots) and JSON `details`."""

    status: HealthStatus
    score: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthCheck:
    """One check of the report. `score` is 0–100; `weight` is its share of the report score (0: informational);
    `metrics` are its plottable numbers (int or float), `details` plain JSON values."""

    name: str
    status: HealthStatus
    score: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    weight: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "score": self.score,
            "weight": self.weight,
            "summary": self.summary,
            "metrics": dict(self.metrics),
            "details": rules.json_value(self.details),
        }


@dataclass(frozen=True)
class HealthReport:
    """The platform's health at `generated_at` (UTC): status = worst check, score = weighted mean of checks."""

    status: HealthStatus
    score: float
    generated_at: datetime
    checks: tuple[HealthCheck, ...]

    @classmethod
    def from_checks(cls, checks: Sequence[HealthCheck], *, generated_at: datetime) -> HealthReport:
        weighted = [(c.weight, c.score) for c in checks if c.weight > 0]
        total = sum(w for w, _ in weighted)
        score = sum(w * s for w, s in weighted) / total if total else 100.0
        return cls(
            status=worst(c.status for c in checks),
            score=round(score, 1),
            generated_at=generated_at.astimezone(UTC),
            checks=tuple(checks),
        )

    @classmethod
    def unavailable(cls, *, name: str, summary: str, now_utc: datetime) -> HealthReport:
        """A report of one unhealthy check, for when the inputs themselves cannot be read (e.g. no warehouse)."""
        return cls.from_checks(
            [HealthCheck(name=name, status=HealthStatus.UNHEALTHY, score=0.0, summary=summary)],
            generated_at=now_utc,
        )

    def check(self, name: str) -> HealthCheck:
        """The check called `name`; KeyError if the report has none."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no health check {name!r}; checks: {[c.name for c in self.checks]}")

    def metrics(self) -> dict[str, float]:
        """Every check's plottable numbers in one flat mapping (names are unique across checks)."""
        out: dict[str, float] = {}
        for c in self.checks:
            out.update(c.metrics)
        return out

    def exit_code(self) -> int:
        """0 healthy, 1 degraded, 2 unhealthy: for cron and scripts."""
        return self.status.exit_code

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "score": self.score,
            "generated_at": self.generated_at.isoformat(),
            "metrics": self.metrics(),
            "checks": [c.to_dict() for c in self.checks],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    def to_markdown(self) -> str:
        """A headline and a table `check | status | summary`."""
        lines = [
            f"**{self.status.value}**, score {self.score:g}/100, at {self.generated_at:%Y-%m-%d %H:%M} UTC",
            "",
            "| check | status | summary |",
            "|---|---|---|",
        ]
        for c in self.checks:
            lines.append(f"| {_md(c.name)} | {c.status.value} | {_md(c.summary)} |")
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """The terminal form: a headline and one aligned line per check."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [f"KPI platform health: {self.status.value.upper()}, score {self.score:g}/100 "
                 f"({self.generated_at:%Y-%m-%d %H:%M} UTC)"]
        for c in self.checks:
            lines.append(f"  {c.status.value:<9}  {c.name:<{width}}  {c.summary}")
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- inputs -----------------------------------------------------------------------------------------------------


class HealthContext:
    """What the checks read, with the shared warehouse reads done once. Only active clients are considered."""

    def __init__(
        self,
        *,
        warehouse: Warehouse,
        instance: dg.DagsterInstance | None,
        clients: Sequence[Client],
        now_utc: datetime,
        check_keys: Sequence[dg.AssetCheckKey] = (),
        exclude_run_id: str | None = None,
        deadline_hour: int | None = None,
    ) -> None:
        if now_utc.tzinfo is None:
            raise ValueError("now_utc must be timezone-aware")
        self.warehouse = warehouse
        self.instance = instance
        self.clients = [c for c in clients if c.active]
        self.now_utc = now_utc.astimezone(UTC)
        self.check_keys = tuple(check_keys)
        self.exclude_run_id = exclude_run_id
        self.deadline_hour = deadline_hour

    @property
    def client_ids(self) -> list[str]:
        return [c.id for c in self.clients]

    def local_now(self, client: Client) -> datetime:
        return self.now_utc.astimezone(ZoneInfo(client.timezone))

    def deadline_for(self, client: Client) -> int:
        """The client's freshness deadline hour (local), the same the `fresh_per_client` check uses, unless
        the report was asked for one hour for everyone."""
        if self.deadline_hour is not None:
            return self.deadline_hour
        return client.settings.freshness_deadline_hour

    def due_day(self, client: Client) -> date:
        """The latest day that must be stored by now: local yesterday from the deadline hour on, else the day before."""
        return rules.required_day(self.local_now(client), deadline_hour=self.deadline_for(client))

    def window(self, client: Client, days: int) -> tuple[date, date]:
        """The client's last `days` due days, not before the first partition."""
        end = self.due_day(client)
        start = max(end - timedelta(days=days - 1), date.fromisoformat(settings.PARTITIONS_START_DATE))
        return start, end

    def span(self) -> tuple[date, date]:
        """First and last day any check reads for any active client (call only with active clients)."""
        longest = max(MISSING_DAY_WINDOWS)
        # Local yesterday can be one day after the due day (before the deadline hour).
        starts = [self.window(c, longest)[0] for c in self.clients]
        ends = [self.local_now(c).date() - timedelta(days=1) for c in self.clients]
        return min(starts), max(ends)

    @cached_property
    def present(self) -> dict[str, set[date]]:
        """Days with a client_daily_kpis row per active client, over every window any check looks at."""
        if not self.clients:
            return {}
        start, end = self.span()
        return self.warehouse.present_days(start=start, end=end, client_ids=self.client_ids)


# --- checks -----------------------------------------------------------------------------------------------------


def _ratio_score(good: float, total: float) -> float:
    return round(100.0 * good / total, 1) if total else 100.0


def _capped(items: Sequence[Any]) -> list[Any]:
    return list(items[:DETAILS_MAX_ITEMS])


def check_yesterday_collection(ctx: HealthContext) -> Finding:
    """Active clients with a row for their local yesterday. A client without it is overdue only from the
    freshness deadline hour (local) on; before that it is still pending. Unhealthy when every active client is
    overdue, degraded when some are."""
    per_client: dict[str, dict[str, Any]] = {}
    done: list[str] = []
    overdue: list[str] = []
    pending: list[str] = []
    for client in ctx.clients:
        yesterday = ctx.local_now(client).date() - timedelta(days=1)
        collected = yesterday in ctx.present.get(client.id, set())
        due = ctx.due_day(client) >= yesterday
        (done if collected else overdue if due else pending).append(client.id)
        per_client[client.id] = {"day": yesterday, "collected": collected, "due": due}
    active = len(ctx.clients)
    if overdue and len(overdue) == active:
        status = HealthStatus.UNHEALTHY
    elif overdue:
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    summary = f"{len(done)}/{active} active clients collected yesterday"
    if overdue:
        summary += f"; overdue: {', '.join(overdue[:DETAILS_MAX_ITEMS])}"
    if pending:
        summary += f"; {len(pending)} not due before their local deadline"
    if not active:
        summary = "no active clients"
    return Finding(
        status=status,
        score=_ratio_score(active - len(overdue), active),
        summary=summary,
        details={
            "deadline_hour_local": {c.id: ctx.deadline_for(c) for c in ctx.clients},
            "overdue": overdue,
            "pending": pending,
            "per_client": per_client,
        },
        metrics={
            "clients_collected_yesterday": len(done),
            "clients_active": active,
            "clients_overdue_yesterday": len(overdue),
        },
    )


def check_missing_days(ctx: HealthContext) -> Finding:
    """Missing client-days over each client's last 7 and 30 due days (idle days are rows, so present).

    Healthy when every client meets its completeness target in both windows, unhealthy when a client misses
    `MISSING_7D_UNHEALTHY` or more of its last 7 days, degraded otherwise. Score: present share of the 30-day window.
    """
    short, long = MISSING_DAY_WINDOWS
    per_client: dict[str, dict[str, Any]] = {}
    totals = {short: 0, long: 0}
    expected_long = present_long = 0
    below_target: list[str] = []
    unhealthy: list[str] = []
    for client in ctx.clients:
        result = rules.completeness(
            {client.id: ctx.present.get(client.id, set())},
            clients={client.id: client.settings.completeness_target},
            today=ctx.due_day(client) + timedelta(days=1),
            windows=MISSING_DAY_WINDOWS,
            first_day={client.id: date.fromisoformat(settings.PARTITIONS_START_DATE)},
        )
        windows = {w.window_days: w for w in result.per_client}
        entry: dict[str, Any] = {}
        for n, w in windows.items():
            totals[n] += len(w.missing_dates)
            entry[f"missing_days_{n}d"] = len(w.missing_dates)
        entry["missing_dates"] = list(windows[long].missing_dates)
        entry["completeness_30d_pct"] = windows[long].share_pct
        entry["target_pct"] = windows[long].target_pct
        per_client[client.id] = entry
        expected_long += windows[long].expected_days
        present_long += windows[long].present_days
        if not result.passed:
            below_target.append(client.id)
        if len(windows[short].missing_dates) >= MISSING_7D_UNHEALTHY:
            unhealthy.append(client.id)
    if unhealthy:
        status = HealthStatus.UNHEALTHY
    elif below_target:
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    worst_clients = sorted(
        (cid for cid, e in per_client.items() if e[f"missing_days_{long}d"]),
        key=lambda cid: (-per_client[cid][f"missing_days_{long}d"], cid),
    )
    if worst_clients:
        listed = ", ".join(
            f"{cid} {per_client[cid][f'missing_days_{short}d']}/{per_client[cid][f'missing_days_{long}d']}"
            for cid in worst_clients[:DETAILS_MAX_ITEMS]
        )
        summary = f"{totals[short]} missing in {short} d, {totals[long]} in {long} d ({short} d/{long} d: {listed})"
    else:
        summary = f"no missing days in the last {long} days"
    return Finding(
        status=status,
        score=_ratio_score(present_long, expected_long),
        summary=summary,
        details={
            "clients_below_target": below_target,
            "clients_unhealthy": unhealthy,
            "unhealthy_from_missing_7d": MISSING_7D_UNHEALTHY,
            "per_client": per_client,
        },
        metrics={f"missing_days_{short}d": totals[short], f"missing_days_{long}d": totals[long]},
    )


def check_split_days(ctx: HealthContext) -> Finding:
    """Client-days of the last 30 due days where spend and conversions disagree (`rules.split_days`): the old
    system's silent failure. Any split day is degraded: wrong numbers are stored, collection still works."""
    long = max(MISSING_DAY_WINDOWS)
    if not ctx.clients:
        return Finding(HealthStatus.HEALTHY, 100.0, "no active clients", metrics={"split_days": 0})
    start, end = ctx.span()
    days = ctx.warehouse.read_client_days(start=start, end=end)
    bounds = {c.id: ctx.window(c, long) for c in ctx.clients}
    keep = [
        cid in bounds and bounds[cid][0] <= day <= bounds[cid][1]
        for cid, day in zip(days["client_id"], days["kpi_date"], strict=True)
    ]
    days = days[keep].reset_index(drop=True)
    result = rules.split_days(days)
    n_split = result.spend_without_conversions + result.conversions_without_spend
    by_client: dict[str, list[str]] = {}
    for culprit in result.culprits:
        by_client.setdefault(culprit["client_id"], []).append(culprit["kpi_date"])
    if n_split:
        listed = ", ".join(f"{cid} {len(d)}" for cid, d in sorted(by_client.items()))
        summary = f"{n_split} split days in the last {long} days ({listed})"
    else:
        summary = f"no split days in the last {long} days ({result.days_checked} client-days checked)"
    return Finding(
        status=HealthStatus.DEGRADED if n_split else HealthStatus.HEALTHY,
        score=_ratio_score(result.days_checked - n_split, result.days_checked),
        summary=summary,
        details={
            "days_checked": result.days_checked,
            "spend_without_conversions": result.spend_without_conversions,
            "conversions_without_spend": result.conversions_without_spend,
            "days_by_client": by_client,
            "culprits": _capped(result.culprits),
        },
        metrics={"split_days": n_split},
    )


def last_collected_at(warehouse: Warehouse, client_ids: Sequence[str]) -> dict[str, datetime | None]:
    """When each client was last collected successfully: max(fetched_at) of its client_daily_kpis rows.

    Rows are only written by a successful collection, and a collection rewrites every day of its range with
    the run's `fetched_at`, so this is the end of the latest successful run that stored anything for the client.
    """
    table = schema.client_daily_kpis
    query = (
        sa.select(table.c.client_id, sa.func.max(table.c.fetched_at))
        .where(table.c.client_id.in_(list(client_ids)))
        .group_by(table.c.client_id)
    )
    out: dict[str, datetime | None] = {cid: None for cid in client_ids}
    if not client_ids:
        return out
    with warehouse.engine.connect() as conn:
        for client_id, fetched_at in conn.execute(query):
            out[client_id] = _as_utc(fetched_at)
    return out


def _as_utc(value: datetime | str | None) -> datetime | None:
    """SQLite returns naive timestamps (stored in UTC), or text from an aggregate; PostgreSQL aware ones."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _age_status(hours: float | None) -> HealthStatus:
    if hours is None or hours > COLLECTION_AGE_UNHEALTHY_H:
        return HealthStatus.UNHEALTHY
    if hours > COLLECTION_AGE_DEGRADED_H:
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


def check_hours_since_collection(ctx: HealthContext) -> Finding:
    """Hours since each active client's last successful collection (`last_collected_at`, from the warehouse
    rather than Dagster's materializations: the rows are what reports read, they survive a reset Dagster
    instance, and one grouped query answers for every client). Per client: healthy up to
    `COLLECTION_AGE_DEGRADED_H`, degraded up to `COLLECTION_AGE_UNHEALTHY_H`, unhealthy beyond or never."""
    last = last_collected_at(ctx.warehouse, ctx.client_ids)
    per_client: dict[str, dict[str, Any]] = {}
    statuses: dict[str, HealthStatus] = {}
    for client in ctx.clients:
        at = last.get(client.id)
        hours = round((ctx.now_utc - at).total_seconds() / 3600.0, 2) if at is not None else None
        statuses[client.id] = _age_status(hours)
        per_client[client.id] = {"last_collected_at": at, "hours": hours, "status": statuses[client.id].value}
    ages = [e["hours"] for e in per_client.values() if e["hours"] is not None]
    never = sorted(cid for cid, e in per_client.items() if e["hours"] is None)
    late = sorted(
        (cid for cid, s in statuses.items() if s != HealthStatus.HEALTHY and cid not in never),
        key=lambda cid: -per_client[cid]["hours"],
    )
    if not ctx.clients:
        summary = "no active clients"
    else:
        parts = [f"max {max(ages):.1f} h" if ages else "no client collected yet"]
        if late:
            parts.append("late: " + ", ".join(f"{cid} {per_client[cid]['hours']:.0f} h" for cid in late[:DETAILS_MAX_ITEMS]))
        if never and ages:
            parts.append(f"never collected: {', '.join(never[:DETAILS_MAX_ITEMS])}")
        summary = "; ".join(parts)
    metrics: dict[str, float] = {"clients_never_collected": len(never)}
    if ages:
        metrics["max_hours_since_collection"] = max(ages)
    return Finding(
        status=worst(statuses.values()),
        score=round(sum(CLIENT_SCORES[s.value] for s in statuses.values()) / len(statuses), 1) if statuses else 100.0,
        summary=summary,
        details={
            "degraded_after_hours": COLLECTION_AGE_DEGRADED_H,
            "unhealthy_after_hours": COLLECTION_AGE_UNHEALTHY_H,
            "per_client": per_client,
        },
        metrics=metrics,
    )


def check_asset_checks(ctx: HealthContext) -> Finding:
    """The latest result of every asset check of the code location. A failed blocking check (data was refused)
    is unhealthy, another failed ERROR check degraded; a failed WARN check ("worth a look", e.g. an anomaly) is
    listed and lowers the score but leaves the check healthy. When the latest evaluation is still planned (its run
    is going, or ended without a result, e.g. the collection failed before validating), the result before it is
    judged. Checks never evaluated are listed, not counted as failures. Score: share of evaluated checks passing."""
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus  # PRIVATE

    done = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}
    instance = ctx.instance
    assert instance is not None
    passed: list[str] = []
    failed: list[dict[str, Any]] = []
    not_run: list[str] = []
    without_result: list[dict[str, Any]] = []
    for key in sorted(ctx.check_keys, key=lambda k: k.to_user_string()):
        name = key.to_user_string()
        record = instance.get_latest_asset_check_evaluation_record(key)
        if record is not None and record.status not in done:
            run = instance.get_run_by_id(record.run_id)
            running = run is not None and not run.is_finished
            without_result.append({"check": name, "run_id": record.run_id, "run_in_progress": running})
            history = instance.event_log_storage.get_asset_check_execution_history(key, limit=1, status=done)
            record = history[0] if history else None
        if record is None:
            not_run.append(name)
        elif record.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
            passed.append(name)
        else:
            evaluation = record.evaluation
            failed.append(
                {
                    "check": name,
                    "severity": evaluation.severity.value if evaluation else None,
                    "blocking": bool(evaluation and evaluation.blocking),
                    "run_id": record.run_id,
                    "partition": record.partition,
                    "at": datetime.fromtimestamp(record.create_timestamp, UTC),
                }
            )
    if any(f["blocking"] for f in failed):
        status = HealthStatus.UNHEALTHY
    elif any(f["severity"] != "WARN" for f in failed):
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    evaluated = len(passed) + len(failed)
    if failed:
        summary = f"{len(failed)}/{evaluated} failed: " + ", ".join(
            f"{f['check']} ({f['severity']}{', blocking' if f['blocking'] else ''})" for f in failed
        )
    elif ctx.check_keys:
        summary = f"{len(passed)}/{evaluated} passed"
    else:
        summary = "no asset checks given"
    if not_run:
        summary += f"; {len(not_run)} never evaluated"
    return Finding(
        status=status,
        score=_ratio_score(len(passed), evaluated),
        summary=summary,
        details={
            "failed": failed,
            "passed": passed,
            "never_evaluated": not_run,
            "latest_without_result": without_result,
        },
        metrics={"failed_checks": len(failed), "checks_never_evaluated": len(not_run)},
    )


def read_breakers(warehouse: Warehouse) -> list[Any]:
    """Stored circuit breakers (`BreakerState`s); none when the warehouse predates the `circuit_breakers` table."""
    from kpi_platform.meta.breaker import BreakerGuard

    with warehouse.engine.connect() as conn:
        if not sa.inspect(conn).has_table(schema.circuit_breakers.name):
            return []
    return BreakerGuard(warehouse).list_breakers()


def check_circuit_breakers(ctx: HealthContext) -> Finding:
    """Meta API circuit breakers not closed (open, or half-open while a trial call runs). The API-wide breaker
    stops every client: unhealthy. An ad account's breaker stops one client: degraded. Breakers of accounts no
    active client uses are ignored (nothing calls them, so they never close)."""
    accounts = {f"{settings.BREAKER_API_NAME}:{c.ad_account_id}": c.id for c in ctx.clients}
    relevant = [
        b for b in read_breakers(ctx.warehouse)
        if b.state != "closed" and (b.name == settings.BREAKER_API_NAME or b.name in accounts)
    ]
    api_open = any(b.name == settings.BREAKER_API_NAME for b in relevant)
    blocked_clients = sorted(accounts[b.name] for b in relevant if b.name in accounts)
    if api_open:
        status, score = HealthStatus.UNHEALTHY, 0.0
    else:
        status = HealthStatus.DEGRADED if relevant else HealthStatus.HEALTHY
        score = _ratio_score(len(ctx.clients) - len(blocked_clients), len(ctx.clients))
    if relevant:
        summary = ", ".join(
            f"{b.name} {b.state}" + (f" since {b.opened_at:%Y-%m-%d %H:%M} UTC" if b.opened_at else "")
            for b in relevant
        )
    else:
        summary = "all closed"
    return Finding(
        status=status,
        score=score,
        summary=summary,
        details={
            "breakers": [
                {"name": b.name, "state": b.state, "fail_counter": b.fail_counter, "opened_at": b.opened_at,
                 "half_open_at": b.half_open_at, "last_error": b.last_error}
                for b in relevant
            ],
            "clients_blocked": blocked_clients,
        },
        metrics={"open_breakers": len(relevant)},
    )


def check_in_progress(ctx: HealthContext) -> Finding:
    """Runs queued or running and backfills in progress. Informational (weight 0, always healthy): busy is not
    unhealthy, and a stuck queue is judged by `check_daemon`."""
    import dagster as dg
    from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus  # PRIVATE in 1.13

    assert ctx.instance is not None

    own = ctx.instance.get_run_by_id(ctx.exclude_run_id) if ctx.exclude_run_id else None

    def count(statuses: Sequence[str]) -> int:
        n = ctx.instance.get_runs_count(dg.RunsFilter(statuses=[dg.DagsterRunStatus(s) for s in statuses]))
        return n - 1 if own is not None and own.status.value in statuses else n

    queued, running = count(QUEUED_RUN_STATUSES), count(RUNNING_RUN_STATUSES)
    backfills = ctx.instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus(s) for s in ACTIVE_BACKFILL_STATUSES])
    )
    summary = f"{queued + running} runs ({queued} queued, {running} running), {len(backfills)} backfills in progress"
    return Finding(
        status=HealthStatus.HEALTHY,
        score=100.0,
        summary=summary,
        details={
            "backfills": [
                {"id": b.backfill_id, "status": b.status.value, "title": b.title,
                 "created_at": datetime.fromtimestamp(b.backfill_timestamp, UTC)}
                for b in backfills[:DETAILS_MAX_ITEMS]
            ],
        },
        metrics={
            "runs_in_progress": queued + running,
            "runs_queued": queued,
            "runs_running": running,
            "backfills_in_progress": len(backfills),
        },
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def check_daemon(ctx: HealthContext) -> Finding:
    """The Dagster daemon (schedules, sensors, backfills, the run queue) from its heartbeats, and the run queue:
    QUEUED runs, which only the daemon's `RUN_QUEUE_DAEMON` starts. (NOT_STARTED runs were never submitted to the
    queue, so no daemon picks them up; `in_progress` counts them with the queued ones.)

    A daemon is alive when its latest heartbeat is at most `DAEMON_HEARTBEAT_UNHEALTHY_S` old at `now_utc`; the
    required ones follow the instance's dagster.yaml (`get_required_daemon_types`). The first rule that applies:

    1. Runs are queued and the run-queue daemon is not alive: unhealthy, however young the queue, since it never
       drains.
    2. The instance has never recorded any heartbeat and nothing is queued: degraded, "not running". This is the
       local instance before `kpi-platform ui` was first started (right after the quickstart) or a test instance:
       nothing is waiting yet, but no schedule or sensor fires until the daemon runs.
    3. A required daemon has no heartbeat or a stale one: unhealthy (the daemon ran and stopped, or a daemon that
       dagster.yaml enables was never started).
    4. The oldest queued run has waited more than `RUN_QUEUE_AGE_DEGRADED_S` (since it was created): degraded.
    5. Otherwise healthy, also for an instance that needs no daemon (an ephemeral one).

    Score: 100 healthy, 50 degraded; unhealthy scores the share of required daemons alive, 0 for a stuck queue.
    Errors carried by heartbeats are counted per daemon but do not change the status, as in Dagster's own rule:
    a failing sensor or schedule shows on its ticks, and the runs it fails to request show in the data checks.
    """
    import dagster as dg

    instance = ctx.instance
    assert instance is not None
    now_s = ctx.now_utc.timestamp()
    required = list(instance.get_required_daemon_types())
    heartbeats = instance.get_daemon_heartbeats()

    def heartbeat_age(daemon_type: str) -> float | None:
        beat = heartbeats.get(daemon_type)
        # A heartbeat later than `now_utc` (a report judged as of a past moment) counts as fresh.
        return None if beat is None else round(max(0.0, now_s - beat.timestamp), 1)

    def alive(daemon_type: str) -> bool:
        age = heartbeat_age(daemon_type)
        return age is not None and age <= DAEMON_HEARTBEAT_UNHEALTHY_S

    daemons: dict[str, dict[str, Any]] = {}
    for daemon_type in required:
        beat, age = heartbeats.get(daemon_type), heartbeat_age(daemon_type)
        daemons[daemon_type] = {
            "state": "missing" if age is None else "healthy" if alive(daemon_type) else "stale",
            "last_heartbeat_at": datetime.fromtimestamp(beat.timestamp, UTC) if beat else None,
            "heartbeat_age_seconds": age,
            "recent_errors": len(beat.errors or ()) if beat else 0,
        }
    down = [t for t in required if daemons[t]["state"] != "healthy"]

    queued = dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])
    queue_length = instance.get_runs_count(queued)
    oldest = instance.get_run_records(queued, limit=1, order_by="create_timestamp", ascending=True)
    oldest_run: dict[str, Any] | None = None
    oldest_age = 0.0
    if oldest:
        created = _as_utc(oldest[0].create_timestamp)
        assert created is not None
        oldest_age = round(max(0.0, (ctx.now_utc - created).total_seconds()), 1)
        run = oldest[0].dagster_run
        oldest_run = {"run_id": run.run_id, "job_name": run.job_name, "created_at": created}
    queue = (
        f"{queue_length} run{'s' if queue_length > 1 else ''} queued, oldest {_duration(oldest_age)}"
        if queue_length
        else "run queue empty"
    )
    n_alive = len(required) - len(down)
    alive_part = f"{n_alive}/{len(required)} daemons alive"

    if queue_length and not alive(RUN_QUEUE_DAEMON):
        status, score = HealthStatus.UNHEALTHY, 0.0
        summary = f"{queue}, and no live daemon starts them ({alive_part})"
    elif required and not heartbeats:
        status, score = HealthStatus.DEGRADED, 50.0
        summary = (
            "daemon not running (no heartbeat ever recorded): schedules, sensors and backfills wait until "
            f"`kpi-platform ui` or `dagster-daemon run` starts it; {queue}"
        )
    elif down:
        status, score = HealthStatus.UNHEALTHY, _ratio_score(n_alive, len(required))
        ages = {t: daemons[t]["heartbeat_age_seconds"] for t in down}
        listed = ", ".join(
            f"{t} {_duration(a)} ago" if a is not None else f"{t} never" for t, a in ages.items()
        )
        summary = f"{len(down)}/{len(required)} daemons down (last heartbeat: {listed}); {queue}"
    elif queue_length and oldest_age > RUN_QUEUE_AGE_DEGRADED_S:
        status, score = HealthStatus.DEGRADED, 50.0
        summary = f"{alive_part}; {queue} (over {_duration(RUN_QUEUE_AGE_DEGRADED_S)})"
    else:
        status, score = HealthStatus.HEALTHY, 100.0
        summary = f"{alive_part}; {queue}" if required else f"no daemon required by this instance; {queue}"
    return Finding(
        status=status,
        score=score,
        summary=summary,
        details={
            "daemons": daemons,
            "daemons_down": down,
            "oldest_queued_run": oldest_run,
            "heartbeat_unhealthy_after_seconds": DAEMON_HEARTBEAT_UNHEALTHY_S,
            "queue_degraded_after_seconds": RUN_QUEUE_AGE_DEGRADED_S,
        },
        metrics={
            "daemons_healthy": n_alive,
            "daemons_required": len(required),
            "run_queue_length": queue_length,
            "run_queue_oldest_age_seconds": oldest_age,
        },
    )


@dataclass(frozen=True)
class CheckSpec:
    """One entry of the report: its name, weight in the score, function, and whether it reads the instance."""

    name: str
    weight: float
    evaluate: Callable[[HealthContext], Finding]
    needs_instance: bool = False


#: The report's checks, in report order. Weights: not collecting (yesterday, hours, breakers, and a daemon down,
#: which fires no schedule) counts most.
HEALTH_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("yesterday_collection", 3.0, check_yesterday_collection),
    CheckSpec("missing_days", 2.0, check_missing_days),
    CheckSpec("split_days", 1.0, check_split_days),
    CheckSpec("hours_since_collection", 2.0, check_hours_since_collection),
    CheckSpec("asset_checks", 1.0, check_asset_checks, needs_instance=True),
    CheckSpec("circuit_breakers", 2.0, check_circuit_breakers),
    CheckSpec("daemon", 2.0, check_daemon, needs_instance=True),
    CheckSpec("in_progress", 0.0, check_in_progress, needs_instance=True),
)


def _failed_check(spec: CheckSpec, exc: Exception, secrets: Iterable[str | None]) -> HealthCheck:
    reason = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "", secrets)[:300]
    return HealthCheck(
        name=spec.name,
        status=HealthStatus.UNHEALTHY,
        score=0.0,
        summary=f"could not be evaluated: {type(exc).__name__}: {reason}",
        details={"error": type(exc).__name__},
        weight=spec.weight,
    )


def build_health_report(
    *,
    warehouse: Warehouse,
    instance: dg.DagsterInstance | None,
    clients: Sequence[Client],
    now_utc: datetime,
    check_keys: Sequence[dg.AssetCheckKey] = (),
    exclude_run_id: str | None = None,
    checks: Sequence[CheckSpec] = HEALTH_CHECKS,
) -> HealthReport:
    """The health report as of `now_utc` (timezone-aware) for the active ones of `clients`.

    `instance` may be None: the checks that read it (`needs_instance`) are then left out of the report.
    `check_keys` are the asset checks whose latest evaluation is judged (the code location's, e.g.
    `defs.resolve_asset_graph().asset_check_keys`); `exclude_run_id` is left out of the runs in progress (the
    run building the report). A check that raises is reported unhealthy with the error's type and first line
    (secrets of the warehouse URL redacted), so one broken input never hides the others.
    """
    ctx = HealthContext(
        warehouse=warehouse,
        instance=instance,
        clients=clients,
        now_utc=now_utc,
        check_keys=check_keys,
        exclude_run_id=exclude_run_id,
    )
    secrets = (warehouse.engine.url.password,)
    results: list[HealthCheck] = []
    for spec in checks:
        if spec.needs_instance and instance is None:
            continue
        try:
            finding = spec.evaluate(ctx)
            results.append(
                HealthCheck(
                    name=spec.name,
                    status=finding.status,
                    score=round(float(finding.score), 1),
                    summary=finding.summary,
                    details=finding.details,
                    metrics={k: _number(k, v) for k, v in finding.metrics.items()},
                    weight=spec.weight,
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported as this check's result
            results.append(_failed_check(spec, exc, secrets))
    return HealthReport.from_checks(results, generated_at=ctx.now_utc)


def _number(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"health metric {name!r} must be a finite number, got {value!r}")
    return value


def clients_from_warehouse(warehouse: Warehouse) -> list[Client]:
    """Every registered client (the report considers the active ones)."""
    return [Client.from_row(row) for row in warehouse.list_clients()]
