"""The embedded default's local instance: where DAGSTER_HOME lives and how the Dagster instance is opened."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import IO

from kpi_platform import settings

#: The local instance when the top-level dagster.yaml is not there: run monitoring on, so the MONITORING daemon
#: enforces every collection run's `dagster/max_runtime` tag (operations/plans.py) and the same 6 h default; the
#: queue, the asset daemon and the runs' console level as in dagster.yaml.
FALLBACK_INSTANCE_YAML = (
    "telemetry:\n  enabled: false\n"
    "run_monitoring:\n  enabled: true\n  poll_interval_seconds: 30\n  max_runtime_seconds: 21600\n"
    "run_coordinator:\n  module: dagster.core.run_coordinator\n  class: QueuedRunCoordinator\n"
    "  config:\n    dequeue_interval_seconds: 2\n"
    "auto_materialize:\n  minimum_interval_seconds: 30\n"
    "python_logs:\n  python_log_level: INFO\n"
)


def ensure_dagster_home() -> Path:
    """Use DAGSTER_HOME if set; otherwise the local data folder, seeded once with the top-level dagster.yaml.

    The same folder is what `kpi-platform ui` starts the webserver on, so the UI shows the runs the quickstart made.
    The deployment's Dagster settings (`supervisor.DAGSTER_TUNING_ENV`) apply unless the environment sets them: the
    quickstart's runs, and the `dagster` commands the CLI starts, write a range run's events in batches.
    """
    from kpi_platform.cli.supervisor import DAGSTER_TUNING_ENV

    for name, value in DAGSTER_TUNING_ENV.items():
        os.environ.setdefault(name, value)
    configured = os.environ.get("DAGSTER_HOME")
    if configured:
        home = Path(configured).resolve()
        home.mkdir(parents=True, exist_ok=True)
        return home
    home = settings.data_dir() / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    template = settings.project_root() / "dagster.yaml"
    target = home / "dagster.yaml"
    # Seeded once: after that the file is the operator's (the README tells them to add PostgreSQL storage to it),
    # so an edit is never overwritten by the template.
    if template.exists():
        if not target.exists():
            shutil.copyfile(template, target)
    elif not target.exists():
        # Without the template (an installed package), still a daemon that ends runs past their time bound.
        target.write_text(FALLBACK_INSTANCE_YAML, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def run_ui(*, host: str, port: int, out: IO[str] = sys.stdout) -> int:
    """`kpi-platform ui`: the production processes (code server, webserver, the daemon with its 5 s backfill pace)
    on the embedded default's instance, until Ctrl-C; the exit code of `supervisor.serve`.

    `dagster dev` would start the stock daemon, whose backfill daemon waits 30 s between looks: a backfill
    launched in the UI then waited up to 30 s for its first run and 30 s more to be marked complete.
    """
    from kpi_platform.cli.supervisor import free_port, serve

    home = ensure_dagster_home()
    print(f"DAGSTER_HOME={home}\nopen http://{host}:{port}", file=out, flush=True)
    # The code server is this machine's, on a free port: a production KPI_CODE_SERVER_* in the shell is not ours.
    os.environ[settings.ENV_CODE_SERVER_HOST] = "127.0.0.1"
    return serve(
        host=host,
        webserver_port=port,
        code_server_port=free_port(),
        simulator_port=None,
        log_dir=None,
        out=out,
        embedded=True,
    )
