"""Export of warehouse query results (client KPIs or platform activity) as CSV or JSON to a text stream.

Rows carry their indicators as the query gives them (`queries.query_kpis`). Timestamps (`fetched_at`) are ISO 8601
in UTC in both formats. `issues` is a JSON list (null where not recorded); CSV has no lists, so there it is one
cell with the names joined by "; ", empty both when there are none and when none were recorded (the JSON format
tells the two apart).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TextIO

import numpy as np
import pandas as pd

from kpi_platform import settings
from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse.queries import InvalidQueryError, QueryResult, query_activity, query_kpis

EXPORT_KINDS: tuple[str, ...] = ("kpis", "activity")
FORMATS: tuple[str, ...] = ("csv", "json")
#: How a row's list of issue names is written in one CSV cell.
CSV_ISSUES_SEPARATOR = "; "


@dataclass(frozen=True)
class ExportSummary:
    """What was written: rows, and the missing days the query named (CSV carries no gaps; JSON does)."""

    kind: str
    fmt: str
    rows: int
    gap_ranges: int
    days_missing: int
    #: Rows that are forecasts (`source='forecast'`), included only when asked for.
    forecast_rows: int = 0


def run_query(
    warehouse: Warehouse,
    *,
    kind: str,
    start: date | str,
    end: date | str,
    grain: str = "daily",
    client_ids: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
    types: Iterable[str] | None = None,
    allow_long_range: bool = False,
    forecast: bool = False,
    now: datetime | None = None,
) -> QueryResult:
    """The query behind an export; InvalidQueryError for an unknown kind or a filter of the other kind.
    `forecast` appends the labelled forecasts of days without data (kpis, daily grain only). `now` is the time
    the KPI rows' freshness is judged at (default: the current time)."""
    if kind == "kpis":
        if categories is not None or types is not None:
            raise InvalidQueryError("metric categories and types filter activity exports, not kpis")
        return query_kpis(
            warehouse,
            start=start,
            end=end,
            grain=grain,
            client_ids=client_ids,
            allow_long_range=allow_long_range,
            include_forecast=forecast,
            now=now,
        )
    if kind == "activity":
        if client_ids is not None:
            raise InvalidQueryError("the client filter applies to kpis exports, not activity")
        if forecast:
            raise InvalidQueryError("forecasts are of client KPIs; activity exports have none")
        return query_activity(
            warehouse,
            start=start,
            end=end,
            grain=grain,
            categories=categories,
            types=types,
            allow_long_range=allow_long_range,
        )
    raise InvalidQueryError(f"export kind {kind!r} is not one of {', '.join(EXPORT_KINDS)}")


def _json_default(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def iso_timestamps(values: pd.Series) -> np.ndarray:
    """UTC timestamps as ISO 8601 text (`datetime.isoformat`, the JSON format's rendering), None where missing;
    each distinct value is rendered once."""
    codes, stamps = pd.factorize(pd.to_datetime(values, utc=True))
    texts = np.array([stamp.isoformat() for stamp in stamps] + [None], dtype=object)
    return texts[codes]


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as CSV writes it: `issues` lists joined by CSV_ISSUES_SEPARATOR (empty cell for none or not
    recorded), timestamps ISO 8601."""
    if "issues" not in frame.columns and "fetched_at" not in frame.columns:
        return frame
    out = frame.copy()
    if "issues" in out.columns:
        out["issues"] = [
            CSV_ISSUES_SEPARATOR.join(v) if isinstance(v, list | tuple) else "" for v in out["issues"]
        ]
    if "fetched_at" in out.columns:
        out["fetched_at"] = iso_timestamps(out["fetched_at"])
    return out


def write_result(result: QueryResult, *, fmt: str, out: TextIO) -> None:
    """CSV: the frame's rows with a header (dates ISO, undefined values empty, `csv_frame`). JSON: one object with
    the query (kind, grain, start, end), `rows` and `gaps` (undefined values null)."""
    if fmt == "csv":
        csv_frame(result.frame).to_csv(out, index=False, lineterminator="\n")
    elif fmt == "json":
        document = {
            "kind": result.kind,
            "grain": result.grain,
            "start": result.start,
            "end": result.end,
            "rows": result.to_records(),
            "gaps": result.gap_records(),
        }
        json.dump(document, out, default=_json_default, indent=2, allow_nan=False)
        out.write("\n")
    else:
        raise InvalidQueryError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")


def export(
    warehouse: Warehouse,
    *,
    kind: str,
    start: date | str,
    end: date | str,
    grain: str = "daily",
    client_ids: Iterable[str] | None = None,
    categories: Iterable[str] | None = None,
    types: Iterable[str] | None = None,
    allow_long_range: bool = False,
    fmt: str = "csv",
    out: TextIO,
    forecast: bool = False,
    now: datetime | None = None,
) -> ExportSummary:
    """Query KPIs or activity and write them to `out` as CSV or JSON; nothing is written if the query fails.

    Raises InvalidQueryError (a ValueError) with a clear message for bad dates, ranges, grains, formats or names.
    """
    if fmt not in FORMATS:
        raise InvalidQueryError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    result = run_query(
        warehouse,
        kind=kind,
        start=start,
        end=end,
        grain=grain,
        client_ids=client_ids,
        categories=categories,
        types=types,
        allow_long_range=allow_long_range,
        forecast=forecast,
        now=now,
    )
    write_result(result, fmt=fmt, out=out)
    return ExportSummary(
        kind=kind,
        fmt=fmt,
        rows=len(result.frame),
        gap_ranges=len(result.gaps),
        days_missing=result.days_missing,
        forecast_rows=int((result.frame["source"] == settings.SOURCE_FORECAST).sum()) if forecast else 0,
    )
