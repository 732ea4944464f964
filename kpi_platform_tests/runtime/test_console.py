"""The processes' console: Dagster's beta notices filtered out where the code location loads, nothing else."""

from __future__ import annotations

from kpi_platform_tests.support.fresh_python import run_in_fresh_python


def test_the_run_workers_fork_server_loads_the_code_location_without_beta_warnings():
    """The fork server imports the code location before any run: its BetaWarnings (one per `backfill_policy`,
    `MultiPartitionMapping`, ...) would print at every start of `kpi-platform ui` and `serve`; other warnings
    still print."""
    shown = run_in_fresh_python(
        """
        import json, warnings
        import sys
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            import kpi_platform.runtime.run_worker_preload
            warnings.warn("still shown", UserWarning)
        # The fork server runs the code server's module as its __main__ after the preload: imported before, Python
        # warns (RuntimeWarning from runpy) at every run.
        assert "kpi_platform.runtime.code_server" not in sys.modules
        print(json.dumps([f"{w.category.__name__}: {w.message}" for w in caught]))
        """
    )
    assert shown == ["UserWarning: still shown"]


def test_without_the_filter_the_code_location_warns():
    """The test above is not vacuous: loading the code location alone raises BetaWarnings."""
    shown = run_in_fresh_python(
        """
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            import kpi_platform.definitions
        print(json.dumps(sorted({w.category.__name__ for w in caught})))
        """
    )
    assert "BetaWarning" in shown  # type: ignore[operator]


def test_the_beta_warnings_quieted_before_dagster_loads_are_the_ones_dagster_raises():
    """`quiet_beta_warnings` filters Dagster's warning classes without importing `dagster` (most of a second of a
    command's start); the classes it filters must stay the ones `dagster` exports."""
    import dagster
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning

    assert dagster.BetaWarning is BetaWarning
    assert dagster.PreviewWarning is PreviewWarning
