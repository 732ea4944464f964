"""Table definitions of the KPI warehouse: the single source the migrations are checked against.

Money is `Numeric(18, 2)`, cost per click `Numeric(18, 4)`, counts `BigInteger`, dates `Date`, timestamps
`DateTime(timezone=True)` stored in UTC. Column names are the DataFrame column names, so frames are written
without renaming.
"""

from __future__ import annotations

import sqlalchemy as sa

#: Deterministic constraint names, so later migrations can address them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

#: The values a `BigInteger` count column holds (PostgreSQL BIGINT, SQLite INTEGER): a count outside cannot be stored.
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1

DELIVERY_VALUES: tuple[str, ...] = ("delivered", "idle")
MONTH_STATUS_VALUES: tuple[str, ...] = ("provisional", "final")


def _money() -> sa.Numeric:
    return sa.Numeric(18, 2, asdecimal=False)


def _cpc() -> sa.Numeric:
    return sa.Numeric(18, 4, asdecimal=False)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _client_fk() -> sa.ForeignKey:
    return sa.ForeignKey("clients.client_id")


#: Foreign keys that PostgreSQL enforces with statement triggers instead (migration 0005): same reference, same
#: IntegrityError, one lookup per write instead of one per row. SQLite keeps them as declared here.
POSTGRES_TRIGGER_CHECKED_FOREIGN_KEYS: frozenset[str] = frozenset(
    {"fk_campaign_daily_kpis_client_id_clients", "fk_client_daily_kpis_client_id_clients"}
)


