"""Run in a worker of the code server's fork server (runtime/test_code_server.py): what was already imported there.

Imports nothing itself, so what it reports was loaded by the fork server before the fork.
"""

from __future__ import annotations

import sys

MODULES = ("kpi_platform.definitions", "pandas", "dagster_postgres")


def report_preloaded(queue) -> None:
    queue.put({name: name in sys.modules for name in MODULES})
