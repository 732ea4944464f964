"""Contracts of the KPI frames as pandera models, and the validation of one collection with a structured report.

The models hold what is true of any frame of their grain; `validate_collection` adds what depends on the run
(client, date range, currency, every day present, campaigns reconciling with totals). Every check carries a
readable name, which is the `rule` of the failure report.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import pandera.pandas as pa
import sqlalchemy as sa
from pandera.typing import Series

from kpi_platform import settings
from kpi_platform.quality.rules import json_value, reconcile_campaigns
from kpi_platform.warehouse import schema as warehouse_schema

#: CTR and CPC are recomputed and compared with this relative tolerance...
RATIO_RTOL = 0.01
#: ...plus an absolute one, for the API's 6-decimal strings and the warehouse's 4-decimal CPC.
CTR_ATOL_PCT = 0.001
CPC_ATOL = 0.001
DELIVERY_VALUES: tuple[str, ...] = ("delivered", "idle")
MONTH_STATUS_VALUES: tuple[str, ...] = ("provisional", "final")
#: Columns of `failures` in a report: one row per failing value or row.
FAILURE_COLUMNS: tuple[str, ...] = (
    "schema",
    "rule",
    "column",
    "client_id",
    "kpi_date",
    "campaign_id",
    "failure_value",
)
NON_NEGATIVE_COLUMNS: tuple[str, ...] = (
    "spend",
    "impressions",
    "clicks",
    "ctr_pct",
    "cpc",
    *settings.CONVERSION_COLUMNS,
)
#: Counts, stored as BIGINT: `fits_bigint` refuses a value the column cannot hold.
COUNT_COLUMNS: tuple[str, ...] = ("impressions", "clicks", *settings.CONVERSION_COUNT_COLUMNS)


def _numeric_limit(column: str) -> float:
    """The smallest magnitude a `Numeric(precision, scale)` warehouse column cannot hold: 10^(precision - scale)."""
    kind = warehouse_schema.client_daily_kpis.c[column].type
    assert isinstance(kind, sa.Numeric) and kind.precision is not None and kind.scale is not None
    return float(10 ** (kind.precision - kind.scale))


#: Money and CPC are `Numeric(18, 2)` / `Numeric(18, 4)`: `fits_numeric` refuses values at or beyond these.
NUMERIC_LIMITS: dict[str, float] = {c: _numeric_limit(c) for c in ("spend", "reservation_value", "cpc")}


def _within(value: object, low: int, high: int) -> bool:
    try:
        return bool(low <= value <= high)  # type: ignore[operator]  # anything not comparable is outside
    except TypeError:
        return False


def _ratio_consistent(
    ratio: pd.Series, numerator: pd.Series, denominator: pd.Series, *, scale: float, atol: float
) -> pd.Series:
    """Where the denominator is positive the ratio matches numerator/denominator×scale; elsewhere it is NaN."""
    ratio = pd.to_numeric(ratio, errors="coerce").astype("float64")
    den = denominator.astype("float64")
    expected = numerator.astype("float64") / den.where(den > 0) * scale
    close = np.isclose(ratio, expected, rtol=RATIO_RTOL, atol=atol)
    return pd.Series(np.where(den > 0, close, ratio.isna()), index=ratio.index)


class _KpiModel(pa.DataFrameModel):
    """The KPI columns every grain shares."""

    client_id: Series[str] = pa.Field(description="Client id as in clients.yaml.")
    spend: Series[float] = pa.Field(description="Amount spent, in `currency`.")
    impressions: Series[int] = pa.Field(description="Times ads were on screen.")
    clicks: Series[int] = pa.Field(description="Clicks (all), Meta's `clicks`.")
    ctr_pct: Series[float] = pa.Field(
        nullable=True, coerce=True, description="clicks / impressions × 100; NaN when impressions is 0."
    )
    cpc: Series[float] = pa.Field(
        nullable=True, coerce=True, description="spend / clicks; NaN when clicks is 0."
    )
    calls: Series[int] = pa.Field(description="Call conversions (settings.CONVERSION_METRICS).")
    contacts: Series[int] = pa.Field(description="Contact conversions.")
    leads: Series[int] = pa.Field(description="Lead conversions.")
    reservations: Series[int] = pa.Field(description="Reservation (schedule) conversions.")
    reservation_value: Series[float] = pa.Field(description="Value of the reservations, in `currency`.")
    currency: Series[str] = pa.Field(
        description="ISO 4217 code of the ad account (settings.KNOWN_CURRENCIES)."
    )

    @pa.check(*NON_NEGATIVE_COLUMNS, name="non_negative")
    def _kpis_non_negative(cls, s: pd.Series) -> pd.Series:
        return s >= 0

    @pa.check("currency", name="known_currency")
    def _known_currency(cls, s: pd.Series) -> pd.Series:
        return s.isin(sorted(settings.KNOWN_CURRENCIES))

    # Methods named as their rules: pandera names an inherited check after its method in the second model built.
    @pa.check(*COUNT_COLUMNS, name="fits_bigint")
    def fits_bigint(cls, s: pd.Series) -> pd.Series:
        if s.dtype == "int64":
            return pd.Series(True, index=s.index)
        # A column that int64 could not hold (the parser keeps such counts as exact Python ints).
        fits = s.map(lambda v: _within(v, warehouse_schema.BIGINT_MIN, warehouse_schema.BIGINT_MAX))
        return fits.astype(bool)

    @pa.check(*NUMERIC_LIMITS, name="fits_numeric")
    def fits_numeric(cls, s: pd.Series) -> pd.Series:
        limit = NUMERIC_LIMITS[str(s.name)]
        return pd.to_numeric(s, errors="coerce").abs() < limit

    @pa.dataframe_check(ignore_na=False)
    def clicks_le_impressions(cls, df: pd.DataFrame) -> pd.Series:
        return df["clicks"] <= df["impressions"]

    @pa.dataframe_check(ignore_na=False)
    def spend_requires_impressions(cls, df: pd.DataFrame) -> pd.Series:
        return ~(df["spend"] > 0) | (df["impressions"] > 0)

    @pa.dataframe_check(ignore_na=False)
    def ctr_consistent(cls, df: pd.DataFrame) -> pd.Series:
        return _ratio_consistent(
            df["ctr_pct"], df["clicks"], df["impressions"], scale=100.0, atol=CTR_ATOL_PCT
        )

    @pa.dataframe_check(ignore_na=False)
    def cpc_consistent(cls, df: pd.DataFrame) -> pd.Series:
        return _ratio_consistent(df["cpc"], df["spend"], df["clicks"], scale=1.0, atol=CPC_ATOL)


class CampaignDaySchema(_KpiModel):
    """One row per client × day × campaign, as reported by the Meta Insights API at campaign level."""

    kpi_date: Series[pa.Date] = pa.Field(
        description="Reporting day (datetime.date), the ad account's time zone."
    )
    campaign_id: Series[str] = pa.Field(description="Meta campaign id.")
    campaign_name: Series[str] = pa.Field(nullable=True, description="Campaign name on that day.")
    source: Series[str] | None = pa.Field(description="Where the row came from: meta_api or simulator.")
    run_id: Series[str] | None = pa.Field(description="Run that wrote the row.")

    class Config:
        name = "CampaignDaySchema"
        unique = ["client_id", "kpi_date", "campaign_id"]


class ClientDaySchema(_KpiModel):
    """One row per client × day, idle days included: the campaign rows of the day summed."""

    kpi_date: Series[pa.Date] = pa.Field(description="Reporting day (datetime.date).")
    campaign_count: Series[int] = pa.Field(description="Distinct campaigns with a row that day.")
    delivery: Series[str] = pa.Field(
        description="'delivered', or 'idle' for a collected day without campaign rows."
    )
    quality_score: Series[float] | None = pa.Field(
        nullable=True,
        description="Quality score 0–100: the share of its checks the day passed (`rules.assess_quality`); "
        "NaN for an idle day, which is not scored.",
    )

    @pa.check("campaign_count", name="non_negative")
    def _campaign_count_non_negative(cls, s: pd.Series) -> pd.Series:
        return s >= 0

    @pa.check("delivery", name="delivery_value")
    def _delivery_value(cls, s: pd.Series) -> pd.Series:
        return s.isin(DELIVERY_VALUES)

    @pa.check("quality_score", name="score_0_to_100")
    def _score_range(cls, s: pd.Series) -> pd.Series:
        return s.between(0, 100)

    @pa.dataframe_check(ignore_na=False)
    def idle_consistent(cls, df: pd.DataFrame) -> pd.Series:
        """Idle days have no campaign and no spend; delivered days have at least one campaign."""
        idle = df["delivery"] == "idle"
        return pd.Series(
            np.where(idle, (df["campaign_count"] == 0) & (df["spend"] == 0), df["campaign_count"] > 0),
            index=df.index,
        )

    class Config:
        name = "ClientDaySchema"
        unique = ["client_id", "kpi_date"]


class MonthlySummarySchema(_KpiModel):
    """One row per client × month: the month's client-day rows summed, ratios recomputed from the sums."""

    month: Series[pa.Date] = pa.Field(description="First day of the month (datetime.date).")
    days_present: Series[int] = pa.Field(description="Client-day rows in the month, idle days included.")
    days_in_month: Series[int] = pa.Field(description="Calendar length of the month.")
    idle_days: Series[int] = pa.Field(description="Days with delivery 'idle'.")
    status: Series[str] = pa.Field(
        description="'provisional' until MONTH_FINAL_AFTER_DAYS after month end, then 'final'."
    )

    @pa.check("days_present", "days_in_month", "idle_days", name="non_negative")
    def _days_non_negative(cls, s: pd.Series) -> pd.Series:
        return s >= 0

    @pa.check("month", name="month_starts_on_day_1")
    def _month_starts_on_day_1(cls, s: pd.Series) -> pd.Series:
        return pd.to_datetime(s, errors="coerce").dt.day == 1

    @pa.check("status", name="status_value")
    def _status_value(cls, s: pd.Series) -> pd.Series:
        return s.isin(MONTH_STATUS_VALUES)

    @pa.dataframe_check(ignore_na=False)
    def days_in_month_matches(cls, df: pd.DataFrame) -> pd.Series:
        return pd.to_datetime(df["month"], errors="coerce").dt.days_in_month == df["days_in_month"]

    @pa.dataframe_check(ignore_na=False)
    def days_present_le_days_in_month(cls, df: pd.DataFrame) -> pd.Series:
        return df["days_present"] <= df["days_in_month"]

    @pa.dataframe_check(ignore_na=False)
    def idle_days_le_days_present(cls, df: pd.DataFrame) -> pd.Series:
        return df["idle_days"] <= df["days_present"]

    class Config:
        name = "MonthlySummarySchema"
        unique = ["client_id", "month"]


