"""The health report in two processes side by side, for `kpi-platform health`.

A cold `kpi-platform health` spends most of a second importing Dagster and opening its instance before it can read
anything from it. The checks that read only the warehouse do not wait for that: `WarehouseHalf.start` forks a
worker process that opens the warehouse and evaluates them while this process opens the instance and evaluates
the checks that read it; `combined_report` puts every check in report order. The worker imports no Dagster, and
this process none of the warehouse checks' pandas, so the two halves use both cores. Where a worker cannot be
forked or dies, the warehouse half is evaluated here instead: slower, the same report.

`multiprocessing` forks the worker and carries the result or the exception back (pickled); the halves are
`checks.WAREHOUSE_CHECKS` and `instance_checks.INSTANCE_CHECKS`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from kpi_platform.operations.health.report import HealthCheck, HealthReport


@dataclass(frozen=True)
class WarehouseFindings:
    """What the worker read: the checks that need no instance, evaluated as of `now_utc`; or, when the warehouse
    cannot be opened for reading, why (`not_ready`) and nothing else."""

    checks: list[HealthCheck] = field(default_factory=list)
    not_ready: str | None = None


def read_warehouse_half(url: str, now_utc: datetime) -> WarehouseFindings:
    """Open the warehouse at `url` for reading and evaluate every report check that needs no Dagster instance.
    Never raises for a warehouse that is missing, unreachable or not migrated: that is `not_ready`."""
    from kpi_platform.operations.health.checks import WAREHOUSE_CHECKS
    from kpi_platform.operations.health.report import clients_from_warehouse, evaluate_checks
    from kpi_platform.warehouse.readiness import WarehouseNotReadyError, open_warehouse

    try:
        warehouse = open_warehouse(url)
    except WarehouseNotReadyError as exc:
        return WarehouseFindings(not_ready=str(exc))
    try:
        report = evaluate_checks(
            warehouse=warehouse,
            instance=None,
            clients=clients_from_warehouse(warehouse),
            now_utc=now_utc,
            checks=WAREHOUSE_CHECKS,
        )
        return WarehouseFindings(checks=list(report.checks))
    finally:
        warehouse.dispose()


def combined_report(
    found: WarehouseFindings, instance_checks: Sequence[HealthCheck], now_utc: datetime
) -> HealthReport:
    """The report of the warehouse half's checks and `instance_checks`, in report order."""
    from kpi_platform.operations.health.report import REPORT_ORDER, HealthReport

    by_name = {check.name: check for check in (*found.checks, *instance_checks)}
    return HealthReport.from_checks([by_name[n] for n in REPORT_ORDER if n in by_name], generated_at=now_utc)


def _work(
    read: Callable[[str, datetime], WarehouseFindings], url: str, now_utc: datetime, sender: Connection
) -> None:
    """The worker process: `read` and send back ("ok", findings), or ("error", the exception)."""
    try:
        answer: tuple[str, object] = ("ok", read(url, now_utc))
    except Exception as exc:  # noqa: BLE001 - carried back and raised where the result is asked for
        answer = ("error", exc)
    try:
        sender.send(answer)
    except Exception as exc:  # noqa: BLE001 - an exception that does not pickle goes back as its text
        sender.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
    finally:
        sender.close()


class WarehouseHalf:
    """`read` (`read_warehouse_half`) in a worker process forked by `start()`; `result()` waits for its answer, or
    reads here when no worker could be forked or it died without answering (killed, out of memory). A context
    manager: leaving it reaps the worker.

    A forked `multiprocessing.Process` and a pipe rather than `concurrent.futures.ProcessPoolExecutor`: the
    executor hands the call to its worker from a thread of this process, which the Dagster import running
    meanwhile starves of the interpreter lock; the worker started some 0.3 s late."""

    def __init__(
        self,
        url: str,
        now_utc: datetime,
        *,
        read: Callable[[str, datetime], WarehouseFindings] = read_warehouse_half,
    ) -> None:
        self.url = url
        self.now_utc = now_utc
        self._read = read
        self._process: BaseProcess | None = None
        self._receiver: Connection | None = None

    def start(self) -> WarehouseHalf:
        try:
            context = multiprocessing.get_context("fork")
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_work, args=(self._read, self.url, self.now_utc, sender), daemon=True
            )
            process.start()
        except (OSError, ValueError):
            return self  # no worker: `result()` reads here
        sender.close()  # the worker holds the only sending end: its exit ends the pipe
        self._process, self._receiver = process, receiver
        return self

    def result(self) -> WarehouseFindings:
        if self._receiver is not None:
            try:
                kind, value = self._receiver.recv()
            except EOFError:
                pass  # the worker ended without an answer: the same reads, here
            else:
                if kind == "error":
                    assert isinstance(value, BaseException)
                    raise value
                assert isinstance(value, WarehouseFindings)
                return value
            finally:
                self._reap()
        return read_warehouse_half(self.url, self.now_utc)

    def _reap(self) -> None:
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        if self._process is not None:
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
            self._process = None

    def __enter__(self) -> WarehouseHalf:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._reap()
