"""Test Dagster instances on local SQLite storage, copied from one whose tables were created once per session.

`dg.instance_for_test()` creates the run, event-log and schedule tables afresh each time (about a second on this
machine's disk); an instance opened on a copy of an initialised, still empty DAGSTER_HOME only checks them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg


def create_instance_template(directory: Path) -> Path:
    """Initialise an empty test instance's storage in `directory` (which must not exist yet); return it."""
    directory.mkdir(parents=True)
    with dg.instance_for_test(temp_dir=str(directory)):
        pass
    return directory


@contextmanager
def instance_from_template(template: Path | None, directory: Path) -> Iterator[dg.DagsterInstance]:
    """`dg.instance_for_test()` with its home in `directory`, a copy of `template` (see `create_instance_template`);
    without a template, a plain `dg.instance_for_test()` in a temporary directory."""
    if template is None:
        with dg.instance_for_test() as instance:
            yield instance
        return
    shutil.copytree(template, directory)
    with dg.instance_for_test(temp_dir=str(directory)) as instance:
        yield instance


@dg.op
def _noop() -> None:
    pass


@dg.job
def noop_job() -> None:
    """A job of one op that does nothing: runs created for it stand for any run in run-history tests."""
    _noop()
