"""The README's main job on the embedded default: register clients, collect through real Dagster runs, close months.

Runs execute in this process against the local Dagster instance, so they are recorded in its run history and
the UI started with `kpi-platform ui` shows them, their partitions and their metadata.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from kpi_platform import settings
from kpi_platform.activity import ensure_demo_app_db
from kpi_platform.clients import Client, ClientSyncReport, load_clients, plan_sync, sync_clients_to_warehouse
from kpi_platform.defs import run_history
from kpi_platform.defs.health import HEALTH_REPORT, catalogue_check_keys
from kpi_platform.defs.partitions import CLIENTS_PARTITIONS_NAME
from kpi_platform.keys import RANGE_END_TAG, RANGE_START_TAG, client_day_key
from kpi_platform.operations.plans import CollectionRequest
from kpi_platform.warehouse import Warehouse


def sync_clients(
    *, instance: dg.DagsterInstance, clients: Sequence[Client], warehouse: Warehouse | None = None
) -> ClientSyncReport:
    """The same sync the clients sensor does, applied directly (partitions added, warehouse upserted)."""
    wh = warehouse or _warehouse()
    plan = plan_sync(clients, instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME))
    if plan.partitions_to_add:
        instance.add_dynamic_partitions(CLIENTS_PARTITIONS_NAME, list(plan.partitions_to_add))
    added, updated, unchanged, deactivated = sync_clients_to_warehouse(clients=clients, warehouse=wh)
    return ClientSyncReport(plan.partitions_to_add, added, updated, unchanged, deactivated)


def _warehouse() -> Warehouse:
    wh = Warehouse(settings.warehouse_url())
    wh.migrate()
    return wh


#: Keep the terminal to the summary; every event is still in the instance and shown by the UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def earliest_day(today: date) -> date:
    """The oldest day the quickstart may collect: the first daily partition, and no older than Meta keeps insights
    (settings.INSIGHTS_RETENTION_MONTHS before `today`)."""
    months = today.year * 12 + today.month - 1 - settings.INSIGHTS_RETENTION_MONTHS
    year, month = divmod(months, 12)
    retained = date(year, month + 1, min(today.day, calendar.monthrange(year, month + 1)[1]))
    return max(date.fromisoformat(settings.PARTITIONS_START_DATE), retained)


def max_days(today: date) -> int:
    """The most days the quickstart can collect on `today`: from `earliest_day` to yesterday."""
    return max(0, (today - earliest_day(today)).days)


def complete_months(start: date, end: date) -> list[date]:
    """First days of the months lying entirely inside [start, end]."""
    months = []
    month = start.replace(day=1)
    while month <= end:
        last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
        if month >= start and last <= end:
            months.append(month)
        month = last + timedelta(days=1)
    return months


@dataclass
class QuickstartSummary:
    dagster_home: str
    warehouse: str
    start: date
    end: date
    rows_by_client: dict[str, dict] = field(default_factory=dict)
    failed_runs: list[str] = field(default_factory=list)
    months_closed: int = 0
    activity_days: int = 0
    activity_db_created: bool = False
    #: Every asset check of the catalogue by name: `passed`, `FAILED (ERROR|WARN)` or `not evaluated`.
    checks: dict[str, str] = field(default_factory=dict)
    #: The health report's status and score as materialized, empty when it was not.
    health: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No run failed and every check passed: the demo data is whole, so anything else is a defect to see."""
        return not self.failed_runs and all(state == "passed" for state in self.checks.values())

    def render(self) -> str:
        lines = [
            f"kpi_platform quickstart: {len(self.rows_by_client)} clients, {self.start}..{self.end} "
            f"({(self.end - self.start).days + 1} days), {self.months_closed} monthly summaries closed, "
            f"{self.seconds:.1f} s",
            "",
            f"{'client':<20}{'days':>6}{'idle':>6}{'campaign rows':>15}{'spend':>14} currency  source",
        ]
        for client_id, r in sorted(self.rows_by_client.items()):
            lines.append(
                f"{client_id:<20}{r['days']:>6}{r['idle_days']:>6}{r['campaign_rows']:>15}{r['spend']:>14,.2f} "
                f"{r['currency']:<9} {r['source']}"
            )
        lines += [
            "",
            f"platform activity: {self.activity_days} daily snapshots "
            f"({'demo app database generated' if self.activity_db_created else 'app database'}: KPI_APP_DB_URL)",
        ]
        if self.checks:
            lines += [
                "",
                "asset checks: "
                + ", ".join(f"{name} {state}" for name, state in sorted(self.checks.items())),
            ]
        if self.health:
            lines += [
                f"health report: {self.health} (no daemon ran meanwhile; `kpi-platform ui` starts one)",
            ]
        if self.failed_runs:
            lines += ["", "FAILED runs (see the UI for their logs):", *[f"  {f}" for f in self.failed_runs]]
        lines += [
            "",
            f"warehouse:    {self.warehouse}",
            f"DAGSTER_HOME: {self.dagster_home}",
            "open the UI:  .venv/bin/kpi-platform ui   (then http://127.0.0.1:3000)",
        ]
        return "\n".join(lines)


