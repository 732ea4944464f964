"""Daemon heartbeats written straight into an instance, as a running `dagster-daemon` writes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import dagster as dg
from dagster._daemon.types import DaemonHeartbeat  # PRIVATE: the daemon's own record, no public constructor


def beat(instance: dg.DagsterInstance, at: datetime, daemon_types: Sequence[str] | None = None) -> None:
    """A heartbeat at `at` from each of `daemon_types` (default: every daemon the instance requires), as a running
    `dagster-daemon` writes them."""
    for daemon_type in instance.get_required_daemon_types() if daemon_types is None else daemon_types:
        instance.add_daemon_heartbeat(DaemonHeartbeat(at.timestamp(), daemon_type, "test-daemon", None))
