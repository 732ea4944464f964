"""Raw Meta insights rows → a typed campaign-day DataFrame; conversions only from named action types.

Meta's action types nest (`lead` already contains `offsite_conversion.fb_pixel_lead`), so the `actions` list is
never summed: settings.CONVERSION_METRICS names, per column, which types count (docs/meta-insights-api.md §2.3).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, SupportsFloat, SupportsIndex

from kpi_platform import settings
from kpi_platform.warehouse.schema import BIGINT_MAX, BIGINT_MIN

# pandas is imported by the functions that build frames: the usage-header parsing is imported with the Meta
# client by every process that alerts or reads breakers (the health command too), which must not pay for pandas.
if TYPE_CHECKING:
    import pandas as pd

#: Grain: one row per client × day × campaign.
CAMPAIGN_COLUMNS: tuple[str, ...] = (
    "client_id",
    "kpi_date",
    "campaign_id",
    "campaign_name",
    "spend",
    "impressions",
    "clicks",
    "ctr_pct",
    "cpc",
    "calls",
    "contacts",
    "leads",
    "reservations",
    "reservation_value",
    "currency",
)
CAMPAIGN_DTYPES: dict[str, str] = {
    "client_id": "object",
    "kpi_date": "object",
    "campaign_id": "object",
    "campaign_name": "object",
    "spend": "float64",
    "impressions": "int64",
    "clicks": "int64",
    "ctr_pct": "float64",
    "cpc": "float64",
    "calls": "int64",
    "contacts": "int64",
    "leads": "int64",
    "reservations": "int64",
    "reservation_value": "float64",
    "currency": "object",
}
#: The count columns: int64, unless a value lies outside the warehouse's BIGINT range (`parse_insights_rows`).
COUNT_COLUMNS: tuple[str, ...] = tuple(c for c, dtype in CAMPAIGN_DTYPES.items() if dtype == "int64")
REQUIRED_FIELDS: tuple[str, ...] = (
    "campaign_id",
    "campaign_name",
    "date_start",
    "date_stop",
    "spend",
    "impressions",
    "clicks",
)
#: Usage headers Meta sends (docs §2.5), each a JSON object inside a header, by the key they get in metadata.
USAGE_HEADERS: dict[str, str] = {
    "app_usage": "X-App-Usage",
    "ad_account_usage": "X-Ad-Account-Usage",
    "business_use_case_usage": "X-Business-Use-Case-Usage",
    "ads_insights_throttle": "X-FB-Ads-Insights-Throttle",
}


class ParseError(ValueError):
    """An insights row that cannot become a campaign-day row; the message names campaign, date and field."""


class _Row:
    """One API row with error messages that say where the problem is (built only when something fails)."""

    __slots__ = ("raw",)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    @property
    def where(self) -> str:
        return f"campaign {self.raw.get('campaign_id', '?')!s} on {self.raw.get('date_start', '?')!s}"

    def fail(self, field: str, problem: str) -> ParseError:
        return ParseError(f"{self.where}: field '{field}' {problem}")

    def required(self, field: str) -> Any:
        value = self.raw.get(field)
        if value is None or value == "":
            raise self.fail(field, "is missing")
        return value

    def number(self, field: str, value: object) -> float:
        try:
            if not isinstance(value, str | bytes | bytearray | SupportsFloat | SupportsIndex):
                raise TypeError  # what float() would raise for it
            number = float(value)
        except (TypeError, ValueError):
            raise self.fail(field, f"is not a number: {value!r}") from None
        if not math.isfinite(number):
            raise self.fail(field, f"is not a finite number: {value!r}")
        return number

    def count(self, field: str, value: object) -> int:
        # Integer text is read exactly, whatever its size (through a float, 20 digits would already be rounded).
        if type(value) is str:
            try:
                return int(value)
            except ValueError:
                pass
        return int(round(self.number(field, value)))

    def date(self, field: str, known: dict[str, date]) -> date:
        """The field as a date; `known` caches parsed values by text (a range has few distinct days)."""
        value = self.required(field)
        text = str(value)
        parsed = known.get(text)
        if parsed is None:
            try:
                parsed = known[text] = date.fromisoformat(text)
            except ValueError:
                raise self.fail(field, f"is not a YYYY-MM-DD date: {value!r}") from None
        return parsed

    def optional_number(self, field: str) -> float | None:
        value = self.raw.get(field)
        return None if value is None or value == "" else self.number(field, value)

    def action_lookup(self, list_field: str) -> dict[str, object]:
        """`action_type` → value of the row's `actions` / `action_values`; the first entry of a type wins."""
        entries = self.raw.get(list_field) or []
        if not isinstance(entries, list):
            raise self.fail(list_field, "is not a list")
        values: dict[str, object] = {}
        for entry in entries:
            if (type(entry) is dict or isinstance(entry, Mapping)) and "action_type" in entry:
                values.setdefault(str(entry["action_type"]), entry.get("value"))
        return values


def _list_field(metric: settings.ConversionMetric) -> str:
    return "action_values" if metric.from_values else "actions"


def _conversion(row: _Row, metric: settings.ConversionMetric, values: Mapping[str, object]) -> float:
    """The metric's value from the row's action lookup (`_Row.action_lookup` of the metric's list): the first
    preferred type present, else the sum of the disjoint parts present, else 0."""
    list_field = _list_field(metric)
    for action_type in metric.preferred:
        if action_type in values:
            return row.number(f"{list_field}[{action_type}]", values[action_type])
    return sum(
        row.number(f"{list_field}[{part}]", values[part]) for part in metric.disjoint_parts if part in values
    )


