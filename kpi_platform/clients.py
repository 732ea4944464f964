"""Client registry: load and validate clients.yaml, and keep the warehouse and Dagster partitions in step with it.

A client id becomes part of every partition key (`client|date`), so ids are restricted to lowercase letters,
digits, `-` and `_`; `|` and `,` would break multi-partition keys and partition ranges.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from kpi_platform import settings

if TYPE_CHECKING:
    from kpi_platform.warehouse import Warehouse

CLIENT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
AD_ACCOUNT_RE = re.compile(r"^act_[0-9]{1,20}$")
_CLIENT_FIELDS = {"id", "name", "ad_account_id", "currency", "timezone", "active", "start_date", "settings"}
#: The fields of a warehouse `clients` row that the registry owns (Client.to_row).
_ROW_FIELDS = ("client_id", "name", "ad_account_id", "currency", "timezone", "active", "settings")
#: The key of the warehouse row's `settings` JSON that carries `Client.start_date` (the table has no column for it).
START_DATE_KEY = "start_date"
_SETTINGS_FIELDS = {
    "lookback_days",
    "completeness_target",
    "collection_hour",
    "freshness_deadline_hour",
    "ctr_pct_min",
    "ctr_pct_max",
    "cpc_min",
    "cpc_max",
    "min_daily_spend",
    "max_daily_spend",
    "min_daily_clicks",
    "max_daily_clicks",
    "max_conversion_rate_pct",
    "quality_score_target",
}
#: The quality-score limits, each pair (minimum, maximum); money in the client's currency.
_LIMIT_PAIRS: tuple[tuple[str, str], ...] = (
    ("min_daily_spend", "max_daily_spend"),
    ("min_daily_clicks", "max_daily_clicks"),
    ("ctr_pct_min", "ctr_pct_max"),
    ("cpc_min", "cpc_max"),
)


class ClientConfigError(ValueError):
    """clients.yaml is invalid; the message names the entry and the field."""


@dataclass(frozen=True)
class ClientSettings:
    """Optional per-client overrides; None means the platform default."""

    lookback_days: int = settings.DEFAULT_LOOKBACK_DAYS
    completeness_target: float = settings.DEFAULT_COMPLETENESS_TARGET
    #: Local hour (in the client's timezone) at which the daily collection runs.
    collection_hour: int = 6
    #: Local hour from which yesterday's data must be stored: the freshness check's deadline and the last day
    #: of the completeness window.
    freshness_deadline_hour: int = settings.FRESHNESS_DEADLINE_HOUR
    # The quality score's limits for a delivered day (`quality.rules.Thresholds`): spend and CPC in the client's
    # currency. Spend must also be above 0.
    ctr_pct_min: float = 0.1
    ctr_pct_max: float = 10.0
    cpc_min: float = 0.10
    cpc_max: float = 50.0
    max_daily_spend: float = 10_000.0
    max_daily_clicks: int = 100_000
    min_daily_spend: float = 0.0
    min_daily_clicks: int = 0
    #: Conversions above this share of the clicks are suspicious (listed among the day's issues, not scored).
    max_conversion_rate_pct: float = 10.0
    #: The client's average quality score over 30 days must be above this (`quality_score_acceptable`).
    quality_score_target: float = settings.DEFAULT_QUALITY_SCORE_TARGET


@dataclass(frozen=True)
class Client:
    """One advertiser: a Meta ad account and how to collect it."""

    id: str
    name: str
    ad_account_id: str
    currency: str
    timezone: str
    active: bool = True
    settings: ClientSettings = field(default_factory=ClientSettings)
    #: First day of the client's history: completeness and gap healing cover it up to the due day. None: the first
    #: day collected for the client (see `quality.history`).
    start_date: date | None = None

    def to_row(self) -> dict[str, Any]:
        """The row stored in the warehouse `clients` table; `start_date` rides in its `settings` JSON."""
        stored = asdict(self.settings)
        if self.start_date is not None:
            stored[START_DATE_KEY] = self.start_date.isoformat()
        return {
            "client_id": self.id,
            "name": self.name,
            "ad_account_id": self.ad_account_id,
            "currency": self.currency,
            "timezone": self.timezone,
            "active": self.active,
            "settings": stored,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Client:
        # Rows stored before the spend and clicks limits had defaults hold None for them: the default applies.
        stored = {k: v for k, v in (row.get("settings") or {}).items() if v is not None}
        start = stored.pop(START_DATE_KEY, None)
        return cls(
            id=row["client_id"],
            name=row["name"],
            ad_account_id=row["ad_account_id"],
            currency=row["currency"],
            timezone=row["timezone"],
            active=bool(row["active"]),
            settings=ClientSettings(**stored),
            start_date=date.fromisoformat(start) if start else None,
        )


def _fail(where: str, fld: str, problem: str) -> ClientConfigError:
    return ClientConfigError(f"clients.yaml {where}, field '{fld}': {problem}")


def _parse_settings(where: str, raw: Any) -> ClientSettings:
    if raw is None:
        return ClientSettings()
    if not isinstance(raw, Mapping):
        raise _fail(where, "settings", "must be a mapping")
    unknown = set(raw) - _SETTINGS_FIELDS
    if unknown:
        raise _fail(
            where, f"settings.{sorted(unknown)[0]}", f"unknown setting; allowed: {sorted(_SETTINGS_FIELDS)}"
        )
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(where, f"settings.{key}", f"must be a number, got {value!r}")
        values[key] = value
    if "lookback_days" in values and not (
        isinstance(values["lookback_days"], int) and 1 <= values["lookback_days"] <= 90
    ):
        raise _fail(where, "settings.lookback_days", "must be a whole number of days between 1 and 90")
    if "completeness_target" in values and not 0 < values["completeness_target"] <= 1:
        raise _fail(where, "settings.completeness_target", "must be a share in (0, 1], e.g. 0.995")
    if "collection_hour" in values and values["collection_hour"] not in range(24):
        raise _fail(where, "settings.collection_hour", "must be an hour 0-23")
    deadline = values.get("freshness_deadline_hour")
    if deadline is not None and not (isinstance(deadline, int) and 0 <= deadline <= 23):
        raise _fail(
            where,
            "settings.freshness_deadline_hour",
            f"must be a whole hour 0-23 (local time of the client's timezone), got {deadline!r}",
        )
    for low, high in _LIMIT_PAIRS:
        for key in (low, high):
            if key in values and values[key] < 0:
                raise _fail(where, f"settings.{key}", f"must not be negative, got {values[key]!r}")
    for key in ("min_daily_clicks", "max_daily_clicks"):
        if key in values:
            if not float(values[key]).is_integer():
                raise _fail(
                    where, f"settings.{key}", f"must be a whole number of clicks, got {values[key]!r}"
                )
            values[key] = int(values[key])
    rate = values.get("max_conversion_rate_pct")
    if rate is not None and not 0 < rate <= 100:
        raise _fail(
            where, "settings.max_conversion_rate_pct", f"must be a percentage in (0, 100], got {rate!r}"
        )
    target = values.get("quality_score_target")
    if target is not None and not 0 <= target < 100:
        raise _fail(
            where,
            "settings.quality_score_target",
            f"must be a score in [0, 100) (the 30-day average must be above it), got {target!r}",
        )
    merged = ClientSettings(**values)
    for low, high in _LIMIT_PAIRS:
        if getattr(merged, low) >= getattr(merged, high):
            raise _fail(
                where,
                f"settings.{low}",
                f"must be below {high} ({getattr(merged, low)!r} is not below {getattr(merged, high)!r})",
            )
    return merged


def _parse_start_date(where: str, raw: Any) -> date | None:
    """A calendar day (YAML `2025-03-01`, or the same as a quoted string), not before the first daily partition."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = date.fromisoformat(raw.strip())
        except ValueError:
            raise _fail(where, "start_date", f"{raw!r} is not a date; write it as YYYY-MM-DD") from None
    if isinstance(raw, datetime) or not isinstance(raw, date):
        raise _fail(where, "start_date", f"must be a date written as YYYY-MM-DD, got {raw!r}")
    first = date.fromisoformat(settings.PARTITIONS_START_DATE)
    if raw < first:
        raise _fail(
            where,
            "start_date",
            f"{raw.isoformat()} is before the first daily partition, {first.isoformat()}: days before it cannot "
            f"be collected; use {first.isoformat()} or later",
        )
    return raw


