"""docker-compose.yml read as data: services, start order, health checks, volumes,
ports, environment and secrets (pure Python; runs everywhere)."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.infra.helpers import (
    ENV_EXAMPLE,
    INFRA,
    ON_DEMAND,
    ONE_SHOT,
    PENDING_PATHS,
    ROOT,
    VAR,
    compose,
    compose_text,
    env_example,
    env_example_active,
    services,
    substitute,
)

AIRFLOW = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
CORE = {"postgres", "minio", "minio-init", "mlflow", "airflow-init", *AIRFLOW, "pushgateway"}
SECRET_WORDS = ("PASSWORD", "SECRET", "FERNET", "JWT")


def profiles(svc: dict[str, Any]) -> list[str]:
    return svc.get("profiles") or []


def depends(svc: dict[str, Any]) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (cond or {}).get("condition", "service_started") for name, cond in deps.items()}


def env_of(svc: dict[str, Any]) -> dict[str, Any]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def test_every_component_of_the_stack_is_a_service() -> None:
    names = set(services())
    assert names >= CORE | ON_DEMAND | {"prometheus", "grafana"}
    for name in CORE:
        assert not profiles(services()[name]), f"{name} must start with a plain `up`"
    assert profiles(services()["prometheus"]) == ["monitoring"]
    assert profiles(services()["grafana"]) == ["monitoring"]


def test_images_are_pinned_and_built_images_have_their_dockerfile() -> None:
    for name, svc in services().items():
        image = svc.get("image")
        assert image, f"{name} has no image"
        repo, _, tag = image.rpartition(":")
        assert repo, f"{name}: image {image!r} has no tag"
        assert tag not in ("", "latest"), f"{name}: image {image!r} is not pinned"
        if "build" in svc:
            dockerfile = ROOT / svc["build"]["context"] / svc["build"]["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        elif not image.startswith("cosine-retrain-"):
            assert re.search(r"\d", tag), f"{name}: {image!r} needs a version tag"


def test_long_running_services_have_health_checks() -> None:
    for name, svc in services().items():
        if name in ONE_SHOT or name in ON_DEMAND:
            assert svc.get("restart") == "no", f"{name} is a one-shot job: restart 'no'"
            continue
        check = svc.get("healthcheck")
        assert check, f"{name} has no health check"
        assert check.get("test"), f"{name}: a health check without a test"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for key in ("interval", "timeout", "retries"):
            assert key in check, f"{name}: healthcheck without {key}"
        assert svc.get("restart") == "unless-stopped", name


def test_start_order_waits_for_health_and_one_shot_jobs() -> None:
    svcs = services()
    for name, svc in svcs.items():
        for dep, condition in depends(svc).items():
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            if condition == "service_healthy":
                assert "healthcheck" in svcs[dep], f"{name} waits for {dep}'s missing health check"
            elif condition == "service_completed_successfully":
                assert dep in ONE_SHOT, f"{name} waits for {dep} to complete: not a one-shot job"
            else:
                pytest.fail(
                    f"{name} -> {dep}: use a health or completion condition, not {condition}"
                )
            assert not set(profiles(svcs[dep])) - set(profiles(svc)), (
                f"{name} depends on {dep}, which its profiles do not start"
            )
    # the order itself
    for name in AIRFLOW:
        deps = depends(svcs[name])
        assert deps["postgres"] == "service_healthy"
        assert deps["airflow-init"] == "service_completed_successfully"
        assert deps["mlflow"] == "service_healthy"
        assert deps["minio-init"] == "service_completed_successfully"
    assert depends(svcs["airflow-init"]) == {"postgres": "service_healthy"}
    assert depends(svcs["mlflow"]) == {
        "postgres": "service_healthy",
        "minio-init": "service_completed_successfully",
    }
    assert depends(svcs["minio-init"]) == {"minio": "service_healthy"}


def test_the_start_order_has_no_cycle() -> None:
    graph = {name: set(depends(svc)) for name, svc in services().items()}
    done: set[str] = set()
    while graph:
        ready = [n for n, deps in graph.items() if deps <= done]
        assert ready, f"dependency cycle among {sorted(graph)}"
        for n in ready:
            done.add(n)
            del graph[n]


def test_volumes_are_declared_used_and_bind_mounts_exist() -> None:
    declared = set(compose().get("volumes") or {})
    used = set()
    for name, svc in services().items():
        for spec in svc.get("volumes") or []:
            source = spec.split(":")[0]
            if source.startswith(("./", "/")):
                path = (ROOT / source).resolve()
                rel = path.relative_to(ROOT).parts[0]
                assert path.exists() or rel in PENDING_PATHS, f"{name}: {source} does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused: {sorted(declared - used)}"


def resolved_ports() -> list[tuple[str, str, int, int]]:
    """(service, bind address, host port, container port) with .env.example's defaults."""
    defaults = env_example_active()
    out = []
    for name, svc in services().items():
        for spec in svc.get("ports") or []:
            text = substitute(str(spec), {})  # compose's own defaults (${X:-d})
            assert text == substitute(str(spec), defaults), (
                f"{name}: .env.example and the compose default disagree on {spec}"
            )
            address, host, container = text.rsplit(":", 2)
            out.append((name, address, int(host), int(container)))
    return out


