"""The embedded default's local instance: where DAGSTER_HOME lives and how the Dagster instance is opened."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kpi_platform import settings


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
        target.write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    return home
