"""The `kpi-platform` command: quickstart, UI, client sync, the simulator server, migrations, export and health."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kpi_platform import settings

if TYPE_CHECKING:
    from kpi_platform.clients import Client
    from kpi_platform.simulator import FaultConfig

PORT_MAX = 65535


def bounded_int(low: int, high: int | Callable[[], tuple[int, str]]) -> Callable[[str], int]:
    """An argparse `type=`: a whole number within low..high; anything else makes argparse print the usage and
    `error: argument ...: ...` and exit 2. `high` may be a function returning the bound and why it is that, for a
    bound that depends on the date."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        top, why = high() if callable(high) else (high, "")
        if not low <= value <= top:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{top}" + (f": {why}" if why else ""))
        return value

    return parse


def _quickstart_days_bound() -> tuple[int, str]:
    from datetime import UTC, date, datetime

    from kpi_platform.cli.quickstart import earliest_day, max_days

    today = datetime.now(UTC).date()
    earliest = earliest_day(today)
    why = (
        "the first daily partition"
        if earliest == date.fromisoformat(settings.PARTITIONS_START_DATE)
        else f"Meta keeps {settings.INSIGHTS_RETENTION_MONTHS} months of insights"
    )
    return max_days(today), f"the days from {earliest}, {why}, to yesterday"