# --- failure reports --------------------------------------------------------------------------------------------

#: The column a row-level check is about, whose value becomes the failure value.
_RULE_COLUMN: dict[str, str] = {
    "clicks_le_impressions": "clicks",
    "spend_requires_impressions": "spend",
    "ctr_consistent": "ctr_pct",
    "cpc_consistent": "cpc",
    "idle_consistent": "delivery",
    "days_in_month_matches": "days_in_month",
    "days_present_le_days_in_month": "days_present",
    "idle_days_le_days_present": "idle_days",
}
_UNIQUE_RULE = "unique_key"
_PANDERA_UNIQUE_CHECKS = ("multiple_fields_uniqueness", "field_uniqueness")


def _empty_failures() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="object") for c in FAILURE_COLUMNS})


def _report_rows(
    failure_cases: pd.DataFrame, frame: pd.DataFrame, schema: pa.DataFrameSchema
) -> pd.DataFrame:
    """pandera's failure cases as FAILURE_COLUMNS rows, one per failing value or (for row checks) failing row.

    `frame` must have a RangeIndex so pandera's `index` is a row position.
    """
    fc = failure_cases.copy()
    fc["check"] = fc["check"].astype(str).replace(dict.fromkeys(_PANDERA_UNIQUE_CHECKS, _UNIQUE_RULE))
    frame_level = (fc["schema_context"] == "DataFrameSchema") & fc["index"].notna()

    single = fc[~frame_level]
    missing_column = single["check"] == "column_in_dataframe"
    on_frame = single["schema_context"] == "DataFrameSchema"
    single_rows = pd.DataFrame(
        {
            "rule": single["check"],
            "column": single["column"].where(~on_frame, None).where(~missing_column, single["failure_case"]),  # type: ignore[call-overload]  # pandas-stubs 2.x: `other` lacks None
            "index": single["index"],
            "failure_value": single["failure_case"].where(~missing_column, None),  # type: ignore[call-overload]  # pandas-stubs 2.x: `other` lacks None
        }
    )
    # Row-level checks come back melted, one row per column of the failing row: keep the rule's own column.
    melted = fc[frame_level]
    own = melted["column"] == melted["check"].map(_RULE_COLUMN)
    picked = melted.assign(_own=own).sort_values("_own", ascending=False, kind="stable")
    picked = picked.drop_duplicates(["check", "index"]).sort_index()
    unique = picked["check"] == _UNIQUE_RULE
    row_rows = pd.DataFrame(
        {
            "rule": picked["check"],
            "column": picked["column"].where(~unique, ",".join(schema.unique or ())),
            "index": picked["index"],
            "failure_value": picked["failure_case"].where(~unique, None),  # type: ignore[call-overload]  # pandas-stubs 2.x: `other` lacks None
        }
    )
    rows = [part for part in (single_rows, row_rows) if not part.empty]
    if not rows:
        return _empty_failures()
    out = pd.concat(rows, ignore_index=True).astype("object")
    out.insert(0, "schema", schema.name)
    date_column = "month" if "month" in schema.columns else "kpi_date"
    position = pd.to_numeric(out["index"], errors="coerce")
    known = position.notna() & position.between(0, len(frame) - 1)
    for target, source in (
        ("client_id", "client_id"),
        ("kpi_date", date_column),
        ("campaign_id", "campaign_id"),
    ):
        values = pd.Series([None] * len(out), dtype="object")
        if source in frame.columns and known.any():
            values[known.to_numpy()] = frame[source].to_numpy(dtype=object)[
                position[known].astype(int).to_numpy()
            ]
        out[target] = values
    return out[list(FAILURE_COLUMNS)]


