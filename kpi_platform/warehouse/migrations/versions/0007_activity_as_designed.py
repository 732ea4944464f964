"""Platform activity as designed: `metric_type` is the kind of figure (`count`), `metric_category` the metric.

Until this revision `metric_type` held the metric's name and `metric_category` held `platform`. Every row of
`metric_definitions`, `daily_metrics` and `daily_metrics_corrections` is moved in place: metric_type := 'count',
metric_category := the old metric_type. Besides:

- `daily_metrics.collected_at` becomes `collection_timestamp`, `value` becomes NUMERIC(20, 4) (16 integer and
  4 decimal digits: every stored count exactly; a value it could not hold exactly stops the migration before
  anything changes), `created_at` is added (existing rows: their collection timestamp), and three indexes:
  (metric_date DESC, metric_type, metric_category), (metric_category, metric_date DESC),
  (collection_timestamp DESC);
- `metric_definitions.format` becomes `format_pattern`; `is_active` (default true) and `created_at` are added;
- the corrections table follows: same key meanings, NUMERIC values, `old_/new_collection_timestamp`;
- PostgreSQL: `kpi_correct_daily_metric` is recreated for the new columns (its value argument is NUMERIC now),
  and whoever could execute the old one can execute the new one.

Snapshots are immutable history: the migration counts the rows and takes a checksum of every (date, metric,
value) before and after, and fails, changing nothing, if they differ.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from decimal import Decimal
from typing import Literal

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNT = "count"
OLD_CATEGORY = "platform"
FUNCTION = "kpi_correct_daily_metric"
OLD_FUNCTION_ARGS = "date, varchar, varchar, double precision, json, timestamptz, text"
NEW_FUNCTION_ARGS = "date, varchar, varchar, numeric, json, timestamptz, text"
FOREIGN_KEY = "fk_daily_metrics_metric_type_metric_definitions"
VALUE_PRECISION, VALUE_SCALE = 20, 4
_TYPE_COMMENT = "Kind of figure, e.g. 'count'."
_CATEGORY_COMMENT = "The metric, e.g. 'posts_total'."
_ACTIVE_COMMENT = "Collected while true; an inactive metric keeps its stored days but gets no new ones."

# Runs with the owner's rights: the search path is pinned to the warehouse schema (pg_temp last), so a caller
# cannot substitute its own `daily_metrics`. The audit row names session_user, the role that called.
_FUNCTION_BODY = """
CREATE OR REPLACE FUNCTION {function}(
    p_metric_date date,
    p_metric_type varchar,
    p_metric_category varchar,
    p_value {value_type},
    p_metadata json,
    p_{stamp} timestamptz,
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
       SET value = p_value, metadata = p_metadata, {stamp} = p_{stamp}
     WHERE id = v_old.id;
    INSERT INTO daily_metrics_corrections (
        metric_date, metric_type, metric_category, old_value, new_value, old_{stamp}, new_{stamp},
        reason, corrected_by, corrected_at
    ) VALUES (
        v_old.metric_date, v_old.metric_type, v_old.metric_category, v_old.value, p_value, v_old.{stamp},
        p_{stamp}, p_reason, session_user, now()
    ) RETURNING id INTO v_id;
    RETURN v_id;
END
$fn$
"""


def _canonical(value: object) -> str:
    """A stored value as exact decimal text, the same for 120.0 (float), 120 (SQLite) and 120.0000 (NUMERIC)."""
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    return format(number.normalize(), "f")


def _fingerprint(bind: sa.Connection, *, metric: str) -> tuple[int, str, int]:
    """Rows of daily_metrics, a SHA-256 of every (date, metric, value), and rows of daily_metrics_corrections.

    `metric` is the column naming the metric: metric_type before this revision, metric_category after it.
    """
    table = sa.table("daily_metrics", sa.column("metric_date"), sa.column(metric), sa.column("value"))
    rows = bind.execute(sa.select(table.c.metric_date, table.c[metric], table.c.value)).all()
    lines = sorted(f"{day}|{name}|{_canonical(value)}" for day, name, value in rows)
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    corrections = bind.execute(sa.text("SELECT count(*) FROM daily_metrics_corrections")).scalar_one()
    return len(rows), digest, int(corrections)


def _check_values_fit(bind: sa.Connection) -> None:
    """Refuse, before anything changes, a stored value NUMERIC(20, 4) would not keep exactly."""
    limit = Decimal(10) ** (VALUE_PRECISION - VALUE_SCALE)
    bad = []
    for table, columns in (
        ("daily_metrics", ("value",)),
        ("daily_metrics_corrections", ("old_value", "new_value")),
    ):
        for column in columns:
            stored = sa.table(table, sa.column("metric_date"), sa.column("metric_type"), sa.column(column))
            for day, name, value in bind.execute(
                sa.select(stored.c.metric_date, stored.c.metric_type, stored.c[column])
            ):
                exact = Decimal(_canonical(value))
                if abs(exact) >= limit or exact != exact.quantize(Decimal(1).scaleb(-VALUE_SCALE)):
                    bad.append(f"{table}.{column} {day} {name} = {value!r}")
    if bad:
        raise RuntimeError(
            f"{len(bad)} stored activity value(s) do not fit NUMERIC({VALUE_PRECISION}, {VALUE_SCALE}) exactly, "
            f"nothing was changed: {bad[:5]}"
        )


def _check_metric_names_unique(bind: sa.Connection) -> None:
    """The old metric_type becomes the key's metric_category: two categories sharing a name would collide."""
    shared = (
        bind.execute(
            sa.text(
                "SELECT metric_type FROM metric_definitions GROUP BY metric_type HAVING count(*) > 1 "
                "ORDER BY metric_type"
            )
        )
        .scalars()
        .all()
    )
    if shared:
        raise RuntimeError(
            f"metric names {shared} are defined in more than one category; after this revision a metric is "
            "named by its category alone: rename or remove the duplicates first, nothing was changed"
        )


def _swap_keys(bind: sa.Connection, *, upgrade: bool) -> None:
    for name in ("metric_definitions", "daily_metrics", "daily_metrics_corrections"):
        table = sa.table(name, sa.column("metric_type"), sa.column("metric_category"))
        # Both assignments read the row's old values (standard SQL, PostgreSQL and SQLite alike).
        if upgrade:
            values = {"metric_category": table.c.metric_type, "metric_type": sa.literal(COUNT)}
        else:
            values = {"metric_type": table.c.metric_category, "metric_category": sa.literal(OLD_CATEGORY)}
        bind.execute(table.update().values(values))


def _value_using(column: str, *, numeric: bool) -> str:
    """PostgreSQL's USING expression for the value columns' new type."""
    if not numeric:
        return f"{column}::double precision"
    # Through text: PostgreSQL's float8 → numeric cast keeps only 15 significant digits, its text output the
    # shortest exact representation (values were checked to fit above).
    return f"{column}::text::numeric({VALUE_PRECISION}, {VALUE_SCALE})"


def _function_grants(bind: sa.Connection) -> tuple[list[str], str | None]:
    """Roles allowed to execute the correction function (besides its owner), and its owner; ([], None) if absent."""
    owner = bind.execute(
        sa.text(
            "SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = current_schema() AND p.proname = :name"
        ),
        {"name": FUNCTION},
    ).scalar()
    if owner is None:
        return [], None
    # From the function's ACL itself: information_schema shows only grants the connected role takes part in.
    grantees = (
        bind.execute(
            sa.text(
                "SELECT DISTINCT pg_get_userbyid(a.grantee) FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace CROSS JOIN LATERAL aclexplode(p.proacl) a "
                "WHERE n.nspname = current_schema() AND p.proname = :name AND a.privilege_type = 'EXECUTE' "
                "AND a.grantee NOT IN (0, p.proowner) ORDER BY 1"
            ),
            {"name": FUNCTION},
        )
        .scalars()
        .all()
    )
    return list(grantees), str(owner)


def _replace_function(bind: sa.Connection, *, upgrade: bool) -> None:
    old_args, new_args = (
        (OLD_FUNCTION_ARGS, NEW_FUNCTION_ARGS) if upgrade else (NEW_FUNCTION_ARGS, OLD_FUNCTION_ARGS)
    )
    grantees, owner = _function_grants(bind)
    quote = bind.dialect.identifier_preparer.quote_identifier
    schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    op.execute(sa.text(f"DROP FUNCTION IF EXISTS {FUNCTION}({old_args})"))
    body = _FUNCTION_BODY.format(
        function=FUNCTION,
        schema=quote(schema),
        value_type="numeric" if upgrade else "double precision",
        stamp="collection_timestamp" if upgrade else "collected_at",
    )
    op.execute(sa.text(body))
    signature = f"{FUNCTION}({new_args})"
    # PostgreSQL lets PUBLIC execute new functions; only the roles that could run the old one (the writer) may.
    op.execute(sa.text(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC"))
    for grantee in grantees:
        op.execute(sa.text(f"GRANT EXECUTE ON FUNCTION {signature} TO {quote(grantee)}"))
    current = bind.execute(sa.text("SELECT current_user")).scalar_one()
    if owner is not None and owner != current:
        op.execute(sa.text(f"ALTER FUNCTION {signature} OWNER TO {quote(owner)}"))


def _reference(*, add: bool, recreate: Literal["auto", "always"]) -> None:
    """Drop or restore daily_metrics' reference to metric_definitions.

    The keys of both tables change while it is gone. SQLite recreates the tables for these changes, and dropping
    a referenced table counts its children as violations until commit even once the new table is in place: so
    the reference goes with a recreation of daily_metrics first and comes back with a second one last.
    """
    with op.batch_alter_table("daily_metrics", recreate=recreate) as batch:
        if add:
            batch.create_foreign_key(
                FOREIGN_KEY,
                "metric_definitions",
                ["metric_type", "metric_category"],
                ["metric_type", "metric_category"],
            )
        else:
            batch.drop_constraint(FOREIGN_KEY, type_="foreignkey")


_INDEXES = (
    ("ix_daily_metrics_date_type_category", ("metric_date", "metric_type", "metric_category")),
    ("ix_daily_metrics_category_date", ("metric_category", "metric_date")),
    ("ix_daily_metrics_collection_timestamp", ("collection_timestamp",)),
)
_DESCENDING = frozenset({"metric_date", "collection_timestamp"})


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    before = _fingerprint(bind, metric="metric_type")
    _check_values_fit(bind)
    _check_metric_names_unique(bind)
    recreate: Literal["auto", "always"] = "auto" if postgres else "always"
    numeric = sa.Numeric(VALUE_PRECISION, VALUE_SCALE)

    _reference(add=False, recreate=recreate)
    _swap_keys(bind, upgrade=True)

    with op.batch_alter_table("metric_definitions", recreate=recreate) as batch:
        batch.alter_column("metric_type", existing_type=sa.String(64), comment=_TYPE_COMMENT)
        batch.alter_column("metric_category", existing_type=sa.String(64), comment=_CATEGORY_COMMENT)
        batch.alter_column(
            "format",
            new_column_name="format_pattern",
            existing_type=sa.String(32),
            existing_nullable=False,
            existing_comment="Python format spec of a value, e.g. ',.0f'.",
        )
        batch.add_column(
            sa.Column(
                "is_active", sa.Boolean(), nullable=False, server_default=sa.true(), comment=_ACTIVE_COMMENT
            )
        )
        batch.add_column(
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            )
        )

    with op.batch_alter_table("daily_metrics", recreate=recreate) as batch:
        batch.alter_column("metric_type", existing_type=sa.String(64), comment=_TYPE_COMMENT)
        batch.alter_column("metric_category", existing_type=sa.String(64), comment=_CATEGORY_COMMENT)
        batch.alter_column(
            "value",
            type_=numeric,
            existing_type=sa.Float(),
            existing_nullable=False,
            postgresql_using=_value_using("value", numeric=True),
        )
        batch.alter_column(
            "collected_at",
            new_column_name="collection_timestamp",
            existing_type=sa.DateTime(timezone=True),
            existing_nullable=False,
            comment="When the snapshot's counts were read.",
        )
        batch.add_column(
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
                comment="When the row was stored.",
            )
        )
    # Existing snapshots were stored when they were collected: the best known time of each row.
    op.execute(sa.text("UPDATE daily_metrics SET created_at = collection_timestamp"))
    _reference(add=True, recreate=recreate)
    stored = sa.table(
        "daily_metrics",
        *(sa.column(c) for c in ("metric_date", "metric_type", "metric_category", "collection_timestamp")),
    )
    for name, columns in _INDEXES:
        op.create_index(
            name, "daily_metrics", [stored.c[c].desc() if c in _DESCENDING else stored.c[c] for c in columns]
        )

    with op.batch_alter_table("daily_metrics_corrections", recreate=recreate) as batch:
        batch.alter_column("metric_type", existing_type=sa.String(64), comment=_TYPE_COMMENT)
        batch.alter_column("metric_category", existing_type=sa.String(64), comment=_CATEGORY_COMMENT)
        for column in ("old_value", "new_value"):
            batch.alter_column(
                column,
                type_=numeric,
                existing_type=sa.Float(),
                existing_nullable=False,
                postgresql_using=_value_using(column, numeric=True),
            )
        for side in ("old", "new"):
            batch.alter_column(
                f"{side}_collected_at",
                new_column_name=f"{side}_collection_timestamp",
                existing_type=sa.DateTime(timezone=True),
                existing_nullable=False,
            )

    if postgres:
        _replace_function(bind, upgrade=True)
    after = _fingerprint(bind, metric="metric_category")
    if after != before:
        raise RuntimeError(
            f"daily_metrics changed while moving to the designed layout (rows, checksum, corrections before "
            f"{before}, after {after}); rolled back, nothing was changed"
        )


def downgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    before = _fingerprint(bind, metric="metric_category")
    recreate: Literal["auto", "always"] = "auto" if postgres else "always"
    numeric = sa.Numeric(VALUE_PRECISION, VALUE_SCALE)
    if postgres:
        _replace_function(bind, upgrade=False)
    for name, _ in _INDEXES:
        op.drop_index(name, table_name="daily_metrics")
    _reference(add=False, recreate=recreate)
    _swap_keys(bind, upgrade=False)

    with op.batch_alter_table("daily_metrics_corrections", recreate=recreate) as batch:
        batch.alter_column(
            "metric_type", existing_type=sa.String(64), comment=None, existing_comment=_TYPE_COMMENT
        )
        batch.alter_column(
            "metric_category", existing_type=sa.String(64), comment=None, existing_comment=_CATEGORY_COMMENT
        )
        for column in ("old_value", "new_value"):
            batch.alter_column(
                column,
                type_=sa.Float(),
                existing_type=numeric,
                existing_nullable=False,
                postgresql_using=_value_using(column, numeric=False),
            )
        for side in ("old", "new"):
            batch.alter_column(
                f"{side}_collection_timestamp",
                new_column_name=f"{side}_collected_at",
                existing_type=sa.DateTime(timezone=True),
                existing_nullable=False,
            )

    with op.batch_alter_table("daily_metrics", recreate=recreate) as batch:
        batch.drop_column("created_at")
        batch.alter_column(
            "metric_type", existing_type=sa.String(64), comment=None, existing_comment=_TYPE_COMMENT
        )
        batch.alter_column(
            "metric_category", existing_type=sa.String(64), comment=None, existing_comment=_CATEGORY_COMMENT
        )
        batch.alter_column(
            "value",
            type_=sa.Float(),
            existing_type=numeric,
            existing_nullable=False,
            postgresql_using=_value_using("value", numeric=False),
        )
        batch.alter_column(
            "collection_timestamp",
            new_column_name="collected_at",
            existing_type=sa.DateTime(timezone=True),
            existing_nullable=False,
            comment=None,
            existing_comment="When the snapshot's counts were read.",
        )

    with op.batch_alter_table("metric_definitions", recreate=recreate) as batch:
        batch.drop_column("created_at")
        batch.drop_column("is_active")
        batch.alter_column(
            "metric_type", existing_type=sa.String(64), comment=None, existing_comment=_TYPE_COMMENT
        )
        batch.alter_column(
            "metric_category", existing_type=sa.String(64), comment=None, existing_comment=_CATEGORY_COMMENT
        )
        batch.alter_column(
            "format_pattern",
            new_column_name="format",
            existing_type=sa.String(32),
            existing_nullable=False,
            existing_comment="Python format spec of a value, e.g. ',.0f'.",
        )
    _reference(add=True, recreate=recreate)
    after = _fingerprint(bind, metric="metric_type")
    if after != before:
        raise RuntimeError(
            f"daily_metrics changed while moving back to the old layout (before {before}, after {after}); "
            "rolled back, nothing was changed"
        )