def check_state(result: run_history.CheckResultRecord) -> str:
    """How the summary names a check's latest finished evaluation."""
    if result.finished is None:
        return "not evaluated"
    evaluation = result.finished.evaluation
    if evaluation is not None and evaluation.passed:
        return "passed"
    severity = f" ({evaluation.severity.value})" if evaluation is not None else ""
    return f"FAILED{severity}"


def run_quickstart(*, days: int = settings.QUICKSTART_DAYS, today: date | None = None) -> QuickstartSummary:
    """Sync clients, collect the last `days` complete days per active client (one run each), close complete months.

    Raises ValueError for `days` outside 1..`max_days(today)` and ClientConfigError for an invalid clients.yaml,
    before anything is created or run.
    """
    from kpi_platform.cli.local import ensure_dagster_home
    from kpi_platform.definitions import defs

    t0 = time.perf_counter()
    today = today or datetime.now(UTC).date()
    if not 1 <= days <= max_days(today):
        raise ValueError(
            f"days must be within 1..{max_days(today)} (yesterday back to {earliest_day(today)}), got {days}"
        )
    clients = load_clients(settings.clients_file())
    home = ensure_dagster_home()
    end = today - timedelta(days=1)
    start = end - timedelta(days=days - 1)
    warehouse = _warehouse()
    summary = QuickstartSummary(str(home), warehouse.url_for_display, start, end)
    collect_job = defs.resolve_job_def("daily_collection_job")
    monthly_job = defs.resolve_job_def("monthly_summary_job")
    with dg.DagsterInstance.get() as instance:
        sync_clients(instance=instance, clients=clients, warehouse=warehouse)
        active = [c for c in clients if c.active]
        for client in active:
            request = CollectionRequest(client.id, start, end, run_key="", reason="quickstart")
            print(f"collecting {client.id} {start}..{end} ...", flush=True)
            result = collect_job.execute_in_process(
                instance=instance, tags=request.tags(), run_config=QUIET, raise_on_error=False
            )
            if not result.success:
                summary.failed_runs.append(f"{client.id} {start}..{end}: run {result.run_id}")
        for client in active:
            present = warehouse.present_days(start=start, end=end, client_ids=[client.id]).get(
                client.id, set()
            )
            for month in complete_months(start, end):
                last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
                if len([d for d in present if month <= d <= last]) < last.day:
                    continue
                result = monthly_job.execute_in_process(
                    instance=instance,
                    partition_key=client_day_key(client.id, month),
                    tags={settings.CLIENT_TAG: client.id},
                    run_config=QUIET,
                    raise_on_error=False,
                )
                if result.success:
                    summary.months_closed += 1
                else:
                    summary.failed_runs.append(f"{client.id} month {month:%Y-%m}: run {result.run_id}")
        summary.activity_db_created = ensure_demo_app_db(settings.app_db_url(), days=days + 30, today=today)
        print(f"snapshotting platform activity {start}..{end} ...", flush=True)
        activity = defs.resolve_job_def("activity_snapshot_job").execute_in_process(
            instance=instance,
            tags={RANGE_START_TAG: start.isoformat(), RANGE_END_TAG: end.isoformat()},
            run_config=QUIET,
            raise_on_error=False,
        )
        if activity.success:
            summary.activity_days = (end - start).days + 1
        else:
            summary.failed_runs.append(f"activity snapshot {start}..{end}: run {activity.run_id}")
        checks = defs.resolve_job_def("warehouse_checks_job").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False
        )
        if not checks.success:
            summary.failed_runs.append(f"warehouse checks: run {checks.run_id}")
        # Every check of the catalogue, as the UI's Checks tabs show it: the latest finished evaluation of each.
        for key in catalogue_check_keys():
            summary.checks[key.name] = check_state(run_history.check_result(instance, key))
        print("materializing the health report ...", flush=True)
        health = defs.resolve_job_def("health_report_job").execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False
        )
        if health.success:
            [metadata] = [
                e.materialization.metadata
                for e in health.get_asset_materialization_events()
                if e.asset_key == HEALTH_REPORT
            ]
            status, score = metadata["status"].value, metadata["score"].value
            summary.health = f"{status}, score {score:g}/100"
        else:
            summary.failed_runs.append(f"health report: run {health.run_id}")
    days_frame = warehouse.read_client_days(start=start, end=end)
    for client in active:
        mine = days_frame[days_frame["client_id"] == client.id]
        summary.rows_by_client[client.id] = {
            "days": len(mine),
            "idle_days": int((mine["delivery"] == "idle").sum()) if len(mine) else 0,
            "campaign_rows": int(mine["campaign_count"].sum()) if len(mine) else 0,
            "spend": float(mine["spend"].sum()) if len(mine) else 0.0,
            "currency": client.currency,
            "source": ",".join(sorted(set(mine["source"]))) if len(mine) else "-",
        }
    summary.seconds = time.perf_counter() - t0
    warehouse.dispose()
    return summary
