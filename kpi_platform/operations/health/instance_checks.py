"""Health checks that read the Dagster instance (through `defs/run_history.py`): asset-check results, runs and
backfills in progress, the daemon's heartbeats and the run queue, the roadmap's success rates, the next scheduled
collection and the failed collections."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from kpi_platform.defs import run_history
from kpi_platform.operations import check_catalogue
from kpi_platform.operations.health import success_rates
from kpi_platform.operations.health.report import (
    ACTIVE_BACKFILL_STATUSES,
    DAEMON_HEARTBEAT_UNHEALTHY_S,
    DETAILS_MAX_ITEMS,
    QUEUED_RUN_STATUSES,
    RUN_QUEUE_AGE_DEGRADED_S,
    RUN_QUEUE_DAEMON,
    RUN_QUEUE_HEARTBEAT_STALE_S,
    RUNNING_RUN_STATUSES,
    CheckSpec,
    Finding,
    HealthContext,
    HealthStatus,
    _duration,
    _ratio_score,
)
from kpi_platform.operations.health.token_checks import check_token
from kpi_platform.operations.plans import (
    DAILY_COLLECTION_CRON,
    DAILY_COLLECTION_JOB,
    DAILY_COLLECTION_SCHEDULE,
    DAILY_COLLECTION_TIMEZONE,
    plan_daily_collection,
)
from kpi_platform.warehouse import as_utc


def check_asset_checks(ctx: HealthContext) -> Finding:
    """The latest result of every asset check of the code location. A failed blocking check (data was refused)
    is unhealthy, another failed ERROR check degraded; a failed WARN check ("worth a look", e.g. an anomaly) is
    listed and lowers the score but leaves the check healthy. When the latest evaluation is still planned (its run
    is going, or ended without a result, e.g. the collection failed before validating), the result before it is
    judged. Checks never evaluated are listed, not counted as failures. Score: share of evaluated checks passing."""
    instance = ctx.instance
    assert instance is not None
    passed: list[str] = []
    failed: list[dict[str, Any]] = []
    not_run: list[str] = []
    without_result: list[dict[str, Any]] = []
    for key in sorted(ctx.check_keys, key=lambda k: k.to_user_string()):
        name = key.to_user_string()
        result = run_history.check_result(instance, key)
        if result.latest_is_planned:
            assert result.latest is not None
            run = instance.get_run_by_id(result.latest.run_id)
            running = run is not None and not run.is_finished
            without_result.append({"check": name, "run_id": result.latest.run_id, "run_in_progress": running})
        record = result.finished
        if record is None:
            not_run.append(name)
        elif result.passed:
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


def check_in_progress(ctx: HealthContext) -> Finding:
    """Runs queued or running and backfills in progress. Informational (weight 0, always healthy): busy is not
    unhealthy, and a stuck queue is judged by `check_daemon`."""
    assert ctx.instance is not None
    queued = run_history.count_runs(ctx.instance, QUEUED_RUN_STATUSES, exclude_run_id=ctx.exclude_run_id)
    running = run_history.count_runs(ctx.instance, RUNNING_RUN_STATUSES, exclude_run_id=ctx.exclude_run_id)
    backfills = run_history.backfills_in(ctx.instance, ACTIVE_BACKFILL_STATUSES)
    summary = f"{queued + running} runs ({queued} queued, {running} running), {len(backfills)} backfills in progress"
    return Finding(
        status=HealthStatus.HEALTHY,
        score=100.0,
        summary=summary,
        details={
            "backfills": [
                {
                    "id": b.backfill_id,
                    "status": b.status.value,
                    "title": b.title,
                    "created_at": datetime.fromtimestamp(b.backfill_timestamp, UTC),
                }
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


def check_daemon(ctx: HealthContext) -> Finding:
    """The Dagster daemon (schedules, sensors, backfills, the run queue) from its heartbeats, and the run queue:
    QUEUED runs, which only the daemon's `RUN_QUEUE_DAEMON` starts. (NOT_STARTED runs were never submitted to the
    queue, so no daemon picks them up; `in_progress` counts them with the queued ones.)

    A daemon is alive when its latest heartbeat is at most `DAEMON_HEARTBEAT_UNHEALTHY_S` old at `now_utc`; the
    required ones follow the instance's dagster.yaml (`get_required_daemon_types`). The first rule that applies:

    1. Runs are queued and the run-queue daemon's heartbeat is missing or older than `RUN_QUEUE_HEARTBEAT_STALE_S`
       (5 min; that daemon's iterations are short, so Dagster's 30-minute tolerance is not needed): unhealthy,
       however young the queue, since it never drains.
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

    queue_length, oldest = run_history.oldest_queued_run(instance)
    oldest_run: dict[str, Any] | None = None
    oldest_age = 0.0
    if oldest is not None:
        created = as_utc(oldest.create_timestamp)
        assert created is not None
        oldest_age = round(max(0.0, (ctx.now_utc - created).total_seconds()), 1)
        run = oldest.dagster_run
        oldest_run = {"run_id": run.run_id, "job_name": run.job_name, "created_at": created}
    queue = (
        f"{queue_length} run{'s' if queue_length > 1 else ''} queued, oldest {_duration(oldest_age)}"
        if queue_length
        else "run queue empty"
    )
    n_alive = len(required) - len(down)
    alive_part = f"{n_alive}/{len(required)} daemons alive"

    queue_daemon_age = heartbeat_age(RUN_QUEUE_DAEMON)
    queue_daemon_stale = queue_daemon_age is None or queue_daemon_age > RUN_QUEUE_HEARTBEAT_STALE_S
    if queue_length and queue_daemon_stale:
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


