"""Software-defined assets: client-day KPIs from the Meta API and the monthly summaries built on them."""

from datetime import UTC, date, datetime

import dagster as dg

from kpi_platform import settings
from kpi_platform.clients import Client
from kpi_platform.collect import CollectionResult, PreparedRange, prepare_range, store_range
from kpi_platform.defs.partitions import (
    client_daily_partitions,
    client_monthly_partitions,
    client_ranges,
    daily_to_monthly,
)
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.meta.breaker import BreakerGuard
from kpi_platform.meta.errors import MetaApiError
from kpi_platform.quality.schemas import ContractViolation
from kpi_platform.summaries import build_monthly_summary
from kpi_platform.warehouse import Warehouse

CLIENT_DAILY_KPIS = dg.AssetKey(["meta_ads", "client_daily_kpis"])
CLIENT_MONTHLY_SUMMARY = dg.AssetKey(["kpi", "client_monthly_summary"])
#: In-asset, blocking: everything fetched for the run's range meets the pandera contract before it is stored.
CONTRACT_CHECK = "rows_meet_contract"


class UnknownClientError(RuntimeError):
    """A partition names a client that is not in the warehouse `clients` table."""


def load_client(warehouse: Warehouse, client_id: str) -> Client:
    row = warehouse.get_client(client_id)
    if row is None:
        raise UnknownClientError(
            f"client '{client_id}' is not registered in the warehouse; add it to clients.yaml and let "
            "clients_sync_sensor (or `kpi-platform clients sync`) register it"
        )
    return Client.from_row(row)


def collection_metadata(results: list[CollectionResult]) -> dict[str, dg.MetadataValue]:
    """Numeric values plot over time in the UI; text values describe the run."""
    by_currency: dict[str, float] = {}
    for r in results:
        by_currency[r.currency] = round(by_currency.get(r.currency, 0.0) + r.spend, 2)
    sources = sorted({r.source for r in results})
    metadata: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(sum(r.campaign_rows for r in results)),
        "days": dg.MetadataValue.int(sum(r.days for r in results)),
        "idle_days": dg.MetadataValue.int(sum(r.idle_days for r in results)),
        "spend": dg.MetadataValue.float(round(sum(r.spend for r in results), 2)),
        "spend_by_currency": dg.MetadataValue.json(by_currency),
        "source": dg.MetadataValue.text(",".join(sources)),
        "api_requests": dg.MetadataValue.int(sum(r.api_requests for r in results)),
        "api_retries": dg.MetadataValue.int(sum(r.api_retries for r in results)),
        "throttle_wait_s": dg.MetadataValue.float(round(sum(r.throttle_wait_s for r in results), 3)),
        "fetch_seconds": dg.MetadataValue.float(round(sum(r.fetch_seconds for r in results), 3)),
        "write_seconds": dg.MetadataValue.float(round(sum(r.write_seconds for r in results), 3)),
        "ranges": dg.MetadataValue.text("; ".join(f"{r.client_id} {r.start}..{r.end}" for r in results)),
        "quality_score_mean": dg.MetadataValue.float(
            round(
                sum(r.quality_score_mean * r.days for r in results) / max(1, sum(r.days for r in results)), 2
            )
        ),
    }
    return metadata


def violation_metadata(
    exc: ContractViolation, client_id: str, start: date, end: date
) -> dict[str, dg.MetadataValue]:
    """Failed rules, the days they hit and a capped sample of failing rows, for the check result in the UI."""
    return {
        "client": dg.MetadataValue.text(client_id),
        "range": dg.MetadataValue.text(f"{start}..{end}"),
        "failed_rules": dg.MetadataValue.json(sorted(exc.rules)),
        "n_failures": dg.MetadataValue.int(len(exc.failures)),
        "failed_days": dg.MetadataValue.json(exc.days()[:50]),
        "sample": dg.MetadataValue.json(exc.sample(20)),
        "summary": dg.MetadataValue.text(exc.summary()),
    }