def parse_clients(document: Any) -> list[Client]:
    """Validate a parsed clients.yaml document; raise ClientConfigError naming the entry and field."""
    if not isinstance(document, Mapping) or not isinstance(document.get("clients"), list):
        raise ClientConfigError("clients.yaml: the top level must be a mapping with a 'clients:' list")
    clients: list[Client] = []
    seen_ids: dict[str, int] = {}
    seen_accounts: dict[str, str] = {}
    for index, entry in enumerate(document["clients"], start=1):
        where = f"entry #{index}"
        if not isinstance(entry, Mapping):
            raise ClientConfigError(f"clients.yaml {where}: must be a mapping of fields")
        if isinstance(entry.get("id"), str):
            where = f"entry #{index} (id '{entry['id']}')"
        unknown = set(entry) - _CLIENT_FIELDS
        if unknown:
            raise _fail(where, sorted(unknown)[0], f"unknown field; allowed: {sorted(_CLIENT_FIELDS)}")
        for required in ("id", "name", "ad_account_id", "currency", "timezone"):
            if not isinstance(entry.get(required), str) or not entry[required].strip():
                raise _fail(where, required, "is required and must be a non-empty string")
        client_id = entry["id"]
        if not CLIENT_ID_RE.match(client_id):
            raise _fail(
                where,
                "id",
                f"{client_id!r} is not a valid id: use lowercase letters, digits, '-' and '_' (max 64, "
                "starting with a letter or digit); '|' and ',' would break partition keys",
            )
        if client_id in seen_ids:
            raise _fail(where, "id", f"duplicate of entry #{seen_ids[client_id]}")
        seen_ids[client_id] = index
        account = entry["ad_account_id"]
        if not AD_ACCOUNT_RE.match(account):
            raise _fail(where, "ad_account_id", f"{account!r} must look like 'act_<digits>'")
        if account in seen_accounts:
            raise _fail(where, "ad_account_id", f"already used by client '{seen_accounts[account]}'")
        seen_accounts[account] = client_id
        currency = entry["currency"]
        if currency not in settings.KNOWN_CURRENCIES:
            raise _fail(where, "currency", f"{currency!r} is not a known ISO currency code")
        try:
            ZoneInfo(entry["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            raise _fail(where, "timezone", f"{entry['timezone']!r} is not an IANA timezone") from None
        active = entry.get("active", True)
        if not isinstance(active, bool):
            raise _fail(where, "active", "must be true or false")
        clients.append(
            Client(
                id=client_id,
                name=entry["name"].strip(),
                ad_account_id=account,
                currency=currency,
                timezone=entry["timezone"],
                active=active,
                settings=_parse_settings(where, entry.get("settings")),
                start_date=_parse_start_date(where, entry.get("start_date")),
            )
        )
    return clients


def load_clients(path: Path) -> list[Client]:
    """Read and validate clients.yaml; nothing is changed anywhere if it is invalid."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ClientConfigError(
            f"clients file not found: {path} (set KPI_CLIENTS_FILE or create clients.yaml)"
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClientConfigError(f"clients.yaml is not valid YAML: {exc}") from None
    return parse_clients(document)


def file_fingerprint(path: Path) -> str:
    """Content hash used as the sync sensor's cursor."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class ClientSyncPlan:
    """What a sync changes: partitions to add (never removed) and warehouse rows to upsert."""

    partitions_to_add: tuple[str, ...]
    clients: tuple[Client, ...]

    @property
    def active_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.clients if c.active)


def plan_sync(clients: Sequence[Client], existing_partitions: Sequence[str]) -> ClientSyncPlan:
    """Partitions are only ever added: removing one would hide a client's history in Dagster."""
    existing = set(existing_partitions)
    to_add = tuple(c.id for c in clients if c.id not in existing)
    return ClientSyncPlan(partitions_to_add=to_add, clients=tuple(clients))


def partition_removal_refusal(
    client_id: str, *, clients: Sequence[Client], registered: Iterable[str], partitions: Sequence[str]
) -> str | None:
    """Why the `clients` partition `client_id` must stay, or None when it may be removed: only a partition added
    by hand (the UI's "Add a partition") for a client that neither clients.yaml nor the warehouse knows."""
    if client_id in {c.id for c in clients}:
        return (
            f"client '{client_id}' is in clients.yaml, so its partition stays (to stop collecting it, set "
            "`active: false`)"
        )
    if client_id in set(registered):
        return (
            f"client '{client_id}' is registered in the warehouse (a former client, its history kept): its "
            "partition stays, so its history stays visible in Dagster"
        )
    if client_id not in partitions:
        return f"there is no client partition '{client_id}' (partitions: {', '.join(partitions) or 'none'})"
    return None


@dataclass(frozen=True)
class ClientSyncReport:
    """What a sync did: partitions added, warehouse rows added/updated, clients deactivated (history kept)."""

    partitions_added: tuple[str, ...]
    added: int
    updated: int
    unchanged: int
    deactivated: tuple[str, ...]


def sync_clients_to_warehouse(
    *, clients: Sequence[Client], warehouse: Any
) -> tuple[int, int, int, tuple[str, ...]]:
    """Upsert every client; a client that vanished from the file is deactivated, never deleted."""
    in_file = {c.id for c in clients}
    rows = [c.to_row() for c in clients]
    vanished = tuple(
        row["client_id"]
        for row in warehouse.list_clients()
        if row["client_id"] not in in_file and row["active"]
    )
    for row in warehouse.list_clients():
        if row["client_id"] in vanished:
            # Only the registry's own fields go back: the stored row also carries created_at / updated_at.
            kept = {name: row[name] for name in _ROW_FIELDS if name in row}
            rows.append({**kept, "active": False})
    result = warehouse.upsert_clients(rows)
    return len(result.added), len(result.updated), len(result.unchanged), vanished


def registered_clients(warehouse: Warehouse, *, active_only: bool = True) -> list[Client]:
    """The clients registered in the warehouse `clients` table (with their settings), active ones by default:
    what schedules, sensors, checks and the health report work from."""
    return [Client.from_row(row) for row in warehouse.list_clients(active_only=active_only)]