def schema_failures(
    frame: pd.DataFrame, schema: type[pa.DataFrameModel] | pa.DataFrameSchema
) -> pd.DataFrame:
    """Validate `frame` lazily (every failure collected) and return the failures as FAILURE_COLUMNS rows.

    An empty result means the frame is valid. For monthly rows `kpi_date` holds the month. Also usable on
    frames read back from the warehouse, e.g. inside an asset check.
    """
    if isinstance(schema, type):
        schema = schema.to_schema()
    frame = frame.reset_index(drop=True)
    if frame.empty:
        # pandera judges the dtype of empty object columns; an empty frame only owes its columns.
        missing = [c for c, col in schema.columns.items() if col.required and c not in frame.columns]
        return pd.DataFrame(
            [{"schema": schema.name, "rule": "column_in_dataframe", "column": c} for c in missing],
            columns=list(FAILURE_COLUMNS),
        ).astype("object")
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        return _without_dtype_failures_of_range(_report_rows(exc.failure_cases, frame, schema), frame)
    return _empty_failures()


def _without_dtype_failures_of_range(failures: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """A count column holding an integer beyond BIGINT cannot be int64 (the parser keeps it as Python ints): when
    every value of such a column is an integer, its `fits_bigint` failures name the values and rows, and its
    `dtype` failures, which only repeat them, are dropped."""
    beyond = set(failures.loc[failures["rule"] == "fits_bigint", "column"])
    explained = [
        c
        for c in beyond
        if c in frame.columns
        and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in frame[c])
    ]
    if not explained:
        return failures
    repeated = failures["rule"].astype(str).str.startswith("dtype") & failures["column"].isin(explained)
    return failures[~repeated].reset_index(drop=True)


