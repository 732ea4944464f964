"""Timestamps read back from the warehouse. Free of pandas, so readers that only need a timestamp (the health
command, the instance checks) do not pay for importing it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload


@overload
def as_utc(value: datetime | str) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | str | None) -> datetime | None: ...
def as_utc(value: datetime | str | None) -> datetime | None:
    """A timestamp read back from the warehouse, as an aware UTC datetime: SQLite returns naive timestamps (stored
    in UTC), or text from an aggregate; PostgreSQL aware ones."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
