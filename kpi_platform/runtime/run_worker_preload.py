"""Imported once by the code server's fork server (kpi_platform/runtime/code_server.py); every run worker forks from it.

Loads what each run would otherwise load for itself: Dagster's run-execution path, the PostgreSQL storage of
the production instance, and this code location with its repository built. Nothing here opens a connection,
reads a secret or starts a thread: a forked child must not share them.
"""

from __future__ import annotations

import dagster_postgres  # noqa: F401

from kpi_platform.runtime.console import quiet_beta_warnings

# Before the code location loads: the fork server is a fresh interpreter, the code server's filters are not its own.
quiet_beta_warnings()

import kpi_platform.runtime.pg_storage  # noqa: E402, F401
from kpi_platform.definitions import defs  # noqa: E402
from kpi_platform.runtime.dagster_private import preload_run_worker  # noqa: E402

preload_run_worker()

defs.get_repository_def()
