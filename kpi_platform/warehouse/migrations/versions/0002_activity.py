"""Platform activity: immutable daily metric snapshots and the metric definitions they refer to.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Seeded as they stood when this revision was written; later metrics arrive as rows in later migrations.
_TOTAL = "Rows existing at snapshot time with created_at before the end of the day (UTC)"
_CREATED = "Rows with created_at during the day (UTC) that still existed at snapshot time"
SEED_DEFINITIONS: list[dict[str, str]] = [
    {
        "metric_type": "users_total",
        "metric_category": "platform",
        "display_name": "Users",
        "description": f"User profiles. {_TOTAL}.",
        "unit": "users",
        "format": ",.0f",
        "aggregation": "last",
    },
    {
        "metric_type": "posts_total",
        "metric_category": "platform",
        "display_name": "Posts",
        "description": f"Posts. {_TOTAL}.",
        "unit": "posts",
        "format": ",.0f",
        "aggregation": "last",
    },
    {
        "metric_type": "comments_total",
        "metric_category": "platform",
        "display_name": "Comments",
        "description": f"Comments. {_TOTAL}.",
        "unit": "comments",
        "format": ",.0f",
        "aggregation": "last",
    },
    {
        "metric_type": "posts_created",
        "metric_category": "platform",
        "display_name": "Posts created",
        "description": f"Posts. {_CREATED}.",
        "unit": "posts",
        "format": ",.0f",
        "aggregation": "sum",
    },
    {
        "metric_type": "comments_created",
        "metric_category": "platform",
        "display_name": "Comments created",
        "description": f"Comments. {_CREATED}.",
        "unit": "comments",
        "format": ",.0f",
        "aggregation": "sum",
    },
]


def upgrade() -> None:
    definitions = op.create_table(
        "metric_definitions",
        sa.Column("metric_type", sa.String(64), nullable=False),
        sa.Column("metric_category", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column(
            "format", sa.String(32), nullable=False, comment="Python format spec of a value, e.g. ',.0f'."
        ),
        sa.Column(
            "aggregation",
            sa.String(8),
            nullable=False,
            comment="How days roll up into weeks and months: 'sum', or 'last' (value of the last present day).",
        ),
        sa.PrimaryKeyConstraint("metric_type", "metric_category", name="pk_metric_definitions"),
        sa.CheckConstraint("aggregation IN ('sum', 'last')", name="ck_metric_definitions_aggregation"),
        comment="One row per metric kept in daily_metrics; a new metric is a new row here, not a schema change.",
    )
    op.create_table(
        "daily_metrics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
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
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_daily_metrics"),
        sa.UniqueConstraint(
            "metric_date",
            "metric_type",
            "metric_category",
            name="uq_daily_metrics_metric_date_metric_type_metric_category",
        ),
        sa.ForeignKeyConstraint(
            ["metric_type", "metric_category"],
            ["metric_definitions.metric_type", "metric_definitions.metric_category"],
            name="fk_daily_metrics_metric_type_metric_definitions",
        ),
        comment="One row per day × metric: immutable end-of-UTC-day snapshots of the platform's own activity.",
    )
    op.bulk_insert(definitions, SEED_DEFINITIONS)


def downgrade() -> None:
    op.drop_table("daily_metrics")
    op.drop_table("metric_definitions")
