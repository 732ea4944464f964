"""Plans for schedules and sensors, as plain functions: which client × date ranges to collect, and when."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from kpi_platform import settings
from kpi_platform.clients import Client

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class CollectionRequest:
    """One run: one client, one contiguous inclusive date range."""

    client_id: str
    start: date
    end: date
    run_key: str
    reason: str

    def tags(self) -> dict[str, str]:
        """Range tags make one run over the whole range (the same way a single-run backfill does)."""
        return {
            RANGE_START_TAG: f"{self.client_id}|{self.start.isoformat()}",
            RANGE_END_TAG: f"{self.client_id}|{self.end.isoformat()}",
            settings.CLIENT_TAG: self.client_id,
            "kpi/reason": self.reason,
        }


def lookback_window(local_today: date, lookback_days: int) -> tuple[date, date]:
    """The last `lookback_days` complete local days, clamped to the first partition."""
    first = date.fromisoformat(settings.PARTITIONS_START_DATE)
    end = local_today - timedelta(days=1)
    start = max(first, local_today - timedelta(days=lookback_days))
    return start, end


def plan_daily_collection(clients: Sequence[Client], now_utc: datetime) -> list[CollectionRequest]:
    """Active clients whose local clock reads their collection hour get one run over their lookback window.

    The schedule ticks hourly; each client is due once a day at `collection_hour` in its own timezone, and the
    run key (client + local date) makes a repeated tick in the same hour a no-op.
    """
    requests: list[CollectionRequest] = []
    for client in clients:
        if not client.active:
            continue
        local_now = now_utc.astimezone(ZoneInfo(client.timezone))
        if local_now.hour != client.settings.collection_hour:
            continue
        start, end = lookback_window(local_now.date(), client.settings.lookback_days)
        if end < start:
            continue
        requests.append(
            CollectionRequest(
                client_id=client.id,
                start=start,
                end=end,
                run_key=f"daily:{client.id}:{local_now.date().isoformat()}",
                reason="daily",
            )
        )
    return requests


# --- Gap healing ------------------------------------------------------------------------------------------------

#: Partition statuses as the healer sees them (Dagster's AssetPartitionStatus values, None = never attempted).
MATERIALIZED, FAILED, IN_PROGRESS = "MATERIALIZED", "FAILED", "IN_PROGRESS"
#: A transiently failed day is retried after this pause (the API may still be down; the breaker fails fast anyway).
TRANSIENT_COOLDOWN_S = 600.0
#: A day failing for a non-transient reason (token, permission, contract) waits 1 h, 2 h, 4 h ... up to 7 days.
NON_TRANSIENT_BASE_COOLDOWN_S = 3600.0
MAX_COOLDOWN_S = 7 * 24 * 3600.0
#: From this many non-transient failures on, a day is reported for a person instead of only retried.
REPORT_AFTER_FAILURES = 3


@dataclass(frozen=True)
class FailureMemory:
    """How often a client-day failed, when last, and whether the reason was transient."""

    count: int
    last_failed_ts: float
    non_transient: bool
    reason: str

    def cooldown_s(self) -> float:
        if not self.non_transient:
            return TRANSIENT_COOLDOWN_S
        return min(NON_TRANSIENT_BASE_COOLDOWN_S * 2 ** (self.count - 1), MAX_COOLDOWN_S)

    def retry_at(self) -> float:
        return self.last_failed_ts + self.cooldown_s()

    def to_json(self) -> list:
        return [self.count, self.last_failed_ts, self.non_transient, self.reason]

    @classmethod
    def from_json(cls, raw: Sequence) -> FailureMemory:
        return cls(int(raw[0]), float(raw[1]), bool(raw[2]), str(raw[3]))


@dataclass(frozen=True)
class HealingPlan:
    """What one tick requests, and what it holds back."""

    requests: tuple[CollectionRequest, ...]
    missing: int
    failed: int
    in_progress: int
    cooling: tuple[str, ...]
    reported: tuple[tuple[str, FailureMemory], ...]
    deferred_ranges: int


def _contiguous(days: list[date]) -> list[tuple[date, date]]:
    ranges: list[tuple[date, date]] = []
    for day in sorted(days):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def expected_keys(clients: Sequence[Client], *, today: date, horizon_days: int) -> list[str]:
    """`client|date` keys every active client should have over the horizon (the complete days before today)."""
    first = max(date.fromisoformat(settings.PARTITIONS_START_DATE), today - timedelta(days=horizon_days))
    days = [first + timedelta(days=i) for i in range((today - first).days)]
    return [f"{c.id}|{d.isoformat()}" for c in clients if c.active for d in days]


def plan_gap_healing(
    *,
    keys: Sequence[str],
    statuses: Mapping[str, str | None],
    reserved: set[str],
    failures: Mapping[str, FailureMemory],
    now_ts: float,
    max_runs: int,
    tick: int,
) -> HealingPlan:
    """Missing and failed days not queued, running, reserved by a backfill or cooling down, as contiguous
    ranges per client; the most recent ranges first, at most `max_runs` per tick."""
    todo: dict[str, list[date]] = {}
    missing = failed = in_progress = 0
    cooling: list[str] = []
    for key in keys:
        status = statuses.get(key)
        if status == MATERIALIZED:
            continue
        if status == IN_PROGRESS or key in reserved:
            in_progress += 1
            continue
        if status == FAILED:
            failed += 1
        else:
            missing += 1
        memory = failures.get(key)
        if memory is not None and now_ts < memory.retry_at():
            cooling.append(key)
            continue
        client_id, day = key.split("|")
        todo.setdefault(client_id, []).append(date.fromisoformat(day))
    ranges = [(client_id, start, end) for client_id, days in todo.items() for start, end in _contiguous(days)]
    ranges.sort(key=lambda r: (r[2], r[0]), reverse=True)
    requests = tuple(
        CollectionRequest(
            client_id, start, end, run_key=f"heal:{client_id}:{start}:{end}:{tick}", reason="heal"
        )
        for client_id, start, end in ranges[:max_runs]
    )
    reported = tuple(
        sorted(
            ((k, m) for k, m in failures.items() if m.non_transient and m.count >= REPORT_AFTER_FAILURES),
            key=lambda item: item[0],
        )
    )
    return HealingPlan(
        requests, missing, failed, in_progress, tuple(cooling), reported, max(0, len(ranges) - max_runs)
    )


def record_failures(
    failures: Mapping[str, FailureMemory],
    *,
    keys: Sequence[str],
    failed_ts: float,
    non_transient: bool,
    reason: str,
) -> dict[str, FailureMemory]:
    """Count one more failure for each key of a failed run."""
    updated = dict(failures)
    for key in keys:
        previous = updated.get(key)
        count = previous.count + 1 if previous else 1
        updated[key] = FailureMemory(count, failed_ts, non_transient, reason[:300])
    return updated


def keys_of_range(client_id: str, start: date, end: date) -> list[str]:
    return [f"{client_id}|{(start + timedelta(days=i)).isoformat()}" for i in range((end - start).days + 1)]
