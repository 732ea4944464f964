"""The platform activity metrics: their definitions, as seeded into `metric_definitions` by migration 0002."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from kpi_platform import settings

CATEGORY = settings.ACTIVITY_CATEGORY
USERS_TOTAL, POSTS_TOTAL, COMMENTS_TOTAL, POSTS_CREATED, COMMENTS_CREATED = settings.ACTIVITY_METRIC_TYPES

#: Each application table, the totals metric counted from it and its per-day creations metric (if any).
TABLE_METRICS: tuple[tuple[str, str, str | None], ...] = (
    ("profiles", USERS_TOTAL, None),
    ("posts", POSTS_TOTAL, POSTS_CREATED),
    ("comments", COMMENTS_TOTAL, COMMENTS_CREATED),
)


@dataclass(frozen=True)
class MetricDefinition:
    """One row of `metric_definitions`: what a metric means and how its days roll up ('sum' or 'last')."""

    metric_type: str
    metric_category: str
    display_name: str
    description: str
    unit: str
    format: str
    aggregation: str

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


_TOTAL = "Rows existing at snapshot time with created_at before the end of the day (UTC)"
_CREATED = "Rows with created_at during the day (UTC) that still existed at snapshot time"

METRIC_DEFINITIONS: tuple[MetricDefinition, ...] = (
    MetricDefinition(USERS_TOTAL, CATEGORY, "Users", f"User profiles. {_TOTAL}.", "users", ",.0f", "last"),
    MetricDefinition(POSTS_TOTAL, CATEGORY, "Posts", f"Posts. {_TOTAL}.", "posts", ",.0f", "last"),
    MetricDefinition(
        COMMENTS_TOTAL, CATEGORY, "Comments", f"Comments. {_TOTAL}.", "comments", ",.0f", "last"
    ),
    MetricDefinition(POSTS_CREATED, CATEGORY, "Posts created", f"Posts. {_CREATED}.", "posts", ",.0f", "sum"),
    MetricDefinition(
        COMMENTS_CREATED, CATEGORY, "Comments created", f"Comments. {_CREATED}.", "comments", ",.0f", "sum"
    ),
)
