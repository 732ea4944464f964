"""The demo application database of the embedded default: profiles, posts and comments with deletions."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import sqlalchemy as sa

from kpi_platform import settings
from kpi_platform.activity.source import APP_TABLES, app_engine

logger = logging.getLogger(__name__)

#: Rows older than this many days may be deleted, the way users remove old content.
DELETE_OLDER_THAN_DAYS = 7
DELETED_POST_SHARE = 0.04
DELETED_COMMENT_SHARE = 0.06
DELETED_PROFILE_SHARE = 0.02

_metadata = sa.MetaData()
profiles = sa.Table(
    "profiles",
    _metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
posts = sa.Table(
    "posts",
    _metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("profile_id", sa.Integer(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
comments = sa.Table(
    "comments",
    _metadata,
    sa.Column("id", sa.Integer(), primary_key=True),
    sa.Column("post_id", sa.Integer(), nullable=False),
    sa.Column("profile_id", sa.Integer(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


@dataclass(frozen=True)
class DemoAppDb:
    """Rows left in the generated database, and rows deleted after creation."""

    profiles: int
    posts: int
    comments: int
    deleted_profiles: int
    deleted_posts: int
    deleted_comments: int


def _moment(rng: random.Random, day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC) + timedelta(seconds=rng.randrange(86_400))


def generate_demo_app_db(url: str, *, days: int, seed: int, today: date) -> DemoAppDb:
    """Create profiles, posts and comments with created_at spread over the `days` days before `today` (UTC),
    then delete a share of the rows older than a week (comments of a deleted post go with it).

    Deterministic for a given seed and today. Refuses a database that already holds any of the three tables,
    so it can never touch a real application database.
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    engine = app_engine(url)
    database = engine.url.database or ""
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    first = today - timedelta(days=days)
    profile_rows: list[dict] = []
    post_rows: list[dict] = []
    comment_rows: list[dict] = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        growth = 1 + offset / max(days, 1)
        for _ in range(rng.randint(1, 4) if offset else 12):
            profile_rows.append(
                {
                    "id": len(profile_rows) + 1,
                    "username": f"user{len(profile_rows) + 1}",
                    "created_at": _moment(rng, day),
                }
            )
        for _ in range(int(rng.randint(4, 12) * growth)):
            author = rng.randint(1, len(profile_rows))
            post_rows.append(
                {
                    "id": len(post_rows) + 1,
                    "profile_id": author,
                    "body": f"post {len(post_rows) + 1}",
                    "created_at": _moment(rng, day),
                }
            )
        for _ in range(int(rng.randint(8, 30) * growth)):
            post = post_rows[rng.randrange(len(post_rows))]
            # Posts are all from this day or earlier, so a comment stays on its day and after its post.
            created = max(_moment(rng, day), post["created_at"])
            comment_rows.append(
                {
                    "id": len(comment_rows) + 1,
                    "post_id": post["id"],
                    "profile_id": rng.randint(1, len(profile_rows)),
                    "body": f"comment {len(comment_rows) + 1}",
                    "created_at": created,
                }
            )
    cutoff = datetime.combine(today - timedelta(days=DELETE_OLDER_THAN_DAYS), time.min, tzinfo=UTC)

    def doomed(rows: list[dict], share: float) -> set[int]:
        return {r["id"] for r in rows if r["created_at"] < cutoff and rng.random() < share}

    deleted_posts = doomed(post_rows, DELETED_POST_SHARE)
    deleted_comments = doomed(comment_rows, DELETED_COMMENT_SHARE) | {
        c["id"] for c in comment_rows if c["post_id"] in deleted_posts
    }
    deleted_profiles = doomed(profile_rows, DELETED_PROFILE_SHARE)
    try:
        with engine.begin() as conn:
            existing = [t for t in APP_TABLES if sa.inspect(conn).has_table(t)]
            if existing:
                raise FileExistsError(
                    f"{engine.url.render_as_string(hide_password=True)} already has table(s) {existing}; "
                    "the demo generator only writes to a database without them"
                )
            _metadata.create_all(conn)
            conn.execute(profiles.insert(), profile_rows)
            conn.execute(posts.insert(), post_rows)
            conn.execute(comments.insert(), comment_rows)
            # Deleted after insertion, like the application does: the rows simply stop existing.
            for table, ids in (
                (comments, deleted_comments),
                (posts, deleted_posts),
                (profiles, deleted_profiles),
            ):
                if ids:
                    conn.execute(sa.delete(table).where(table.c.id.in_(sorted(ids))))
    finally:
        engine.dispose()
    summary = DemoAppDb(
        profiles=len(profile_rows) - len(deleted_profiles),
        posts=len(post_rows) - len(deleted_posts),
        comments=len(comment_rows) - len(deleted_comments),
        deleted_profiles=len(deleted_profiles),
        deleted_posts=len(deleted_posts),
        deleted_comments=len(deleted_comments),
    )
    logger.info("demo application database %s: %s", engine.url.render_as_string(hide_password=True), summary)
    return summary


def ensure_demo_app_db(url: str, *, days: int, today: date) -> bool:
    """Create the demo application database unless its tables exist; True if it was created now.

    Raises FileExistsError if only some of profiles/posts/comments exist (not a database this module made).
    """
    engine = app_engine(url)
    try:
        database = engine.url.database or ""
        is_file = engine.dialect.name == "sqlite" and database not in ("", ":memory:")
        if not (is_file and not Path(database).expanduser().exists()):
            with engine.connect() as conn:
                present = [t for t in APP_TABLES if sa.inspect(conn).has_table(t)]
            if len(present) == len(APP_TABLES):
                return False
            if present:
                raise FileExistsError(
                    f"{engine.url.render_as_string(hide_password=True)} has {present} but not all of "
                    f"{list(APP_TABLES)}; refusing to generate demo data into it"
                )
    finally:
        engine.dispose()
    generate_demo_app_db(url, days=days, seed=settings.DEMO_APP_DB_SEED, today=today)
    return True