def test_published_ports_do_not_clash_and_stay_on_localhost() -> None:
    ports = resolved_ports()
    clashes = [p for p, n in Counter(host for _, _, host, _ in ports).items() if n > 1]
    assert not clashes, f"host ports used twice: {clashes}"
    assert {address for _, address, _, _ in ports} == {"127.0.0.1"}
    assert {(s, h) for s, _, h, _ in ports} >= {
        ("airflow-api-server", 8080),
        ("mlflow", 5000),
        ("minio", 9000),
        ("pushgateway", 9091),
        ("prometheus", 9090),
        ("grafana", 3000),
    }
    # Postgres stays inside the compose network (the test suite's own one uses 5432)
    assert "ports" not in services()["postgres"]


def test_every_variable_is_documented_in_the_env_example_and_vice_versa() -> None:
    documented = env_example()
    referenced = {m.group(1) for m in VAR.finditer(compose_text())}
    passthrough = {
        key for svc in services().values() for key, value in env_of(svc).items() if value is None
    }
    missing = sorted((referenced | passthrough) - set(documented))
    assert not missing, f"used by docker-compose.yml, missing from .env.example: {missing}"
    unused = sorted(set(documented) - referenced - passthrough - {"COMPOSE_PROJECT_NAME"})
    assert not unused, f"in .env.example but unused: {unused}"


def test_secrets_are_required_and_never_have_a_default() -> None:
    example = env_example_active()
    secrets = {k for k in example if any(w in k for w in SECRET_WORDS)}
    assert secrets >= {
        "POSTGRES_PASSWORD",
        "AIRFLOW_DB_PASSWORD",
        "MLFLOW_DB_PASSWORD",
        "MINIO_ROOT_PASSWORD",
        "MINIO_APP_SECRET_KEY",
        "AIRFLOW_ADMIN_PASSWORD",
        "AIRFLOW_FERNET_KEY",
        "AIRFLOW_API_SECRET_KEY",
        "AIRFLOW_JWT_SECRET",
        "MLFLOW_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SECRET_KEY",
        "GRAFANA_ADMIN_PASSWORD",
    }
    for key in secrets:
        assert example[key] == "", f".env.example must leave {key} empty, not {example[key]!r}"
    for m in VAR.finditer(compose_text()):
        if m.group(1) in secrets:
            assert m.group(2) == ":?", f"{m.group(0)}: a secret must be required (${{X:?...}})"
            assert m.group(1) in m.group(3), f"{m.group(0)}: the message must name the variable"


def test_no_literal_password_in_any_service() -> None:
    for name, svc in services().items():
        for key, value in env_of(svc).items():
            sensitive = (*SECRET_WORDS, "SQL_ALCHEMY_CONN", "STORE_URI", "DATABASE_URI")
            if any(w in key for w in sensitive) and not key.endswith("_FILE"):
                if value is None:
                    continue
                text = str(value)
                if "://" in text and "@" not in text:
                    continue  # a URL without credentials
                assert "${" in text, f"{name}: {key} is not taken from .env"
                assert ":?" in text, f"{name}: {key} must be required (${{X:?...}})"
        assert "SIMPLE_AUTH_MANAGER_ALL_ADMINS" not in env_of(svc), f"{name} disables login"
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert ".env" in gitignore  # the real one is never committed
    assert ENV_EXAMPLE.is_file()


def test_airflow_components_run_as_separate_services_on_postgres() -> None:
    svcs = services()
    expected = {
        "airflow-api-server": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    for name, sub in expected.items():
        command = svcs[name]["command"]
        if name == "airflow-scheduler":  # through the preload wrapper, then Airflow's CLI
            assert command[:3] == ["python", "-m", "pipeline.apps.preload"]
            command = command[3:]
        assert command[:2] == ["airflow", sub]
        env = env_of(svcs[name])
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
            "postgresql+psycopg2://airflow:"
        )
        assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith("SimpleAuthManager")
        assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"].startswith(
            "/opt/airflow/auth/"
        )
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-api-server:8080/execution/"
        )
        assert env["COSINE_RETRAIN_STORAGE__KIND"] == "s3"
        assert env["COSINE_RETRAIN_STORAGE__ENDPOINT_URL"] == "http://minio:9000"
        assert env["MLFLOW_TRACKING_URI"] == env["COSINE_RETRAIN_MLFLOW__TRACKING_URI"]
    # the same keys everywhere: one anchor, not four copies drifting apart
    envs = [env_of(svcs[n]) for n in expected]
    assert all(e == envs[0] for e in envs)
    init = svcs["airflow-init"]
    script = ROOT / init["entrypoint"][0].replace("/opt/cosine-retrain/", "")
    text = script.read_text()
    assert "airflow db migrate" in text
    assert "AIRFLOW_ADMIN_PASSWORD" in text
    assert "AIRFLOW_ADMIN_PASSWORD" in env_of(init)