def sample_failures(failures: pd.DataFrame, n: int = 20) -> list[dict[str, Any]]:
    """At most `n` failure rows as JSON-safe dicts (ISO dates, NaN as None), every rule represented first."""
    if failures.empty or n <= 0:
        return []
    order = failures.groupby("rule", sort=False).cumcount()
    picked = failures.assign(_turn=order.to_numpy()).sort_values("_turn", kind="stable").head(n)
    picked = picked.drop(columns="_turn").sort_index()
    return [{str(k): json_value(v) for k, v in rec.items()} for rec in picked.to_dict("records")]


class ContractViolation(ValueError):
    """A frame broke its contract; carries every failure, not just the first.

    `.failures` is a DataFrame with FAILURE_COLUMNS, `.rules` the distinct failed rules in order of first
    appearance, `.summary()` one line naming client, days and rules, `.sample(n)` a capped JSON-safe sample.
    """

    def __init__(
        self,
        failures: pd.DataFrame,
        client_id: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> None:
        self.failures = failures.reset_index(drop=True)
        self.client_id = client_id
        self.start = start
        self.end = end
        self.rules: list[str] = list(dict.fromkeys(self.failures["rule"].astype(str)))
        super().__init__(self.summary())

    def __reduce__(self):
        return (type(self), (self.failures, self.client_id, self.start, self.end))

    def days(self) -> list[str]:
        """The distinct failing days as ISO strings, sorted."""
        return sorted({json_value(d) for d in self.failures["kpi_date"] if json_value(d) is not None})

    def summary(self, max_days: int = 5) -> str:
        who = f"client '{self.client_id}'" if self.client_id is not None else "frame"
        span = f" {self.start}..{self.end}" if self.start is not None and self.end is not None else ""
        days = self.days()
        shown = ", ".join(days[:max_days]) + (", …" if len(days) > max_days else "")
        counts = self.failures["rule"].astype(str).value_counts()
        rules = ", ".join(f"{rule} ({counts[rule]})" for rule in self.rules)
        on_days = f" on {len(days)} day(s) ({shown})" if days else ""
        return f"{who}{span}: {len(self.failures)} contract failure(s){on_days}; rules: {rules}"

    def sample(self, n: int = 20) -> list[dict[str, Any]]:
        return sample_failures(self.failures, n)


# --- one collection ---------------------------------------------------------------------------------------------


class _RunChecks(TypedDict):
    """The run-specific arguments of `_with_run_checks`."""

    client_id: str
    start: date
    end: date
    currency: str


def _with_run_checks(
    model: type[pa.DataFrameModel], *, client_id: str, start: date, end: date, currency: str
) -> pa.DataFrameSchema:
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)

    def inside_run_range(s: pd.Series) -> pd.Series:
        stamps = pd.to_datetime(s, errors="coerce")
        return (stamps >= lo) & (stamps <= hi)

    extra = {
        "client_id": pa.Check(lambda s: s == client_id, name="client_matches"),
        "kpi_date": pa.Check(inside_run_range, name="dates_in_range"),
        "currency": pa.Check(lambda s: s == currency, name="expected_currency"),
    }
    schema = model.to_schema()
    # One update for all three columns: each update copies the whole schema.
    return schema.update_columns(
        {column: {"checks": [*schema.columns[column].checks, check]} for column, check in extra.items()}
    )