@dg.asset(
    key=CLIENT_DAILY_KPIS,
    partitions_def=client_daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool=settings.META_API_POOL,
    group_name="meta_ads",
    kinds={"python", "sql"},
    owners=["team:data-engineering"],
    check_specs=[
        dg.AssetCheckSpec(
            CONTRACT_CHECK,
            asset=CLIENT_DAILY_KPIS,
            blocking=True,
            description="Everything fetched for the run's client × date range meets the pandera contract "
            "(types, non-negative counts, clicks ≤ impressions, CTR/CPC consistent, dates in range, unique keys, "
            "the client's currency, campaigns summing to the day totals). A failure stores nothing and fails the run.",
        )
    ],
)
def client_daily_kpis(
    context: dg.AssetExecutionContext, meta_api: MetaApiResource, warehouse: WarehouseResource
):
    """Daily Meta Ads KPIs per client: spend, impressions, clicks, CTR, CPC and conversions
    (calls, contacts, leads, reservations, reservation value).

    Grain: one row per client × day × campaign (`campaign_daily_kpis`) and one per client × day
    (`client_daily_kpis`, idle days recorded explicitly with zero delivery).
    Source: `GET act_<id>/insights`, level=campaign, time_increment=1 (async report for long ranges).
    Idempotency key: (client_id, kpi_date[, campaign_id]); a run replaces its whole client × date range in one
    transaction, so re-runs and restatements leave exactly one row per key.
    A one-day run and a backfill range run take the same path: the partition keys become one contiguous range
    per client, fetched as one request stream.
    Contract failures store nothing for the range and fail the run without a materialization, so the partitions
    stay failed (not materialized) and gap healing finds them.
    """
    wh = warehouse.get_warehouse()
    ranges = client_ranges(context.partition_keys)
    clients = {r.client_id: load_client(wh, r.client_id) for r in ranges}
    # Breakers (API-wide and per ad account) live in the warehouse, so every run shares them; while one is
    # open the run fails fast with the reason instead of calling Meta.
    meta = BreakerGuard(wh).wrap(
        meta_api.get_client(accounts={c.ad_account_id: c.currency for c in clients.values()})
    )
    prepared: list[PreparedRange] = []
    try:
        # Every range of the run is fetched and validated before any is stored: a run covering several
        # clients or gaps (launched by hand with range tags) stores all of them or none.
        for rng in ranges:
            client = clients[rng.client_id]
            context.log.info(f"collecting {client.id} ({client.ad_account_id}) {rng.start}..{rng.end}")
            prepared.append(
                prepare_range(
                    client=client, start=rng.start, end=rng.end, meta=meta, run_id=context.run.run_id
                )
            )
    except ContractViolation as exc:
        # Dagster records the materialization even when a blocking in-asset check fails, so the check result is
        # reported without one and the step fails: the partitions stay FAILED and nothing was written.
        yield dg.AssetCheckResult(
            check_name=CONTRACT_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata=violation_metadata(exc, rng.client_id, rng.start, rng.end),
        )
        raise dg.Failure(description=exc.summary(), allow_retries=False) from None
    except MetaApiError as exc:
        # The client has already retried what is retryable (with backoff); a step retry would only hold a pool
        # slot while waiting. The message is already redacted and names the client and the fix.
        raise dg.Failure(
            description=str(exc),
            metadata={
                "error": type(exc).__name__,
                "code": exc.code or 0,
                "transient": exc.transient,
                "breaker": getattr(exc, "breaker", "") or "",
            },
            allow_retries=False,
        ) from None
    finally:
        meta.close()
    results: list[CollectionResult] = [store_range(p, warehouse=wh) for p in prepared]
    yield dg.MaterializeResult(metadata=collection_metadata(results))
    yield dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        passed=True,
        metadata={
            "rows_validated": dg.MetadataValue.int(sum(r.campaign_rows + r.day_rows for r in results)),
            "days": dg.MetadataValue.int(sum(r.days for r in results)),
        },
    )


def _month_keys(partition_keys: list[str]) -> list[tuple[str, date]]:
    pairs = []
    for key in partition_keys:
        client_id, month = str(key).split("|")
        pairs.append((client_id, date.fromisoformat(month)))
    return pairs


#: Any month (not only the latest) is summarised once all its days are present, and again when a day is
#: restated; `in_latest_time_window` is removed from eager() so that late backfills of old months close too.
monthly_summary_condition = dg.AutomationCondition.eager().without(
    dg.AutomationCondition.in_latest_time_window()
)


@dg.asset(
    key=CLIENT_MONTHLY_SUMMARY,
    partitions_def=client_monthly_partitions,
    ins={
        "daily": dg.AssetIn(
            key=CLIENT_DAILY_KPIS, partition_mapping=daily_to_monthly, dagster_type=dg.Nothing
        )
    },
    automation_condition=monthly_summary_condition,
    # The automation sensor requests the months that became complete as one backfill: with this policy that is
    # one run per client and contiguous months, not one run per month (600 runs after a year's backfill of 50
    # clients, each holding a run slot that collection needs).
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="kpi",
    kinds={"python", "sql"},
    owners=["team:data-engineering"],
)
def client_monthly_summary(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Monthly KPI totals per client, summed from the month's client-day rows.

    Grain: one row per client × month (`client_monthly_kpis`). Materialized automatically once every day of the
    month is collected for that client, and again whenever a day of it is restated. `status` is `provisional`
    until 28 days after the month ends (Meta can still restate), `final` after.
    """
    wh = warehouse.get_warehouse()
    today = datetime.now(UTC).date()
    summaries = [
        build_monthly_summary(
            warehouse=wh, client_id=client_id, month=month, today=today, run_id=context.run.run_id
        )
        for client_id, month in _month_keys(context.partition_keys)
    ]
    statuses = sorted({s.status for s in summaries})
    return dg.MaterializeResult(
        metadata={
            "months": dg.MetadataValue.int(len(summaries)),
            "status": dg.MetadataValue.text(",".join(statuses)),
            "spend": dg.MetadataValue.float(round(sum(float(s.row["spend"]) for s in summaries), 2)),
            "clicks": dg.MetadataValue.int(sum(int(s.row["clicks"]) for s in summaries)),
            "days_present": dg.MetadataValue.int(sum(int(s.row["days_present"]) for s in summaries)),
            "idle_days": dg.MetadataValue.int(sum(int(s.row["idle_days"]) for s in summaries)),
        }
    )
