"""Least-privilege PostgreSQL roles of the warehouse: the privilege policy per table and `ensure_roles`, which
creates the roles and applies the policy idempotently.

Three roles: the owner owns every warehouse object and runs migrations; the writer (Dagster runs) reads and
writes the tables it needs but only appends to `daily_metrics`, whose stored snapshots it can change solely
through the owner's audited function `kpi_correct_daily_metric`; the reader (exports, queries) only selects.
Neither writer nor reader owns anything, so neither can DROP, ALTER or TRUNCATE.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.warehouse import schema
from kpi_platform.warehouse.engine import VERSION_TABLE

logger = logging.getLogger(__name__)

SELECT, INSERT, UPDATE, DELETE = "SELECT", "INSERT", "UPDATE", "DELETE"

#: What the writer may do per table. Every table of schema.py is listed (a test holds it to that), so a new table
#: is a decision here. `daily_metrics` is append-only: snapshots are immutable, ON CONFLICT DO NOTHING needs only
#: INSERT, and corrections go through the owner's function. The audit table is written only by that function.
WRITER_TABLE_PRIVILEGES: Mapping[str, frozenset[str]] = {
    schema.clients.name: frozenset({SELECT, INSERT, UPDATE}),
    # A range write deletes the client's range and inserts (COPY) the new rows in one transaction.
    schema.campaign_daily_kpis.name: frozenset({SELECT, INSERT, UPDATE, DELETE}),
    schema.client_daily_kpis.name: frozenset({SELECT, INSERT, UPDATE, DELETE}),
    schema.client_monthly_kpis.name: frozenset({SELECT, INSERT, UPDATE, DELETE}),
    # A forecast refresh replaces a client's forecasts; writing a real day deletes its forecast and records (or
    # re-records, delete then insert) the forecast's error.
    schema.kpi_forecasts.name: frozenset({SELECT, INSERT, DELETE}),
    schema.forecast_accuracy.name: frozenset({SELECT, INSERT, DELETE}),
    # Upserts (INSERT ... ON CONFLICT DO UPDATE) need UPDATE; neither table is ever deleted from.
    schema.circuit_breakers.name: frozenset({SELECT, INSERT, UPDATE}),
    schema.alert_state.name: frozenset({SELECT, INSERT, UPDATE}),
    # Every API response upserts its account's usage; rows are never deleted.
    schema.api_pacing.name: frozenset({SELECT, INSERT, UPDATE}),
    schema.metric_definitions.name: frozenset({SELECT}),
    schema.daily_metrics.name: frozenset({SELECT, INSERT}),
    schema.daily_metrics_corrections.name: frozenset({SELECT}),
    # Read by `Warehouse.migrate()` to find the schema at head; only the owner moves it.
    VERSION_TABLE: frozenset({SELECT}),
}
READER_TABLE_PRIVILEGES: frozenset[str] = frozenset({SELECT})
#: Tables created by later migrations (as the owner) start with these; `ensure_roles` then applies the policy.
#: Append-only by default, so a new table is never open to UPDATE or DELETE before the policy says so.
WRITER_DEFAULT_TABLE_PRIVILEGES: frozenset[str] = frozenset({SELECT, INSERT})
#: Serialises concurrent `ensure_roles` calls on one database (next to the store's lock keys).
PG_ROLES_LOCK_KEY = 7_390_004
_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RolesError(RuntimeError):
    """The roles cannot be set up here: not PostgreSQL, not allowed, or an existing role is unsafe to use."""


@dataclass(frozen=True)
class RoleNames:
    """Names of the three warehouse roles (lower-case SQL identifiers, distinct)."""

    owner: str = settings.DB_OWNER_ROLE
    writer: str = settings.DB_WRITER_ROLE
    reader: str = settings.DB_READER_ROLE

    def __post_init__(self) -> None:
        for kind, name in self.items():
            if not _ROLE_NAME.fullmatch(name):
                raise ValueError(
                    f"{kind} role name {name!r} is not a lower-case identifier ([a-z_][a-z0-9_]*)"
                )
        if len({self.owner, self.writer, self.reader}) != 3:
            raise ValueError(f"owner, writer and reader need three different names, got {self}")

    def items(self) -> tuple[tuple[str, str], ...]:
        return (("owner", self.owner), ("writer", self.writer), ("reader", self.reader))


@dataclass(frozen=True)
class RolesReport:
    """What `ensure_roles` found and did. `changes` lists every ownership and privilege change, one per line."""

    database: str
    schema: str
    created: tuple[str, ...]
    passwords_set: tuple[str, ...]
    #: Roles that cannot log in (created without a password).
    nologin: tuple[str, ...]
    changes: tuple[str, ...]
    #: Policy tables (and the correction function) not in the database yet: migrate, then run again.
    missing: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.created or self.passwords_set or self.changes)

    def render(self) -> str:
        lines = [f"warehouse roles on {self.database} (schema {self.schema})"]
        lines += [f"created role {name}" for name in self.created]
        lines += [f"password set for {name}" for name in self.passwords_set]
        lines += self.changes
        if not self.changed:
            lines.append("no change: roles, ownership and privileges already as the policy says")
        lines += [
            f"note: {name} is NOLOGIN (no password given); set its password variable and run again to log in"
            for name in self.nologin
        ]
        if self.missing:
            lines.append(
                f"note: not in the database yet: {', '.join(self.missing)}; run `kpi-platform migrate` "
                f"(with {settings.ENV_WAREHOUSE_OWNER_URL}) and then this command again"
            )
        return "\n".join(lines)


def passwords_from_env(*, environ: Mapping[str, str]) -> dict[str, str | None]:
    """Role passwords by kind (owner, writer, reader) from KPI_DB_*_PASSWORD; None where unset or empty."""
    names = {
        "owner": settings.ENV_DB_OWNER_PASSWORD,
        "writer": settings.ENV_DB_WRITER_PASSWORD,
        "reader": settings.ENV_DB_READER_PASSWORD,
    }
    return {kind: environ.get(variable) or None for kind, variable in names.items()}


def ensure_roles(
    *,
    url: str | sa.URL,
    names: RoleNames | None = None,
    passwords: Mapping[str, str | None] | None = None,
) -> RolesReport:
    """Create the owner, writer and reader roles if missing and apply the privilege policy, in one transaction.

    `url` connects as a role allowed to create roles and change ownership (a superuser, typically `postgres`).
    `passwords` (kind → password) sets a role's password and LOGIN; a role created without one is NOLOGIN, and
    an existing role keeps its login and password. Passwords reach the server only as verifiers computed client-side.
    Warehouse objects are handed to the owner; privileges on them are made exactly those of the policy.
    Idempotent: a second call changes nothing and reports no change. Raises RolesError on SQLite, without the
    right to create roles, or when an existing role is a superuser or the writer/reader is a member of the owner.
    """
    names = names or RoleNames()
    passwords = dict(passwords or {})
    unknown = set(passwords) - {"owner", "writer", "reader"}
    if unknown:
        raise ValueError(f"passwords for unknown role kinds {sorted(unknown)}")
    parsed = sa.make_url(url)
    display = parsed.render_as_string(hide_password=True)
    if not parsed.drivername.startswith(("postgresql", "postgres")):
        raise RolesError(
            f"database roles need PostgreSQL; {display} is {parsed.get_backend_name()}, which has no roles "
            "(the embedded SQLite warehouse is single-user)"
        )
    # Bound values (password verifiers) never appear in error messages.
    engine = sa.create_engine(parsed.set(drivername="postgresql+psycopg2"), hide_parameters=True)
    try:
        with engine.connect() as conn, conn.begin():
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PG_ROLES_LOCK_KEY)))
            return _apply(conn, display=display, names=names, passwords=passwords)
    finally:
        engine.dispose()


# --- applying the policy ----------------------------------------------------------------------------------------


def _apply(
    conn: sa.Connection, *, display: str, names: RoleNames, passwords: Mapping[str, str | None]
) -> RolesReport:
    me = conn.execute(
        sa.text("SELECT rolname, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user")
    ).one()
    if not (me.rolsuper or me.rolcreaterole):
        raise RolesError(
            f"role {me.rolname!r} may not create roles; connect as a superuser (e.g. postgres) through "
            f"{settings.ENV_WAREHOUSE_ADMIN_URL}"
        )
    schema_name = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
    database = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    q = conn.dialect.identifier_preparer.quote
    before = _state(conn, schema_name=schema_name, names=names)

    created, passwords_set, nologin = _ensure_role_rows(
        conn, names=names, passwords=passwords, superuser=me.rolsuper
    )
    owner, writer, reader = q(names.owner), q(names.writer), q(names.reader)
    for name in (names.writer, names.reader):
        if conn.execute(sa.select(sa.func.pg_has_role(name, names.owner, "USAGE"))).scalar_one():
            raise RolesError(
                f"role {name!r} is a member of the owner {names.owner!r}; it would own the tables"
            )

    def run(statement: str) -> None:
        conn.execute(sa.text(statement))

    run(f"GRANT CONNECT ON DATABASE {q(database)} TO {owner}, {writer}, {reader}")
    run(f"REVOKE CREATE ON SCHEMA {q(schema_name)} FROM PUBLIC, {writer}, {reader}")
    run(f"GRANT USAGE, CREATE ON SCHEMA {q(schema_name)} TO {owner}")
    run(f"GRANT USAGE ON SCHEMA {q(schema_name)} TO {writer}, {reader}")

    present = _tables(conn, schema_name=schema_name)
    for table in WRITER_TABLE_PRIVILEGES:
        if table in present and present[table] != names.owner:
            run(f"ALTER TABLE {q(table)} OWNER TO {owner}")  # its sequences and indexes follow
    function = _function_signature(conn, schema_name=schema_name)
    function_exists = function is not None
    if function is not None:
        # SECURITY DEFINER runs with its owner's rights: never leave it owned by a superuser.
        run(f"ALTER FUNCTION {function} OWNER TO {owner}")

    default = f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner}"
    in_schema = f"{default} IN SCHEMA {q(schema_name)}"
    run(f"{in_schema} GRANT {', '.join(sorted(READER_TABLE_PRIVILEGES))} ON TABLES TO {reader}")
    run(f"{in_schema} GRANT {', '.join(sorted(WRITER_DEFAULT_TABLE_PRIVILEGES))} ON TABLES TO {writer}")
    run(f"{in_schema} GRANT USAGE, SELECT ON SEQUENCES TO {writer}")
    # PostgreSQL lets PUBLIC execute new functions; the owner's functions are granted one by one instead.
    run(f"{default} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC")

    for table, writer_privileges in WRITER_TABLE_PRIVILEGES.items():
        if table not in present:
            continue
        run(f"REVOKE ALL ON TABLE {q(table)} FROM PUBLIC, {writer}, {reader}")
        run(f"GRANT {', '.join(sorted(writer_privileges))} ON TABLE {q(table)} TO {writer}")
        run(f"GRANT {', '.join(sorted(READER_TABLE_PRIVILEGES))} ON TABLE {q(table)} TO {reader}")
        for sequence in _owned_sequences(conn, schema_name=schema_name, table=table):
            run(f"REVOKE ALL ON SEQUENCE {q(sequence)} FROM PUBLIC, {writer}, {reader}")
            if INSERT in writer_privileges:
                run(f"GRANT USAGE, SELECT ON SEQUENCE {q(sequence)} TO {writer}")
    if function is not None:
        run(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC, {reader}")
        run(f"GRANT EXECUTE ON FUNCTION {function} TO {writer}")

    after = _state(conn, schema_name=schema_name, names=names)
    missing = [t for t in WRITER_TABLE_PRIVILEGES if t not in present]
    if not function_exists:
        missing.append(f"function {schema.CORRECT_DAILY_METRIC_FUNCTION}")
    report = RolesReport(
        database=display,
        schema=schema_name,
        created=tuple(created),
        passwords_set=tuple(passwords_set),
        nologin=tuple(nologin),
        changes=tuple(_describe_changes(before, after)),
        missing=tuple(missing),
    )
    logger.info("warehouse roles on %s: %s", display, "changed" if report.changed else "no change")
    return report


def _ensure_role_rows(
    conn: sa.Connection, *, names: RoleNames, passwords: Mapping[str, str | None], superuser: bool
) -> tuple[list[str], list[str], list[str]]:
    """CREATE or ALTER the three roles; return (created, passwords set, roles left NOLOGIN)."""
    q = conn.dialect.identifier_preparer.quote
    created: list[str] = []
    passwords_set: list[str] = []
    nologin: list[str] = []
    for kind, name in names.items():
        password = passwords.get(kind)
        row = conn.execute(
            sa.text("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = :name"),
            {"name": name},
        ).first()
        if row is None:
            login = "LOGIN PASSWORD :verifier" if password else "NOLOGIN"
            conn.execute(
                sa.text(f"CREATE ROLE {q(name)} {login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"),
                {"verifier": _verifier(conn, password, name)} if password else {},
            )
            created.append(name)
            if password:
                passwords_set.append(name)
            else:
                nologin.append(name)
            continue
        if row.rolsuper or row.rolbypassrls:
            raise RolesError(
                f"existing role {name!r} is a superuser or bypasses row security; use another name"
            )
        if password and not (
            row.rolcanlogin and _password_matches(conn, name, password, superuser=superuser)
        ):
            conn.execute(
                sa.text(f"ALTER ROLE {q(name)} LOGIN PASSWORD :verifier"),
                {"verifier": _verifier(conn, password, name)},
            )
            passwords_set.append(name)
        elif not row.rolcanlogin:
            nologin.append(name)
    return created, passwords_set, nologin


def _verifier(conn: sa.Connection, password: str, role: str) -> str:
    """The password as the verifier the server stores (per its password_encryption), computed client-side.

    A verifier, never the password, reaches the server and its statement log. CREATE/ALTER ROLE take no
    server-side parameters; psycopg2 binds the value client-side as a quoted literal.
    """
    from psycopg2.extensions import encrypt_password

    return encrypt_password(password, role, conn.connection.driver_connection)


def _password_matches(conn: sa.Connection, role: str, password: str, *, superuser: bool) -> bool:
    """True if the stored verifier is for `password`; readable only by a superuser (else: treat as changed)."""
    if not superuser:
        return False
    stored = conn.execute(
        sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :name"), {"name": role}
    ).scalar()
    if not stored:
        return False
    if stored.startswith("md5"):
        expected = "md5" + hashlib.md5((password + role).encode()).hexdigest()  # noqa: S324 - PostgreSQL's format
        return hmac.compare_digest(stored, expected)
    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", stored)
    if match is None or not password.isascii():
        return False  # non-ASCII passwords are SASLprep-normalised by the server; simply set it again
    iterations, salt, stored_key, server_key = match.groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    expected_stored = base64.b64encode(hashlib.sha256(client_key).digest()).decode()
    expected_server = base64.b64encode(hmac.new(salted, b"Server Key", hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected_stored, stored_key) and hmac.compare_digest(
        expected_server, server_key
    )


def _tables(conn: sa.Connection, *, schema_name: str) -> dict[str, str]:
    """Tables of the schema → owner."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')"
        ),
        {"schema": schema_name},
    )
    return {name: owner for name, owner in rows}


