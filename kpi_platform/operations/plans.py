"""Plans for schedules and sensors, as plain functions: which client × date ranges to collect, and when."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.keys import ClientRange, client_day_key, contiguous, keys_of_range, parse_key
from kpi_platform.quality.core import required_day
from kpi_platform.quality.history import ClientHistory

# --- Run time bounds --------------------------------------------------------------------------------------------

#: Dagster's run tag read by the run-monitoring daemon (`run_monitoring` in dagster.yaml): a run still going this
#: many seconds after it started is canceled and marked failed (Dagster exports it as `MAX_RUNTIME_SECONDS_TAG`).
MAX_RUNTIME_TAG = "dagster/max_runtime"
#: Every collection run's allowance before its days: the worst case of a healthy one-day run, which is Meta
#: throttling it twice for the longest wait the client accepts (2 × 15 min), plus its own retries.
MAX_RUNTIME_BASE_S = 1800.0
#: Each day of the range adds this much: paging, an async report's wait and the write, with room to spare (a
#: simulated year of one client takes seconds; a real one, minutes).
MAX_RUNTIME_PER_DAY_S = 60.0
#: No collection run is allowed more than this, whatever its range: a hung year-long run gives its slot back
#: within 6 h. dagster.yaml's `run_monitoring.max_runtime_seconds` is the same bound for runs without the tag.
MAX_RUNTIME_CAP_S = 6 * 3600.0


def max_runtime_seconds(days: int) -> int:
    """The time bound of a collection run over `days` client-days: `MAX_RUNTIME_BASE_S + MAX_RUNTIME_PER_DAY_S ×
    days`, at most `MAX_RUNTIME_CAP_S` (production: 1 day 31 min, the 28-day lookback 58 min, 90 days 2 h, a
    year 6 h). It bounds a hung run, not a slow one: the run-monitoring daemon ends a run past it, and gap
    healing requests its days again."""
    if days < 1:
        raise ValueError(f"a collection run covers at least one day, got {days}")
    return int(min(MAX_RUNTIME_CAP_S, MAX_RUNTIME_BASE_S + MAX_RUNTIME_PER_DAY_S * days))


def max_runtime_tags(days: int) -> dict[str, str]:
    """`{MAX_RUNTIME_TAG: seconds}` for a collection run over `days` client-days."""
    return {MAX_RUNTIME_TAG: str(max_runtime_seconds(days))}


def missing_max_runtime_tag(run_tags: Mapping[str, str], days: int) -> dict[str, str]:
    """The time bound a collection run adds to itself when it starts without one (a UI backfill's run, a
    `dagster asset materialize`); nothing for a run that has one. The monitoring daemon reads the run's tags at
    every poll, so a bound added at the start of the step is enforced from then on."""
    if MAX_RUNTIME_TAG in run_tags:
        return {}
    return max_runtime_tags(days)


#: The daily collection's job and schedule: an hourly tick (UTC) at which every active client whose local clock
#: reads its collection hour gets its run (`plan_daily_collection`).
DAILY_COLLECTION_JOB = "daily_collection_job"
DAILY_COLLECTION_SCHEDULE = "daily_collection_schedule"
DAILY_COLLECTION_CRON = "5 * * * *"
DAILY_COLLECTION_TIMEZONE = "UTC"


#: Gap-healing runs queue behind the runs someone asked for (the daily schedule's, a UI backfill's, priority 0):
#: healing is background repair. When clients are registered and a backfill of them is launched a moment later,
#: the healer's runs for the same days, requested first, would otherwise hold the run slots the backfill waits for
#: (29 s before its first run started, in `benchmarks/ui_backfill.py`); queued behind it, they find little left.
HEAL_RUN_PRIORITY = {"dagster/priority": "-1"}


@dataclass(frozen=True)
class CollectionRequest:
    """One run: one client, one contiguous inclusive date range."""

    client_id: str
    start: date
    end: date
    run_key: str
    reason: str

    def tags(self) -> dict[str, str]:
        """Range tags make one run over the whole range (the same way a single-run backfill does); the run's
        time bound is scaled to the range (`max_runtime_seconds`)."""
        rng = ClientRange(self.client_id, self.start, self.end)
        return {
            **rng.tags(),
            settings.CLIENT_TAG: self.client_id,
            "kpi/reason": self.reason,
            **max_runtime_tags(rng.days),
            **(HEAL_RUN_PRIORITY if self.reason == "heal" else {}),
        }


def missing_client_tag(run_tags: Mapping[str, str], client_ids: Iterable[str]) -> dict[str, str]:
    """The `kpi/client` tag a collection run adds to itself when it starts: `{CLIENT_TAG: client}` for a run of one
    client that lacks the tag (a UI backfill's run, a `dagster asset materialize`), else nothing.

    A run that already carries the tag keeps it. A run over several clients (only launched by hand with range
    tags spanning clients) stays untagged: a joined value such as "acme,globex" would match no client in the
    runbook's "filter runs by client", and a retry or re-execution copying it would count as a client of its own
    in the run queue's per-client limit. Correctness never depends on the tag: the warehouse serialises the writers
    of one client whatever tags their runs carry (`Warehouse._lock_client`).
    """
    clients = set(client_ids)
    if settings.CLIENT_TAG in run_tags or len(clients) != 1:
        return {}
    return {settings.CLIENT_TAG: clients.pop()}


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
#: A day failing for a non-transient or unknown reason (token, permission, contract, a bug) waits 1 h, 2 h, 4 h ...
NON_TRANSIENT_BASE_COOLDOWN_S = 3600.0
#: From this many non-transient failures in a row on, each further failure is reported for a person.
REPORT_AFTER_FAILURES = 3
#: After this many non-transient failures in a row the healer stops requesting the day: retrying cannot fix it, and
#: the day stays FAILED in Dagster (health report, alerts) until someone fixes the cause and backfills it.
GIVE_UP_AFTER_FAILURES = 5
#: The schedule requests a client's yesterday at minute 5 of its collection hour; the healer waits this much longer
#: before it treats yesterday as due, so it never requests the same day as the schedule's own run.
COLLECTION_GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class FailureMemory:
    """How often in a row a client-day failed for the same kind of reason, when last, and whether it was transient."""

    count: int
    last_failed_ts: float
    non_transient: bool
    reason: str

    def cooldown_s(self) -> float:
        if not self.non_transient:
            return TRANSIENT_COOLDOWN_S
        return NON_TRANSIENT_BASE_COOLDOWN_S * 2 ** (self.count - 1)

    @property
    def given_up(self) -> bool:
        return self.non_transient and self.count >= GIVE_UP_AFTER_FAILURES

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
    given_up: tuple[str, ...]
    deferred_ranges: int


def expected_keys(clients: Sequence[Client], *, today: date, horizon_days: int) -> list[str]:
    """`client|date` keys every active client should have over the horizon (the complete days before today)."""
    first = max(date.fromisoformat(settings.PARTITIONS_START_DATE), today - timedelta(days=horizon_days))
    days = [first + timedelta(days=i) for i in range((today - first).days)]
    return [client_day_key(c.id, d) for c in clients if c.active for d in days]


def collection_due_day(client: Client, now_utc: datetime) -> date:
    """The last local day the client's daily collection should already have loaded at `now_utc`.

    Day D is collected on D + 1 at `collection_hour` in the client's timezone, so D is due from that hour (plus
    `COLLECTION_GRACE`) on D + 1; before it, the day before is the last due one. Judged in local time, a client west
    of UTC never has its still-running local day requested, and no client has yesterday requested by the healer
    hours before the schedule collects it.
    """
    local_now = now_utc.astimezone(ZoneInfo(client.timezone)) - COLLECTION_GRACE
    return required_day(local_now, deadline_hour=client.settings.collection_hour)


def healing_window(client: Client, now_utc: datetime, horizon_days: int) -> tuple[date, date]:
    """The `horizon_days` days ending at the client's due day, not before the first partition nor the client's
    `start_date` (may be empty)."""
    end = collection_due_day(client, now_utc)
    start = max(date.fromisoformat(settings.PARTITIONS_START_DATE), end - timedelta(days=horizon_days - 1))
    return (start if client.start_date is None else max(start, client.start_date)), end


def healing_keys(clients: Sequence[Client], *, now_utc: datetime, horizon_days: int) -> list[str]:
    """`client|date` keys every active client should have by now: its healing window, judged in its own timezone."""
    keys: list[str] = []
    for client in clients:
        if client.active:
            start, end = healing_window(client, now_utc, horizon_days)
            keys += keys_of_range(client.id, start, end) if start <= end else []
    return keys


#: Days held back (cooling down, given up) are skipped by the history's per-tick cap, up to this many times it.
HISTORY_SCAN_FACTOR = 5


def _days_back(client_id: str, ranges: Sequence[tuple[date, date]]) -> Iterator[tuple[int, str]]:
    for start, end in ranges:
        for n in range((end - start).days + 1):
            day = end - timedelta(days=n)
            yield -day.toordinal(), client_id


def history_gap_keys(
    histories: Mapping[str, ClientHistory],
    *,
    before: Mapping[str, date],
    failures: Mapping[str, FailureMemory],
    now_ts: float,
    max_days: int,
) -> list[str]:
    """Missing days of each client's history older than its healing window (before its `before` day), newest first
    across clients: up to `max_days` of them that may be requested, plus those held back on the way (cooling down
    or given up), which do not count, so that days a person must fix do not starve the older gaps. At most
    `HISTORY_SCAN_FACTOR` × `max_days` days are returned all the same: a tick stays bounded when years of days are
    held back (a token broken for long), and the older gaps behind them wait until they are fixed.

    The warehouse says these days are missing (`quality.history`); Dagster's statuses, read for these keys only,
    still say whether they are queued, running or failed. Days beyond `max_days` wait for later ticks.
    """
    streams = []
    for client_id, history in histories.items():
        cutoff = before.get(client_id)
        if cutoff is None:
            continue
        older = [
            (start, min(end, cutoff - timedelta(days=1)))
            for start, end in history.missing_ranges
            if start < cutoff
        ]
        streams.append(_days_back(client_id, older))
    keys: list[str] = []
    budget = max_days
    # Each stream runs newest first, so the merge visits every client's missing days newest first overall.
    for negative_ordinal, client_id in heapq.merge(*streams):
        if budget <= 0 or len(keys) >= HISTORY_SCAN_FACTOR * max_days:
            break
        key = client_day_key(client_id, date.fromordinal(-negative_ordinal))
        keys.append(key)
        memory = failures.get(key)
        if memory is None or not (memory.given_up or now_ts < memory.retry_at()):
            budget -= 1
    return keys


def prune_failures(
    failures: Mapping[str, FailureMemory],
    *,
    clients: Sequence[Client],
    now_utc: datetime,
    horizon_days: int,
    statuses: Mapping[str, str | None],
    histories: Mapping[str, ClientHistory] | None = None,
) -> dict[str, FailureMemory]:
    """The failure memory the cursor keeps: active clients' days from their window start on, not materialized, and
    with `histories`, the older days of their history the warehouse still misses (a given-up day stays given up
    once it is older than the window; a day stored meanwhile, by a backfill say, is forgotten).

    Days after the due day are kept: a schedule run can fail for yesterday before the healer's due day reaches it,
    and that failure should still cool the day down once it is due.
    """
    histories = histories or {}
    starts = {c.id: healing_window(c, now_utc, horizon_days)[0] for c in clients if c.active}
    kept: dict[str, FailureMemory] = {}
    for key, memory in failures.items():
        client_id, day = parse_key(key)
        if client_id not in starts:
            continue
        if day >= starts[client_id]:
            keep = statuses.get(key) != MATERIALIZED
        else:
            history = histories.get(client_id)
            keep = history is not None and history.is_missing(day)
        if keep:
            kept[key] = memory
    return kept


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
    """Missing and failed days not queued, running, reserved by a backfill, cooling down or given up, as
    contiguous ranges per client; the most recent ranges first, at most `max_runs` per tick."""
    todo: dict[str, list[date]] = {}
    missing = failed = in_progress = 0
    cooling: list[str] = []
    given_up: list[str] = []
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
        if memory is not None and memory.given_up:
            given_up.append(key)
            continue
        if memory is not None and now_ts < memory.retry_at():
            cooling.append(key)
            continue
        client_id, day = parse_key(key)
        todo.setdefault(client_id, []).append(day)
    ranges = [(client_id, start, end) for client_id, days in todo.items() for start, end in contiguous(days)]
    ranges.sort(key=lambda r: (r[2], r[0]), reverse=True)
    requests = tuple(
        CollectionRequest(
            client_id, start, end, run_key=f"heal:{client_id}:{start}:{end}:{tick}", reason="heal"
        )
        for client_id, start, end in ranges[:max_runs]
    )
    return HealingPlan(
        requests,
        missing,
        failed,
        in_progress,
        tuple(cooling),
        tuple(given_up),
        max(0, len(ranges) - max_runs),
    )


def record_failures(
    failures: Mapping[str, FailureMemory],
    *,
    keys: Sequence[str],
    failed_ts: float,
    non_transient: bool,
    reason: str,
) -> dict[str, FailureMemory]:
    """Count one more failure for each key of a failed run (feed runs oldest first).

    Only failures of the same kind count in a row: a transient failure after hard ones (an outage while the token
    was being rotated, say) says nothing about the hard cause, so the non-transient count starts again after it.
    """
    updated = dict(failures)
    for key in keys:
        previous = updated.get(key)
        same_kind = previous is not None and previous.non_transient == non_transient
        count = previous.count + 1 if same_kind and previous is not None else 1
        updated[key] = FailureMemory(count, failed_ts, non_transient, reason[:300])
    return updated


def failure_reports(failures: Mapping[str, FailureMemory], *, recorded: Iterable[str]) -> list[str]:
    """One line per client, count and reason for the days whose failure was just `recorded` and that need a person
    (from `REPORT_AFTER_FAILURES` non-transient failures in a row on). A day is recorded once per failed run, so
    each escalation of its cool-down is reported once, not on every tick."""
    groups: dict[tuple[str, FailureMemory], list[date]] = {}
    for key in set(recorded):
        memory = failures.get(key)
        if memory is None or not memory.non_transient or memory.count < REPORT_AFTER_FAILURES:
            continue
        client_id, day = parse_key(key)
        groups.setdefault((client_id, memory), []).append(day)
    lines: list[str] = []
    for (client_id, memory), days in sorted(groups.items(), key=lambda g: (g[0][0], min(g[1]))):
        spans = ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in contiguous(days))
        if memory.given_up:
            then = "no longer requested: fix the cause, then backfill these days (README › Healing by hand)"
        else:
            then = f"next attempt in {memory.cooldown_s() / 3600:.0f} h"
        lines.append(
            f"{client_id} {spans} failed {memory.count} times in a row for a non-transient reason; {then}: "
            f"{memory.reason}"
        )
    return lines
