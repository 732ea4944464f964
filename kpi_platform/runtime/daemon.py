"""The production daemon: `dagster-daemon`, with the backfill daemon looking for work every few seconds.

Dagster's backfill daemon sleeps a fixed 30 s between iterations (`DEFAULT_DAEMON_INTERVAL_SECONDS`, not a
setting in 1.13). A backfill launched from the UI therefore waits up to 30 s before its first run is created, and
up to 30 s more after its last run ends before it is marked complete: on a year's backfill of 50 clients, a third
of the wall time. This entry point sets that interval (`KPI_BACKFILL_INTERVAL_SECONDS`, default 5 s) before the
daemons start; everything else is `dagster-daemon` itself. An iteration with nothing to do is a single query.

    python -m kpi_platform.runtime.daemon run -w deploy/workspace.yaml       # the arguments of `dagster-daemon`

The asset daemon, which also read that constant as its default pace, keeps its 30 s
(`auto_materialize.minimum_interval_seconds` in deploy/dagster.yaml).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

ENV_BACKFILL_INTERVAL = "KPI_BACKFILL_INTERVAL_SECONDS"
DEFAULT_BACKFILL_INTERVAL_S = 5


def backfill_interval_s(env: Mapping[str, str] = os.environ) -> int:
    """The backfill daemon's interval from the environment: a whole number of seconds from 1 to 300."""
    raw = env.get(ENV_BACKFILL_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_BACKFILL_INTERVAL_S
    try:
        seconds = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_BACKFILL_INTERVAL}={raw!r} is not a whole number of seconds") from None
    if not 1 <= seconds <= 300:
        raise ValueError(f"{ENV_BACKFILL_INTERVAL}={seconds} is outside 1..300 seconds")
    return seconds


def set_backfill_interval(seconds: int) -> None:
    """PRIVATE in 1.13: `execute_backfill_iteration_loop` reads `dagster._daemon.controller.
    DEFAULT_DAEMON_INTERVAL_SECONDS` when the daemon starts. Fails loudly if a Dagster upgrade moves it."""
    from kpi_platform.runtime import dagster_private

    dagster_private.check_backfill_interval_hook()
    _, controller = dagster_private.backfill_daemon_modules()
    # Set in the module's namespace: the module is imported by name, so its attributes are unknown to mypy.
    vars(controller)["DEFAULT_DAEMON_INTERVAL_SECONDS"] = seconds


def main(argv: Sequence[str] | None = None) -> int:
    from kpi_platform.runtime import dagster_private

    try:
        seconds = backfill_interval_s()
    except ValueError as exc:
        print(f"kpi_platform.runtime.daemon: {exc}", file=sys.stderr)
        return 2
    dagster_private.check_dagster()
    set_backfill_interval(seconds)
    dagster_private.daemon_cli().main(
        args=list(sys.argv[1:] if argv is None else argv), prog_name="dagster-daemon"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