def _owned_sequences(conn: sa.Connection, *, schema_name: str, table: str) -> list[str]:
    """Sequences behind the table's serial / identity columns."""
    rows = conn.execute(
        sa.text(
            "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid AND d.deptype IN ('a', 'i') "
            "JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE s.relkind = 'S' AND t.relname = :table AND n.nspname = :schema ORDER BY s.relname"
        ),
        {"table": table, "schema": schema_name},
    )
    return list(rows.scalars())


def _function_signature(conn: sa.Connection, *, schema_name: str) -> str | None:
    """The correction function as GRANT and ALTER name it, with the argument types of the revision the
    warehouse is at, read from the catalogue (numeric values at head, double precision before 0007); None before
    0004."""
    found = conn.execute(
        sa.text(
            "SELECT pg_get_function_identity_arguments(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :schema AND p.proname = :name"
        ),
        {"schema": schema_name, "name": schema.CORRECT_DAILY_METRIC_FUNCTION},
    ).first()
    return None if found is None else f"{schema.CORRECT_DAILY_METRIC_FUNCTION}({found[0]})"


# --- state, for an exact report of what changed -----------------------------------------------------------------

# Every query yields (object, owner, grantee, privilege); grantee 0 in an ACL is PUBLIC.
_STATE_QUERIES: tuple[str, ...] = (
    # tables and sequences of the schema
    """SELECT CASE WHEN c.relkind = 'S' THEN 'sequence ' ELSE 'table ' END || c.relname,
        pg_get_userbyid(c.relowner),
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
        CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))) a
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p', 'S')""",
    # functions of the schema with the correction function's name
    """SELECT 'function ' || p.proname, pg_get_userbyid(p.proowner),
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    WHERE n.nspname = :schema AND p.proname = :function""",
    """SELECT 'schema ' || n.nspname, pg_get_userbyid(n.nspowner),
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
    FROM pg_namespace n CROSS JOIN LATERAL aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
    WHERE n.nspname = :schema""",
    """SELECT 'database ' || d.datname, pg_get_userbyid(d.datdba),
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
    FROM pg_database d CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
    WHERE d.datname = current_database()""",
    # built-in defaults of the owner's new functions (EXECUTE for PUBLIC unless revoked)
    """SELECT 'default privileges on functions', r.rolname,
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
    FROM pg_roles r CROSS JOIN LATERAL aclexplode(coalesce(
        (SELECT d.defaclacl FROM pg_default_acl d
         WHERE d.defaclrole = r.oid AND d.defaclnamespace = 0 AND d.defaclobjtype = 'f'),
        acldefault('f', r.oid))) a
    WHERE r.rolname = :owner""",
    # default privileges the owner's new tables and sequences get in the schema
    """SELECT 'default privileges on ' || CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
        WHEN 'f' THEN 'functions' ELSE d.defaclobjtype::text END
        || coalesce(' in schema ' || n.nspname, ''), pg_get_userbyid(d.defaclrole),
        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
    FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace
    CROSS JOIN LATERAL aclexplode(d.defaclacl) a
    WHERE pg_get_userbyid(d.defaclrole) = :owner AND d.defaclnamespace <> 0""",
)


