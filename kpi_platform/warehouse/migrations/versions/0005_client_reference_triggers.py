"""PostgreSQL: the two daily fact tables check their client reference once per statement, not once per row.

A foreign key is checked by a row trigger: one lookup in `clients` for every row a range write COPYs, about a
third of the write's time on PostgreSQL. The reference itself does not change: this migration replaces
`fk_campaign_daily_kpis_client_id_clients` and `fk_client_daily_kpis_client_id_clients` with

- statement triggers (AFTER INSERT / AFTER UPDATE, with the statement's new rows as a transition table) that
  lock the referenced `clients` rows FOR KEY SHARE, as the foreign key's check does, and raise
  `foreign_key_violation` (SQLSTATE 23503, an IntegrityError to the driver) for a client_id that is not there;
- a row trigger on `clients` that refuses to delete a client, or change its client_id, while a fact row
  references it (the foreign key's RESTRICT side). It runs AFTER the row is locked, so a writer holding the
  KEY SHARE lock has committed its rows by then and they are seen.

Row triggers would be no cheaper than the foreign key, and PostgreSQL has no statement-level foreign key: hence
the hand-written triggers. The monthly table keeps its foreign key (a few rows per write). SQLite keeps all
three foreign keys (its checks are cheap and it has no statement triggers with transition tables).

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FACT_TABLES = ("campaign_daily_kpis", "client_daily_kpis")
CHECK_FUNCTION = "kpi_check_client_reference"
RESTRICT_FUNCTION = "kpi_restrict_client_change"
RESTRICT_TRIGGER = "kpi_clients_referenced"
EVENTS = ("insert", "update")


def _foreign_key(table: str) -> str:
    return f"fk_{table}_client_id_clients"


def _check_trigger(table: str, event: str) -> str:
    return f"kpi_{table}_client_reference_{event}"


# Search path pinned to the warehouse schema (pg_temp last): a temporary table named `clients` cannot stand in.
_CHECK_BODY = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql
SET search_path = {schema}, pg_temp
AS $fn$
DECLARE
    v_missing text;
BEGIN
    PERFORM 1 FROM clients c
     WHERE c.client_id IN (SELECT DISTINCT n.client_id FROM new_rows n)
       FOR KEY SHARE OF c;
    SELECT n.client_id INTO v_missing
      FROM (SELECT DISTINCT client_id FROM new_rows) n
     WHERE NOT EXISTS (SELECT 1 FROM clients c WHERE c.client_id = n.client_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert or update on table "%" violates its reference to clients', TG_TABLE_NAME
            USING ERRCODE = 'foreign_key_violation',
                  DETAIL = format('Key (client_id)=(%s) is not present in table "clients".', v_missing);
    END IF;
    RETURN NULL;
END
$fn$
"""

_RESTRICT_BODY = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql
SET search_path = {schema}, pg_temp
AS $fn$
DECLARE
    v_table text;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.client_id IS NOT DISTINCT FROM OLD.client_id THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM campaign_daily_kpis WHERE client_id = OLD.client_id) THEN
        v_table := 'campaign_daily_kpis';
    ELSIF EXISTS (SELECT 1 FROM client_daily_kpis WHERE client_id = OLD.client_id) THEN
        v_table := 'client_daily_kpis';
    ELSE
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'update or delete on table "clients" violates the reference from "%"', v_table
        USING ERRCODE = 'foreign_key_violation',
              DETAIL = format('Key (client_id)=(%s) is still referenced from table "%s".', OLD.client_id, v_table);
END
$fn$
"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.execute(sa.text("SELECT current_schema()")).scalar_one()
    quoted = bind.dialect.identifier_preparer.quote_identifier(schema)
    op.execute(sa.text(_CHECK_BODY.format(function=CHECK_FUNCTION, schema=quoted)))
    op.execute(sa.text(_RESTRICT_BODY.format(function=RESTRICT_FUNCTION, schema=quoted)))
    for function in (CHECK_FUNCTION, RESTRICT_FUNCTION):
        # Trigger functions cannot be called directly; nobody needs EXECUTE on them.
        op.execute(sa.text(f"REVOKE ALL ON FUNCTION {function}() FROM PUBLIC"))
    for table in FACT_TABLES:
        for event in EVENTS:
            op.execute(
                sa.text(
                    f"CREATE TRIGGER {_check_trigger(table, event)} AFTER {event.upper()} ON {table} "
                    f"REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {CHECK_FUNCTION}()"
                )
            )
    op.execute(
        sa.text(
            f"CREATE TRIGGER {RESTRICT_TRIGGER} AFTER DELETE OR UPDATE OF client_id ON clients "
            f"FOR EACH ROW EXECUTE FUNCTION {RESTRICT_FUNCTION}()"
        )
    )
    # The triggers are in place before the foreign keys go, inside the same transaction.
    for table in FACT_TABLES:
        op.drop_constraint(_foreign_key(table), table, type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in FACT_TABLES:
        op.create_foreign_key(_foreign_key(table), table, "clients", ["client_id"], ["client_id"])
        for event in EVENTS:
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {_check_trigger(table, event)} ON {table}"))
    op.execute(sa.text(f"DROP TRIGGER IF EXISTS {RESTRICT_TRIGGER} ON clients"))
    for function in (CHECK_FUNCTION, RESTRICT_FUNCTION):
        op.execute(sa.text(f"DROP FUNCTION IF EXISTS {function}()"))