def _kpi_columns() -> list[sa.Column]:
    """The additive KPIs shared by every grain, plus the two ratios (NULL where the denominator is 0)."""
    return [
        sa.Column("spend", _money(), nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("ctr_pct", sa.Float(), nullable=True),
        sa.Column("cpc", _cpc(), nullable=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("contacts", sa.BigInteger(), nullable=False),
        sa.Column("leads", sa.BigInteger(), nullable=False),
        sa.Column("reservations", sa.BigInteger(), nullable=False),
        sa.Column("reservation_value", _money(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
    ]


clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("ad_account_id", sa.String(32), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("active", sa.Boolean(), nullable=False),
    sa.Column("settings", sa.JSON(), nullable=False),
    sa.Column("created_at", _timestamp(), nullable=False),
    sa.Column("updated_at", _timestamp(), nullable=False),
    comment="One row per client registered in clients.yaml; never deleted, deactivated with active=false.",
)

campaign_daily_kpis = sa.Table(
    "campaign_daily_kpis",
    metadata,
    sa.Column("client_id", sa.String(64), _client_fk(), primary_key=True),
    sa.Column("kpi_date", sa.Date(), primary_key=True),
    sa.Column("campaign_id", sa.String(64), primary_key=True),
    sa.Column("campaign_name", sa.Text(), nullable=True),
    *_kpi_columns(),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("fetched_at", _timestamp(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    comment="One row per client × day × campaign, as reported by the Meta Insights API (campaign level).",
)

client_daily_kpis = sa.Table(
    "client_daily_kpis",
    metadata,
    sa.Column("client_id", sa.String(64), _client_fk(), primary_key=True),
    sa.Column("kpi_date", sa.Date(), primary_key=True),
    *_kpi_columns(),
    sa.Column("campaign_count", sa.Integer(), nullable=False),
    # 'idle' is a collected day without delivery; a missing row means the day was never collected.
    sa.Column("delivery", sa.String(16), nullable=False),
    sa.Column("quality_score", sa.Float(), nullable=True),
    sa.Column(
        "quality_issues",
        # None is stored as SQL NULL ("not recorded") on every write path, not as the JSON value null.
        sa.JSON(none_as_null=True),
        nullable=True,
        comment="Names of the day's failed quality checks (empty list: none); NULL when not recorded.",
    ),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("fetched_at", _timestamp(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.CheckConstraint("delivery IN ('delivered', 'idle')", name="delivery"),
    # Completeness queries ask for every client on one day; the primary key serves per-client ranges.
    sa.Index(None, "kpi_date"),
    comment="One row per client × day, including idle days (delivery='idle', zero counts).",
)

client_monthly_kpis = sa.Table(
    "client_monthly_kpis",
    metadata,
    sa.Column("client_id", sa.String(64), _client_fk(), primary_key=True),
    sa.Column("month", sa.Date(), primary_key=True, comment="First day of the month."),
    *_kpi_columns(),
    sa.Column("days_present", sa.Integer(), nullable=False),
    sa.Column("days_in_month", sa.Integer(), nullable=False),
    sa.Column("idle_days", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("computed_at", _timestamp(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.CheckConstraint("status IN ('provisional', 'final')", name="status"),
    comment="One row per client × month, summed from client_daily_kpis; ctr_pct and cpc recomputed from the sums.",
)

#: The KPIs a forecast carries, each with a lower and an upper bound: the additive ones (ratios follow from them).
FORECAST_METRICS: tuple[str, ...] = (
    "spend",
    "impressions",
    "clicks",
    "calls",
    "contacts",
    "leads",
    "reservations",
    "reservation_value",
)


def _forecast_columns() -> list[sa.Column]:
    columns = []
    for name in FORECAST_METRICS:
        columns += [
            sa.Column(name, sa.Float(), nullable=False),
            sa.Column(f"{name}_lower", sa.Float(), nullable=False),
            sa.Column(f"{name}_upper", sa.Float(), nullable=False),
        ]
    return columns


kpi_forecasts = sa.Table(
    "kpi_forecasts",
    metadata,
    sa.Column("client_id", sa.String(64), _client_fk(), primary_key=True),
    sa.Column("kpi_date", sa.Date(), primary_key=True),
    sa.Column("currency", sa.String(3), nullable=False),
    *_forecast_columns(),
    sa.Column(
        "interval_pct",
        sa.Float(),
        nullable=False,
        comment="Nominal coverage of every [lower, upper] interval.",
    ),
    sa.Column("model", sa.String(64), nullable=False),
    sa.Column(
        "history_days", sa.Integer(), nullable=False, comment="Collected days the forecast was fitted on."
    ),
    sa.Column("generated_at", _timestamp(), nullable=False),
    comment="One row per client × day without collected data: a forecast, never data. Removed when the day is "
    "collected.",
)

forecast_accuracy = sa.Table(
    "forecast_accuracy",
    metadata,
    sa.Column("client_id", sa.String(64), _client_fk(), primary_key=True),
    sa.Column("kpi_date", sa.Date(), primary_key=True),
    sa.Column("metric", sa.String(32), primary_key=True),
    sa.Column("forecast", sa.Float(), nullable=False),
    sa.Column("lower", sa.Float(), nullable=False),
    sa.Column("upper", sa.Float(), nullable=False),
    sa.Column("actual", sa.Float(), nullable=False),
    sa.Column(
        "abs_pct_error",
        sa.Float(),
        nullable=True,
        comment="|forecast - actual| / |actual| × 100; NULL when actual is 0 (undefined).",
    ),
    sa.Column("generated_at", _timestamp(), nullable=False, comment="When the forecast was made."),
    sa.Column("recorded_at", _timestamp(), nullable=False, comment="When the day was collected."),
    # The health report reads the last 30 days of every client.
    sa.Index(None, "kpi_date"),
    comment="One row per client × day × metric forecast and later collected: the forecast's error.",
)

circuit_breakers = sa.Table(
    "circuit_breakers",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True, comment="`meta_api` or `meta_api:act_<id>`."),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("fail_counter", sa.Integer(), nullable=False),
    sa.Column("opened_at", _timestamp(), nullable=True),
    sa.Column("updated_at", _timestamp(), nullable=False),
    sa.Column(
        "last_error", sa.Text(), nullable=True, comment="Redacted message of the last counted failure."
    ),
    sa.CheckConstraint("state IN ('closed', 'open', 'half-open')", name="state"),
    comment="One row per circuit breaker on the Meta API, shared by every run process; no row means closed.",
)

api_pacing = sa.Table(
    "api_pacing",
    metadata,
    sa.Column(
        "account_id",
        sa.String(128),
        primary_key=True,
        comment="`act_<id>` for an ad account's figures, `app` for the app-wide ones.",
    ),
    sa.Column(
        "usage_pct",
        sa.Float(),
        nullable=False,
        comment="Highest usage figure of the latest response, in percent of Meta's limit.",
    ),
    sa.Column(
        "regain_at",
        _timestamp(),
        nullable=True,
        comment="When Meta gives access back (estimated_time_to_regain_access), while usage is at 100 %.",
    ),
    sa.Column(
        "headers", sa.JSON(), nullable=False, comment="The usage headers of the latest response, decoded."
    ),
    sa.Column("updated_at", _timestamp(), nullable=False, comment="When the latest response was read."),
    comment="Meta API usage per ad account (and app-wide) from the latest response, shared by every run process "
    "to pace calls; no row means no usage seen.",
)

alert_state = sa.Table(
    "alert_state",
    metadata,
    sa.Column("key", sa.String(200), primary_key=True, comment="Stable identity of the problem."),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("first_seen", _timestamp(), nullable=False),
    sa.Column("last_seen", _timestamp(), nullable=False),
    sa.Column("notified_at", _timestamp(), nullable=True),
    sa.Column("resolved_at", _timestamp(), nullable=True),
    comment="One row per alerted problem; open while resolved_at is NULL, reopened when it comes back.",
)

METRIC_AGGREGATION_VALUES: tuple[str, ...] = ("sum", "last")

#: `metric_type` of every activity snapshot: the kind of figure stored (a count of rows).
METRIC_TYPE_COUNT = "count"


#: Digits of a `daily_metrics` value: 16 integer and 4 decimal digits keep every count up to 10^16 and every
#: value stored before migration 0007 exactly; it is read back as a float, exact for counts up to 2^53.
METRIC_VALUE_PRECISION, METRIC_VALUE_SCALE = 20, 4


def _metric_value() -> sa.Numeric:
    return sa.Numeric(METRIC_VALUE_PRECISION, METRIC_VALUE_SCALE, asdecimal=False)


metric_definitions = sa.Table(
    "metric_definitions",
    metadata,
    sa.Column("metric_type", sa.String(64), primary_key=True, comment="Kind of figure, e.g. 'count'."),
    sa.Column("metric_category", sa.String(64), primary_key=True, comment="The metric, e.g. 'posts_total'."),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column(
        "format_pattern", sa.String(32), nullable=False, comment="Python format spec of a value, e.g. ',.0f'."
    ),
    sa.Column(
        "aggregation",
        sa.String(8),
        nullable=False,
        comment="How days roll up into weeks and months: 'sum', or 'last' (value of the last present day).",
    ),
    sa.Column(
        "is_active",
        sa.Boolean(),
        nullable=False,
        server_default=sa.true(),
        comment="Collected while true; an inactive metric keeps its stored days but gets no new ones.",
    ),
    sa.Column("created_at", _timestamp(), nullable=False, server_default=sa.func.current_timestamp()),
    sa.CheckConstraint("aggregation IN ('sum', 'last')", name="aggregation"),
    comment="One row per metric kept in daily_metrics; a new metric is a new row here, not a schema change.",
)

daily_metrics = sa.Table(
    "daily_metrics",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("metric_date", sa.Date(), nullable=False),
    sa.Column("metric_type", sa.String(64), nullable=False, comment="Kind of figure, e.g. 'count'."),
    sa.Column("metric_category", sa.String(64), nullable=False, comment="The metric, e.g. 'posts_total'."),
    sa.Column("value", _metric_value(), nullable=False),
    sa.Column(
        "metadata",
        sa.JSON(),
        nullable=False,
        comment="What is known of the snapshot: source, taken_at, run_id.",
    ),
    sa.Column(
        "collection_timestamp", _timestamp(), nullable=False, comment="When the snapshot's counts were read."
    ),
    sa.Column(
        "created_at",
        _timestamp(),
        nullable=False,
        server_default=sa.func.current_timestamp(),
        comment="When the row was stored.",
    ),
    # Snapshots are immutable: one row per day and metric, written once (corrections only by an explicit force).
    sa.UniqueConstraint("metric_date", "metric_type", "metric_category"),
    sa.ForeignKeyConstraint(
        ["metric_type", "metric_category"],
        ["metric_definitions.metric_type", "metric_definitions.metric_category"],
    ),
    comment="One row per day × metric: immutable end-of-UTC-day snapshots of the platform's own activity.",
)
# Latest days first (dashboards), one metric's history, and the latest collections (freshness).
sa.Index(
    "ix_daily_metrics_date_type_category",
    daily_metrics.c.metric_date.desc(),
    daily_metrics.c.metric_type,
    daily_metrics.c.metric_category,
)
sa.Index(
    "ix_daily_metrics_category_date", daily_metrics.c.metric_category, daily_metrics.c.metric_date.desc()
)
sa.Index("ix_daily_metrics_collection_timestamp", daily_metrics.c.collection_timestamp.desc())

daily_metrics_corrections = sa.Table(
    "daily_metrics_corrections",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("metric_date", sa.Date(), nullable=False),
    sa.Column("metric_type", sa.String(64), nullable=False, comment="Kind of figure, e.g. 'count'."),
    sa.Column("metric_category", sa.String(64), nullable=False, comment="The metric, e.g. 'posts_total'."),
    sa.Column("old_value", _metric_value(), nullable=False),
    sa.Column("new_value", _metric_value(), nullable=False),
    sa.Column("old_collection_timestamp", _timestamp(), nullable=False),
    sa.Column("new_collection_timestamp", _timestamp(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column(
        "corrected_by",
        sa.String(128),
        nullable=True,
        comment="Database role that made the correction (session_user); NULL on SQLite, which has no roles.",
    ),
    sa.Column("corrected_at", _timestamp(), nullable=False),
    comment="One row per forced correction of a daily_metrics snapshot: old and new value, why, by whom; "
    "append-only.",
)

#: On PostgreSQL the one way to replace a stored snapshot without UPDATE on daily_metrics: a SECURITY DEFINER
#: function of the owner (migration 0004, recreated for the designed columns by 0007) that updates the row and
#: appends its daily_metrics_corrections row.
CORRECT_DAILY_METRIC_FUNCTION = "kpi_correct_daily_metric"
