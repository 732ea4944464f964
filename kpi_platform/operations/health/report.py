"""The health report's vocabulary: thresholds, statuses, findings, the report and the context checks read."""

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

from kpi_platform import settings
from kpi_platform.clients import Client, registered_clients
from kpi_platform.meta.errors import redact
from kpi_platform.quality.core import json_value, required_day

if TYPE_CHECKING:
    import dagster as dg

    from kpi_platform.warehouse import Warehouse

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
#: Seconds after which runs waiting in the queue count as stuck when the run-queue daemon's heartbeat is this old.
#: That daemon beats every 30 s and its iteration is short (a query, then launches), so Dagster's 30-minute
#: tolerance for slow iterations does not apply: five minutes is ten missed beats, and a stopped daemon with work
#: waiting is reported within one watchdog interval of that instead of half an hour later.
RUN_QUEUE_HEARTBEAT_STALE_S = 5 * 60.0
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
    """What a check function returns: its verdict, plus `metrics` (numbers the UI plots), JSON `details` and an
    optional `table` (a header row, then rows of text) shown under the check in the text and markdown forms."""

    status: HealthStatus
    score: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    table: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class HealthCheck:
    """One check of the report. `score` is 0–100; `weight` is its share of the report score (0: informational);
    `metrics` are its plottable numbers (int or float), `details` plain JSON values, `table` rows of text for the
    text and markdown forms (the header first; the JSON form has the same facts in `details`)."""

    name: str
    status: HealthStatus
    score: float
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    weight: float = 1.0
    table: tuple[tuple[str, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "score": self.score,
            "weight": self.weight,
            "summary": self.summary,
            "metrics": dict(self.metrics),
            "details": json_value(self.details),
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
        for c in self.checks:
            if c.table:
                header, *rows = c.table
                lines += ["", f"**{_md(c.name)}**", "", "| " + " | ".join(_md(h) for h in header) + " |"]
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"

    def to_text(self) -> str:
        """The terminal form: a headline and one aligned line per check."""
        width = max((len(c.name) for c in self.checks), default=0)
        lines = [
            f"KPI platform health: {self.status.value.upper()}, score {self.score:g}/100 "
            f"({self.generated_at:%Y-%m-%d %H:%M} UTC)"
        ]
        for c in self.checks:
            lines.append(f"  {c.status.value:<9}  {c.name:<{width}}  {c.summary}")
            if c.table:
                widths = [max(len(row[i]) for row in c.table) for i in range(len(c.table[0]))]
                indent = " " * (15 + width)
                lines += [
                    indent + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
                    for row in c.table
                ]
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
        #: Reads more than one check needs, made by the first that needs them (e.g. the collection runs).
        self.shared: dict[str, Any] = {}

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
        return required_day(self.local_now(client), deadline_hour=self.deadline_for(client))

    def window(self, client: Client, days: int) -> tuple[date, date]:
        """The client's last `days` due days, not before the first partition nor its explicit start_date."""
        end = self.due_day(client)
        first = date.fromisoformat(settings.PARTITIONS_START_DATE)
        if client.start_date is not None:
            first = max(first, client.start_date)
        start = max(end - timedelta(days=days - 1), first)
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


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class CheckSpec:
    """One entry of the report: its name, weight in the score, function, and whether it reads the instance."""

    name: str
    weight: float
    evaluate: Callable[[HealthContext], Finding]
    needs_instance: bool = False


#: Every check's name, in the order the report lists them (`checks.health_checks()` keeps to it).
REPORT_ORDER: tuple[str, ...] = (
    "yesterday_collection",
    "missing_days",
    "split_days",
    "hours_since_collection",
    "asset_checks",
    "circuit_breakers",
    "activity",
    "daemon",
    "in_progress",
    "success_rates",
    "collections",
    "token",
    "forecast_accuracy",
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


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"health metric {name!r} must be a finite number, got {value!r}")
    return value


# --- the report -------------------------------------------------------------------------------------------------


def evaluate_checks(
    *,
    warehouse: Warehouse,
    instance: dg.DagsterInstance | None,
    clients: Sequence[Client],
    now_utc: datetime,
    check_keys: Sequence[dg.AssetCheckKey] = (),
    exclude_run_id: str | None = None,
    checks: Sequence[CheckSpec],
) -> HealthReport:
    """The health report as of `now_utc` (timezone-aware) for the active ones of `clients`.

    `instance` may be None: the checks that read it (`needs_instance`) are then left out of the report.
    `check_keys` are the asset checks whose latest evaluation is judged (the code location's, e.g.
    `defs.resolve_asset_graph().asset_check_keys`); `exclude_run_id` is left out of the runs in progress (the
    run building the report). A check that raises is reported unhealthy with the error's type and first line
    (secrets of the warehouse URL redacted), so one broken input never hides the others. `build_health_report`
    (`checks.py`) evaluates every check; this, the `checks` given.
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
                    table=finding.table,
                )
            )
        except Exception as exc:  # noqa: BLE001 - reported as this check's result
            results.append(_failed_check(spec, exc, secrets))
    return HealthReport.from_checks(results, generated_at=ctx.now_utc)


def clients_from_warehouse(warehouse: Warehouse) -> list[Client]:
    """Every registered client (the report considers the active ones)."""
    return registered_clients(warehouse, active_only=False)
