"""What the platform's processes print on their console: Dagster's notices that are noise there, filtered out.

Kept apart from the entry points (`code_server.py`, `daemon.py`): the run workers' fork server imports it before the
code location, and importing an entry point there would make Python run it twice as `__main__`.
"""

from __future__ import annotations


def quiet_beta_warnings() -> None:
    """Ignore Dagster's BetaWarning and PreviewWarning in this process: notices about APIs this code location uses
    deliberately (`backfill_policy`, `MultiPartitionMapping`, ...), printed by every process that loads it, a wall of
    them at each start. Dagster has no setting for them; every other warning, and every error, still shows."""
    import warnings

    # The classes `dagster` re-exports, from the small package that defines them: importing `dagster` itself takes
    # most of a second, which a command that never loads Dagster (or loads it later) should not pay here.
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    warnings.filterwarnings("ignore", category=BetaWarning)
    warnings.filterwarnings("ignore", category=PreviewWarning)