#: The daily asset, whose runs are the collection runs.
DAILY_KPIS = dg.AssetKey(list(check_catalogue.DAILY_KPIS_ASSET))
#: The health report asset (`defs/health.py`), whose recorded scores the watchdog's score alert reads.
HEALTH_REPORT = dg.AssetKey(["platform", "health_report"])


def catalogue_check_keys() -> list[dg.AssetCheckKey]:
    """Every asset check of the platform, from the check catalogue (no Dagster definitions are built)."""
    return sorted(
        (dg.AssetCheckKey(dg.AssetKey(list(e.asset)), e.name) for e in check_catalogue.CHECKS),
        key=lambda k: k.to_user_string(),
    )


#: Failed collections are listed over this span before the report.
FAILED_COLLECTIONS_SPAN = timedelta(hours=24)
#: Ticks of the daily schedule looked at for the next one that collects someone (hourly ticks: two days).
NEXT_COLLECTION_TICKS = 48


def _collection_runs(ctx: HealthContext, since: datetime) -> list[success_rates.CollectionRun]:
    """The finished collection runs that ended after `since`. The run history is read once per report, over the
    longest span any check needs (the success rates'), and shared: a month of a thousand clients is 30,000 runs."""
    assert ctx.instance is not None
    if "collection_runs" not in ctx.shared:
        ctx.shared["collection_runs"] = run_history.finished_collection_runs(
            ctx.instance,
            client_ids=ctx.client_ids,
            since=min(since, success_rates.runs_since(ctx)),
            job_name=DAILY_COLLECTION_JOB,
            asset_key=DAILY_KPIS,
        )
    runs: list[success_rates.CollectionRun] = ctx.shared["collection_runs"]
    return [r for r in runs if r.ended_at > since]


def check_success_rates(ctx: HealthContext) -> Finding:
    """The roadmap's success rates per day and over 7 and 30 days against their targets
    (`operations/health/success_rates.py` defines each): collection and backfill/healing success from the run
    history, completeness, average quality and freshness from the warehouse and the run history."""
    runs = _collection_runs(ctx, success_rates.runs_since(ctx))
    return success_rates.rates_finding(success_rates.success_rates(ctx, runs))


