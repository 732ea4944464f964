"""The watchdog: `kpi-platform health --alert`, run every 5 minutes outside Dagster (a systemd timer, cron, a
Kubernetes CronJob: deploy/watchdog/, deploy/k8s/), so that a stopped daemon, a stuck run queue or a client that
was never collected alerts even though no sensor runs.

From one health report (`operations.health.build_health_report`) and the warehouse it:

* raises one alert per unhealthy check, key `health:<check>`: CRITICAL for `daemon` (heartbeats stale, or runs
  queued that no live daemon starts) and `dagster_instance` (Dagster's storage cannot be read), HIGH for any other
  check. A degraded check does not alert. Synced with scope `HEALTH_ALERT_PREFIX`, so a check that recovers
  sends "resolved"; a check absent from this report (not evaluated, e.g. while the instance cannot be opened)
  keeps its open problem as it is: not evaluated is not recovered.
* raises `health:score_low` (HIGH) while the report's score has stayed below `SCORE_LOW_BELOW` (80) for more
  than `SCORE_LOW_FOR` (1 h): judged from the scores the health report asset recorded (its materializations'
  `score`, every 15 minutes) and this report's own. Resolved once a report scores 80 or more; kept as it is when
  the recorded scores cannot be read.
* raises one alert per roadmap success rate whose 7-day value is below its target, key `success_rate:<rate>`
  (MEDIUM: data late, incomplete or repaired too slowly; `operations/health/success_rates.py`), resolved once it
  is back on target; kept as it is while the rates cannot be evaluated.
* syncs the missing-clients escalation (`operations.missing_clients`), the same alert `alert_sync_sensor` syncs.
* pings the outbound heartbeat `KPI_HEARTBEAT_URL` (HTTP GET) when nothing is unhealthy (status healthy or
  degraded), so an outside uptime monitor notices when the pings stop: the host, cron or the platform died, or
  the platform is unhealthy.

Alerts go through `Notifier.from_env` (the same channels, routing and once-per-problem state as every alert).
Nothing here raises: every problem of the watchdog itself becomes a line for stderr (secrets redacted), and the
caller's exit code stays the report's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import requests

from kpi_platform import settings
from kpi_platform.meta.errors import redact
from kpi_platform.operations.alerts import (
    RUNBOOK,
    Alert,
    Notifier,
    OpenProblem,
    Severity,
    SyncResult,
    env_secrets,
    redacted_logs,
)
from kpi_platform.operations.health import HealthReport, HealthStatus
from kpi_platform.operations.health.success_rates import ALERT_WINDOW_DAYS, TARGETS_BY_NAME
from kpi_platform.operations.missing_clients import (
    MISSING_CLIENTS_PREFIX,
    escalation_hours_from_env,
    missing_client_alerts,
)
from kpi_platform.warehouse import Warehouse

logger = logging.getLogger(__name__)

HEALTH_ALERT_PREFIX = "health:"
SUCCESS_RATE_ALERT_PREFIX = "success_rate:"
#: The report's score below this for longer than `SCORE_LOW_FOR` raises `SCORE_LOW_KEY`.
SCORE_LOW_BELOW = 80.0
SCORE_LOW_FOR = timedelta(hours=1)
SCORE_LOW_KEY = f"{HEALTH_ALERT_PREFIX}score_low"
#: How far back the recorded scores are read: the hour judged, and two more so a missed evaluation or two of the
#: 15-minute asset still leaves a score older than an hour.
SCORE_HISTORY_SPAN = timedelta(hours=3)
#: The report's entry with the success rates (`operations/health/success_rates.py`).
SUCCESS_RATES_CHECK = "success_rates"
#: Checks whose unhealthy status means nothing is scheduled, sensed or launched (and no sensor alerts either).
CRITICAL_HEALTH_CHECKS = frozenset({"daemon", "dagster_instance"})
#: (connect, read) seconds for the heartbeat GET: a slow monitor must not hold the watchdog up.
HEARTBEAT_TIMEOUT: tuple[float, float] = (5.0, 10.0)
#: What to do per check; the runbook has the rest.
CHECK_ADVICE: Mapping[str, str] = {
    "daemon": "the Dagster daemon is down or the run queue is stuck: no schedule, sensor or backfill runs and no "
    "sensor alert fires. Restart the daemon (its systemd unit, `kpi-platform serve`, or the daemon pod), then "
    "check `kpi-platform health` and the daemon's log.",
    "dagster_instance": "Dagster's storage cannot be read: check DAGSTER_HOME and its dagster.yaml, and that "
    "Dagster's PostgreSQL database (DAGSTER_PG_*) answers.",
    "yesterday_collection": "no active client has yesterday's data: the daily schedule did not run or every run "
    "failed; check the daemon, `daily_collection_schedule`, the token and the circuit breakers.",
    "missing_days": "a client misses 3 or more of its last 7 days: gap healing has not caught up; read the failed "
    "runs of that client and heal by hand.",
    "hours_since_collection": "a client has not been collected for more than 50 hours (or never): check its "
    "runs, the token and the breakers.",
    "asset_checks": "a blocking asset check failed, so data was refused: read the check's failed rules in the UI.",
    "circuit_breakers": "the API-wide circuit breaker is open: every run fails fast (see Circuit breaker open).",
    "token": "the Meta access token expires within a day, lacks ads_read or is invalid, or its daily check keeps "
    "failing (ticks of meta_token_check_sensor): issue and deploy a new token (see Rotating the token).",
    "forecast_accuracy": "no forecast has been made for 3 days: the daily `kpi_forecasts_job` did not run or "
    "keeps failing; read its last run, check `kpi_forecasts_schedule` and the daemon. Collected data is not "
    "affected.",
}
NO_CHANNEL = (
    "alerts: no channel configured (set KPI_ALERT_SLACK_WEBHOOK, KPI_ALERT_DISCORD_WEBHOOK or KPI_ALERT_SMTP_*): "
    "problems are recorded in the warehouse, nothing is sent"
)


@dataclass(frozen=True)
class WatchdogResult:
    """What one watchdog pass did. `health` / `collection` / `rates` are None when that scope could not be synced
    (`rates` also when the report has no success rates); `heartbeat` is `pinged`, `failed`, `withheld` (something
    is unhealthy) or `off` (no KPI_HEARTBEAT_URL); `lines` are for stderr, free of secrets."""

    health: SyncResult | None
    collection: SyncResult | None
    heartbeat: str
    lines: tuple[str, ...]
    rates: SyncResult | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def health_alerts(report: HealthReport, *, secrets: Iterable[str | None] = ()) -> list[Alert]:
    """One alert per unhealthy check of `report`, key `health:<check>`; degraded and healthy checks give none.
    `secrets` are redacted from the check summaries quoted (the notifier redacts its own channels' secrets)."""
    hidden = sorted({s for s in secrets if s}, key=len, reverse=True)
    alerts = []
    for check in report.checks:
        if check.status != HealthStatus.UNHEALTHY:
            continue
        severity = Severity.CRITICAL if check.name in CRITICAL_HEALTH_CHECKS else Severity.HIGH
        advice = CHECK_ADVICE.get(check.name, "run `kpi-platform health` for the details.")
        body = "\n".join(
            [
                f"Health check `{check.name}` is unhealthy (score {check.score:g}/100, report at "
                f"{report.generated_at:%Y-%m-%d %H:%M} UTC): {redact(check.summary, hidden)}",
                f"What to do: {advice}",
                f"See {RUNBOOK} › Alerts.",
            ]
        )
        alerts.append(
            Alert(
                f"{HEALTH_ALERT_PREFIX}{check.name}",
                severity,
                f"Health check {check.name} is unhealthy",
                body,
            )
        )
    return alerts


def low_score_since(samples: Iterable[tuple[datetime, float]]) -> datetime | None:
    """When the latest unbroken stretch of scores below `SCORE_LOW_BELOW` began (the earliest sample of it), or
    None when the latest score is not below. Between two samples below, the score counts as below."""
    since: datetime | None = None
    for at, score in sorted(samples):
        since = (since or at) if score < SCORE_LOW_BELOW else None
    return since


def score_low_alert(report: HealthReport, recorded: Sequence[tuple[datetime, float]]) -> Alert | None:
    """`SCORE_LOW_KEY` when the scores `recorded` before `report`, and the report's own, have stayed below
    `SCORE_LOW_BELOW` for more than `SCORE_LOW_FOR`; None otherwise."""
    samples = [*(s for s in recorded if s[0] < report.generated_at), (report.generated_at, report.score)]
    since = low_score_since(samples)
    if since is None or report.generated_at - since <= SCORE_LOW_FOR:
        return None
    worst_checks = sorted(
        (c for c in report.checks if c.weight > 0 and c.score < 100), key=lambda c: (c.score, c.name)
    )
    listed = ", ".join(f"{c.name} {c.score:g}" for c in worst_checks[:5]) or "none"
    hours = (report.generated_at - since).total_seconds() / 3600.0
    body = "\n".join(
        [
            f"The platform's health score has stayed below {SCORE_LOW_BELOW:g} for {hours:.1f} h (since "
            f"{since:%Y-%m-%d %H:%M} UTC); now {report.score:g}/100, {report.status.value}.",
            f"Lowest checks: {listed}.",
            "What to do: run `kpi-platform health` and work through its unhealthy and degraded checks.",
            f"See {RUNBOOK} › Alerts.",
        ]
    )
    return Alert(
        SCORE_LOW_KEY, Severity.HIGH, f"Health score below {SCORE_LOW_BELOW:g} for over an hour", body
    )


def success_rate_alerts(report: HealthReport) -> list[Alert] | None:
    """One alert per success rate whose `ALERT_WINDOW_DAYS` value is below its target, key
    `success_rate:<rate>`; None when the report has no evaluated `success_rates` entry (nothing to judge)."""
    try:
        check = report.check(SUCCESS_RATES_CHECK)
    except KeyError:
        return None
    if "rates" not in check.details:
        return None
    alerts = []
    for rate in check.details["rates"]:
        if rate["window_days"] != ALERT_WINDOW_DAYS or rate["met"] is not False:
            continue
        target = TARGETS_BY_NAME[rate["rate"]]
        unit = " %" if target.unit == "%" else ""
        counted = (
            f"mean of {rate['total']} delivered days"
            if target.unit != "%"
            else f"{rate['good']:g} of {rate['total']}"
        )
        body = "\n".join(
            [
                f"{target.label.capitalize()} over the last {ALERT_WINDOW_DAYS} days is {rate['value']:g}{unit} "
                f"({counted}); the target is {target.describe()} (report at {report.generated_at:%Y-%m-%d %H:%M} UTC).",
                "What to do: `kpi-platform health` shows every rate per day and over 7 and 30 days, and the failed "
                "collections; README › Success rates defines each.",
                f"See {RUNBOOK} › Alerts.",
            ]
        )
        alerts.append(
            Alert(
                f"{SUCCESS_RATE_ALERT_PREFIX}{target.name}",
                Severity.MEDIUM,
                f"{target.label.capitalize()} below target ({rate['value']:g}{unit}, {ALERT_WINDOW_DAYS} d)",
                body,
            )
        )
    return alerts


def health_problems(
    report: HealthReport,
    open_problems: Iterable[OpenProblem],
    *,
    secrets: Iterable[str | None] = (),
    score_history: Sequence[tuple[datetime, float]] | None = None,
) -> list[Alert]:
    """The alerts to sync with scope `HEALTH_ALERT_PREFIX`: `health_alerts(report)`, `score_low_alert` judged on
    `score_history` (the recorded scores; None when they could not be read), plus each open problem of a check
    absent from the report, unchanged (a check not evaluated this time is not recovered), and the open score alert
    when the history could not be read."""
    alerts = health_alerts(report, secrets=secrets)
    evaluated = {f"{HEALTH_ALERT_PREFIX}{check.name}" for check in report.checks}
    if score_history is not None:
        evaluated.add(SCORE_LOW_KEY)
        low = score_low_alert(report, score_history)
        if low is not None:
            alerts.append(low)
    for problem in open_problems:
        if problem.key.startswith(HEALTH_ALERT_PREFIX) and problem.key not in evaluated:
            body = (
                f"Still open: `{problem.key.removeprefix(HEALTH_ALERT_PREFIX)}` could not be evaluated at "
                f"{report.generated_at:%Y-%m-%d %H:%M} UTC (first seen {problem.first_seen:%Y-%m-%d %H:%M} UTC).\n"
                f"See {RUNBOOK} › Alerts."
            )
            alerts.append(Alert(problem.key, problem.severity, problem.title, body))
    return alerts


def ping_heartbeat(
    url: str,
    *,
    secrets: Iterable[str | None] = (),
    timeout: tuple[float, float] = HEARTBEAT_TIMEOUT,
    session: requests.Session | None = None,
) -> str | None:
    """GET `url`; None on a 2xx answer, else the reason (with the URL and `secrets` redacted). Never raises."""
    found = {*env_secrets({settings.ENV_HEARTBEAT_URL: url}), *(s for s in secrets if s)}
    hidden = tuple(sorted(found, key=len, reverse=True))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{settings.ENV_HEARTBEAT_URL} is not an http(s) URL"
    try:
        with redacted_logs(hidden):
            response = (session or requests).get(url, timeout=timeout)
            response.close()
    except requests.RequestException as exc:
        return redact(f"{type(exc).__name__}: {exc}", hidden)
    if not 200 <= response.status_code < 300:
        return f"the monitor answered HTTP {response.status_code}"
    return None


def run_watchdog(
    report: HealthReport,
    *,
    warehouse: Warehouse | None,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], datetime] = _utcnow,
    log: logging.Logger = logger,
    session: requests.Session | None = None,
    score_history: Sequence[tuple[datetime, float]] | None = None,
) -> WatchdogResult:
    """Alert on `report`, its success rates and the missing clients, then ping the heartbeat if nothing is
    unhealthy. `score_history` are the scores the health report asset recorded (time, score), None when they could
    not be read (the score alert is then left as it is).

    `warehouse` None means it could not be opened: nothing can be recorded there, so nothing is sent (a message
    every 5 minutes for as long as it is down would drown the channels) and the heartbeat is withheld, which is
    what reports it. The missing clients are judged as of `report.generated_at`; `clock` is the notifier's (the
    alert state's timestamps), the wall clock by default.
    """
    env = os.environ if environ is None else environ
    # The notifier redacts the channels' secrets; the report may also quote a database's.
    found = [*env_secrets(env), env.get(settings.ENV_DAGSTER_PG_PASSWORD)]
    if warehouse is not None:
        found.append(warehouse.engine.url.password)
    secrets = tuple(sorted({s for s in found if s}, key=len, reverse=True))
    lines: list[str] = []
    health: SyncResult | None = None
    collection: SyncResult | None = None
    rates: SyncResult | None = None

    def failed(what: str, exc: Exception) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        lines.append(redact(f"alerts: {what} failed: {type(exc).__name__}: {reason}", secrets)[:500])

    if warehouse is None:
        lines.append("alerts: not sent, the warehouse (which keeps the alert state) cannot be read")
    else:
        notifier = Notifier.from_env(warehouse, environ=env, log=log, clock=clock)
        if not notifier.channels:
            lines.append(NO_CHANNEL)
        try:
            open_now = notifier.open_problems(scope_prefix=HEALTH_ALERT_PREFIX)
            problems = health_problems(report, open_now, secrets=secrets, score_history=score_history)
            health = notifier.sync(problems, HEALTH_ALERT_PREFIX)
        except Exception as exc:  # noqa: BLE001 - the watchdog reports its own failures and goes on
            failed("health", exc)
        try:
            below = success_rate_alerts(report)
            if below is not None:
                rates = notifier.sync(below, SUCCESS_RATE_ALERT_PREFIX)
        except Exception as exc:  # noqa: BLE001 - as above
            failed("success rates", exc)
        try:
            hours = escalation_hours_from_env(env, log=log)
            current = missing_client_alerts(warehouse, now_utc=report.generated_at, escalation_hours=hours)
            collection = notifier.sync(current, MISSING_CLIENTS_PREFIX)
        except Exception as exc:  # noqa: BLE001 - as above
            failed("missing clients", exc)
        for scope, result in (("health", health), ("success rates", rates), ("missing clients", collection)):
            if result is not None:
                lines.append(
                    f"alerts ({scope}): {len(result.open)} open, {len(result.notified)} notified, "
                    f"{len(result.resolved)} resolved"
                    + (f" ({', '.join(result.open)})" if result.open else "")
                )

    url = settings.heartbeat_url(env)
    if url is None:
        heartbeat = "off"
    elif report.status == HealthStatus.UNHEALTHY:
        heartbeat = "withheld"
        lines.append("heartbeat: not pinged, the platform is unhealthy")
    else:
        error = ping_heartbeat(url, secrets=secrets, session=session)
        heartbeat = "pinged" if error is None else "failed"
        lines.append("heartbeat: pinged" if error is None else f"heartbeat: ping failed: {error}")
    return WatchdogResult(
        health=health, collection=collection, heartbeat=heartbeat, lines=tuple(lines), rates=rates
    )
