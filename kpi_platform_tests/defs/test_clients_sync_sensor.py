"""clients_sync_sensor ticked with its cursor: new clients become partitions and rows, an unchanged file is
skipped, a removed or deactivated client keeps its history, and an invalid file changes nothing."""

from __future__ import annotations

import textwrap

import dagster as dg
import pytest

from kpi_platform.defs.collection import clients_sync_sensor
from kpi_platform.defs.resources import WarehouseResource
from kpi_platform.warehouse import Warehouse

TWO = textwrap.dedent(
    """
    clients:
      - {id: acme, name: Acme, ad_account_id: act_100000000001, currency: EUR, timezone: Europe/Warsaw}
      - {id: globex, name: Globex, ad_account_id: act_100000000002, currency: PLN, timezone: Europe/Warsaw}
    """
)
ACME_ONLY = textwrap.dedent(
    """
    clients:
      - {id: acme, name: Acme, ad_account_id: act_100000000001, currency: EUR, timezone: Europe/Warsaw}
    """
)


def tick(instance, warehouse_url: str, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": WarehouseResource(url=warehouse_url)}
    )
    result = clients_sync_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def test_sync_follows_the_file_and_never_deletes_history(tmp_path, monkeypatch):
    clients_file = tmp_path / "clients.yaml"
    monkeypatch.setenv("KPI_CLIENTS_FILE", str(clients_file))
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    warehouse = Warehouse(url)
    warehouse.migrate()
    try:
        with dg.instance_for_test() as instance:
            clients_file.write_text(TWO, encoding="utf-8")
            first = tick(instance, url, None)
            assert instance.get_dynamic_partitions("clients") == ["acme", "globex"]
            assert {r["client_id"]: r["active"] for r in warehouse.list_clients()} == {
                "acme": True,
                "globex": True,
            }

            unchanged = tick(instance, url, first.cursor)
            assert unchanged.skip_reason is not None and "unchanged" in str(unchanged.skip_reason)

            # globex leaves the file: deactivated, its partitions and row kept.
            clients_file.write_text(ACME_ONLY, encoding="utf-8")
            removed = tick(instance, url, unchanged.cursor)
            assert removed.skip_reason is None
            assert {r["client_id"]: r["active"] for r in warehouse.list_clients()} == {
                "acme": True,
                "globex": False,
            }
            assert instance.get_dynamic_partitions("clients") == ["acme", "globex"]
            # The next tick on the same file changes nothing and does not fail.
            assert tick(instance, url, removed.cursor).skip_reason is not None
            assert tick(instance, url, None).skip_reason is None

            # An invalid file fails the tick naming the entry and field; nothing changes.
            clients_file.write_text(TWO.replace("id: globex", "id: Globex|x"), encoding="utf-8")
            with pytest.raises(Exception, match="id"):
                tick(instance, url, removed.cursor)
            assert {r["client_id"]: r["active"] for r in warehouse.list_clients()} == {
                "acme": True,
                "globex": False,
            }

            # globex comes back: active again, same partitions.
            clients_file.write_text(TWO, encoding="utf-8")
            tick(instance, url, removed.cursor)
            assert {r["client_id"]: r["active"] for r in warehouse.list_clients()} == {
                "acme": True,
                "globex": True,
            }
            assert instance.get_dynamic_partitions("clients") == ["acme", "globex"]
    finally:
        warehouse.dispose()
