"""Health checks that read the warehouse: yesterday's collection, missing and split days, hours since each
client's last collection, circuit breakers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.quality import rules
from kpi_platform.quality.history import read_histories
from kpi_platform.warehouse import Warehouse, as_utc, schema
from kpi_platform.warehouse.frames import typed_frame

if TYPE_CHECKING:
    pass

from kpi_platform.operations.health.report import (
    CLIENT_SCORES,
    COLLECTION_AGE_DEGRADED_H,
    COLLECTION_AGE_UNHEALTHY_H,
    DETAILS_MAX_ITEMS,
    MISSING_7D_UNHEALTHY,
    MISSING_DAY_WINDOWS,
    Finding,
    HealthContext,
    HealthStatus,
    _capped,
    _ratio_score,
    worst,
)


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
    """Missing client-days over each client's last 7 and 30 due days (idle days are rows, so present), and over its
    whole history: from its start_date (else its first collected day, as gap healing counts it) to its due day.

    Healthy when every client meets its completeness target in both windows, unhealthy when a client misses
    `MISSING_7D_UNHEALTHY` or more of its last 7 days, degraded otherwise. Score: present share of the 30-day window.
    The whole-history figures (missing days, oldest missing day) are reported beside them without changing the
    status: gap healing works them down oldest last, and the windows say whether it keeps up.
    """
    short, long = MISSING_DAY_WINDOWS
    per_client: dict[str, dict[str, Any]] = {}
    totals = {short: 0, long: 0}
    expected_long = present_long = 0
    below_target: list[str] = []
    unhealthy: list[str] = []
    histories = read_histories(
        ctx.warehouse,
        ctx.clients,
        ends={c.id: ctx.due_day(c) for c in ctx.clients},
        default_days=settings.HEALING_HORIZON_DAYS,
    )
    first_partition = date.fromisoformat(settings.PARTITIONS_START_DATE)
    for client in ctx.clients:
        history = histories[client.id]
        result = rules.completeness(
            {client.id: ctx.present.get(client.id, set())},
            clients={client.id: client.settings.completeness_target},
            today=ctx.due_day(client) + timedelta(days=1),
            windows=MISSING_DAY_WINDOWS,
            # Not before the client's start_date, as gap healing's recent window (a client without one is
            # expected to have the whole window, which healing fills).
            first_day={client.id: max(client.start_date or first_partition, first_partition)},
        )
        windows = {w.window_days: w for w in result.per_client}
        entry: dict[str, Any] = {}
        for n, w in windows.items():
            totals[n] += len(w.missing_dates)
            entry[f"missing_days_{n}d"] = len(w.missing_dates)
        entry["missing_dates"] = list(windows[long].missing_dates)
        entry["completeness_30d_pct"] = windows[long].share_pct
        entry["target_pct"] = windows[long].target_pct
        entry["history_start"] = history.start
        entry["missing_days_history"] = history.missing_days
        entry["oldest_missing_day"] = history.oldest_missing_day
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
        summary = (
            f"{totals[short]} missing in {short} d, {totals[long]} in {long} d ({short} d/{long} d: {listed})"
        )
    else:
        summary = f"no missing days in the last {long} days"
    missing_history = sum(h.missing_days for h in histories.values())
    oldest = min(
        ((h.oldest_missing_day, cid) for cid, h in histories.items() if h.oldest_missing_day is not None),
        default=None,
    )
    if oldest is not None:
        summary += f"; {missing_history} since each client's start, the oldest {oldest[0]} ({oldest[1]})"
    return Finding(
        status=status,
        score=_ratio_score(present_long, expected_long),
        summary=summary,
        details={
            "clients_below_target": below_target,
            "clients_unhealthy": unhealthy,
            "unhealthy_from_missing_7d": MISSING_7D_UNHEALTHY,
            "oldest_missing_day": oldest[0] if oldest is not None else None,
            "clients_with_history_gaps": sorted(cid for cid, h in histories.items() if h.missing_days),
            "per_client": per_client,
        },
        metrics={
            f"missing_days_{short}d": totals[short],
            f"missing_days_{long}d": totals[long],
            "missing_days_history": missing_history,
        },
    )


#: The client_daily_kpis columns `rules.split_days` reads, typed as `Warehouse.read_client_days` types them.
_SPLIT_DAY_COLUMNS = sa.Table(
    schema.client_daily_kpis.name,
    sa.MetaData(),
    *(
        sa.Column(c.name, c.type, nullable=c.nullable)
        for c in schema.client_daily_kpis.columns
        if c.name in ("client_id", "kpi_date", "spend", *settings.CONVERSION_COUNT_COLUMNS)
    ),
)


def read_split_day_rows(warehouse: Warehouse, windows: Mapping[str, tuple[date, date]]) -> pd.DataFrame:
    """The client_daily_kpis rows of each client's window (first, last day), only the columns the split-day rule
    reads, by client and day. The windows are filtered in the query, one condition per distinct window (clients
    of one due day share theirs), so no row outside them is sent."""
    table = schema.client_daily_kpis
    by_window: dict[tuple[date, date], list[str]] = {}
    for client_id, window in windows.items():
        by_window.setdefault(window, []).append(client_id)
    query = (
        sa.select(*(table.c[name] for name in _SPLIT_DAY_COLUMNS.columns.keys()))
        .where(
            sa.or_(
                sa.false(),
                *(
                    sa.and_(table.c.client_id.in_(sorted(ids)), table.c.kpi_date.between(first, last))
                    for (first, last), ids in sorted(by_window.items())
                ),
            )
        )
        .order_by(table.c.client_id, table.c.kpi_date)
    )
    with warehouse.engine.connect() as conn:
        rows = conn.execute(query).all()
    return typed_frame(rows, _SPLIT_DAY_COLUMNS)


def check_split_days(ctx: HealthContext) -> Finding:
    """Client-days of the last 30 due days where spend and conversions disagree (`rules.split_days`): the old
    system's silent failure. Any split day is degraded: wrong numbers are stored, collection still works."""
    long = max(MISSING_DAY_WINDOWS)
    if not ctx.clients:
        return Finding(HealthStatus.HEALTHY, 100.0, "no active clients", metrics={"split_days": 0})
    days = read_split_day_rows(ctx.warehouse, {c.id: ctx.window(c, long) for c in ctx.clients})
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
            out[client_id] = as_utc(fetched_at)
    return out


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
            parts.append(
                "late: "
                + ", ".join(f"{cid} {per_client[cid]['hours']:.0f} h" for cid in late[:DETAILS_MAX_ITEMS])
            )
        if never and ages:
            parts.append(f"never collected: {', '.join(never[:DETAILS_MAX_ITEMS])}")
        summary = "; ".join(parts)
    metrics: dict[str, float] = {"clients_never_collected": len(never)}
    if ages:
        metrics["max_hours_since_collection"] = max(ages)
    return Finding(
        status=worst(statuses.values()),
        score=round(sum(CLIENT_SCORES[s.value] for s in statuses.values()) / len(statuses), 1)
        if statuses
        else 100.0,
        summary=summary,
        details={
            "degraded_after_hours": COLLECTION_AGE_DEGRADED_H,
            "unhealthy_after_hours": COLLECTION_AGE_UNHEALTHY_H,
            "per_client": per_client,
        },
        metrics=metrics,
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
        b
        for b in read_breakers(ctx.warehouse)
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
                {
                    "name": b.name,
                    "state": b.state,
                    "fail_counter": b.fail_counter,
                    "opened_at": b.opened_at,
                    "half_open_at": b.half_open_at,
                    "last_error": b.last_error,
                }
                for b in relevant
            ],
            "clients_blocked": blocked_clients,
        },
        metrics={"open_breakers": len(relevant)},
    )
