"""Running a script in a fresh interpreter, for entry points that patch Dagster for the whole process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def run_in_fresh_python(script: str) -> object:
    """Run `script` in a fresh interpreter (the hooks patch Dagster's server class for the whole process) and
    return the JSON it prints last."""
    done = subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
