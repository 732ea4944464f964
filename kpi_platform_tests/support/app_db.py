"""Application databases (profiles, posts, comments) with rows at chosen created_at moments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa

from kpi_platform.activity import demo


def fill_app_db(url: str, created: Mapping[str, Sequence[datetime]]) -> None:
    """Create profiles/posts/comments and insert one row per created_at moment given for each table."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            demo._metadata.create_all(conn)
            for name, moments in created.items():
                table = demo._metadata.tables[name]
                rows = []
                for n, moment in enumerate(moments, start=1):
                    row = {"id": n, "created_at": moment}
                    if name == "profiles":
                        row["username"] = f"u{n}"
                    else:
                        row.update(profile_id=1, body="x")
                        if name == "comments":
                            row["post_id"] = 1
                    rows.append(row)
                if rows:
                    conn.execute(table.insert(), rows)
    finally:
        engine.dispose()
