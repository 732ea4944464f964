"""Operational state shared by run processes: Meta API circuit breakers and open alert problems.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "circuit_breakers",
        sa.Column("name", sa.String(128), nullable=False, comment="`meta_api` or `meta_api:act_<id>`."),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("fail_counter", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "last_error", sa.Text(), nullable=True, comment="Redacted message of the last counted failure."
        ),
        sa.PrimaryKeyConstraint("name", name="pk_circuit_breakers"),
        sa.CheckConstraint("state IN ('closed', 'open', 'half-open')", name="ck_circuit_breakers_state"),
        comment="One row per circuit breaker on the Meta API, shared by every run process; no row means closed.",
    )
    op.create_table(
        "alert_state",
        sa.Column("key", sa.String(200), nullable=False, comment="Stable identity of the problem."),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_alert_state"),
        comment="One row per alerted problem; open while resolved_at is NULL, reopened when it comes back.",
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_table("circuit_breakers")
