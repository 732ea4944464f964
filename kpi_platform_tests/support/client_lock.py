"""The warehouse's per-client write lock on PostgreSQL (`warehouse.store.client_lock_key`), seen from a test."""

from __future__ import annotations

import sqlalchemy as sa

from kpi_platform.warehouse.store import client_lock_key


def sessions_waiting_for_client_lock(engine: sa.Engine, client_id: str) -> int:
    """How many sessions wait for the client's advisory lock. pg_locks shows a bigint key as classid (its high
    32 bits) and objid (its low 32 bits), with objsubid 1."""
    key = client_lock_key(client_id) & 0xFFFF_FFFF_FFFF_FFFF
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "select count(*) from pg_locks where locktype = 'advisory' and not granted "
                "and classid::bigint = :high and objid::bigint = :low and objsubid = 1"
            ),
            {"high": key >> 32, "low": key & 0xFFFF_FFFF},
        ).scalar_one()


def hold_client_lock(conn: sa.Connection, client_id: str) -> None:
    """Take the client's lock on `conn` until its transaction ends, as a writer of that client does."""
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(client_lock_key(client_id))))
