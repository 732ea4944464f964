"""What the Dagster side of `kpi-platform health` imports: neither pandas, numpy, pandera nor apprise.

The command's answer time is bounded by the process that imports Dagster and opens its instance; pandas with numpy
add about 0.25 s to it and apprise 0.08 s, though nothing that process evaluates needs them. Each case runs in a
fresh interpreter, since this test process has long imported all of them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kpi_platform.warehouse import Warehouse

HEAVY_MODULES = ("pandas", "numpy", "pandera", "apprise")

DAGSTER_SIDE_IMPORTS = """
import kpi_platform.cli.command, kpi_platform.cli.local
import kpi_platform.operations.health.report, kpi_platform.operations.health.success_rates
import kpi_platform.operations.health.instance_checks, kpi_platform.operations.health.token_checks
import kpi_platform.defs.run_history, kpi_platform.warehouse.readiness, kpi_platform.clients
"""


def heavy_modules_after(code: str) -> list[str]:
    """The HEAVY_MODULES a fresh interpreter has imported after running `code`."""
    report = f"import sys\nprint(' '.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + "\n" + report],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.split()


def test_the_dagster_side_of_the_health_command_imports_no_pandas_numpy_or_apprise():
    """Importing the CLI, the report's vocabulary, the instance and token checks and the run history (what the
    process opening the Dagster instance needs) loads none of them: they would lengthen every answer."""
    assert heavy_modules_after(DAGSTER_SIDE_IMPORTS) == []


def test_opening_the_warehouse_and_reading_its_clients_imports_no_pandas(tmp_path):
    """The registered clients every check needs are read without pandas: creating a `Warehouse` and reading
    clients and timestamps import none of the frame machinery."""
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    warehouse = Warehouse(url)
    warehouse.migrate()
    warehouse.upsert_clients(
        [
            {
                "client_id": "acme",
                "name": "Acme",
                "ad_account_id": "act_1",
                "currency": "EUR",
                "timezone": "Europe/Warsaw",
            }
        ]
    )
    warehouse.dispose()
    code = f"""
    from kpi_platform.clients import registered_clients
    from kpi_platform.warehouse.readiness import open_warehouse

    warehouse = open_warehouse({url!r})
    assert [c.id for c in registered_clients(warehouse)] == ["acme"]
    assert warehouse.get_client("acme")["created_at"].tzinfo is not None
    assert warehouse.newest_forecast_at() is None
    """
    assert heavy_modules_after(code) == []


def test_the_worker_of_the_health_command_imports_no_dagster():
    """The worker process evaluates the warehouse checks while the other one imports Dagster: were it to import
    Dagster too, the two would share the cores for the same import instead of halving the answer time."""
    code = """
import sys
import kpi_platform.operations.health.side_by_side, kpi_platform.operations.health.checks
print('dagster' in sys.modules)
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "False"
