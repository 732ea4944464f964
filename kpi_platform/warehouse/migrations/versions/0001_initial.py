"""Initial warehouse schema: clients, campaign and client daily KPIs, client monthly KPIs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _kpi_columns() -> list[sa.Column]:
    return [
        sa.Column("spend", sa.Numeric(18, 2), nullable=False),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("ctr_pct", sa.Float(), nullable=True),
        sa.Column("cpc", sa.Numeric(18, 4), nullable=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("contacts", sa.BigInteger(), nullable=False),
        sa.Column("leads", sa.BigInteger(), nullable=False),
        sa.Column("reservations", sa.BigInteger(), nullable=False),
        sa.Column("reservation_value", sa.Numeric(18, 2), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("ad_account_id", sa.String(32), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_clients"),
        comment="One row per client registered in clients.yaml; never deleted, deactivated with active=false.",
    )
    op.create_table(
        "campaign_daily_kpis",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("kpi_date", sa.Date(), nullable=False),
        sa.Column("campaign_id", sa.String(64), nullable=False),
        sa.Column("campaign_name", sa.Text(), nullable=True),
        *_kpi_columns(),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "kpi_date", "campaign_id", name="pk_campaign_daily_kpis"),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_campaign_daily_kpis_client_id_clients"
        ),
        comment="One row per client × day × campaign, as reported by the Meta Insights API (campaign level).",
    )
    op.create_table(
        "client_daily_kpis",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("kpi_date", sa.Date(), nullable=False),
        *_kpi_columns(),
        sa.Column("campaign_count", sa.Integer(), nullable=False),
        sa.Column("delivery", sa.String(16), nullable=False),
        sa.Column("quality_score", sa.Float(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "kpi_date", name="pk_client_daily_kpis"),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_client_daily_kpis_client_id_clients"
        ),
        sa.CheckConstraint("delivery IN ('delivered', 'idle')", name="ck_client_daily_kpis_delivery"),
        comment="One row per client × day, including idle days (delivery='idle', zero counts).",
    )
    op.create_index("ix_client_daily_kpis_kpi_date", "client_daily_kpis", ["kpi_date"])
    op.create_table(
        "client_monthly_kpis",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("month", sa.Date(), nullable=False, comment="First day of the month."),
        *_kpi_columns(),
        sa.Column("days_present", sa.Integer(), nullable=False),
        sa.Column("days_in_month", sa.Integer(), nullable=False),
        sa.Column("idle_days", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "month", name="pk_client_monthly_kpis"),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.client_id"], name="fk_client_monthly_kpis_client_id_clients"
        ),
        sa.CheckConstraint("status IN ('provisional', 'final')", name="ck_client_monthly_kpis_status"),
        comment="One row per client × month, summed from client_daily_kpis; ctr_pct and cpc recomputed from the sums.",
    )


def downgrade() -> None:
    op.drop_table("client_monthly_kpis")
    op.drop_index("ix_client_daily_kpis_kpi_date", table_name="client_daily_kpis")
    op.drop_table("client_daily_kpis")
    op.drop_table("campaign_daily_kpis")
    op.drop_table("clients")
