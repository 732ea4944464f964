"""The platform activity metrics: their definitions (seeded into `metric_definitions` by migration 0002, moved to
the designed layout by 0007), the collectors that count them, and which definitions a snapshot collects.

A metric is a `metric_definitions` row: `metric_type` the kind of figure (`count`), `metric_category` the metric
(`posts_total`). A definition is collected when it is active and a collector counts it. The collectors are of
two kinds over the application tables: `<subject>_total` (rows existing at snapshot time, created before the
day's end) and `<subject>_created` (rows created during the day), subjects `users` (table profiles), `posts` and
`comments`. So a definition named by that pattern (e.g. `users_created`) is collected without a code change; any
other metric needs its collector here first (and its table in the application database).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from kpi_platform import settings

COUNT = settings.ACTIVITY_METRIC_TYPE
USERS_TOTAL, POSTS_TOTAL, COMMENTS_TOTAL, POSTS_CREATED, COMMENTS_CREATED = settings.ACTIVITY_METRICS

#: Application table counted for each subject of a metric name.
SUBJECT_TABLES: Mapping[str, str] = {"users": "profiles", "posts": "posts", "comments": "comments"}
TOTAL, CREATED = "total", "created"
COLLECTOR_KINDS: tuple[str, ...] = (TOTAL, CREATED)


@dataclass(frozen=True)
class Collector:
    """How one metric is counted: rows of `table`, either all existing before the day's end (`total`) or created
    during the day (`created`)."""

    metric: str
    table: str
    kind: str


def collector_of(metric: str) -> Collector | None:
    """The built-in collector of a metric named `<subject>_<kind>`; None when no collector counts it."""
    subject, _, kind = metric.rpartition("_")
    table = SUBJECT_TABLES.get(subject)
    if table is None or kind not in COLLECTOR_KINDS:
        return None
    return Collector(metric=metric, table=table, kind=kind)


def totals_pairs(metrics: Iterable[str]) -> list[tuple[str, str]]:
    """(total, created) metric pairs of the same table among `metrics`: total(d) − total(d−1) = created(d)."""
    present = set(metrics)
    return [
        (f"{subject}_{TOTAL}", f"{subject}_{CREATED}")
        for subject in SUBJECT_TABLES
        if {f"{subject}_{TOTAL}", f"{subject}_{CREATED}"} <= present
    ]


@dataclass(frozen=True)
class CollectionPlan:
    """Which defined metrics a snapshot collects, and why the others are not collected."""

    #: Active `count` definitions with a collector (built-in ones first): the metrics stored for each day.
    collected: tuple[str, ...]
    #: Definitions switched off (`is_active` false): kept with their stored days, not collected.
    inactive: tuple[str, ...]
    #: Active definitions no collector counts (another kind of figure, or a metric without collector code).
    without_collector: tuple[str, ...]

    def not_collected(self) -> dict[str, str]:
        """Each metric not collected and why, for run metadata and logs."""
        reasons = {m: "inactive (is_active = false)" for m in self.inactive}
        reasons |= {
            m: "no collector for this metric: only counts named <users|posts|comments>_<total|created> are built in"
            for m in self.without_collector
        }
        return reasons


def _label(row: Mapping[str, Any]) -> str:
    return (
        row["metric_category"]
        if row["metric_type"] == COUNT
        else f"{row['metric_category']} ({row['metric_type']})"
    )


def collection_plan(definitions: Iterable[Mapping[str, Any]]) -> CollectionPlan:
    """The plan for `metric_definitions` rows (as `Warehouse.metric_definitions()` returns them)."""
    collected: list[str] = []
    inactive: list[str] = []
    without: list[str] = []
    for row in definitions:
        if not row["is_active"]:
            inactive.append(_label(row))
        elif row["metric_type"] == COUNT and collector_of(row["metric_category"]) is not None:
            collected.append(row["metric_category"])
        else:
            without.append(_label(row))
    # The built-in metrics first, in their usual order (users, posts, comments; totals, then creations).
    order = {metric: n for n, metric in enumerate(settings.ACTIVITY_METRICS)}
    collected.sort(key=lambda m: (order.get(m, len(order)), m))
    return CollectionPlan(
        collected=tuple(collected), inactive=tuple(inactive), without_collector=tuple(without)
    )


@dataclass(frozen=True)
class MetricDefinition:
    """One row of `metric_definitions`: what a metric means and how its days roll up ('sum' or 'last')."""

    metric_type: str
    metric_category: str
    display_name: str
    description: str
    unit: str
    format_pattern: str
    aggregation: str
    is_active: bool = True

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


_TOTAL = "Rows existing at snapshot time with created_at before the end of the day (UTC)"
_CREATED = "Rows with created_at during the day (UTC) that still existed at snapshot time"

#: The built-in definitions, as the migrations leave them.
METRIC_DEFINITIONS: tuple[MetricDefinition, ...] = (
    MetricDefinition(COUNT, USERS_TOTAL, "Users", f"User profiles. {_TOTAL}.", "users", ",.0f", "last"),
    MetricDefinition(COUNT, POSTS_TOTAL, "Posts", f"Posts. {_TOTAL}.", "posts", ",.0f", "last"),
    MetricDefinition(COUNT, COMMENTS_TOTAL, "Comments", f"Comments. {_TOTAL}.", "comments", ",.0f", "last"),
    MetricDefinition(COUNT, POSTS_CREATED, "Posts created", f"Posts. {_CREATED}.", "posts", ",.0f", "sum"),
    MetricDefinition(
        COUNT, COMMENTS_CREATED, "Comments created", f"Comments. {_CREATED}.", "comments", ",.0f", "sum"
    ),
)
