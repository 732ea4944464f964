"""The check catalogue: every asset check of the platform, once: its name, asset, description, how Dagster
shows a failure (ERROR or WARN, blocking or not), how urgently a person is alerted, and what they should do.

The asset checks (`defs/`), the alerts (`alert_facts.py`) and the health report (`health/`) all read it, so a
check is described in one place. It is plain data: the health command learns the code location's check keys
here, without building the Dagster definitions.

Adding a check: add an entry here, then the code that evaluates it (a rule in `quality/`, an outcome in
`quality/warehouse_checks.py` or an in-asset check in `defs/`); `test_check_catalogue.py` fails until the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpi_platform.operations.alerts import Severity
from kpi_platform.quality.core import CheckSeverity

#: Asset key paths (the `dg.AssetKey` of each asset is built from these in `defs/`).
DAILY_KPIS_ASSET: tuple[str, ...] = ("meta_ads", "client_daily_kpis")
MONTHLY_SUMMARY_ASSET: tuple[str, ...] = ("kpi", "client_monthly_summary")
ACTIVITY_SNAPSHOT_ASSET: tuple[str, ...] = ("platform", "daily_activity_snapshot")
#: The KPI warehouse tables as a whole: an external asset downstream of the daily and monthly assets that carries
#: the warehouse-wide checks, so no materialization of those two (a UI backfill's runs among them) ever runs them.
KPI_WAREHOUSE_ASSET: tuple[str, ...] = ("meta_ads", "kpi_warehouse")

#: The in-asset contract check of the daily asset (evaluated by every collection run).
CONTRACT_CHECK = "rows_meet_contract"


@dataclass(frozen=True)
class CheckEntry:
    """One asset check. `severity` is what Dagster shows for a failure; `alert` how urgently a person is told;
    `warehouse_wide` marks the checks `quality/warehouse_checks.py` evaluates over the whole warehouse."""

    name: str
    asset: tuple[str, ...]
    description: str
    severity: CheckSeverity
    alert: Severity
    advice: str
    blocking: bool = False
    warehouse_wide: bool = False

    @property
    def asset_string(self) -> str:
        """The asset key as the UI and `AssetKey.to_user_string()` write it: `meta_ads/client_daily_kpis`."""
        return "/".join(self.asset)

    @property
    def key_string(self) -> str:
        """`asset:check`, as `AssetCheckKey.to_user_string()` writes it."""
        return f"{self.asset_string}:{self.name}"


CHECKS: tuple[CheckEntry, ...] = (
    CheckEntry(
        CONTRACT_CHECK,
        DAILY_KPIS_ASSET,
        "Everything fetched for the run's client × date range meets the pandera contract (types, non-negative "
        "counts, clicks ≤ impressions, CTR/CPC consistent, dates in range, unique keys, the client's currency, "
        "campaigns summing to the day totals). A failure stores nothing and fails the run.",
        CheckSeverity.ERROR,
        Severity.HIGH,
        "Nothing was stored for the refused range. Look at the failed rules and sample in the check result; if "
        "Meta's data is right and our contract is wrong, fix the contract; the gap-healing sensor retries.",
        blocking=True,
    ),
    CheckEntry(
        "completeness_meets_target",
        KPI_WAREHOUSE_ASSET,
        "Share of client-days present over each client's last 7 and 30 due days (a day is due from the client's "
        "freshness deadline hour, local time) meets its target (default 99.5 %); idle days count as present. "
        "Lists the target and missing dates per client.",
        CheckSeverity.ERROR,
        Severity.MEDIUM,
        "Days are missing: the gap-healing sensor requests them; if they stay missing, backfill the missing "
        "partitions from the UI.",
        warehouse_wide=True,
    ),
    CheckEntry(
        "no_split_days",
        KPI_WAREHOUSE_ASSET,
        "No day with spend but no conversions for a client that normally converts, and no conversions without "
        "spend (the old system's silent failure).",
        CheckSeverity.ERROR,
        Severity.HIGH,
        "Spend without conversions usually means conversions were not fetched. Re-collect the days (backfill the "
        "partitions) and compare with Ads Manager.",
        warehouse_wide=True,
    ),
    CheckEntry(
        "quality_score_acceptable",
        KPI_WAREHOUSE_ASSET,
        "Every client's average quality score over the last 30 days is above its target (default 95). A "
        "client-day's score is the share of five checks passed: has data, spend above 0 and within 0-10,000, "
        "clicks within 0-100,000, CTR within 0.1-10 %, CPC within 0.10-50 (limits in the client's currency, "
        "per client in clients.yaml); idle days are not scored. Lists the days' stored issues, days whose "
        "conversions exceed 10 % of clicks, and each client's conversion tracking (converting, zero "
        "conversions, tracking not configured).",
        CheckSeverity.WARN,
        Severity.MEDIUM,
        'Read the issues of the days listed (e.g. "cpc 72.10 above 50.00 EUR"): compare those days with Ads '
        "Manager and re-collect them if they differ; if the client's normal changed, adjust its limits in "
        'clients.yaml. A conversion rate above 10 % or "tracking not configured" means checking the client\'s '
        "conversion events in Events Manager.",
        warehouse_wide=True,
    ),
    CheckEntry(
        "no_anomalies",
        KPI_WAREHOUSE_ASSET,
        "No client-day whose spend, clicks or conversions are more than 3σ from the client's trailing 14-day mean "
        "and at least 50 % above or below it. Idle days (no delivery) are neither judged nor part of the mean.",
        CheckSeverity.WARN,
        Severity.LOW,
        "A value is more than 3σ and at least 50 % away from its 14-day mean: check it against Ads Manager.",
        warehouse_wide=True,
    ),
    CheckEntry(
        "campaigns_reconcile_to_totals",
        KPI_WAREHOUSE_ASSET,
        "Campaign rows sum to the client-day totals (last 30 days).",
        CheckSeverity.ERROR,
        Severity.HIGH,
        "Campaign rows and day totals disagree: re-collect the days named.",
        warehouse_wide=True,
    ),
    CheckEntry(
        "fresh_per_client",
        KPI_WAREHOUSE_ASSET,
        "Every active client has yesterday's data (client's local time) by its deadline hour "
        "(`freshness_deadline_hour`, default 09:00 local). Partition-aware per client, which Dagster's built-in "
        "checks are not for date × client.",
        CheckSeverity.WARN,
        Severity.MEDIUM,
        "Yesterday's data is late: check the daily collection schedule, the run queue and failed runs.",
        warehouse_wide=True,
    ),
    CheckEntry(
        "months_equal_sum_of_days",
        KPI_WAREHOUSE_ASSET,
        "Each monthly summary equals the sum of its client-day rows.",
        CheckSeverity.ERROR,
        Severity.HIGH,
        "A monthly summary is stale: re-materialize the month named.",
        warehouse_wide=True,
    ),
    CheckEntry(
        "daily_activity_snapshot__all_metrics_present",
        ACTIVITY_SNAPSHOT_ASSET,
        "Every day of the run's range (or, run alone, every day from the first to the last stored one) has all "
        "collected platform metrics stored (the active definitions with a collector; inactive ones are not "
        "expected). Lists the incomplete days and their missing metrics.",
        CheckSeverity.ERROR,
        Severity.MEDIUM,
        "A snapshot day is incomplete: re-materialize the days named (a late snapshot counts the rows still "
        "existing: those deleted since that day are missing from it).",
        blocking=True,
    ),
    CheckEntry(
        "daily_activity_snapshot__totals_match_created",
        ACTIVITY_SNAPSHOT_ASSET,
        "For posts and comments, total(d) − total(d−1) equals created(d). A difference means rows created before "
        "d were deleted between the two snapshots; the day's deletions are in the metadata. WARN: deletions are "
        "normal, the check makes them visible.",
        CheckSeverity.WARN,
        Severity.MEDIUM,
        "Rows were deleted in the app between two snapshots: normal, unless the numbers are unexpected.",
    ),
)

_BY_NAME = {entry.name: entry for entry in CHECKS}


def entry(name: str) -> CheckEntry | None:
    """The catalogue entry of check `name`, None for a name the catalogue does not know."""
    return _BY_NAME.get(name)


def description(name: str) -> str:
    """The description of check `name`, for the check's definition; KeyError for a name not in the catalogue."""
    return _BY_NAME[name].description


def warehouse_wide() -> tuple[CheckEntry, ...]:
    """The checks evaluated over the whole warehouse, in catalogue order."""
    return tuple(e for e in CHECKS if e.warehouse_wide)


def alert_severity(name: str) -> Severity:
    """How urgently a failure of check `name` is alerted (MEDIUM for a check the catalogue does not know)."""
    found = entry(name)
    return found.alert if found is not None else Severity.MEDIUM


def advice(name: str) -> str:
    """What to do when check `name` fails."""
    found = entry(name)
    return found.advice if found is not None else "see the check result in the Dagster UI."
