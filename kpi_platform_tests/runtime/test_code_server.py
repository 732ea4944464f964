"""The production code server: Dagster's gRPC server, with run workers forked from a preloaded fork server."""

from __future__ import annotations

import sys

import pytest

from kpi_platform.cli.supervisor import code_server_spec
from kpi_platform.runtime.code_server import ENTRY_MODULE, PRELOAD_MODULE, served_modules
from kpi_platform_tests.support.fresh_python import run_in_fresh_python


def test_runs_start_from_a_fork_server_that_preloaded_the_code_location():
    result = run_in_fresh_python(
        """
        import json, logging, threading
        from kpi_platform.runtime import code_server
        from kpi_platform_tests.support import forkserver_probe
        from dagster._grpc import server
        from dagster._core.utils import FuturesAwareThreadPoolExecutor

        context = code_server._use_forkserver()
        api = server.DagsterApiServer(
            server_termination_event=threading.Event(),
            logger=logging.getLogger("probe"),
            server_threadpool_executor=FuturesAwareThreadPoolExecutor(max_workers=1),
        )
        # What StartRun starts the run worker from: a process of the fork server, with the preload loaded.
        queue = api._mp_ctx.Queue()
        worker = api._mp_ctx.Process(target=forkserver_probe.report_preloaded, args=(queue,))
        worker.start()
        preloaded = queue.get(timeout=60)
        worker.join(timeout=60)
        print(json.dumps({
            "method": api._mp_ctx.get_start_method(),
            "same_context": api._mp_ctx is context,
            "preloaded": preloaded,
            "exitcode": worker.exitcode,
            "child_command": server.get_python_environment_entry_point("/venv/bin/python"),
        }))
        """
    )
    assert result["method"] == "forkserver" and result["same_context"]
    assert result["exitcode"] == 0
    # Imported by the fork server before the fork, not by the worker.
    assert result["preloaded"] == {"kpi_platform.definitions": True, "pandas": True, "dagster_postgres": True}
    # Untouched by the first hook alone: only main() routes the code server's child through this module.
    assert result["child_command"] == ["/venv/bin/python", "-m", "dagster"]


def test_the_code_servers_child_grpc_server_is_started_through_this_module_too():
    result = run_in_fresh_python(
        """
        import json
        from kpi_platform.runtime import code_server
        from dagster._grpc import server

        code_server._serve_children_here()
        print(json.dumps(server.get_python_environment_entry_point("/venv/bin/python")))
        """
    )
    assert result == ["/venv/bin/python", "-m", ENTRY_MODULE]


@pytest.mark.parametrize(
    ("argv", "modules"),
    [
        (
            ["code-server", "start", "-m", "kpi_platform.definitions", "-a", "defs"],
            ["kpi_platform.definitions"],
        ),
        (["api", "grpc", "--module-name=tests.defs", "-p", "4000"], ["tests.defs"]),
        (["api", "grpc", "-f", "defs.py"], []),
    ],
)
def test_served_modules(argv, modules):
    assert served_modules(argv) == modules


def test_the_deployment_starts_the_code_server_through_this_module():
    spec = code_server_spec(host="127.0.0.1", port=4266)
    assert spec.argv[:5] == (sys.executable, "-m", ENTRY_MODULE, "code-server", "start")
    assert served_modules(spec.argv[3:]) == ["kpi_platform.definitions"]
    assert PRELOAD_MODULE == "kpi_platform.runtime.run_worker_preload"
