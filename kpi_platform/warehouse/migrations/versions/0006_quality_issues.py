"""client_daily_kpis.quality_issues: the names of the day's failed quality checks, stored beside its score.

A JSON list of short issue strings (empty when every check passed; NULL for rows written before this revision,
which read as "not recorded"). The score alone says how good a day is; the list says why.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("client_daily_kpis") as batch:
        batch.add_column(
            sa.Column(
                "quality_issues",
                sa.JSON(),
                nullable=True,
                comment="Names of the day's failed quality checks (empty list: none); NULL when not recorded.",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("client_daily_kpis") as batch:
        batch.drop_column("quality_issues")
