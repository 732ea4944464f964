"""The embedded default's local instance: where DAGSTER_HOME lives and how the Dagster instance is opened."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kpi_platform import settings

#: The local instance when the top-level dagster.yaml is not there: run monitoring on, so the MONITORING daemon
#: enforces every collection run's `dagster/max_runtime` tag (operations/plans.py) and the same 6 h default.
FALLBACK_INSTANCE_YAML = (
    "telemetry:\n  enabled: false\n"
    "run_monitoring:\n  enabled: true\n  poll_interval_seconds: 30\n  max_runtime_seconds: 21600\n"
)


def ensure_dagster_home() -> Path:
    """Use DAGSTER_HOME if set; otherwise the local data folder, seeded once with the top-level dagster.yaml.

    The same folder is what `kpi-platform ui` starts the webserver on, so the UI shows the runs the quickstart made.
    """
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