def _missing_days(totals: pd.DataFrame, *, client_id: str, start: date, end: date) -> pd.DataFrame:
    have = (
        set(pd.to_datetime(totals["kpi_date"], errors="coerce").dropna().dt.date)
        if "kpi_date" in totals
        else set()
    )
    wanted = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    rows = [
        {
            "schema": "collection",
            "rule": "days_complete",
            "column": "kpi_date",
            "client_id": client_id,
            "kpi_date": d,
            "campaign_id": None,
            "failure_value": "missing",
        }
        for d in wanted
        if d not in have
    ]
    return pd.DataFrame(rows, columns=list(FAILURE_COLUMNS)) if rows else _empty_failures()


def _reconciliation_failures(campaigns: pd.DataFrame, totals: pd.DataFrame) -> pd.DataFrame:
    result = reconcile_campaigns(campaigns, totals)
    # A day with campaign rows but no total is already `days_complete` (or `dates_in_range`) here.
    rows = [
        {
            "schema": "collection",
            "rule": c["rule"],
            "column": c["column"],
            "client_id": c["client_id"],
            "kpi_date": date.fromisoformat(c["kpi_date"]) if c["kpi_date"] else None,
            "campaign_id": None,
            "failure_value": f"total {c['observed']} != campaigns {c['expected']}",
        }
        for c in result.culprits
        if c["column"] != "row"
    ]
    return pd.DataFrame(rows, columns=list(FAILURE_COLUMNS)) if rows else _empty_failures()


def validate_collection(
    campaigns: pd.DataFrame,
    totals: pd.DataFrame,
    *,
    client_id: str,
    start: date,
    end: date,
    currency: str,
) -> None:
    """Check one collection of `client_id` × [start, end]; raise ContractViolation listing every failure.

    Beyond CampaignDaySchema and ClientDaySchema: every row is the client's (`client_matches`), dated inside
    the range (`dates_in_range`) and in the client's `currency` (`expected_currency`); the totals hold every
    day of the range (`days_complete`; twice is `unique_key`); and the campaign rows summed per day equal the
    totals (`campaigns_reconcile`, only judged when both frames have their columns and types right).
    """
    run = _RunChecks(client_id=client_id, start=start, end=end, currency=currency)
    parts = [
        schema_failures(campaigns, _with_run_checks(CampaignDaySchema, **run)),
        schema_failures(totals, _with_run_checks(ClientDaySchema, **run)),
        _missing_days(totals, client_id=client_id, start=start, end=end),
    ]
    # Reconciliation sums the columns: only judged when their types are right and every count fits int64.
    structural = [
        str(rule).startswith(("dtype", "column_in_dataframe", "fits_bigint"))
        for p in parts[:2]
        for rule in p["rule"]
    ]
    if not any(structural):
        parts.append(_reconciliation_failures(campaigns, totals))
    found = [p for p in parts if not p.empty]
    if found:
        failures = pd.concat(found, ignore_index=True)
        raise ContractViolation(failures, client_id=client_id, start=start, end=end)
