"""kpi_forecasts and forecast_accuracy: forecasts for client-days not collected yet, kept apart from the data.

`kpi_forecasts` holds one forecast per client × day without a client_daily_kpis row (each KPI with an interval);
writing the real day removes it and records its error per KPI in `forecast_accuracy`.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The forecast KPIs as of this revision (schema.FORECAST_METRICS then), spelled out so the revision never changes.
_METRICS = (
    "spend",
    "impressions",
    "clicks",
    "calls",
    "contacts",
    "leads",
    "reservations",
    "reservation_value",
)


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    metric_columns = []
    for name in _METRICS:
        metric_columns += [
            sa.Column(name, sa.Float(), nullable=False),
            sa.Column(f"{name}_lower", sa.Float(), nullable=False),
            sa.Column(f"{name}_upper", sa.Float(), nullable=False),
        ]
    op.create_table(
        "kpi_forecasts",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("kpi_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        *metric_columns,
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
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_kpi_forecasts_client_id_clients"
        ),
        sa.PrimaryKeyConstraint("client_id", "kpi_date", name="pk_kpi_forecasts"),
        comment="One row per client × day without collected data: a forecast, never data. Removed when the day "
        "is collected.",
    )
    op.create_table(
        "forecast_accuracy",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("kpi_date", sa.Date(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_forecast_accuracy_client_id_clients"
        ),
        sa.PrimaryKeyConstraint("client_id", "kpi_date", "metric", name="pk_forecast_accuracy"),
        comment="One row per client × day × metric forecast and later collected: the forecast's error.",
    )
    op.create_index("ix_forecast_accuracy_kpi_date", "forecast_accuracy", ["kpi_date"])


def downgrade() -> None:
    op.drop_index("ix_forecast_accuracy_kpi_date", table_name="forecast_accuracy")
    op.drop_table("forecast_accuracy")
    op.drop_table("kpi_forecasts")
