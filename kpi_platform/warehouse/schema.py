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
        sa.JSON(),
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

metric_definitions = sa.Table(
    "metric_definitions",
    metadata,
    sa.Column("metric_type", sa.String(64), primary_key=True),
    sa.Column("metric_category", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("format", sa.String(32), nullable=False, comment="Python format spec of a value, e.g. ',.0f'."),
    sa.Column(
        "aggregation",
        sa.String(8),
        nullable=False,
        comment="How days roll up into weeks and months: 'sum', or 'last' (value of the last present day).",
    ),
    sa.CheckConstraint("aggregation IN ('sum', 'last')", name="aggregation"),
    comment="One row per metric kept in daily_metrics; a new metric is a new row here, not a schema change.",
)

daily_metrics = sa.Table(
    "daily_metrics",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("metric_date", sa.Date(), nullable=False),
    sa.Column("metric_type", sa.String(64), nullable=False),
    sa.Column("metric_category", sa.String(64), nullable=False),
    sa.Column("value", sa.Float(), nullable=False),
    sa.Column(
        "metadata",
        sa.JSON(),
        nullable=False,
        comment="What is known of the snapshot: source, taken_at, run_id.",
    ),
    sa.Column("collected_at", _timestamp(), nullable=False),
    # Snapshots are immutable: one row per day and metric, written once (corrections only by an explicit force).
    sa.UniqueConstraint("metric_date", "metric_type", "metric_category"),
    sa.ForeignKeyConstraint(
        ["metric_type", "metric_category"],
        ["metric_definitions.metric_type", "metric_definitions.metric_category"],
    ),
    comment="One row per day × metric: immutable end-of-UTC-day snapshots of the platform's own activity.",
)

daily_metrics_corrections = sa.Table(
    "daily_metrics_corrections",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("metric_date", sa.Date(), nullable=False),
    sa.Column("metric_type", sa.String(64), nullable=False),
    sa.Column("metric_category", sa.String(64), nullable=False),
    sa.Column("old_value", sa.Float(), nullable=False),
    sa.Column("new_value", sa.Float(), nullable=False),
    sa.Column("old_collected_at", _timestamp(), nullable=False),
    sa.Column("new_collected_at", _timestamp(), nullable=False),
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
#: function of the owner (migration 0004) that updates the row and appends its daily_metrics_corrections row.
CORRECT_DAILY_METRIC_FUNCTION = "kpi_correct_daily_metric"
