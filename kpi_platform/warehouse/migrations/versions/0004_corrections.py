"""Audited corrections of activity snapshots: the `daily_metrics_corrections` table and, on PostgreSQL, the
SECURITY DEFINER function `kpi_correct_daily_metric`, the one way a role without UPDATE on `daily_metrics`
(the writer of kpi_platform/warehouse/roles.py) replaces a stored snapshot.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "kpi_correct_daily_metric"
FUNCTION_ARGS = "date, varchar, varchar, double precision, json, timestamptz, text"

# Runs with the owner's rights: the search path is pinned to the warehouse schema (pg_temp last), so a caller
# cannot substitute its own `daily_metrics`. The audit row names session_user, the role that called.
_FUNCTION_BODY = """
CREATE OR REPLACE FUNCTION {function}(
    p_metric_date date,
    p_metric_type varchar,
    p_metric_category varchar,
    p_value double precision,
    p_metadata json,
    p_collected_at timestamptz,
    p_reason text
) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = {schema}, pg_temp
AS $fn$
DECLARE
    v_old daily_metrics%ROWTYPE;
    v_id integer;
BEGIN
    IF p_reason IS NULL OR btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'a correction of daily_metrics needs a reason' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_old FROM daily_metrics
     WHERE metric_date = p_metric_date AND metric_type = p_metric_type AND metric_category = p_metric_category
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no daily_metrics row for % %/% to correct', p_metric_date, p_metric_category, p_metric_type
            USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE daily_metrics
       SET value = p_value, metadata = p_metadata, collected_at = p_collected_at
     WHERE id = v_old.id;
    INSERT INTO daily_metrics_corrections (
        metric_date, metric_type, metric_category, old_value, new_value, old_collected_at, new_collected_at,
        reason, corrected_by, corrected_at
    ) VALUES (
        v_old.metric_date, v_old.metric_type, v_old.metric_category, v_old.value, p_value, v_old.collected_at,
        p_collected_at, p_reason, session_user, now()
    ) RETURNING id INTO v_id;
    RETURN v_id;
END
$fn$
"""


def upgrade() -> None:
    op.create_table(
        "daily_metrics_corrections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("metric_date", sa.Date(), nullable=False),
        sa.Column("metric_type", sa.String(64), nullable=False),
        sa.Column("metric_category", sa.String(64), nullable=False),
        sa.Column("old_value", sa.Float(), nullable=False),
        sa.Column("new_value", sa.Float(), nullable=False),
        sa.Column("old_collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("new_collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "corrected_by",
            sa.String(128),
            nullable=True,
            comment="Database role that made the correction (session_user); NULL on SQLite, which has no roles.",
        ),
        sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_daily_metrics_corrections"),
        comment="One row per forced correction of a daily_metrics snapshot: old and new value, why, by whom; "
        "append-only.",
    )
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    quoted = bind.dialect.identifier_preparer.quote_identifier(schema)
    op.execute(sa.text(_FUNCTION_BODY.format(function=FUNCTION, schema=quoted)))
    # PostgreSQL lets PUBLIC execute new functions; only roles granted EXECUTE (the writer) may correct.
    op.execute(sa.text(f"REVOKE ALL ON FUNCTION {FUNCTION}({FUNCTION_ARGS}) FROM PUBLIC"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(f"DROP FUNCTION IF EXISTS {FUNCTION}({FUNCTION_ARGS})"))
    op.drop_table("daily_metrics_corrections")
