"""Temporary PostgreSQL databases for the benchmarks: created on the admin server, dropped (with their sessions)
when the block ends. Imported by the benchmark scripts, which run with this folder on `sys.path`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


@contextmanager
def temporary_database(admin_url: str, prefix: str) -> Iterator[str]:
    """Yield the URL of a new, empty database `<prefix>_<random>` on `admin_url`'s server; drop it afterwards."""
    admin = sa.make_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