def test_mlflow_server_uses_postgres_minio_and_basic_auth() -> None:
    svc = services()["mlflow"]
    env = env_of(svc)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].endswith("/mlflow")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert "mlflow" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    entrypoint = ROOT / svc["entrypoint"][0].replace("/opt/cosine-retrain/", "")
    text = entrypoint.read_text()
    assert "--app-name basic-auth" in text
    assert "exec mlflow server" in text
    assert "MLFLOW_AUTH_CONFIG_PATH" in text
    # clients log in
    for name in ("airflow-api-server", "trainer", "trainer-cpu"):
        client = env_of(services()[name])
        assert client["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        assert client["MLFLOW_TRACKING_USERNAME"]
        assert client["MLFLOW_TRACKING_PASSWORD"].startswith("${MLFLOW_ADMIN_PASSWORD:?")


def test_minio_bucket_is_created_and_apps_never_hold_root() -> None:
    svcs = services()
    init = svcs["minio-init"]
    script = ROOT / "infra/minio/minio-init.sh"
    assert init["volumes"][0].startswith("./infra/minio/minio-init.sh:")
    text = script.read_text()
    assert 'mc mb --ignore-existing "local/${MINIO_BUCKET}"' in text
    assert "mc admin user add" in text
    assert "mc admin policy attach" in text
    for name, svc in svcs.items():
        if name in ("minio", "minio-init"):
            continue
        env = env_of(svc)
        assert "MINIO_ROOT_PASSWORD" not in str(env), f"{name} sees the MinIO root password"


def test_postgres_creates_one_database_per_service() -> None:
    text = (INFRA / "postgres/init-databases.sh").read_text()
    for db in ("airflow", "mlflow", "mlflow_auth"):
        assert f"CREATE DATABASE {db} " in text
    mount = services()["postgres"]["volumes"][1]
    assert mount.startswith("./infra/postgres/init-databases.sh:/docker-entrypoint-initdb.d/")


def test_trainer_has_a_gpu_reservation_and_a_cpu_twin() -> None:
    gpu, cpu = services()["trainer"], services()["trainer-cpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert profiles(gpu) == ["gpu"]
    assert profiles(cpu) == ["cpu"]
    assert "deploy" not in cpu
    same = {k: v for k, v in gpu.items() if k not in ("deploy", "profiles")}
    assert same == {k: v for k, v in cpu.items() if k != "profiles"}
    assert env_of(gpu)["COSINE_RETRAIN_PUSHGATEWAY_URL"] == "http://pushgateway:9091"
    assert gpu["volumes"] == ["trainer-state:/opt/cosine-retrain/.cosine-retrain"]


def test_monitoring_files_are_mounted_where_their_configs_expect_them() -> None:
    prom = services()["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prom["volumes"] if v.startswith("./"))
    assert mounts["./infra/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./infra/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    grafana = services()["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    assert mounts["./infra/grafana/dashboards"] == "/etc/grafana/dashboards"
    home = env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    local = Path(home.replace("/etc/grafana/dashboards", str(INFRA / "grafana/dashboards")))
    assert local.is_file()


def test_the_pipeline_accepts_the_configuration_compose_gives_airflow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.base.config import load_config

    example = {k: v or "x-secret" for k, v in env_example_active().items()}
    example["COSINE_RETRAIN_ALERTS__WEBHOOK_URL"] = "https://hooks.example.com/x"
    for key in list(os.environ):
        if key.startswith("COSINE_RETRAIN_"):
            monkeypatch.delenv(key)
    env = env_of(services()["airflow-scheduler"])
    for key, value in env.items():
        if key.startswith("COSINE_RETRAIN_"):
            resolved = example.get(key) if value is None else substitute(str(value), example)
            if resolved is not None:
                monkeypatch.setenv(key, resolved)
    config = load_config()
    assert config.storage.kind == "s3"
    assert config.storage.endpoint_url == "http://minio:9000"
    assert config.mlflow.tracking_uri == "http://mlflow:5000"
    assert config.alerts.webhook_url == "https://hooks.example.com/x"


def test_the_celery_profile_offers_redis_and_two_workers_beside_local() -> None:
    svcs = services()
    workers = sorted(n for n, s in svcs.items() if "celery" in (s.get("command") or [""])[-1])
    assert workers == ["airflow-worker-1", "airflow-worker-2"]
    assert profiles(svcs["redis"]) == ["celery"]
    for name in workers:
        assert profiles(svcs[name]) == ["celery"]
        assert depends(svcs[name])["redis"] == "service_healthy"
        assert "inspect ping" in " ".join(svcs[name]["healthcheck"]["test"])
    # the two workers are one definition; the core stack still starts without the profile
    a, b = (dict(svcs[n]) for n in workers)
    assert a == b
    for name in CORE:
        assert not profiles(svcs[name]), name
    env = env_of(svcs["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://airflow:")
    # the workers see what the scheduler sees (the pipeline's settings included)
    worker_env = env_of(svcs["airflow-worker-1"])
    assert {k: v for k, v in worker_env.items() if k != "CELERY_WORKER_CONCURRENCY"} == env