def check_collections(ctx: HealthContext) -> Finding:
    """The next scheduled collection and the collection runs that failed in the last 24 hours.

    Next: the first tick of `daily_collection_schedule` after now at which some active client reaches its local
    collection hour (`plan_daily_collection`, the schedule's own plan), with those clients. Degraded when the
    schedule was stopped (the UI's toggle): no daily collection runs until it is started again. Failed: each failed
    collection run (retried ones left out) with its client, range, kind and error, and whether a run of that client
    succeeded after it (the client collects again; the failed range itself may still need repair). Otherwise informational (weight 0): failed days are judged by `missing_days`,
    `yesterday_collection` and the collection-failure alert."""
    instance = ctx.instance
    assert instance is not None
    state = run_history.schedule_state(instance, DAILY_COLLECTION_SCHEDULE, default_running=True)
    next_at: datetime | None = None
    next_clients: list[str] = []
    if state.running and ctx.clients:
        ticks = run_history.cron_ticks(DAILY_COLLECTION_CRON, DAILY_COLLECTION_TIMEZONE, ctx.now_utc)
        for _, tick in zip(range(NEXT_COLLECTION_TICKS), ticks, strict=False):
            planned = plan_daily_collection(ctx.clients, tick)
            if planned:
                next_at, next_clients = tick, sorted(p.client_id for p in planned)
                break

    runs = _collection_runs(ctx, ctx.now_utc - FAILED_COLLECTIONS_SPAN)
    runs = [r for r in runs if r.ended_at <= ctx.now_utc]
    failed = sorted((r for r in runs if not r.succeeded), key=lambda r: r.ended_at, reverse=True)
    listed: list[dict[str, Any]] = []
    for run in failed[:DETAILS_MAX_ITEMS]:
        error, message = run_history.step_failure(instance, run.run_id)
        listed.append(
            {
                "run_id": run.run_id,
                "client": run.client_id,
                "range": f"{run.start}..{run.end}",
                "kind": run.kind,
                "ended_at": run.ended_at,
                "error": error,
                "message": message.strip().splitlines()[0][:200] if message.strip() else "",
                "client_collected_since": any(
                    r.succeeded and r.client_id == run.client_id and r.ended_at > run.ended_at for r in runs
                ),
            }
        )

    if not state.running:
        status, next_part = (
            HealthStatus.DEGRADED,
            f"{DAILY_COLLECTION_SCHEDULE} is stopped: no daily collection",
        )
    elif next_at is not None:
        status = HealthStatus.HEALTHY
        shown = ", ".join(next_clients[:DETAILS_MAX_ITEMS]) + (
            " …" if len(next_clients) > DETAILS_MAX_ITEMS else ""
        )
        next_part = f"next collection {next_at:%Y-%m-%d %H:%M} UTC ({len(next_clients)}: {shown})"
    else:
        status, next_part = HealthStatus.HEALTHY, "no collection scheduled (no active client)"
    if failed:
        failed_part = f"{len(failed)} failed in 24 h: " + ", ".join(
            f"{f['client']} {f['range']} ({f['kind']}{', client collected since' if f['client_collected_since'] else ''})"
            for f in listed[:5]
        )
    else:
        failed_part = "no failed collection in 24 h"
    table: tuple[tuple[str, ...], ...] = ()
    if listed:
        table = (
            ("failed at (UTC)", "client", "range", "kind", "error", "client collected since"),
            *(
                (
                    f"{f['ended_at']:%Y-%m-%d %H:%M}",
                    f["client"],
                    f["range"],
                    f["kind"],
                    f"{f['error']}: {f['message']}" if f["message"] else f["error"],
                    "yes" if f["client_collected_since"] else "no",
                )
                for f in listed
            ),
        )
    metrics: dict[str, float] = {"failed_collections_24h": len(failed)}
    if next_at is not None:
        metrics["hours_to_next_collection"] = round((next_at - ctx.now_utc).total_seconds() / 3600.0, 2)
    return Finding(
        status=status,
        score=100.0 if status == HealthStatus.HEALTHY else 50.0,
        summary=f"{next_part}; {failed_part}",
        details={
            "schedule": {
                "name": state.name,
                "running": state.running,
                "cron": DAILY_COLLECTION_CRON,
                "timezone": DAILY_COLLECTION_TIMEZONE,
                "last_tick_at": state.last_tick_at,
            },
            "next_collection_at": next_at,
            "next_collection_clients": next_clients,
            "failed_collections": listed,
        },
        metrics=metrics,
        table=table,
    )


#: The report's checks that read the Dagster instance, with their weights; `HEALTH_CHECKS` places them among the
#: warehouse's. Apart, so that `kpi-platform health` evaluates them without importing the warehouse checks.
INSTANCE_CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("asset_checks", 1.0, check_asset_checks, needs_instance=True),
    CheckSpec("daemon", 2.0, check_daemon, needs_instance=True),
    CheckSpec("in_progress", 0.0, check_in_progress, needs_instance=True),
    CheckSpec("success_rates", 0.0, check_success_rates, needs_instance=True),
    CheckSpec("collections", 0.0, check_collections, needs_instance=True),
    # The days left before the Meta access token expires, from the latest daily debug_token answer.
    CheckSpec("token", 2.0, check_token, needs_instance=True),
)
