"""Meta API usage shared by run processes, to pace calls before Meta throttles: table `api_pacing`.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_pacing",
        sa.Column(
            "account_id",
            sa.String(128),
            nullable=False,
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
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When Meta gives access back (estimated_time_to_regain_access), while usage is at 100 %.",
        ),
        sa.Column(
            "headers", sa.JSON(), nullable=False, comment="The usage headers of the latest response, decoded."
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the latest response was read.",
        ),
        sa.PrimaryKeyConstraint("account_id", name="pk_api_pacing"),
        comment="Meta API usage per ad account (and app-wide) from the latest response, shared by every run "
        "process to pace calls; no row means no usage seen.",
    )


def downgrade() -> None:
    op.drop_table("api_pacing")
