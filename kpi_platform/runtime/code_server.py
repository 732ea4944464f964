"""The production code-location server: the `dagster` CLI, with run workers forked from a preloaded process.

The gRPC server launches every run (DefaultRunLauncher) as a fresh `multiprocessing` "spawn" process, which
imports Dagster, pandas, pandera and this code location again before doing any work: about 2.5 CPU-seconds per
run, close to half of what a year-long collection run costs on this machine. Dagster has no setting for the
start method, so this entry point swaps in a "forkserver" context (`_use_forkserver`): the fork server imports
`kpi_platform.runtime.run_worker_preload` once, and each run is a fork of it with everything already loaded. The run
worker itself (`dagster._grpc.impl.start_run_in_subprocess`), its events, termination and exit codes are
Dagster's own; only how its process starts changes.

    python -m kpi_platform.runtime.code_server code-server start -h 127.0.0.1 -p 4266 \
        -m kpi_platform.definitions -a defs --location-name kpi

takes exactly the arguments of `dagster code-server start` (or of any other `dagster` command). The code server
runs the code location in a child gRPC server, started through this module too (`_serve_children_here`), so
"Reload" in the UI restarts that child with the new code, and its fork server with it.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence

ENTRY_MODULE = "kpi_platform.runtime.code_server"
#: Imported once by the fork server, before any run forks from it.
PRELOAD_MODULE = "kpi_platform.runtime.run_worker_preload"


def _use_forkserver(preload: Sequence[str] = (PRELOAD_MODULE,)) -> multiprocessing.context.BaseContext:
    """Make `DagsterApiServer` start run workers from a fork server that has imported `preload`.

    PRIVATE in 1.13: `DagsterApiServer.__init__` sets `self._mp_ctx = multiprocessing.get_context("spawn")` and
    `StartRun` creates the run process, its queue and its termination event from it. A class property with a
    no-op setter takes precedence over that instance attribute. A Dagster upgrade that renames it makes
    `dagster_private.check_forkserver_hook` fail at start instead of silently spawning again.
    """
    from kpi_platform.runtime import dagster_private

    server = dagster_private.grpc_server_module()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    dagster_private.check_forkserver_hook(server)
    server.DagsterApiServer._mp_ctx = property(lambda _self: context, lambda _self, _value: None)
    return context


def _serve_children_here() -> None:
    """Start the gRPC server that `dagster code-server start` runs the code location in through this module,
    so it gets the fork server too. PRIVATE in 1.13: `open_server_process` builds its command from
    `get_python_environment_entry_point(executable)` (`[executable, "-m", "dagster"]`)."""
    from kpi_platform.runtime import dagster_private

    server = dagster_private.grpc_server_module()
    # Set in the module's namespace: the module is imported by name, so its attributes are unknown to mypy.
    vars(server)["get_python_environment_entry_point"] = lambda executable: [executable, "-m", ENTRY_MODULE]


def served_modules(argv: Sequence[str]) -> list[str]:
    """The modules named with `-m` / `--module-name` in `dagster` CLI arguments."""
    modules = []
    for position, arg in enumerate(argv):
        if arg in ("-m", "--module-name") and position + 1 < len(argv):
            modules.append(argv[position + 1])
        elif arg.startswith("--module-name="):
            modules.append(arg.split("=", 1)[1])
    return modules


def main(argv: Sequence[str] | None = None) -> int:
    from kpi_platform.runtime import console, dagster_private

    console.quiet_beta_warnings()
    dagster_private.check_dagster()
    cli = dagster_private.dagster_cli()
    args = list(sys.argv[1:] if argv is None else argv)
    # The served module too, when it is another one (the end-to-end tests serve their own definitions).
    _use_forkserver((PRELOAD_MODULE, *(m for m in served_modules(args) if m != "kpi_platform.definitions")))
    _serve_children_here()
    cli.main(args=args, prog_name="dagster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
