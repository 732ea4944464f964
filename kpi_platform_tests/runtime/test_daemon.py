"""The production daemon entry point: `dagster-daemon`, with the backfill daemon's interval from the environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from kpi_platform.cli.supervisor import daemon_spec
from kpi_platform.runtime.daemon import (
    DEFAULT_BACKFILL_INTERVAL_S,
    ENV_BACKFILL_INTERVAL,
    backfill_interval_s,
)
from kpi_platform_tests.support.fresh_python import run_in_fresh_python


@pytest.mark.parametrize(
    ("raw", "seconds"), [(None, DEFAULT_BACKFILL_INTERVAL_S), ("", 5), (" 12 ", 12), ("1", 1)]
)
def test_interval_from_the_environment(raw, seconds):
    env = {} if raw is None else {ENV_BACKFILL_INTERVAL: raw}
    assert backfill_interval_s(env) == seconds


@pytest.mark.parametrize(
    ("raw", "message"), [("5s", "not a whole number"), ("0", "outside 1..300"), ("301", "outside")]
)
def test_bad_interval_is_refused_with_the_variable_named(raw, message):
    with pytest.raises(ValueError, match=rf"{ENV_BACKFILL_INTERVAL}=.*{message}"):
        backfill_interval_s({ENV_BACKFILL_INTERVAL: raw})


def test_the_backfill_loop_sleeps_the_configured_interval():
    """In a fresh interpreter (the setting is process-wide): one iteration of Dagster's backfill loop with nothing
    to do, then the wait it asks for."""
    script = textwrap.dedent(
        """
        import json, threading
        from unittest import mock
        from dagster._daemon import backfill
        from kpi_platform.runtime import daemon

        daemon.set_backfill_interval(7)
        waits = []

        class Shutdown(threading.Event):
            def wait(self, timeout=None):
                waits.append(timeout)
                return True

        with mock.patch.object(backfill, "execute_backfill_iteration", lambda *a, **k: iter(())):
            loop = backfill.execute_backfill_iteration_loop(None, None, Shutdown())
            for _ in range(3):  # START_SPAN, END_SPAN, then the yield after the wait
                next(loop)
        print(json.dumps([round(w) for w in waits]))
        """
    )
    assert run_in_fresh_python(script) == [7]


def test_a_bad_interval_stops_the_daemon_before_it_starts(tmp_path):
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "kpi_platform.runtime.daemon", "run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", ENV_BACKFILL_INTERVAL: "soon", "DAGSTER_HOME": str(tmp_path)},
    )
    assert done.returncode == 2
    assert f"{ENV_BACKFILL_INTERVAL}='soon' is not a whole number of seconds" in done.stderr


def test_the_deployment_starts_the_daemon_through_this_module(tmp_path):
    spec = daemon_spec(workspace=tmp_path / "workspace.yaml")
    assert spec.argv == (
        sys.executable,
        "-m",
        "kpi_platform.runtime.daemon",
        "run",
        "-w",
        str(tmp_path / "workspace.yaml"),
    )
