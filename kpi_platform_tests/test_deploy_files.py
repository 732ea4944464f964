"""The Kubernetes files in deploy/k8s: they parse, hold no secret, launch each run in its own pod, load our code
location, refer only to Secrets and variables that exist, and keep the single-machine run policy.

Kubernetes and Helm are not available to the tests; this is what can be checked without them.
"""

from __future__ import annotations

import configparser
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
YAML_FILES = ("values.yaml", "secrets.example.yaml", "warehouse-migrate-job.yaml", "watchdog-cronjob.yaml")
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


@pytest.mark.parametrize("path", ["dagster.yaml", "deploy/dagster.yaml"])
def test_a_dead_run_worker_never_keeps_its_slots(path):
    """Both instances (the embedded default and production) fail a run that never starts, do not try to resume a
    dead worker, re-run a run that died for infrastructure reasons, and free the pool slots a run still holds
    after it ended, within minutes."""
    config = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["max_resume_run_attempts"] == 0
    assert 0 < monitoring["start_timeout_seconds"] <= 300
    assert 0 < monitoring["cancel_timeout_seconds"] <= 300
    # Slots of a killed run are back within a few minutes, not held for good.
    assert 0 < monitoring["free_slots_after_run_end_seconds"] + monitoring["poll_interval_seconds"] <= 300
    retries = config["run_retries"]
    assert (retries["enabled"], retries["retry_on_asset_or_op_failure"]) == (True, False)
    assert retries["max_retries"] >= 1


@pytest.mark.parametrize("path", ["dagster.yaml", "deploy/dagster.yaml"])
def test_every_run_has_a_time_bound_the_daemon_enforces(path):
    """Collection runs carry `dagster/max_runtime` scaled to their range (operations/plans.py); the instance bounds
    every other run by the same cap, and its daemon looks often enough for the shortest bound to hold."""
    from kpi_platform.operations.plans import MAX_RUNTIME_CAP_S, max_runtime_seconds

    monitoring = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))["run_monitoring"]
    assert monitoring["enabled"] is True
    assert monitoring["max_runtime_seconds"] == MAX_RUNTIME_CAP_S
    # A one-day run is ended within a few percent of its bound.
    assert monitoring["poll_interval_seconds"] <= max_runtime_seconds(1) / 30


def test_both_instances_monitor_runs_alike():
    embedded = yaml.safe_load((ROOT / "dagster.yaml").read_text(encoding="utf-8"))
    production = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text(encoding="utf-8"))
    assert embedded["run_monitoring"] == production["run_monitoring"]
    assert embedded["run_retries"] == production["run_retries"]


def test_dagster_reads_the_embedded_instance_so(tmp_path, monkeypatch):
    """Dagster itself, on a copy of the embedded default: the MONITORING daemon (which frees the slots) and the
    run-retry daemon run, and it frees slots of ended runs."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # the storage's base_dir
    (tmp_path / "dagster.yaml").write_bytes((ROOT / "dagster.yaml").read_bytes())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert {"MONITORING", "EVENT_LOG_CONSUMER"} <= set(instance.get_required_daemon_types())
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.event_log_storage.supports_global_concurrency_limits


# --- the watchdog outside Dagster (deploy/k8s/watchdog-cronjob.yaml, deploy/watchdog/) --------------------------

WATCHDOG = ROOT / "deploy" / "watchdog"
WATCHDOG_COMMAND = ["kpi-platform", "health", "--alert"]


def test_the_watchdog_cronjob_runs_every_5_minutes_like_the_other_processes(values, secrets):
    (cronjob,) = load("watchdog-cronjob.yaml")
    assert cronjob["kind"] == "CronJob"
    spec = cronjob["spec"]
    assert spec["schedule"] == "*/5 * * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == WATCHDOG_COMMAND
    # The code location's image, and the Job's way to Dagster's instance.
    image = values["dagster-user-deployments"]["deployments"][0]["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}"
    (job,) = load("warehouse-migrate-job.yaml")
    migrate = next(c for c in job["spec"]["template"]["spec"]["initContainers"] if c["name"] == "migrate")
    assert container["env"] == migrate["env"]
    assert container["volumeMounts"] == migrate["volumeMounts"]
    assert pod["volumes"] == job["spec"]["template"]["spec"]["volumes"]
    # The channels, the heartbeat and the warehouse writer URL of the code location; never the admin Secret.
    refs = [s["secretRef"]["name"] for s in container["envFrom"]]
    assert refs == [s["name"] for s in values["dagster-user-deployments"]["deployments"][0]["envSecrets"]]
    assert set(refs) <= set(secrets) and "kpi-warehouse-admin" not in refs
    key_refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    assert all(ref["key"] in secrets[ref["name"]] for ref in key_refs)
    assert settings.ENV_HEARTBEAT_URL in secrets["kpi-platform-env"]


def test_the_k8s_readme_lists_every_file():
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for name in (*YAML_FILES, "Dockerfile"):
        assert f"`{name}`" in readme, name


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((WATCHDOG / name).read_text(encoding="utf-8"))
    return parser


def test_the_systemd_timer_starts_the_watchdog_service_every_5_minutes():
    service = _unit("kpi-watchdog.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].split()[1:] == WATCHDOG_COMMAND[1:]
    assert service["Service"]["ExecStart"].split()[0].endswith("/.venv/bin/kpi-platform")
    assert "EnvironmentFile" in service["Service"]
    # A run ends well before the next one starts.
    assert int(service["Service"]["TimeoutStartSec"]) < 300
    timer = _unit("kpi-watchdog.timer")
    assert timer["Timer"]["OnCalendar"] == "*:0/5"
    assert timer["Timer"]["Unit"] == "kpi-watchdog.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_cron_line_runs_the_watchdog_every_5_minutes():
    lines = [
        line
        for line in (WATCHDOG / "kpi-watchdog.cron").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    (line,) = lines
    fields = line.split(maxsplit=6)
    assert " ".join(fields[:5]) == "*/5 * * * *"
    assert fields[5] == "kpi"  # /etc/cron.d format: the user comes before the command
    assert " ".join(WATCHDOG_COMMAND[1:]) in fields[6]
    assert "kpi-platform health --alert" in fields[6]


@pytest.mark.parametrize(
    "name", ["kpi-watchdog.service", "kpi-watchdog.timer", "kpi-watchdog.cron", "README.md"]
)
def test_the_watchdog_files_hold_no_credentials(name):
    text = (WATCHDOG / name).read_text(encoding="utf-8")
    assert not CREDENTIALS_IN_URL.search(text)
    assert "hc-ping.com/" not in text and "hooks.slack.com/services/" not in text