def _parse_row(
    raw: Mapping[str, Any],
    *,
    client_id: str,
    expected_currency: str | None,
    dates: dict[str, date] | None = None,
) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ParseError(f"insights row is not an object: {raw!r}")
    dates = {} if dates is None else dates
    row = _Row(raw)
    for field in REQUIRED_FIELDS:
        row.required(field)
    kpi_date = row.date("date_start", dates)
    if row.date("date_stop", dates) != kpi_date:
        raise row.fail("date_stop", f"is {raw['date_stop']}, not a single day (time_increment must be 1)")
    currency = str(raw.get("account_currency") or expected_currency or "")
    if not currency:
        raise row.fail("account_currency", "is missing")
    if expected_currency is not None and currency != expected_currency:
        raise row.fail(
            "account_currency", f"is {currency}, but the client is configured for {expected_currency}"
        )

    spend = row.number("spend", raw["spend"])
    impressions = row.count("impressions", raw["impressions"])
    clicks = row.count("clicks", raw["clicks"])
    ctr = row.optional_number("ctr")
    cpc = row.optional_number("cpc")
    parsed: dict[str, Any] = {
        "client_id": client_id,
        "kpi_date": kpi_date,
        "campaign_id": str(raw["campaign_id"]),
        "campaign_name": str(raw["campaign_name"]),
        "spend": spend,
        "impressions": impressions,
        "clicks": clicks,
        # Undefined without a denominator: NaN, never 0.
        "ctr_pct": math.nan if impressions == 0 else (ctr if ctr is not None else clicks / impressions * 100),
        "cpc": math.nan if clicks == 0 else (cpc if cpc is not None else spend / clicks),
        "currency": currency,
    }
    # Each list is read into a lookup once per row, in the order the metrics first need it (so the first
    # problem reported is the same whichever metric meets it).
    lookups: dict[str, dict[str, object]] = {}
    for metric in settings.CONVERSION_METRICS:
        list_field = _list_field(metric)
        values = lookups.get(list_field)
        if values is None:
            values = lookups[list_field] = row.action_lookup(list_field)
        value = _conversion(row, metric, values)
        parsed[metric.column] = value if metric.from_values else int(round(value))
    return parsed


def empty_campaign_frame() -> pd.DataFrame:
    """A frame with no rows and the campaign-day columns and dtypes."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype=CAMPAIGN_DTYPES[c]) for c in CAMPAIGN_COLUMNS})


def parse_insights_rows(
    rows: Iterable[Mapping[str, Any]], *, client_id: str, expected_currency: str | None = None
) -> pd.DataFrame:
    """One row per campaign × day with CAMPAIGN_COLUMNS, in that order and with CAMPAIGN_DTYPES.

    Raises ParseError for a row spanning several days, a missing or non-numeric required field, a currency
    other than `expected_currency`, or two different rows for the same campaign and day. Identical repeats
    (a page read twice while cursors moved) are kept once.

    A count outside the warehouse's BIGINT range is not an error here: its column keeps the exact values as
    Python ints (dtype object) instead of int64, so the contract refuses the row by name (`fits_bigint`).
    """
    parsed: dict[tuple[str, date], dict[str, Any]] = {}
    dates: dict[str, date] = {}
    for raw in rows:
        row = _parse_row(raw, client_id=client_id, expected_currency=expected_currency, dates=dates)
        key = (row["campaign_id"], row["kpi_date"])
        previous = parsed.get(key)
        if previous is not None and not _same(previous, row):
            raise ParseError(
                f"campaign {key[0]} on {key[1]}: two different rows for the same campaign and day"
            )
        parsed[key] = row
    if not parsed:
        return empty_campaign_frame()
    import pandas as pd

    # Column by column: pandas builds a frame from lists far faster than from one dict per row.
    records = parsed.values()
    columns = {c: [r[c] for r in records] for c in CAMPAIGN_COLUMNS}
    dtypes = {
        c: "object" if c in COUNT_COLUMNS and not fits_bigint(columns[c]) else dtype
        for c, dtype in CAMPAIGN_DTYPES.items()
    }
    frame = pd.DataFrame(columns, columns=list(CAMPAIGN_COLUMNS))
    return frame.astype(dtypes)


def fits_bigint(values: Sequence[int]) -> bool:
    """Whether every integer lies within the warehouse's BIGINT range (an int64 column can hold it)."""
    return not values or (BIGINT_MIN <= min(values) and max(values) <= BIGINT_MAX)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    def equal(x: object, y: object) -> bool:
        both_nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        return both_nan or x == y

    return all(equal(a[c], b[c]) for c in CAMPAIGN_COLUMNS)


def parse_usage_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """Meta's rate-limit usage headers present in `headers`, decoded from their JSON (unreadable ones as text)."""
    lowered = {str(k).lower(): v for k, v in headers.items()}
    usage: dict[str, Any] = {}
    for key, name in USAGE_HEADERS.items():
        raw = lowered.get(name.lower())
        if raw is None:
            continue
        try:
            usage[key] = json.loads(raw)
        except ValueError:
            usage[key] = raw
    return usage