def _fault_config(text: str) -> FaultConfig:
    """An argparse `type=`: FaultConfig fields as JSON."""
    from kpi_platform.defs.resources import faults_from_json

    try:
        return faults_from_json(text)
    except (ValueError, TypeError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(f"not FaultConfig fields as JSON: {exc}") from None


def _error(message: object) -> int:
    """Print `error: message` on stderr; the exit code of a refused command."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def _cmd_quickstart(args: argparse.Namespace) -> int:
    from kpi_platform.cli.quickstart import run_quickstart

    try:
        summary = run_quickstart(days=args.days)
    except ValueError as exc:  # days out of range, an invalid clients.yaml, an unsupported warehouse URL
        return _error(exc)
    print(summary.render())
    return 0 if summary.ok else 1


def _cmd_ui(args: argparse.Namespace) -> int:
    from kpi_platform.cli.local import run_ui

    return run_ui(host=args.host, port=args.port)


def _cmd_clients(args: argparse.Namespace) -> int:
    from kpi_platform.clients import ClientConfigError, load_clients

    path = Path(args.file) if args.file else settings.clients_file()
    if (args.client_id is not None) != (args.action == "remove-partition"):
        return _error(
            "`clients remove-partition` takes a client id, `clients validate` and `clients sync` none"
        )
    try:
        clients = load_clients(path)
    except ClientConfigError as exc:
        return _error(exc)
    if args.action == "remove-partition":
        return _remove_client_partition(args.client_id, clients)
    if args.action == "validate":
        print(f"{path}: {len(clients)} clients, {sum(c.active for c in clients)} active")
        return 0
    from dagster import DagsterInstance

    from kpi_platform.cli.local import ensure_dagster_home
    from kpi_platform.cli.quickstart import sync_clients

    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        report = sync_clients(instance=instance, clients=clients)
    print(
        f"partitions added: {list(report.partitions_added) or 'none'}; warehouse: {report.added} added, "
        f"{report.updated} updated, {report.unchanged} unchanged; deactivated: {list(report.deactivated) or 'none'}"
    )
    return 0


def _remove_client_partition(client_id: str, clients: Sequence[Client]) -> int:
    """Delete the `clients` partition `client_id` when neither clients.yaml nor the warehouse knows the client."""
    from dagster import DagsterInstance

    from kpi_platform.cli.local import ensure_dagster_home
    from kpi_platform.clients import partition_removal_refusal
    from kpi_platform.defs.partitions import CLIENTS_PARTITIONS_NAME
    from kpi_platform.warehouse.readiness import WarehouseNotReadyError, open_warehouse

    try:
        warehouse = open_warehouse(settings.warehouse_url())
    except WarehouseNotReadyError as exc:
        return _error(f"cannot tell whether '{client_id}' is a registered client: {exc}")
    try:
        registered = [row["client_id"] for row in warehouse.list_clients()]
    finally:
        warehouse.dispose()
    ensure_dagster_home()
    with DagsterInstance.get() as instance:
        partitions = instance.get_dynamic_partitions(CLIENTS_PARTITIONS_NAME)
        refusal = partition_removal_refusal(
            client_id, clients=clients, registered=registered, partitions=partitions
        )
        if refusal is not None:
            return _error(refusal)
        instance.delete_dynamic_partition(CLIENTS_PARTITIONS_NAME, client_id)
    print(f"client partition '{client_id}' removed; its runs stay in the run history")
    return 0


def _cmd_simulator(args: argparse.Namespace) -> int:
    from kpi_platform.clients import load_clients
    from kpi_platform.defs.resources import simulator_config
    from kpi_platform.simulator import run_forever

    # The served simulator knows the registered ad accounts, each in its client's currency.
    clients = load_clients(settings.clients_file()) if settings.clients_file().exists() else []
    config = simulator_config({c.ad_account_id: c.currency for c in clients})
    try:
        run_forever(host="127.0.0.1", port=args.port, config=config, faults=args.faults)
    except OSError as exc:  # the port is taken, or not ours to bind
        return _error(f"cannot serve the simulator on 127.0.0.1:{args.port}: {exc}")
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    import subprocess

    from sqlalchemy.exc import SQLAlchemyError

    from kpi_platform.cli.local import ensure_dagster_home
    from kpi_platform.warehouse import Warehouse
    from kpi_platform.warehouse.store import MigrationNotAllowedError

    try:
        warehouse = Warehouse(settings.warehouse_owner_url())
    except ValueError as exc:  # an unsupported URL
        return _error(exc)
    try:
        warehouse.migrate()
    except MigrationNotAllowedError as exc:
        return _error(exc)
    except SQLAlchemyError as exc:
        # The server cannot be reached or refused the login: the driver's first line says which, never the URL.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return _error(f"cannot migrate the warehouse at {warehouse.url_for_display}: {reason}")
    finally:
        warehouse.dispose()
    print(f"warehouse migrated: {warehouse.url_for_display}")
    ensure_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    return subprocess.call([str(dagster), "instance", "migrate"])  # noqa: S603 - fixed argv


def _cmd_serve(args: argparse.Namespace) -> int:
    from kpi_platform.cli.supervisor import serve

    return serve(
        host=args.host,
        webserver_port=args.port,
        code_server_port=args.code_server_port,
        simulator_port=args.simulator_port,
        log_dir=Path(args.log_dir) if args.log_dir else None,
    )


def _cmd_export(args: argparse.Namespace) -> int:
    import io

    from sqlalchemy.exc import SQLAlchemyError

    from kpi_platform.warehouse.export import export
    from kpi_platform.warehouse.queries import InvalidQueryError
    from kpi_platform.warehouse.readiness import WarehouseNotReadyError, open_warehouse

    buffer = io.StringIO()
    try:
        warehouse = open_warehouse(settings.warehouse_reader_url())
        try:
            summary = export(
                warehouse,
                kind=args.kind,
                start=args.start,
                end=args.end,
                grain=args.grain,
                client_ids=args.client,
                categories=args.category,
                types=args.type,
                allow_long_range=args.allow_long_range,
                fmt=args.format,
                out=buffer,
                forecast=args.forecast,
            )
        finally:
            warehouse.dispose()
        # Written only after the query succeeded, so a failed export never truncates an existing file.
        if args.output:
            Path(args.output).write_text(buffer.getvalue(), encoding="utf-8")
        else:
            sys.stdout.write(buffer.getvalue())
    except (InvalidQueryError, WarehouseNotReadyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        # A refused privilege or a lost connection: the driver's first line says which, never the URL.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"error: the warehouse could not answer the export: {reason}", file=sys.stderr)
        return 2
    where = args.output or "stdout"
    print(
        f"exported {summary.rows} {args.kind} rows ({args.grain}, {args.format}) to {where}", file=sys.stderr
    )
    if summary.days_missing:
        print(
            f"note: {summary.days_missing} day(s) missing in {summary.gap_ranges} gap(s); they are not filled in "
            "(the JSON format lists them under `gaps`)",
            file=sys.stderr,
        )
    if summary.forecast_rows:
        print(
            f"note: {summary.forecast_rows} row(s) are forecasts, not data (source=forecast, forecast=true)",
            file=sys.stderr,
        )
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    # A bounded read (a second, some tens of thousands of runs) whose every allocation, the Dagster import's first,
    # would otherwise start collections that find nothing to free: about a fifth of the answer time. Enabled again
    # for a caller that goes on.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _health(args)
    finally:
        if collecting:
            gc.enable()


def _health(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    # Before the fork: SQLAlchemy, alembic and the report's vocabulary, which both processes need, imported once.
    from kpi_platform.operations.health.report import (
        HealthReport,
        clients_from_warehouse,
        evaluate_checks,
    )
    from kpi_platform.operations.health.side_by_side import WarehouseHalf, combined_report
    from kpi_platform.warehouse import Warehouse
    from kpi_platform.warehouse.readiness import WarehouseNotReadyError, open_warehouse

    now = datetime.now(UTC)
    url = settings.warehouse_url()
    # The scores the health report asset recorded, for the score alert; None while they cannot be read.
    score_history: list[tuple[datetime, float]] | None = None
    # The warehouse's checks run in a worker process while this one opens the instance and evaluates its checks.
    with WarehouseHalf(url, now) as half:
        from dagster import DagsterInstance

        from kpi_platform.cli.local import ensure_dagster_home
        from kpi_platform.operations.health.instance_checks import INSTANCE_CHECKS, catalogue_check_keys

        warehouse: Warehouse | None = None
        instance, not_ready, instance_error, part, home = None, None, "", None, None
        try:
            # Checked here as the worker checks it, never created: when it is not ready the instance is left alone
            # too (nothing is created for a command with nothing to report on).
            warehouse = open_warehouse(url)
        except WarehouseNotReadyError as exc:
            not_ready = str(exc)
        if warehouse is not None:
            home = ensure_dagster_home()
            try:
                instance = DagsterInstance.get()
            except Exception as exc:  # noqa: BLE001 - an unreadable instance is the report's finding
                instance_error = f"cannot open the Dagster instance at {home}: {exc}"
            else:
                part = evaluate_checks(
                    warehouse=warehouse,
                    instance=instance,
                    clients=clients_from_warehouse(warehouse),
                    now_utc=now,
                    check_keys=catalogue_check_keys(),
                    checks=INSTANCE_CHECKS,
                )
        found = half.result()
    try:
        header = ""
        not_ready = not_ready or found.not_ready
        if not_ready is not None:
            report = HealthReport.unavailable(name="warehouse", summary=not_ready, now_utc=now)
        else:
            assert warehouse is not None  # opened here before the instance; `not_ready` otherwise
            header = f"warehouse: {warehouse.url_for_display}\ndagster home: {home}\n"
            if part is None:
                report = HealthReport.unavailable(
                    name="dagster_instance", summary=instance_error, now_utc=now
                )
            else:
                report = combined_report(found, part.checks, now)
        if args.alert and instance is not None and not_ready is None:
            from kpi_platform.defs import run_history
            from kpi_platform.operations.health.instance_checks import HEALTH_REPORT
            from kpi_platform.operations.watchdog import SCORE_HISTORY_SPAN

            try:
                score_history = run_history.recorded_metadata(
                    instance, HEALTH_REPORT, "score", since=now - SCORE_HISTORY_SPAN
                )
            except Exception as exc:  # noqa: BLE001 - the score alert is then left as it is
                print(f"alerts: recorded health scores unreadable: {type(exc).__name__}", file=sys.stderr)
        sys.stdout.write(report.to_json() + "\n" if args.json else header + report.to_text())
        sys.stdout.flush()
        if args.alert:
            from kpi_platform.operations.watchdog import run_watchdog

            for line in run_watchdog(report, warehouse=warehouse, score_history=score_history).lines:
                print(line, file=sys.stderr)
    finally:
        if instance is not None:
            instance.dispose()
        if warehouse is not None:
            warehouse.dispose()
    return report.exit_code()


def _cmd_breakers(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from kpi_platform.meta.breaker import BreakerGuard
    from kpi_platform.warehouse.readiness import WarehouseNotReadyError, open_warehouse

    if args.action == "reset" and not args.name:
        return _error("give the breaker name, e.g. `kpi-platform breakers reset meta_api`")
    if args.action == "list" and args.name:
        return _error("`breakers list` lists every breaker and takes no name")
    # Never created or migrated here: a warehouse that is not there (or not migrated) is refused by name.
    try:
        warehouse = open_warehouse(settings.warehouse_url())
    except WarehouseNotReadyError as exc:
        return _error(exc)
    try:
        guard = BreakerGuard(warehouse)
        if args.action == "reset":
            if not guard.reset(args.name):
                print(
                    f"error: no breaker {args.name} (`kpi-platform breakers list` shows them)",
                    file=sys.stderr,
                )
                return 1
            print(f"breaker {args.name}: closed")
            return 0
        states = guard.list_breakers()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return _error(f"the warehouse could not answer: {reason}")
    finally:
        warehouse.dispose()
    if not states:
        print("no breaker has recorded a failure")
    for s in states:
        since = f" since {s.opened_at:%Y-%m-%d %H:%M} UTC" if s.opened_at else ""
        print(f"{s.name:<32} {s.state:<10} failures={s.fail_counter}{since}")
    return 0


def _cmd_db_roles(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from kpi_platform.warehouse.roles import RoleNames, RolesError, ensure_roles, passwords_from_env

    try:
        names = RoleNames(owner=args.owner, writer=args.writer, reader=args.reader)
        report = ensure_roles(
            url=args.url or settings.warehouse_admin_url(),
            names=names,
            passwords=passwords_from_env(environ=os.environ),
        )
    except (RolesError, ValueError) as exc:
        return _error(exc)
    except SQLAlchemyError as exc:
        return _error(str(getattr(exc, "orig", exc)).strip().splitlines()[0])
    print(report.render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpi-platform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, help="what to do")

    p = sub.add_parser(
        "quickstart", help="sync clients, collect the last N days through Dagster, close months"
    )
    p.add_argument(
        "--days",
        type=bounded_int(1, _quickstart_days_bound),
        default=settings.QUICKSTART_DAYS,
        help=f"days to collect per client, ending yesterday (default: {settings.QUICKSTART_DAYS}; at most back to "
        f"{settings.PARTITIONS_START_DATE}, the first daily partition, and {settings.INSIGHTS_RETENTION_MONTHS} "
        "months, Meta's insights history)",
    )
    p.set_defaults(func=_cmd_quickstart)

    p = sub.add_parser(
        "ui",
        help="run the Dagster UI with the production code server and daemon on the instance the quickstart wrote "
        "to, until Ctrl-C",
    )
    p.add_argument("--host", default="127.0.0.1", help="address the UI listens on (default: 127.0.0.1)")
    p.add_argument(
        "--port",
        type=bounded_int(1, PORT_MAX),
        default=settings.DEFAULT_WEBSERVER_PORT,
        help=f"port the UI listens on, 1..{PORT_MAX} (default: {settings.DEFAULT_WEBSERVER_PORT})",
    )
    p.set_defaults(func=_cmd_ui)

    p = sub.add_parser(
        "clients",
        help="validate clients.yaml, sync it to Dagster and the warehouse, or remove a client partition added by "
        "hand",
    )
    p.add_argument(
        "action",
        choices=["validate", "sync", "remove-partition"],
        help="validate: check the file; sync: add its clients as partitions and register them in the warehouse; "
        "remove-partition: delete the `clients` partition CLIENT_ID, only when neither clients.yaml nor the "
        "warehouse knows that client (a partition added through the UI by mistake)",
    )
    p.add_argument(
        "client_id", nargs="?", metavar="CLIENT_ID", help="the partition to remove (remove-partition)"
    )
    p.add_argument("--file", help="path to clients.yaml (default: KPI_CLIENTS_FILE or ./clients.yaml)")
    p.set_defaults(func=_cmd_clients)

    p = sub.add_parser("simulator", help="the Meta-compatible simulator")
    simsub = p.add_subparsers(dest="sim_command", required=True, help="what to do with the simulator")
    serve = simsub.add_parser("serve", help="serve the simulator over HTTP on 127.0.0.1")
    serve.add_argument(
        "--port",
        type=bounded_int(0, PORT_MAX),
        default=8765,
        help=f"port to listen on, 0..{PORT_MAX}; 0 takes a free one and prints it (default: 8765)",
    )
    serve.add_argument(
        "--faults",
        type=_fault_config,
        help='FaultConfig as JSON, e.g. \'{"error_rates": {"17": 0.1}}\' (default: no faults)',
    )
    serve.set_defaults(func=_cmd_simulator)

    p = sub.add_parser("export", help="export KPIs or platform activity for a date range as CSV or JSON")
    p.add_argument(
        "kind",
        choices=["kpis", "activity"],
        help="kpis: client KPIs; activity: the platform's activity metrics",
    )
    p.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last day, YYYY-MM-DD (inclusive)")
    p.add_argument(
        "--grain", choices=["daily", "weekly", "monthly"], default="daily", help="rows per (default: daily)"
    )
    p.add_argument("--client", action="append", help="client id (kpis; repeatable; default: all)")
    p.add_argument(
        "--category",
        action="append",
        help="metric category, the metric, e.g. posts_total (activity; repeatable; default: all)",
    )
    p.add_argument(
        "--type",
        action="append",
        help="metric type, the kind of figure, e.g. count (activity; repeatable; default: all)",
    )
    p.add_argument("--format", choices=["csv", "json"], default="csv", help="output format (default: csv)")
    p.add_argument("--output", help="file to write (default: stdout)")
    p.add_argument(
        "--allow-long-range", action="store_true", help=f"answer ranges over {settings.MAX_QUERY_DAYS} days"
    )
    p.add_argument(
        "--forecast",
        action="store_true",
        help="kpis, daily: add the forecasts of days without data, labelled source=forecast (never data)",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "health",
        help="platform health: healthy / degraded / unhealthy, exit code 0 / 1 / 2",
        description="Yesterday's collection, missing days (7 / 30 d), split data, hours since each client's last "
        "collection, failed asset checks, open circuit breakers, the Dagster daemon's heartbeats and run queue, "
        "runs and backfills in progress, the success rates (1 / 7 / 30 d against their targets), the next "
        "scheduled collection and the failed collections. "
        "Exit code 0 healthy, 1 degraded, 2 unhealthy. With --alert it is also the watchdog to run every 5 "
        "minutes outside Dagster: one alert per unhealthy check, the missing-clients escalation, and a ping of "
        "KPI_HEARTBEAT_URL while nothing is unhealthy.",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--alert",
        action="store_true",
        help="send alerts (health:<check>, health:score_low, success_rate:<rate>, daily collection incomplete) "
        "through the KPI_ALERT_* channels, "
        "resolve recovered ones, and ping KPI_HEARTBEAT_URL while nothing is unhealthy; notes go to stderr",
    )
    p.set_defaults(func=_cmd_health)

    p = sub.add_parser(
        "breakers", help="list the Meta API circuit breakers, or close one after fixing the cause"
    )
    p.add_argument(
        "action",
        choices=["list", "reset"],
        help="list: every breaker and its state; reset: close NAME at once",
    )
    p.add_argument("name", nargs="?", help="breaker to reset: meta_api or meta_api:act_<id>")
    p.set_defaults(func=_cmd_breakers)

    p = sub.add_parser(
        "serve",
        help="run the production processes together (code server, webserver, daemon) until Ctrl-C",
        description="Starts the code server (`python -m kpi_platform.runtime.code_server code-server start`), "
        "`dagster-webserver` and the daemon (`python -m kpi_platform.runtime.daemon run`) on the "
        "production instance (DAGSTER_HOME with deploy/dagster.yaml, PostgreSQL from DAGSTER_PG_*) and "
        "deploy/workspace.yaml, each in its own process group; Ctrl-C stops all of them.",
    )
    p.add_argument("--host", default="127.0.0.1", help="webserver host")
    p.add_argument(
        "--port",
        type=bounded_int(1, PORT_MAX),
        default=settings.DEFAULT_WEBSERVER_PORT,
        help=f"webserver port, 1..{PORT_MAX} (default: {settings.DEFAULT_WEBSERVER_PORT})",
    )
    p.add_argument(
        "--code-server-port",
        type=bounded_int(1, PORT_MAX),
        # A string default goes through `type` too, so a bad KPI_CODE_SERVER_PORT is refused like a bad option.
        default=os.environ.get(settings.ENV_CODE_SERVER_PORT) or str(settings.DEFAULT_CODE_SERVER_PORT),
        help=f"code server port, 1..{PORT_MAX} (default: {settings.ENV_CODE_SERVER_PORT}, else "
        f"{settings.DEFAULT_CODE_SERVER_PORT})",
    )
    p.add_argument(
        "--simulator-port",
        type=bounded_int(1, PORT_MAX),
        help=f"also serve the Meta API simulator on this port (1..{PORT_MAX}) and use it",
    )
    p.add_argument("--log-dir", help="also write each process's output to <dir>/<process>.log")
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "migrate", help="apply warehouse migrations and `dagster instance migrate` (idempotent)"
    )
    p.set_defaults(func=_cmd_migrate)

    p = sub.add_parser("db", help="PostgreSQL administration of the warehouse")
    dbsub = p.add_subparsers(dest="db_command", required=True, help="what to administer")
    roles = dbsub.add_parser(
        "roles",
        help="create the owner, writer and reader roles and apply their privileges (idempotent)",
        description="Creates the roles if missing (passwords from KPI_DB_OWNER_PASSWORD, KPI_DB_WRITER_PASSWORD, "
        "KPI_DB_READER_PASSWORD; a role created without one is NOLOGIN), hands the warehouse tables to the "
        "owner and grants the writer and reader exactly what kpi_platform/warehouse/roles.py lists. Run it after "
        "every `kpi-platform migrate`.",
    )
    roles.add_argument(
        "--url",
        help="a superuser connection (default: KPI_WAREHOUSE_ADMIN_URL, else the owner / warehouse URL)",
    )
    roles.add_argument(
        "--owner", default=settings.DB_OWNER_ROLE, help="owner role (owns tables, runs migrations)"
    )
    roles.add_argument("--writer", default=settings.DB_WRITER_ROLE, help="writer role (Dagster runs)")
    roles.add_argument("--reader", default=settings.DB_READER_ROLE, help="reader role (exports and queries)")
    roles.set_defaults(func=_cmd_db_roles)
    return parser


def _quiet_dagster_warnings() -> None:
    """Beta/preview notices about APIs we chose deliberately are noise on a terminal (the processes of `ui` and
    `serve` ignore them too)."""
    from kpi_platform.runtime.console import quiet_beta_warnings

    quiet_beta_warnings()


def main(argv: Sequence[str] | None = None) -> int:
    # First: checking an option's bounds may import Dagster objects.
    _quiet_dagster_warnings()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        # argparse has printed the usage and `error: ...` (exit 2) or the help (exit 0): nothing ran.
        return exc.code if isinstance(exc.code, int) else 2
    code = int(args.func(args) or 0)
    if argv is None:
        # The command line's process ends here. Its last garbage collection would walk every object Dagster's
        # import made, some 0.3 s of a `kpi-platform health` that answers in about one; frozen objects are left
        # to the exit. (Not for a caller that goes on, such as a test calling `main([...])`.)
        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
