"""Export of warehouse query results (client KPIs or platform activity) as CSV or JSON to a text stream."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, TextIO

from kpi_platform.warehouse import Warehouse
from kpi_platform.warehouse.queries import InvalidQueryError, QueryResult, query_activity, query_kpis

EXPORT_KINDS: tuple[str, ...] = ("kpis", "activity")
FORMATS: tuple[str, ...] = ("csv", "json")


@dataclass(frozen=True)
class ExportSummary:
    """What was written: rows, and the missing days the query named (CSV carries no gaps; JSON does)."""

    kind: str
    fmt: str
    rows: int
    gap_ranges: int
    days_missing: int


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
) -> QueryResult:
    """The query behind an export; InvalidQueryError for an unknown kind or a filter of the other kind."""
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
        )
    if kind == "activity":
        if client_ids is not None:
            raise InvalidQueryError("the client filter applies to kpis exports, not activity")
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


def write_result(result: QueryResult, *, fmt: str, out: TextIO) -> None:
    """CSV: the frame's rows with a header (dates ISO, undefined values empty). JSON: one object with the query
    (kind, grain, start, end), `rows` and `gaps` (undefined values null)."""
    if fmt == "csv":
        result.frame.to_csv(out, index=False, lineterminator="\n")
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
    )
    write_result(result, fmt=fmt, out=out)
    return ExportSummary(
        kind=kind,
        fmt=fmt,
        rows=len(result.frame),
        gap_ranges=len(result.gaps),
        days_missing=result.days_missing,
    )
