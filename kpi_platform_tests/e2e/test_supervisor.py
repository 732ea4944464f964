"""The process supervisor behind `kpi-platform serve` and the end-to-end tests: inherited ignored signals are reset,
whole process groups are stopped, and processes that left their group are still found and killed."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from kpi_platform.cli.supervisor import ProcessSpec, Supervisor, marked_processes, wait_until

# Starts real process trees and signals them: run with the end-to-end layer (`pytest -m e2e`).
pytestmark = pytest.mark.e2e

PY = sys.executable


def python(name: str, code: str) -> ProcessSpec:
    return ProcessSpec(name, (PY, "-c", code))


@pytest.fixture
def ignored_sigterm():
    """The test process ignores SIGTERM and SIGINT, as a shell's background job may: children inherit that."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_children_stop_on_sigterm_even_when_the_parent_ignores_it(ignored_sigterm, tmp_path):
    supervisor = Supervisor(log_dir=tmp_path)
    child = supervisor.start(python("sleeper", "import time; print('up', flush=True); time.sleep(60)"))
    wait_until(lambda: "up" in (tmp_path / "sleeper.log").read_text(), timeout_s=30, what="the child")
    report = supervisor.stop(grace_s=10)
    assert report.exit_codes == {"sleeper": -signal.SIGTERM}
    assert report.forced == ()
    assert child.process.returncode == -signal.SIGTERM
    assert marked_processes(supervisor.marker) == []


def test_groups_and_escaped_processes_are_killed(tmp_path):
    supervisor = Supervisor(log_dir=tmp_path)
    # A leader that ignores SIGTERM, with a member of its group that does too (a stuck run worker).
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print('up', flush=True); time.sleep(120)\n"
    )
    # A process that leaves its group, as a server starting its own session would.
    escaping = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        "print('up', flush=True); time.sleep(120)\n"
    )
    supervisor.start(python("stubborn", stubborn))
    supervisor.start(python("escaping", escaping))
    for name in ("stubborn", "escaping"):
        wait_until(lambda n=name: "up" in (tmp_path / f"{n}.log").read_text(), timeout_s=30, what=name)
    wait_until(lambda: len(marked_processes(supervisor.marker)) == 4, timeout_s=30, what="all four processes")

    started = time.monotonic()
    report = supervisor.stop(grace_s=2)
    assert time.monotonic() - started < 20
    assert report.forced == ("stubborn",)
    assert len(report.stragglers) == 1
    assert marked_processes(supervisor.marker) == []
