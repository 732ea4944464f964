"""A whole platform for Dagster-level tests: a temporary instance, clients file and warehouse, all under tmp_path."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg

from kpi_platform.cli.quickstart import sync_clients
from kpi_platform.clients import load_clients
from kpi_platform.definitions import build_defs
from kpi_platform.defs.resources import MetaApiResource, WarehouseResource
from kpi_platform.operations.plans import CollectionRequest
from kpi_platform.warehouse import Warehouse
from kpi_platform_tests.support.dagster_instance import instance_from_template

CLIENTS_YAML = textwrap.dedent(
    """
    clients:
      - {id: acme, name: Acme, ad_account_id: act_100000000001, currency: EUR, timezone: Europe/Warsaw}
      - {id: globex, name: Globex, ad_account_id: act_100000000002, currency: PLN, timezone: Europe/Warsaw}
    """
)


@dataclass
class Platform:
    instance: dg.DagsterInstance
    warehouse: Warehouse
    warehouse_url: str

    def defs(self, **meta_overrides) -> dg.Definitions:
        return build_defs(
            resources={
                "warehouse": WarehouseResource(url=self.warehouse_url),
                "meta_api": MetaApiResource(**meta_overrides),
            }
        )

    def collect(self, client_id: str, start: date, end: date, **meta_overrides) -> dg.ExecuteInProcessResult:
        job = self.defs(**meta_overrides).resolve_job_def("daily_collection_job")
        tags = CollectionRequest(client_id, start, end, run_key="", reason="test").tags()
        return job.execute_in_process(instance=self.instance, tags=tags, raise_on_error=False)


def make_platform(
    tmp_path, monkeypatch, warehouse_url: str, *, instance_template: Path | None = None
) -> Iterator[Platform]:
    """acme and globex registered in a fresh test instance and in the warehouse at `warehouse_url` (migrated here).

    With `instance_template` (the `dagster_instance_template` fixture) the instance's home is a copy of it under
    tmp_path, which opens much faster than a new one; the instance is as empty either way."""
    clients_file = tmp_path / "clients.yaml"
    clients_file.write_text(CLIENTS_YAML, encoding="utf-8")
    monkeypatch.setenv("KPI_CLIENTS_FILE", str(clients_file))
    monkeypatch.setenv("KPI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KPI_WAREHOUSE_URL", warehouse_url)
    monkeypatch.delenv("KPI_META_API_URL", raising=False)
    monkeypatch.delenv("KPI_SIMULATOR_FAULTS", raising=False)
    warehouse = Warehouse(warehouse_url)
    warehouse.migrate()
    with instance_from_template(instance_template, tmp_path / "dagster_instance") as instance:
        sync_clients(instance=instance, clients=load_clients(clients_file), warehouse=warehouse)
        yield Platform(instance, warehouse, warehouse_url)
    warehouse.dispose()
