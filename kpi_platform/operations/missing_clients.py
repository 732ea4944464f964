"""Clients whose daily collection did not happen, escalated: "daily collection incomplete".

A client without stored data for its due day is late from its freshness deadline on: the warehouse check
`fresh_per_client` fails and alerts MEDIUM. `escalation_hours` later (KPI_MISSING_CLIENT_ESCALATION_HOURS, default 3)
the client counts as missing here, and one CRITICAL alert names every missing client: "daily collection incomplete:
expected N clients, got M". It is resolved once every client has its day stored.

Plain Python over the warehouse (the active clients, when each was registered, their latest stored day) and the
clock. `alert_sync_sensor` and the watchdog (`kpi-platform health --alert`, outside Dagster) both sync
`missing_client_alerts` with scope `MISSING_CLIENTS_PREFIX`, so the alert fires with the daemon down too; the
alert state in the warehouse makes the two one notification.

The rule, per active client, with `cutoff = now - escalation_hours`: the client is missing when its latest stored
day is before the day that was due at `cutoff` (`client_required_day`, the same rule as `fresh_per_client`, in the
client's timezone). A client registered after `cutoff` is not judged yet: it gets `escalation_hours` from its
registration, as gap healing collects a new client's history within minutes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.operations.alerts import RUNBOOK, Alert, Severity
from kpi_platform.quality.warehouse_checks import client_required_day
from kpi_platform.warehouse import Warehouse, as_utc

logger = logging.getLogger(__name__)

MISSING_CLIENTS_PREFIX = "collection_incomplete:"
#: One problem for all clients: it stays open (and is notified once) until every client is collected.
MISSING_CLIENTS_KEY = f"{MISSING_CLIENTS_PREFIX}daily"
#: Days read back for each client's latest stored day; older data is shown as "none in the last N days".
LATEST_DAY_LOOKBACK_DAYS = 45
#: Clients described one per line in the alert body (every missing id is listed on the line above them).
DETAIL_LINES_MAX = 20


@dataclass(frozen=True)
class RegisteredClient:
    """A client with the moment it was registered in the warehouse (None: unknown, judged like an old one)."""

    client: Client
    registered_at: datetime | None = None


@dataclass(frozen=True)
class MissingClient:
    """An active client without its `expected_day` stored, `escalation_hours` after that day fell due (`due_at`)."""

    client_id: str
    expected_day: date
    last_day: date | None
    due_at: datetime


@dataclass(frozen=True)
class CollectionShortfall:
    """`expected`: active clients judged; `missing`: those among them without their due day, by client id."""

    expected: int
    missing: tuple[MissingClient, ...]
    escalation_hours: float

    @property
    def collected(self) -> int:
        return self.expected - len(self.missing)


def escalation_hours_from_env(
    environ: Mapping[str, str] | None = None, *, log: logging.Logger | logging.LoggerAdapter = logger
) -> float:
    """KPI_MISSING_CLIENT_ESCALATION_HOURS; an invalid value is logged as an error on `log` and the default is used,
    so a typo never stops the alert sensor or the watchdog."""
    try:
        return settings.missing_client_escalation_hours(environ)
    except ValueError as exc:
        default = settings.DEFAULT_MISSING_CLIENT_ESCALATION_HOURS
        log.error("%s; using the default, %g h", exc, default)
        return default


def _due_at(client: Client, day: date) -> datetime:
    """When `day` falls due for `client`: its freshness deadline hour, local, on the next day (in UTC)."""
    local = datetime.combine(
        day + timedelta(days=1),
        time(client.settings.freshness_deadline_hour),
        tzinfo=ZoneInfo(client.timezone),
    )
    return local.astimezone(UTC)


def find_missing_clients(
    clients: Sequence[RegisteredClient],
    latest_days: Mapping[str, date | None],
    *,
    now_utc: datetime,
    escalation_hours: float,
) -> CollectionShortfall:
    """The active ones of `clients` whose latest stored day (`latest_days`, None or absent: none) is before the day
    that was due `escalation_hours` before `now_utc` (timezone-aware)."""
    if now_utc.tzinfo is None:
        raise ValueError("now_utc must be timezone-aware")
    if not math.isfinite(escalation_hours) or escalation_hours < 0:
        raise ValueError(f"escalation_hours must be a finite number >= 0, got {escalation_hours!r}")
    cutoff = now_utc.astimezone(UTC) - timedelta(hours=escalation_hours)
    expected = 0
    missing: list[MissingClient] = []
    for entry in clients:
        client = entry.client
        registered_at = as_utc(entry.registered_at)
        if not client.active or (registered_at is not None and registered_at > cutoff):
            continue
        expected += 1
        expected_day = client_required_day(client, cutoff)
        last = latest_days.get(client.id)
        if last is None or last < expected_day:
            missing.append(MissingClient(client.id, expected_day, last, _due_at(client, expected_day)))
    return CollectionShortfall(
        expected=expected,
        missing=tuple(sorted(missing, key=lambda m: m.client_id)),
        escalation_hours=escalation_hours,
    )


def shortfall_alerts(shortfall: CollectionShortfall) -> list[Alert]:
    """The CRITICAL alert `MISSING_CLIENTS_KEY` when a client is missing, else none (sync resolves it)."""
    if not shortfall.missing:
        return []
    hours = f"{shortfall.escalation_hours:g} h"
    lines = [
        f"{len(shortfall.missing)} of {shortfall.expected} active clients have no stored data for their due day "
        f"{hours} after their freshness deadline (expected {shortfall.expected} clients, got {shortfall.collected}).",
        f"Missing clients: {', '.join(m.client_id for m in shortfall.missing)}",
    ]
    for m in shortfall.missing[:DETAIL_LINES_MAX]:
        last = m.last_day.isoformat() if m.last_day else f"none in the last {LATEST_DAY_LOOKBACK_DAYS} days"
        lines.append(
            f"- {m.client_id}: {m.expected_day.isoformat()} not stored (due {m.due_at:%Y-%m-%d %H:%M} UTC), "
            f"last stored day {last}"
        )
    if len(shortfall.missing) > DETAIL_LINES_MAX:
        lines.append(f"- … and {len(shortfall.missing) - DETAIL_LINES_MAX} more")
    lines += [
        "What to do: check that the Dagster daemon runs (`kpi-platform health`, check `daemon`) and "
        "`daily_collection_schedule` is on, the run queue, and failed runs of these clients (Runs, tag "
        f"`kpi/client`); then heal by hand ({RUNBOOK} › Healing by hand).",
        f"See {RUNBOOK} › Alerts.",
    ]
    title = f"daily collection incomplete: expected {shortfall.expected} clients, got {shortfall.collected}"
    return [Alert(MISSING_CLIENTS_KEY, Severity.CRITICAL, title, "\n".join(lines))]


def read_shortfall(
    warehouse: Warehouse, *, now_utc: datetime, escalation_hours: float
) -> CollectionShortfall:
    """`find_missing_clients` over the warehouse: its active clients with their registration moment, and each
    one's latest day with a `client_daily_kpis` row in the last `LATEST_DAY_LOOKBACK_DAYS` days."""
    rows = warehouse.list_clients(active_only=True)
    clients = [RegisteredClient(Client.from_row(row), as_utc(row.get("created_at"))) for row in rows]
    latest: dict[str, date | None] = {}
    if clients:
        # No timezone is a whole day ahead of UTC: every stored day is on or before tomorrow's UTC date.
        today = now_utc.astimezone(UTC).date()
        present = warehouse.present_days(
            start=today - timedelta(days=LATEST_DAY_LOOKBACK_DAYS),
            end=today + timedelta(days=1),
            client_ids=[c.client.id for c in clients],
        )
        latest = {client_id: max(days) if days else None for client_id, days in present.items()}
    return find_missing_clients(clients, latest, now_utc=now_utc, escalation_hours=escalation_hours)


def missing_client_alerts(warehouse: Warehouse, *, now_utc: datetime, escalation_hours: float) -> list[Alert]:
    """The alerts to sync with scope `MISSING_CLIENTS_PREFIX` at `now_utc`: one CRITICAL naming every active
    client still without its due day `escalation_hours` after its freshness deadline, or none."""
    return shortfall_alerts(read_shortfall(warehouse, now_utc=now_utc, escalation_hours=escalation_hours))
