"""Named constants and environment lookups: Meta field lists, conversion action types, defaults, paths.

Everything that names a Meta API detail or a platform default lives here with its source, so the rest of the
code reads one place. Environment variables are read by functions at call time, never at import.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

# --- Meta Marketing API ---------------------------------------------------------------------------------------

META_GRAPH_URL = "https://graph.facebook.com"
META_API_VERSION = "v23.0"
#: The in-process simulator is addressed by this pseudo base URL; the requests adapter is mounted on it.
SIMULATOR_BASE_URL = "http://meta-simulator.invalid"

#: Campaign-level insight fields we request (explicit: never rely on Meta's defaults).
INSIGHTS_FIELDS: tuple[str, ...] = (
    "account_id",
    "account_currency",
    "campaign_id",
    "campaign_name",
    "date_start",
    "date_stop",
    "impressions",
    "clicks",
    "spend",
    "ctr",
    "cpc",
    "actions",
    "action_values",
)
#: Meta's `level` parameter of the insights edge: the object rows are broken down by.
InsightsLevel = Literal["account", "campaign", "adset", "ad"]
#: Meta's `time_increment` parameter: days per row (1-90), one row per month, or one row for the whole range.
TimeIncrement = int | Literal["monthly", "all_days"]
INSIGHTS_LEVEL: Final[InsightsLevel] = "campaign"
#: Meta's default is `all_days`; daily rows need an explicit 1.
INSIGHTS_TIME_INCREMENT: Final[TimeIncrement] = 1
INSIGHTS_PAGE_LIMIT = 500
#: Meta's `async_status` of an async report run (`Job Completed` can still be below 100 %).
AsyncStatus = Literal[
    "Job Not Started", "Job Started", "Job Running", "Job Completed", "Job Failed", "Job Skipped"
]
#: Ranges longer than this go through the async report flow (POST -> report_run_id -> poll -> page).
ASYNC_THRESHOLD_DAYS = 31
ASYNC_MAX_WAIT_SECONDS = 300.0
ASYNC_POLL_SECONDS = 2.0
ASYNC_FIRST_POLL_SECONDS = 0.25
#: (connect, read) timeout for every HTTP request.
HTTP_TIMEOUT: tuple[float, float] = (10.0, 60.0)
MAX_ATTEMPTS = 5
#: Insights history is limited to 37 months (Airbyte: FACEBOOK_INSIGHTS_RETENTION_PERIOD).
INSIGHTS_RETENTION_MONTHS = 37

# Error codes (Graph API error envelope, see docs/meta-insights-api.md §2.4).
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
TRANSIENT_CODES = frozenset({1, 2, 960})
TOKEN_CODES = frozenset({190, 102, 10, *range(200, 300)})
QUERY_TOO_LARGE = frozenset({(100, 1487534), (100, 1504018)})
#: Subcodes of code 2 that are not transient (invalid breakdowns / metrics).
NON_TRANSIENT_SUBCODES = frozenset({1504041, 1504042})


@dataclass(frozen=True)
class ConversionMetric:
    """How one conversion column is read from the `actions` / `action_values` lists.

    Meta's action types nest (`lead` already contains `offsite_conversion.fb_pixel_lead`), so the list is never
    summed: the first `preferred` type present wins; only if none is present are the `disjoint_parts` added up,
    and those are chosen so that no part contains another.
    """

    column: str
    preferred: tuple[str, ...]
    disjoint_parts: tuple[str, ...] = ()
    from_values: bool = False  # read `action_values` (money) instead of `actions` (counts)


CONVERSION_METRICS: tuple[ConversionMetric, ...] = (
    ConversionMetric(
        "calls",
        preferred=("click_to_call_native_call_placed", "click_to_call_call_confirm"),
    ),
    ConversionMetric(
        "contacts",
        preferred=("contact_total",),
        disjoint_parts=("contact_website", "contact_mobile_app", "contact_offline"),
    ),
    ConversionMetric(
        "leads",
        preferred=("lead", "leadgen_grouped"),
        disjoint_parts=("onsite_conversion.lead_grouped", "offsite_conversion.fb_pixel_lead"),
    ),
    ConversionMetric(
        "reservations",
        preferred=("schedule_total",),
        disjoint_parts=("schedule_website", "schedule_mobile_app", "schedule_offline"),
    ),
    ConversionMetric(
        "reservation_value",
        preferred=("schedule_total",),
        disjoint_parts=("schedule_website", "schedule_mobile_app", "schedule_offline"),
        from_values=True,
    ),
)
CONVERSION_COLUMNS: tuple[str, ...] = tuple(m.column for m in CONVERSION_METRICS)
#: The conversion columns that count events; `reservation_value` is money, not a count.
CONVERSION_COUNT_COLUMNS: tuple[str, ...] = tuple(m.column for m in CONVERSION_METRICS if not m.from_values)
#: The columns that add up over campaigns, days and months (CTR and CPC are recomputed from them, never summed).
SUM_COLUMNS: tuple[str, ...] = ("spend", "impressions", "clicks", *CONVERSION_COLUMNS)

# --- Platform defaults ------------------------------------------------------------------------------------------

#: First day of the daily partitions. Meta keeps 37 months of insights.
PARTITIONS_START_DATE = "2024-01-01"
#: Meta restates conversions for up to 28 days ("do not change after 28 days of being reported").
DEFAULT_LOOKBACK_DAYS = 28
#: A month's summary is `final` this many days after the month ends, `provisional` before.
MONTH_FINAL_AFTER_DAYS = 28
DEFAULT_COMPLETENESS_TARGET = 0.995
#: A client's average quality score over 30 days must be above this (the roadmap's target; `quality_score_target`).
DEFAULT_QUALITY_SCORE_TARGET = 95.0
QUICKSTART_DAYS = 90
#: Gap healing judges the last this many days by Dagster's partition statuses (missing, failed, in progress), and
#: requests at most this many runs per sensor tick, the most recent ranges first.
HEALING_HORIZON_DAYS = 90
HEALING_MAX_RUNS_PER_TICK = 20
#: Older days of a client's history (from its `start_date` in clients.yaml, else its first collected day) are healed
#: when the warehouse has no row for them: at most this many such client-days per tick, newest first (about three
#: years of one client, or a week of 150), so the oldest gaps come last and a tick's work stays bounded.
HEALING_HISTORY_DAYS_PER_TICK = 1000
#: Local hour (client timezone) from which yesterday's data must be stored: the freshness check fails after it and
#: the completeness window ends on yesterday from then on (the day before until then). Default of the per-client
#: `freshness_deadline_hour` in clients.yaml; collection runs at 06:00 local by default, so 9 leaves three hours.
FRESHNESS_DEADLINE_HOUR = 9
KNOWN_CURRENCIES = frozenset(
    {"USD", "EUR", "GBP", "PLN", "CZK", "SEK", "NOK", "DKK", "CHF", "CAD", "AUD", "NZD", "JPY", "HUF", "RON"}
)
#: Tag carried by every run of one client, so the run queue can allow one run per client at a time.
CLIENT_TAG = "kpi/client"
#: Concurrency pool bounding simultaneous Meta API calls across runs.
META_API_POOL = "meta_api"
SOURCE_SIMULATOR = "simulator"
SOURCE_META = "meta_api"
#: `source` of forecast rows in query results and exports: never stored in the fact tables (see forecast.py).
SOURCE_FORECAST = "forecast"

# --- Platform activity ------------------------------------------------------------------------------------------

#: `metric_type` of the agency's own platform activity in `daily_metrics`: the kind of figure, a count of rows.
ACTIVITY_METRIC_TYPE = "count"
#: The built-in activity metrics (`metric_category` in `daily_metrics`): totals count rows existing at snapshot
#: time created before the day's end; `*_created` those created that day.
ACTIVITY_METRICS: tuple[str, ...] = (
    "users_total",
    "posts_total",
    "comments_total",
    "posts_created",
    "comments_created",
)
#: Seed of the demo application database, so every embedded default shows the same history.
DEMO_APP_DB_SEED = 7
#: Longest range (days, inclusive) a query or export answers unless a longer one is asked for explicitly.
MAX_QUERY_DAYS = 366

#: Circuit breakers on the Meta API (one for the whole API, one per ad account), shared by all runs through the
#: warehouse: open after this many consecutive outage failures, let a trial call through after the cool-down.
BREAKER_FAIL_MAX = 5
BREAKER_RESET_TIMEOUT_S = 900
BREAKER_API_NAME = "meta_api"

#: Pacing from Meta's usage headers (meta/pacing.py), shared by all runs through the warehouse table `api_pacing`:
#: below the threshold (percent of any usage figure) calls go out at once; above it each call of the account waits
#: in proportion, up to the cap; at 100 % it waits Meta's `estimated_time_to_regain_access`.
PACING_THRESHOLD_PCT = 75.0
PACING_MAX_DELAY_S = 60.0
#: The `api_pacing` key of the app-wide figures (X-App-Usage, `app_id_util_pct`); ad accounts use `act_<id>`.
PACING_APP_KEY = "app"

#: Default names of the warehouse roles on PostgreSQL: owner (owns the tables, runs migrations), writer (runs),
#: reader (exports, queries). `kpi-platform db roles --owner/--writer/--reader` names others.
DB_OWNER_ROLE = "kpi_owner"
DB_WRITER_ROLE = "kpi_writer"
DB_READER_ROLE = "kpi_reader"

# --- Environment ------------------------------------------------------------------------------------------------

ENV_TOKEN = "META_ACCESS_TOKEN"
ENV_META_URL = "KPI_META_API_URL"
ENV_WAREHOUSE_URL = "KPI_WAREHOUSE_URL"
#: Least-privilege URLs on PostgreSQL (see warehouse/roles.py): read-only exports and queries, migrations, and
#: the role administration of `kpi-platform db roles`. Each falls back to KPI_WAREHOUSE_URL when unset.
ENV_WAREHOUSE_READER_URL = "KPI_WAREHOUSE_READER_URL"
ENV_WAREHOUSE_OWNER_URL = "KPI_WAREHOUSE_OWNER_URL"
ENV_WAREHOUSE_ADMIN_URL = "KPI_WAREHOUSE_ADMIN_URL"
#: Passwords given to the warehouse roles by `kpi-platform db roles`; a role created without one is NOLOGIN.
ENV_DB_OWNER_PASSWORD = "KPI_DB_OWNER_PASSWORD"
ENV_DB_WRITER_PASSWORD = "KPI_DB_WRITER_PASSWORD"
ENV_DB_READER_PASSWORD = "KPI_DB_READER_PASSWORD"
ENV_APP_DB_URL = "KPI_APP_DB_URL"
ENV_DATA_DIR = "KPI_DATA_DIR"
ENV_CLIENTS_FILE = "KPI_CLIENTS_FILE"
ENV_SIMULATOR_FAULTS = "KPI_SIMULATOR_FAULTS"
#: Usage percentage (0 < x < 100) above which Meta API calls are paced; default PACING_THRESHOLD_PCT.
ENV_PACING_THRESHOLD_PCT = "KPI_META_PACING_THRESHOLD_PCT"
#: Longest proportional pacing delay in seconds (> 0), reached just below 100 %; default PACING_MAX_DELAY_S.
ENV_PACING_MAX_DELAY_S = "KPI_META_PACING_MAX_DELAY_S"
ENV_REQUIRE_POSTGRES = "KPI_REQUIRE_POSTGRES"
ENV_TEST_PG_URL = "KPI_TEST_POSTGRES_URL"

# Production deployment (deploy/dagster.yaml, deploy/workspace.yaml): Dagster's own PostgreSQL database and the
# code-location server, all read by Dagster from the environment (never written into a file).
ENV_DAGSTER_PG_HOST = "DAGSTER_PG_HOST"
ENV_DAGSTER_PG_PORT = "DAGSTER_PG_PORT"
ENV_DAGSTER_PG_USER = "DAGSTER_PG_USER"
ENV_DAGSTER_PG_PASSWORD = "DAGSTER_PG_PASSWORD"
ENV_DAGSTER_PG_DB = "DAGSTER_PG_DB"
ENV_CODE_SERVER_HOST = "KPI_CODE_SERVER_HOST"
ENV_CODE_SERVER_PORT = "KPI_CODE_SERVER_PORT"
DEFAULT_CODE_SERVER_PORT = 4266
DEFAULT_WEBSERVER_PORT = 3000
#: The code location's name in both workspaces (embedded and production).
CODE_LOCATION_NAME = "kpi"

# Alert channels, each optional (unset = channel off). Webhook URLs and the SMTP password are secrets.
ENV_ALERT_SLACK_WEBHOOK = "KPI_ALERT_SLACK_WEBHOOK"
ENV_ALERT_DISCORD_WEBHOOK = "KPI_ALERT_DISCORD_WEBHOOK"
ENV_ALERT_SMTP_HOST = "KPI_ALERT_SMTP_HOST"
ENV_ALERT_SMTP_PORT = "KPI_ALERT_SMTP_PORT"
ENV_ALERT_SMTP_USER = "KPI_ALERT_SMTP_USER"
ENV_ALERT_SMTP_PASSWORD = "KPI_ALERT_SMTP_PASSWORD"
#: none | starttls | ssl (default starttls).
ENV_ALERT_SMTP_TLS = "KPI_ALERT_SMTP_TLS"
ENV_ALERT_EMAIL_FROM = "KPI_ALERT_EMAIL_FROM"
#: Comma-separated recipients.
ENV_ALERT_EMAIL_TO = "KPI_ALERT_EMAIL_TO"
#: Minimum severity per channel (LOW | MEDIUM | HIGH | CRITICAL).
ENV_ALERT_SLACK_MIN_SEVERITY = "KPI_ALERT_SLACK_MIN_SEVERITY"
ENV_ALERT_DISCORD_MIN_SEVERITY = "KPI_ALERT_DISCORD_MIN_SEVERITY"
ENV_ALERT_EMAIL_MIN_SEVERITY = "KPI_ALERT_EMAIL_MIN_SEVERITY"
#: Chat hears about everything someone should act on today; email only about data not being collected at all.
DEFAULT_ALERT_MIN_SEVERITY = {"slack": "HIGH", "discord": "HIGH", "email": "CRITICAL"}

# The watchdog (`kpi-platform health --alert`, run outside Dagster every 5 minutes).
#: Optional outbound heartbeat (dead-man's switch of an uptime monitor, e.g. healthchecks.io): an http(s) URL the
#: watchdog GETs while nothing is unhealthy. A secret like the webhooks: whoever has it can fake "all is well".
ENV_HEARTBEAT_URL = "KPI_HEARTBEAT_URL"
#: Hours after a client's freshness deadline at which a client still without its due day is reported missing
#: (CRITICAL "daily collection incomplete"); at the deadline itself `fresh_per_client` alerts MEDIUM.
ENV_MISSING_CLIENT_ESCALATION_HOURS = "KPI_MISSING_CLIENT_ESCALATION_HOURS"
DEFAULT_MISSING_CLIENT_ESCALATION_HOURS = 3.0


def project_root() -> Path:
    """The directory holding clients.yaml and the local data folder (the working directory by default)."""
    return Path.cwd()


def data_dir() -> Path:
    """Git-ignored local folder for the embedded default (SQLite warehouse, Dagster home)."""
    return Path(os.environ.get(ENV_DATA_DIR) or project_root() / ".kpi_local").resolve()


def warehouse_url() -> str:
    """KPI_WAREHOUSE_URL, or an SQLite file in the local data folder."""
    url = os.environ.get(ENV_WAREHOUSE_URL)
    if url:
        return url
    return f"sqlite:///{data_dir() / 'warehouse.sqlite'}"


def warehouse_reader_url() -> str:
    """KPI_WAREHOUSE_READER_URL (the read-only role, for exports and queries), else `warehouse_url()`."""
    return os.environ.get(ENV_WAREHOUSE_READER_URL) or warehouse_url()


def warehouse_owner_url() -> str:
    """KPI_WAREHOUSE_OWNER_URL (the role owning the tables, for migrations), else `warehouse_url()`."""
    return os.environ.get(ENV_WAREHOUSE_OWNER_URL) or warehouse_url()


def warehouse_admin_url() -> str:
    """KPI_WAREHOUSE_ADMIN_URL (a role allowed to create roles, for `db roles`), else `warehouse_owner_url()`."""
    return os.environ.get(ENV_WAREHOUSE_ADMIN_URL) or warehouse_owner_url()


def app_db_url() -> str:
    """KPI_APP_DB_URL (the application database with profiles, posts, comments), or the demo SQLite file."""
    url = os.environ.get(ENV_APP_DB_URL)
    if url:
        return url
    return f"sqlite:///{data_dir() / 'app.sqlite'}"


def clients_file() -> Path:
    return Path(os.environ.get(ENV_CLIENTS_FILE) or project_root() / "clients.yaml").resolve()


def meta_api_url() -> str:
    """KPI_META_API_URL; unset means the in-process simulator."""
    return os.environ.get(ENV_META_URL) or SIMULATOR_BASE_URL


def heartbeat_url(environ: Mapping[str, str] | None = None) -> str | None:
    """KPI_HEARTBEAT_URL, or None when unset (no heartbeat). A secret: never log or print it."""
    env = os.environ if environ is None else environ
    return (env.get(ENV_HEARTBEAT_URL) or "").strip() or None


def missing_client_escalation_hours(environ: Mapping[str, str] | None = None) -> float:
    """KPI_MISSING_CLIENT_ESCALATION_HOURS (a number of hours >= 0), default 3; ValueError naming the variable."""
    env = os.environ if environ is None else environ
    raw = (env.get(ENV_MISSING_CLIENT_ESCALATION_HOURS) or "").strip()
    if not raw:
        return DEFAULT_MISSING_CLIENT_ESCALATION_HOURS
    try:
        hours = float(raw)
    except ValueError:
        hours = math.nan
    if not math.isfinite(hours) or hours < 0:
        raise ValueError(f"{ENV_MISSING_CLIENT_ESCALATION_HOURS}: {raw!r} is not a number of hours >= 0")
    return hours


def pacing_threshold_pct(environ: Mapping[str, str] | None = None) -> float:
    """KPI_META_PACING_THRESHOLD_PCT (a percentage strictly between 0 and 100), default 75; ValueError naming the
    variable."""
    env = os.environ if environ is None else environ
    raw = (env.get(ENV_PACING_THRESHOLD_PCT) or "").strip()
    if not raw:
        return PACING_THRESHOLD_PCT
    value = _float_or_nan(raw)
    if not 0 < value < 100:
        raise ValueError(
            f"{ENV_PACING_THRESHOLD_PCT}: {raw!r} is not a percentage between 0 and 100 (exclusive)"
        )
    return value


def pacing_max_delay_s(environ: Mapping[str, str] | None = None) -> float:
    """KPI_META_PACING_MAX_DELAY_S (seconds > 0), default 60; ValueError naming the variable."""
    env = os.environ if environ is None else environ
    raw = (env.get(ENV_PACING_MAX_DELAY_S) or "").strip()
    if not raw:
        return PACING_MAX_DELAY_S
    value = _float_or_nan(raw)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{ENV_PACING_MAX_DELAY_S}: {raw!r} is not a number of seconds > 0")
    return value


def _float_or_nan(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.nan
