"""Counting the application database per UTC day: boundaries, time zones, deletions, and clear failures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from kpi_platform.activity import AppDatabase, AppDatabaseError, ensure_demo_app_db, generate_demo_app_db
from kpi_platform_tests.support.app_db import fill_app_db

JAN_1, JAN_3 = date(2026, 1, 1), date(2026, 1, 3)
LATER = datetime(2026, 2, 1, tzinfo=UTC)


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, second, micro, tzinfo=UTC)


def series(counts, metric: str) -> list[int]:
    return [d.values[metric] for d in counts.days]


def test_totals_and_created_per_utc_day_with_exact_boundaries(app_url):
    fill_app_db(
        app_url,
        {
            "profiles": [at(1, 10), at(2, 23, 59, 59, 999_999), at(3, 0)],
            "posts": [datetime(2025, 12, 31, 23, 0, tzinfo=UTC), at(1), at(2, 0), at(2, 5), at(4, 1)],
            "comments": [at(3, 1)],
        },
    )
    counts = AppDatabase(app_url).count_days(start=JAN_1, end=JAN_3, now=LATER)
    assert [d.day for d in counts.days] == [JAN_1, date(2026, 1, 2), JAN_3]
    assert series(counts, "users_total") == [1, 2, 3]
    assert series(counts, "posts_total") == [2, 4, 4]
    assert series(counts, "posts_created") == [1, 2, 0]
    assert series(counts, "comments_total") == [0, 0, 1]
    assert series(counts, "comments_created") == [0, 0, 1]
    assert counts.taken_at == LATER


def test_deleted_rows_disappear_from_a_later_count(app_url):
    fill_app_db(app_url, {"profiles": [at(1)], "posts": [at(1), at(1, 13), at(2)], "comments": []})
    reader = AppDatabase(app_url)
    before = reader.count_days(start=JAN_1, end=JAN_3, now=LATER)
    with reader.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM posts WHERE id = 1"))
    after = reader.count_days(start=JAN_1, end=JAN_3, now=LATER)
    reader.dispose()
    assert series(before, "posts_total") == [2, 3, 3]
    # Why snapshots must be immutable: the past day's counts change once content is deleted.
    assert series(after, "posts_total") == [1, 2, 2]
    assert series(after, "posts_created") == [1, 1, 0]


def test_sqlite_text_timestamps_with_offsets_count_on_their_utc_day(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    fill_app_db(url, {"profiles": [], "posts": [], "comments": []})
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for n, text in enumerate(
            ["2026-01-01T23:30:00+02:00", "2026-01-02T01:00:00+02:00", "2026-01-02T22:30:00-02:00"], 1
        ):
            conn.execute(
                sa.text("INSERT INTO posts (id, profile_id, body, created_at) VALUES (:id, 1, 'x', :ts)"),
                {"id": n, "ts": text},
            )
    engine.dispose()
    counts = AppDatabase(url).count_days(start=JAN_1, end=JAN_3, now=LATER)
    assert series(counts, "posts_created") == [2, 0, 1]


def test_postgres_counts_in_utc_whatever_the_session_time_zone(pg_url):
    fill_app_db(pg_url, {"profiles": [], "posts": [at(1, 23, 30), at(2, 0, 30)], "comments": []})
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        database = conn.execute(sa.text("SELECT current_database()")).scalar()
        conn.execute(sa.text(f"ALTER DATABASE \"{database}\" SET timezone TO 'Pacific/Kiritimati'"))
        # A naive `timestamp` column holding UTC wall times must bucket the same way.
        conn.execute(
            sa.text(
                "ALTER TABLE comments ALTER COLUMN created_at TYPE timestamp USING created_at AT TIME ZONE 'UTC'"
            )
        )
        conn.execute(sa.text("INSERT INTO comments VALUES (1, 1, 1, 'x', '2026-01-01 23:30:00')"))
    engine.dispose()
    counts = AppDatabase(pg_url).count_days(start=JAN_1, end=JAN_3, now=LATER)
    assert series(counts, "posts_created") == [1, 1, 0]
    assert series(counts, "comments_created") == [1, 0, 0]


def test_a_day_that_has_not_ended_is_refused(app_url):
    fill_app_db(app_url, {"profiles": [], "posts": [], "comments": []})
    with pytest.raises(ValueError, match="2026-01-03 has not ended"):
        AppDatabase(app_url).count_days(start=JAN_1, end=JAN_3, now=at(3, 23, 59))


def test_missing_sqlite_file_is_a_clear_error_and_is_not_created(tmp_path):
    path = tmp_path / "nowhere" / "app.sqlite"
    with pytest.raises(AppDatabaseError, match="application database not found"):
        AppDatabase(f"sqlite:///{path}").count_days(start=JAN_1, end=JAN_3, now=LATER)
    assert not path.exists()


def test_missing_table_is_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    fill_app_db(url, {"profiles": [], "posts": [], "comments": []})
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE comments"))
    engine.dispose()
    with pytest.raises(AppDatabaseError, match=r"lacks table\(s\) \['comments'\]"):
        AppDatabase(url).count_days(start=JAN_1, end=JAN_3, now=LATER)


def test_password_never_shown():
    reader = AppDatabase("postgresql://app:s3cret@db.invalid/app")
    assert "s3cret" not in repr(reader) and "s3cret" not in reader.url_for_display


# --- demo database ---


def test_demo_is_deterministic_spread_over_the_days_and_has_deletions(tmp_path):
    today = date(2026, 3, 1)
    first = generate_demo_app_db(f"sqlite:///{tmp_path / 'a.sqlite'}", days=60, seed=3, today=today)
    second = generate_demo_app_db(f"sqlite:///{tmp_path / 'b.sqlite'}", days=60, seed=3, today=today)
    assert first == second
    assert first.deleted_posts > 0 and first.deleted_comments > 0
    url = f"sqlite:///{tmp_path / 'a.sqlite'}"
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for table in ("profiles", "posts", "comments"):
            low, high = conn.execute(sa.text(f"SELECT min(created_at), max(created_at) FROM {table}")).one()  # noqa: S608
            assert str(low) >= str(today - timedelta(days=60)) and str(high) < str(today)
    engine.dispose()
    counts = AppDatabase(url).count_days(
        start=today - timedelta(days=60), end=today - timedelta(days=1), now=datetime(2026, 3, 2, tzinfo=UTC)
    )
    last = counts.days[-1].values
    assert (last["users_total"], last["posts_total"], last["comments_total"]) == (
        first.profiles,
        first.posts,
        first.comments,
    )
    assert sum(d.values["posts_created"] for d in counts.days) == first.posts


def test_demo_refuses_a_database_with_application_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    fill_app_db(url, {"profiles": [], "posts": [at(1)], "comments": []})
    with pytest.raises(FileExistsError, match="already has table"):
        generate_demo_app_db(url, days=5, seed=1, today=date(2026, 1, 10))
    assert AppDatabase(url).count_days(start=JAN_1, end=JAN_1, now=LATER).days[0].values["posts_total"] == 1


def test_ensure_demo_creates_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'data' / 'app.sqlite'}"
    assert ensure_demo_app_db(url, days=10, today=date(2026, 1, 10)) is True
    assert ensure_demo_app_db(url, days=10, today=date(2026, 1, 10)) is False


def test_ensure_demo_refuses_a_partial_application_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE posts (id INTEGER PRIMARY KEY, created_at TIMESTAMP)"))
    engine.dispose()
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_demo_app_db(url, days=10, today=date(2026, 1, 10))


def test_only_the_asked_metrics_are_counted_and_a_pattern_named_one_needs_no_code(app_url):
    # `users_created` is not built in: its definition alone makes the `created` collector count profiles.
    fill_app_db(app_url, {"profiles": [at(1), at(2), at(2, 13)], "posts": [at(1)], "comments": []})
    counts = AppDatabase(app_url).count_days(
        start=JAN_1, end=JAN_3, now=LATER, metrics=["users_created", "users_total"]
    )
    assert [set(d.values) for d in counts.days] == [{"users_created", "users_total"}] * 3
    assert series(counts, "users_created") == [1, 2, 0]
    assert series(counts, "users_total") == [1, 3, 3]


def test_a_metric_without_collector_is_refused_before_reading(tmp_path):
    reader = AppDatabase(f"sqlite:///{tmp_path / 'absent.sqlite'}")
    with pytest.raises(ValueError, match="no collector counts activity metric 'logins_total'"):
        reader.count_days(start=JAN_1, end=JAN_3, now=LATER, metrics=["posts_total", "logins_total"])
    with pytest.raises(ValueError, match="no activity metric to count"):
        reader.count_days(start=JAN_1, end=JAN_3, now=LATER, metrics=[])
    assert not (tmp_path / "absent.sqlite").exists()


def test_only_the_tables_of_the_asked_metrics_must_exist(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE posts (id INTEGER PRIMARY KEY, created_at TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO posts (id, created_at) VALUES (1, '2026-01-02 10:00:00')"))
    engine.dispose()
    reader = AppDatabase(url)
    counts = reader.count_days(start=JAN_1, end=JAN_3, now=LATER, metrics=["posts_total"])
    assert series(counts, "posts_total") == [0, 1, 1]
    with pytest.raises(AppDatabaseError, match=r"lacks table\(s\) \['profiles'\]"):
        reader.count_days(start=JAN_1, end=JAN_3, now=LATER, metrics=["users_total"])
    reader.dispose()
