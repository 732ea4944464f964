"""Which defined metrics a snapshot collects: active `count` definitions with a collector; the others say why."""

from __future__ import annotations

from kpi_platform.activity.metrics import METRIC_DEFINITIONS, collection_plan, collector_of, totals_pairs


def definition(category: str, *, metric_type: str = "count", active: bool = True) -> dict:
    return {"metric_type": metric_type, "metric_category": category, "is_active": active}


def test_built_in_definitions_are_the_designed_layout_and_all_collected():
    rows = [d.as_row() for d in METRIC_DEFINITIONS]
    assert {r["metric_type"] for r in rows} == {"count"}
    assert [r["metric_category"] for r in rows] == [
        "users_total",
        "posts_total",
        "comments_total",
        "posts_created",
        "comments_created",
    ]
    assert all(r["is_active"] and r["format_pattern"] == ",.0f" for r in rows)
    plan = collection_plan(rows)
    assert plan.collected == tuple(r["metric_category"] for r in rows)
    assert plan.not_collected() == {}


def test_collectors_follow_the_subject_and_kind_of_the_name():
    users_created = collector_of("users_created")
    assert users_created is not None
    assert (users_created.table, users_created.kind) == ("profiles", "created")
    assert collector_of("comments_total") is not None
    for name in ("logins_total", "posts_deleted", "posts", "total", ""):
        assert collector_of(name) is None, name


def test_inactive_and_uncollectable_definitions_are_not_collected_and_say_why():
    plan = collection_plan(
        [
            definition("posts_total"),
            definition("comments_total", active=False),
            definition("users_created"),
            definition("logins_total"),
            definition("posts_total", metric_type="ratio"),
            definition("signups", metric_type="ratio", active=False),
        ]
    )
    assert plan.collected == ("posts_total", "users_created")
    assert plan.inactive == ("comments_total", "signups (ratio)")
    assert plan.without_collector == ("logins_total", "posts_total (ratio)")
    reasons = plan.not_collected()
    assert reasons["comments_total"] == "inactive (is_active = false)"
    assert reasons["logins_total"].startswith("no collector for this metric")
    assert set(reasons) == {"comments_total", "signups (ratio)", "logins_total", "posts_total (ratio)"}


def test_totals_pairs_need_both_metrics_of_a_subject():
    assert totals_pairs(
        ["posts_total", "posts_created", "comments_total", "users_created", "users_total"]
    ) == [
        ("users_total", "users_created"),
        ("posts_total", "posts_created"),
    ]
    assert totals_pairs(["comments_total"]) == []
