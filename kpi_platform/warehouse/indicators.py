"""Row indicators shared by the query API and the export: the freshness scale of a stored row, by the age of its
last update (`fetched_at`). Plain functions, no database access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import pandas as pd

FRESH_UNDER_1H: Final = "< 1 h"
FRESH_UNDER_6H: Final = "< 6 h"
FRESH_UNDER_24H: Final = "< 24 h"
FRESH_OLDER: Final = "older"

#: Every level, freshest first: each bound is exclusive (a row exactly one hour old is "< 6 h").
FRESHNESS_LEVELS: Final[tuple[str, ...]] = (FRESH_UNDER_1H, FRESH_UNDER_6H, FRESH_UNDER_24H, FRESH_OLDER)
_BOUNDS: Final[tuple[tuple[timedelta, str], ...]] = (
    (timedelta(hours=1), FRESH_UNDER_1H),
    (timedelta(hours=6), FRESH_UNDER_6H),
    (timedelta(hours=24), FRESH_UNDER_24H),
)


def _aware(value: datetime, name: str) -> datetime:
    # SQLite returns the warehouse's timestamps naive (they are stored in UTC); PostgreSQL returns them aware.
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def freshness_level(fetched_at: datetime, now: datetime) -> str:
    """The freshness level of a row last updated at `fetched_at`, seen at `now`: "< 1 h", "< 6 h", "< 24 h" or
    "older". Naive datetimes are taken as UTC. A `fetched_at` after `now` (clock skew between hosts) counts as
    "< 1 h"."""
    age = _aware(now, "now") - _aware(fetched_at, "fetched_at")
    for bound, label in _BOUNDS:
        if age < bound:
            return label
    return FRESH_OLDER


def freshness_levels(fetched_at: pd.Series, now: datetime) -> pd.Series:
    """`freshness_level` of a whole column at once: an ordered categorical of FRESHNESS_LEVELS on the same index
    (freshest first, so it sorts and compares by level), missing (NaN) where `fetched_at` is. Naive timestamps
    are taken as UTC. Vectorised: one binary search per row, no Python work per row."""
    # A column already in UTC skips to_datetime, which inspects the values one by one to decide on caching.
    utc = isinstance(fetched_at.dtype, pd.DatetimeTZDtype) and str(fetched_at.dtype.tz) == "UTC"
    stamps = fetched_at if utc else pd.to_datetime(fetched_at, utc=True)
    # Ages as integer nanoseconds: plain numpy, exact at the bounds, a fraction of a millisecond for 30,000 rows.
    instants = stamps.to_numpy(dtype="datetime64[ns]")
    ages = pd.Timestamp(_aware(now, "now")).value - instants.view("int64")
    bounds = [bound // timedelta(microseconds=1) * 1000 for bound, _ in _BOUNDS]
    # side="right": an age equal to a bound falls in the next level, as in freshness_level (bounds are exclusive).
    codes = np.searchsorted(bounds, ages, side="right")
    codes[np.isnat(instants)] = -1
    # pandas-stubs 2.x types `codes` as a Sequence[int]; pandas takes (and here gets) an integer array.
    levels = pd.Categorical.from_codes(codes, categories=pd.Index(FRESHNESS_LEVELS), ordered=True)  # type: ignore[arg-type]
    return pd.Series(levels, index=fetched_at.index)
