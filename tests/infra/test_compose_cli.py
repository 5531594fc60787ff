"""`docker compose config` (or docker-compose 1.29) on the real file: it parses,
interpolates every variable from a generated .env, and refuses a missing secret.
Needs only the compose binary, no Docker engine; skipped where it is absent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.infra.helpers import COMPOSE, ROOT, compose_command, services

COMPOSE_CMD = compose_command()
pytestmark = pytest.mark.skipif(
    COMPOSE_CMD is None,
    reason="neither `docker compose` nor `docker-compose` is installed "
    "(apt-get install docker-compose; no engine needed)",
)
PROFILES = ["--profile", "monitoring", "--profile", "gpu", "--profile", "cpu"]


def run_config(
    env_file: Path, *options: str, after: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    assert COMPOSE_CMD is not None
    return subprocess.run(
        [*COMPOSE_CMD, "--env-file", str(env_file), "-f", str(COMPOSE), *options, "config", *after],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        # nothing from this shell's environment may fill a variable
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(env_file.parent)},
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / ".env"
    subprocess.run(
        [sys.executable, str(ROOT / "infra/make_env.py"), "--output", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def test_config_resolves_every_service_and_variable(env_file: Path) -> None:
    proc = run_config(env_file, *PROFILES)
    assert proc.returncode == 0, proc.stderr
    assert "${" not in proc.stdout.replace("$${", "")
    resolved = yaml.safe_load(proc.stdout)
    assert set(resolved["services"]) == set(services())
    secrets = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    api = resolved["services"]["airflow-api-server"]["environment"]
    assert api["AIRFLOW__CORE__FERNET_KEY"] == secrets["AIRFLOW_FERNET_KEY"]
    assert (
        f":{secrets['AIRFLOW_DB_PASSWORD']}@postgres:5432/airflow"
        in (api["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    )


def test_default_profile_leaves_out_the_optional_services(env_file: Path) -> None:
    proc = run_config(env_file, after=("--services",))
    assert proc.returncode == 0, proc.stderr
    names = set(proc.stdout.split())
    assert "pushgateway" in names
    assert "airflow-scheduler" in names
    # compose v2 hides profiled services from `config --services`; v1 lists them all
    if "grafana" not in names:
        assert not names & {"prometheus", "grafana", "trainer", "trainer-cpu"}


def test_a_missing_secret_stops_compose_and_names_it(env_file: Path, tmp_path: Path) -> None:
    lines = [
        line
        for line in env_file.read_text().splitlines()
        if not line.startswith("POSTGRES_PASSWORD=")
    ]
    broken = tmp_path / ".env"
    broken.write_text("\n".join(lines) + "\nPOSTGRES_PASSWORD=\n")
    proc = run_config(broken)
    assert proc.returncode != 0
    assert "set POSTGRES_PASSWORD in .env" in proc.stdout + proc.stderr


def test_the_unfilled_example_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / ".env"
    copy.write_text((ROOT / ".env.example").read_text())
    proc = run_config(copy)
    assert proc.returncode != 0
    assert "in .env" in proc.stdout + proc.stderr


def _celery_env(env_file: Path, tmp_path: Path) -> Path:
    celery = tmp_path / ".env"
    text = env_file.read_text().replace("AIRFLOW_EXECUTOR=LocalExecutor", "")
    celery.write_text(text + "\nAIRFLOW_EXECUTOR=CeleryExecutor\n")
    return celery


def test_the_celery_profile_resolves_and_its_workers_start_only_under_celery(
    env_file: Path, tmp_path: Path
) -> None:
    local = yaml.safe_load(run_config(env_file).stdout)
    assert local["services"]["airflow-scheduler"]["environment"]["AIRFLOW__CORE__EXECUTOR"] == (
        "LocalExecutor"
    )
    proc = run_config(_celery_env(env_file, tmp_path), "--profile", "celery")
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)["services"]
    assert {"redis", "airflow-worker-1", "airflow-worker-2"} <= set(resolved)
    for name in ("airflow-scheduler", "airflow-api-server", "airflow-worker-1"):
        assert resolved[name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    # the worker's own command, as compose hands it to the container: under another
    # executor it refuses with the fix; under Celery it becomes `airflow celery worker`
    # (`config` prints its output re-escaped, `$$`; the container gets `$`)
    command = [part.replace("$$", "$") for part in resolved["airflow-worker-1"]["command"]]
    assert command[:2] == ["bash", "-c"]
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "airflow").write_text('#!/bin/sh\necho "airflow $*"\n')
    (stub / "airflow").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "CELERY_WORKER_CONCURRENCY": "2"}
    refused = subprocess.run(
        command, env={**env, "AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}, capture_output=True
    )
    assert refused.returncode == 2
    assert b"needs AIRFLOW_EXECUTOR=CeleryExecutor" in refused.stderr
    started = subprocess.run(
        command,
        env={**env, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"},
        capture_output=True,
        text=True,
    )
    assert started.stdout.strip() == "airflow celery worker --concurrency 2", started
