"""The part of the quality rules that needs no pandas: a failed rule's severity, plain JSON values and the day a
client must have by now. `rules` re-exports all three; readers that must not load pandas (the health command's
Dagster side, the check catalogue, the collection plans) import them from here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any


class CheckSeverity(StrEnum):
    """How bad a failed rule is; the orchestration layer maps it to its own severity type."""

    ERROR = "ERROR"
    WARN = "WARN"


def json_value(value: Any) -> Any:
    """`value` as a plain JSON value: numpy scalars unwrapped, NaN/inf/NaT as None, dates as ISO strings."""
    if value is None:
        return None
    if type(value).__module__.partition(".")[0] in ("numpy", "pandas"):
        # Only a value of their own types gets here, so importing them costs nothing; any other value is
        # converted without loading them.
        import numpy as np
        import pandas as pd

        if value is pd.NaT or value is pd.NA:
            return None
        if isinstance(value, np.datetime64):
            value = pd.Timestamp(value)  # .item() would give nanoseconds as an int
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, pd.Timestamp):
            return value.isoformat() if value.tzinfo or value.time() != time() else value.date().isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    return str(value)


def required_day(now_local: datetime, *, deadline_hour: int) -> date:
    """The latest day a client must have at `now_local`: yesterday from the deadline hour on, else the day before."""
    today = now_local.date()
    return today - timedelta(days=1 if now_local.hour >= deadline_hour else 2)
