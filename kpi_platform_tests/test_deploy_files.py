"""The Kubernetes files in deploy/k8s: they parse, hold no secret, launch each run in its own pod, load our code
location, refer only to Secrets and variables that exist, and keep the single-machine run policy.

Kubernetes and Helm are not available to the tests; this is what can be checked without them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

from kpi_platform import settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
YAML_FILES = ("values.yaml", "secrets.example.yaml", "warehouse-migrate-job.yaml")
#: `scheme://user:password@` with a password that is not a <placeholder>.
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:(?!<)[^@\s]+@")
SECRET_KEY = re.compile(r"password|token|secret|webhook", re.IGNORECASE)


def load(name: str) -> list[Any]:
    return list(yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    (document,) = load("values.yaml")
    return document


@pytest.fixture(scope="module")
def secrets() -> dict[str, dict[str, str]]:
    return {doc["metadata"]["name"]: doc["stringData"] for doc in load("secrets.example.yaml") if doc}


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """(dotted path, scalar) for every scalar of a YAML document."""
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for i, value in enumerate(node) for item in walk(value, f"{path}[{i}]")]
    return [(path, node)]


@pytest.mark.parametrize("name", YAML_FILES)
def test_yaml_parses(name):
    assert [doc for doc in load(name) if doc]


@pytest.mark.parametrize("name", [*YAML_FILES, "Dockerfile", "README.md"])
def test_no_literal_credentials(name):
    text = (K8S / name).read_text(encoding="utf-8")
    assert not CREDENTIALS_IN_URL.search(text), f"{name} holds a URL with a password"


def test_no_secret_value_outside_the_secrets_example(values):
    for path, value in walk(values):
        leaf = path.rsplit(".", 1)[-1]
        if SECRET_KEY.search(leaf) and not leaf.endswith(("SecretName", "Secret")):
            raise AssertionError(f"values.yaml sets {path}; secrets belong in a Kubernetes Secret")
        assert not (isinstance(value, str) and CREDENTIALS_IN_URL.search(value)), path


def test_secrets_example_holds_placeholders_only(secrets):
    assert secrets, "no Secret in secrets.example.yaml"
    for name, data in secrets.items():
        for key, value in data.items():
            assert re.search(r"<[^>]+>", value), f"{name}.{key} is not a <placeholder>"


def test_each_run_gets_its_own_pod(values):
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert "k8sRunLauncher" in values["runLauncher"]["config"]


def test_the_user_deployment_loads_our_code_location(values):
    user = values["dagster-user-deployments"]
    assert user["enabled"] is True
    (deployment,) = user["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("-m") + 1] == "kpi_platform.definitions"
    assert args[args.index("-a") + 1] == "defs"
    assert deployment["port"] == 3030

    import kpi_platform.definitions as module

    assert isinstance(module.defs, dg.Definitions)


def test_postgresql_is_external_with_the_password_from_a_secret(values, secrets):
    assert values["postgresql"]["enabled"] is False
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]
    # dagster-k8s reads exactly this key from global.postgresqlSecretName.
    assert "postgresql-password" in secrets[values["global"]["postgresqlSecretName"]]


def test_referenced_secrets_exist_and_name_known_variables(values, secrets):
    referenced = [
        s["name"] for d in values["dagster-user-deployments"]["deployments"] for s in d.get("envSecrets", [])
    ]
    (job,) = load("warehouse-migrate-job.yaml")
    pod = job["spec"]["template"]["spec"]
    containers = pod["initContainers"] + pod["containers"]
    referenced += [s["secretRef"]["name"] for c in containers for s in c.get("envFrom", [])]
    assert set(referenced) <= set(secrets)

    known = {value for name, value in vars(settings).items() if name.startswith("ENV_")}
    env_names = {
        e["name"] for d in values["dagster-user-deployments"]["deployments"] for e in d.get("env", [])
    }
    env_names |= {e["name"] for c in containers for e in c.get("env", [])}
    env_names |= {key for name, data in secrets.items() if name != "kpi-dagster-postgresql" for key in data}
    assert env_names - {"DAGSTER_HOME"} <= known


def test_runs_only_read_the_writer_and_reader_urls(secrets):
    runtime = secrets["kpi-platform-env"]
    assert settings.ENV_WAREHOUSE_OWNER_URL not in runtime
    assert settings.ENV_WAREHOUSE_ADMIN_URL not in runtime
    assert runtime[settings.ENV_WAREHOUSE_URL].startswith(f"postgresql://{settings.DB_WRITER_ROLE}:")
    assert runtime[settings.ENV_WAREHOUSE_READER_URL].startswith(f"postgresql://{settings.DB_READER_ROLE}:")


def test_run_policy_matches_the_single_machine_profile(values):
    machine = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text(encoding="utf-8"))
    cluster = values["concurrency"]
    assert cluster["enabled"] is True
    limits = [
        {"key": t["key"], "value": t["value"], "limit": t["limit"]}
        for t in cluster["runs"]["tagConcurrencyLimits"]
    ]
    assert limits == machine["concurrency"]["runs"]["tag_concurrency_limits"]
    assert limits[0]["key"] == settings.CLIENT_TAG
    assert cluster["pools"]["granularity"] == machine["concurrency"]["pools"]["granularity"]
    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert daemon["runMonitoring"]["enabled"] is True
    retries = daemon["runRetries"]
    assert (retries["enabled"], retries["maxRetries"], retries["retryOnAssetOrOpFailure"]) == (
        machine["run_retries"]["enabled"],
        machine["run_retries"]["max_retries"],
        machine["run_retries"]["retry_on_asset_or_op_failure"],
    )


def test_dockerfile_pins_dagster_k8s_with_the_dagster_family():
    dockerfile = (K8S / "Dockerfile").read_text(encoding="utf-8")
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    (postgres_pin,) = [d for d in dependencies if d.startswith("dagster-postgres==")]
    assert f"dagster-k8s=={postgres_pin.split('==')[1]}" in dockerfile
    assert "COPY kpi_platform" in dockerfile