def _state(
    conn: sa.Connection, *, schema_name: str, names: RoleNames
) -> dict[str, tuple[str, dict[str, str]]]:
    """Object → (owner, grantee → sorted privileges) for the grantees that matter: our roles and PUBLIC.

    An object's own owner is left out as a grantee (it holds every privilege on what it owns).
    """
    grantees = {names.owner, names.writer, names.reader, "PUBLIC"}
    params = {"schema": schema_name, "function": schema.CORRECT_DAILY_METRIC_FUNCTION, "owner": names.owner}
    found: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for query in _STATE_QUERIES:
        for obj, owner, grantee, privilege in conn.execute(sa.text(query), params):
            entry = found.setdefault(obj, (owner, {}))
            if grantee in grantees and grantee != owner:
                entry[1].setdefault(grantee, set()).add(privilege)
    roles = conn.execute(
        sa.text("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN (:o, :w, :r)"),
        {"o": names.owner, "w": names.writer, "r": names.reader},
    )
    for name, can_login in roles:
        found[f"role {name}"] = ("LOGIN" if can_login else "NOLOGIN", {})
    return {
        obj: (owner, {g: ", ".join(sorted(p)) for g, p in privileges.items()})
        for obj, (owner, privileges) in found.items()
    }


def _describe_changes(
    before: Mapping[str, tuple[str, Mapping[str, str]]], after: Mapping[str, tuple[str, Mapping[str, str]]]
) -> list[str]:
    lines: list[str] = []
    for obj in sorted(before.keys() | after.keys()):
        old_owner, old = before.get(obj, ("none", {}))
        new_owner, new = after.get(obj, ("none", {}))
        if obj.startswith("role "):
            if old_owner != new_owner and obj in before:
                lines.append(f"{obj}: {old_owner} → {new_owner}")
            continue
        if old_owner != new_owner and obj in before:
            lines.append(f"{obj}: owner {old_owner} → {new_owner}")
        for grantee in sorted(old.keys() | new.keys()):
            if old.get(grantee) != new.get(grantee):
                lines.append(f"{obj}: {grantee} {old.get(grantee) or 'none'} → {new.get(grantee) or 'none'}")
    return lines
