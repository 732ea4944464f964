"""Checks and conversions of frames written to or read from warehouse tables, and their COPY CSV rendering."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Collection, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, overload

import numpy as np
import pandas as pd
import sqlalchemy as sa

#: NULL marker of the COPY CSV stream; an unquoted empty field then stays an empty string.
COPY_NULL = r"\N"
#: Rows rendered per CSV chunk and characters handed to psycopg2 per read during COPY.
COPY_CHUNK_ROWS = 1_000
COPY_READ_SIZE = 1 << 20


# --- Frame checks and conversions ------------------------------------------------------------------------------


def is_integer(column: sa.Column) -> bool:
    return isinstance(column.type, sa.Integer)


def _is_number(column: sa.Column) -> bool:
    return isinstance(column.type, sa.Numeric | sa.Float) or is_integer(column)


def _is_timestamp(column: sa.Column) -> bool:
    return isinstance(column.type, sa.DateTime)


def _is_date(column: sa.Column) -> bool:
    return isinstance(column.type, sa.Date) and not _is_timestamp(column)


def is_json(column: sa.Column) -> bool:
    return isinstance(column.type, sa.JSON)


def _json_values(values: pd.Series) -> tuple[pd.Series, int | None]:
    """A JSON column with None for a missing value (None, NaN), and the position of the first value that JSON
    cannot hold (None when all can)."""
    out: list[Any] = []
    for position, value in enumerate(values.to_numpy(dtype=object)):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            out.append(None)
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            return values, position
        out.append(value)
    return pd.Series(out, index=values.index, dtype=object), None


def json_text(values: pd.Series) -> pd.Series:
    """A JSON column as the JSON text PostgreSQL parses from a COPY stream; None stays missing (SQL NULL)."""
    return values.map(lambda value: None if value is None else json.dumps(value), na_action="ignore")


def _describe_row(frame: pd.DataFrame, table: sa.Table, position: int) -> str:
    row = frame.iloc[position]
    label = frame.index[position]
    keys = ", ".join(
        f"{c.name}={row[c.name]!r}" for c in table.primary_key.columns if c.name in frame.columns
    )
    return f"row {label!r} ({keys})"


def _first(mask: pd.Series | np.ndarray) -> int | None:
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if len(hits) else None


#: Dates pandas can hold as timestamps; `to_dates` refuses others, so its shortcut only takes dates inside.
_TIMESTAMP_DATES = (pd.Timestamp.min.date() + timedelta(days=1), pd.Timestamp.max.date() - timedelta(days=1))


def _numpy_kind(values: pd.Series) -> str:
    """The numpy kind of a column ("i", "u", "f", "b", ...), or "" for a pandas extension dtype (Int64 etc.),
    which can hold missing values whatever its kind."""
    return values.dtype.kind if isinstance(values.dtype, np.dtype) else ""


def to_dates(values: pd.Series, what: str) -> pd.Series:
    items = values.to_numpy(dtype=object)
    if len(items) and set(map(type, items)) == {date}:
        # Already plain dates (the collection path's case): the round trip through timestamps would give them back
        # unchanged, so only its refusal of dates outside the timestamp range remains to be kept.
        if _TIMESTAMP_DATES[0] <= min(items) and max(items) <= _TIMESTAMP_DATES[1]:
            return pd.Series(items, index=values.index, dtype=object)
    try:
        parsed = pd.to_datetime(values, errors="raise")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: not a date ({exc})") from None
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_localize(None)
    return pd.Series(parsed.dt.date, index=values.index, dtype=object)


def prepare_frame(
    frame: pd.DataFrame | None, table: sa.Table, *, name: str, client_id: str, start: date, end: date
) -> pd.DataFrame:
    """Check a frame against its table and the range being replaced; return it with table-typed columns.

    Raises ValueError naming the first offending row: a row of another client or outside [start, end], a
    missing or unknown column, NULL in a required column, a non-finite number, a fractional count or a
    duplicate primary key.
    """
    if frame is None or len(frame) == 0:
        return pd.DataFrame(
            columns=[c.name for c in table.columns if c.name in getattr(frame, "columns", ())]
        )
    unknown = [c for c in frame.columns if c not in table.columns]
    if unknown:
        raise ValueError(
            f"{name}: columns {unknown} are not in table {table.name} ({list(table.columns.keys())})"
        )
    missing = [c.name for c in table.columns if not c.nullable and c.name not in frame.columns]
    if missing:
        raise ValueError(f"{name}: required columns {missing} of table {table.name} are missing")
    out = frame[[c.name for c in table.columns if c.name in frame.columns]].copy()

    for column in table.columns:
        if column.name not in out.columns:
            continue
        # A numpy integer or bool column cannot hold a missing value: no scan needed.
        if not column.nullable and _numpy_kind(out[column.name]) not in ("i", "u", "b"):
            position = _first(out[column.name].isna())
            if position is not None:
                raise ValueError(
                    f"{name} {_describe_row(out, table, position)}: {column.name} is required, got NULL/NaN"
                )

    out["kpi_date"] = to_dates(out["kpi_date"], f"{name}.kpi_date")
    position = _first(out["client_id"] != client_id)
    if position is not None:
        raise ValueError(
            f"{name} {_describe_row(out, table, position)}: client_id {out['client_id'].iloc[position]!r} "
            f"is not {client_id!r}; one range write holds one client"
        )
    position = _first((out["kpi_date"] < start) | (out["kpi_date"] > end))
    if position is not None:
        raise ValueError(
            f"{name} {_describe_row(out, table, position)}: kpi_date {out['kpi_date'].iloc[position]} "
            f"is outside the range being replaced [{start}, {end}]"
        )
    position = _first(out.duplicated([c.name for c in table.primary_key.columns]))
    if position is not None:
        raise ValueError(f"{name} {_describe_row(out, table, position)}: duplicate primary key")

    for column in table.columns:
        if column.name not in out.columns:
            continue
        values = out[column.name]
        if _is_number(column):
            if _numpy_kind(values) in ("i", "u"):
                # numpy integers: finite, whole and never missing; only the width may change.
                wanted: Literal["int64", "float64"] = "int64" if is_integer(column) else "float64"
                if values.dtype != wanted:
                    out[column.name] = values.astype(wanted)
                continue
            try:
                numbers = values if values.dtype == "float64" else pd.to_numeric(values).astype("float64")
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{name}.{column.name}: not a number ({exc})") from None
            position = _first(np.isinf(numbers.to_numpy()))
            if position is not None:
                raise ValueError(f"{name} {_describe_row(out, table, position)}: {column.name} is not finite")
            if is_integer(column):
                position = _first(numbers.notna() & (numbers != numbers.round()))
                if position is not None:
                    raise ValueError(
                        f"{name} {_describe_row(out, table, position)}: {column.name} "
                        f"must be a whole number, got {numbers.iloc[position]}"
                    )
                out[column.name] = numbers.astype("int64" if not column.nullable else "Int64")
            elif numbers is not values:
                out[column.name] = numbers
        elif is_json(column):
            converted, position = _json_values(values)
            if position is not None:
                raise ValueError(
                    f"{name} {_describe_row(out, table, position)}: {column.name} is not a JSON value, got "
                    f"{values.iloc[position]!r}"
                )
            out[column.name] = converted
        elif _is_timestamp(column):
            # `to_datetime(utc=True)` of an aware column is this conversion, without its per-value cache probe.
            aware = isinstance(values.dtype, pd.DatetimeTZDtype)
            out[column.name] = values.dt.tz_convert(UTC) if aware else pd.to_datetime(values, utc=True)
    return out


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain Python values for executemany: None for NaN/NaT, int/float instead of numpy scalars."""
    objects = frame.astype(object)
    return objects.where(frame.notna(), None).to_dict("records")  # type: ignore[call-overload]  # pandas-stubs 2.x: `other` lacks None, which pandas accepts


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
@overload
def utc(value: datetime | None) -> datetime | None: ...
def utc(value: datetime | None) -> datetime | None:
    """Timestamps come back naive from SQLite (stored in UTC) and aware from PostgreSQL."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def typed_frame(rows: Sequence[Any], table: sa.Table) -> pd.DataFrame:
    """Rows of `table` as a frame: counts int64, money and ratios float64, timestamps UTC, dates `date`."""
    frame = pd.DataFrame([tuple(r) for r in rows], columns=list(table.columns.keys()))
    for column in table.columns:
        values = frame[column.name]
        if is_integer(column):
            frame[column.name] = values.astype("int64" if not column.nullable else "Int64")
        elif _is_number(column):
            frame[column.name] = pd.to_numeric(values).astype("float64")
        elif _is_timestamp(column):
            frame[column.name] = pd.to_datetime(values, utc=True)
        elif _is_date(column):
            frame[column.name] = values.astype(object)
    return frame


def json_normalized(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))


# --- COPY CSV rendering -----------------------------------------------------------------------------------------


class CsvStream:
    """A frame rendered as COPY CSV on demand, chunk by chunk, for `copy_expert`.

    Rendering lazily lets the server parse one chunk while the next is formatted, instead of formatting the
    whole frame first. Each column is turned into Python values once (`_csv_column`); the C `csv` writer then
    renders the rows with pandas' `to_csv` conventions: floats as their shortest round-trip repr, missing values
    as COPY_NULL, minimal quoting.
    """

    def __init__(self, frame: pd.DataFrame, *, json_columns: Collection[str] = ()) -> None:
        """`json_columns` hold JSON values (lists, dicts, ...), sent as their JSON text."""
        columns = [
            _csv_column(json_text(frame[name]) if name in json_columns else frame[name])
            for name in frame.columns
        ]
        self._rows = zip(*columns, strict=True)
        self._left = len(frame)
        self._chunk = ""
        self._position = 0

    def _next_chunk(self) -> str:
        if self._left <= 0:
            return ""
        count = min(COPY_CHUNK_ROWS, self._left)
        self._left -= count
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(itertools.islice(self._rows, count))
        return buffer.getvalue()

    def read(self, size: int = -1) -> str:
        if self._position >= len(self._chunk):
            self._chunk = self._next_chunk()
            self._position = 0
        end = len(self._chunk) if size < 0 else self._position + size
        piece = self._chunk[self._position : end]
        self._position += len(piece)
        return piece


def needs_distinct_format(values: pd.Series) -> bool:
    if isinstance(values.dtype, pd.DatetimeTZDtype) or values.dtype.kind == "M":
        return True
    return values.dtype == object and len(values) > 0 and isinstance(values.iloc[0], date)


def format_distinct(values: pd.Series) -> pd.Series:
    """ISO strings of dates / timestamps, computed once per distinct value; NaT/None stay missing."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    text = np.array([u.isoformat() for u in uniques] + [None], dtype=object)
    return pd.Series(text[codes], index=values.index, dtype=object)


def _csv_column(values: pd.Series) -> list[Any]:
    """The column as the values the csv writer renders: Python scalars (str() of a float is its shortest
    round-trip repr, as in `to_csv`), ISO text for dates and timestamps, COPY_NULL where a value is missing."""
    if needs_distinct_format(values):
        values = format_distinct(values)
    missing = values.isna().to_numpy()
    if missing.any():
        return np.where(missing, COPY_NULL, values.to_numpy(dtype=object)).tolist()
    if isinstance(values.dtype, pd.api.extensions.ExtensionDtype):
        return values.to_numpy(dtype=object).tolist()
    return values.to_numpy().tolist()


def holds_copy_null(frame: pd.DataFrame) -> bool:
    """True if a text value equals the COPY NULL marker; such frames take the executemany path instead."""
    return any((frame[name] == COPY_NULL).any() for name in frame.columns if frame[name].dtype == object)
