"""Shared test support: free ports, a real MLflow tracking server, process groups.

Servers are subprocesses on 127.0.0.1 that the tests start and stop themselves
(by PID); nothing has to be running before ``./run test``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server() -> Iterator[int]:
    """moto's standalone S3 server on a free loopback port (yields the port)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield port
    finally:
        server.stop()


@dataclass(frozen=True)
class MlflowServer:
    url: str
    root: Path
    pid: int
    log: Path


def start_mlflow_server(
    root: Path,
    *,
    backend_uri: str | None = None,
    artifacts_destination: str | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: float = 120.0,
) -> tuple[subprocess.Popen[bytes], MlflowServer]:
    """Start ``mlflow server`` on a free loopback port and wait for /health."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    backend = backend_uri or f"sqlite:///{root / 'mlflow.db'}"
    artifacts = artifacts_destination or (root / "artifacts").as_uri()
    log = root / "server.log"
    cmd = [
        str(VENV_BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # the server's GenAI job runner forks ~10 huey workers (each a full MLflow import):
    # the pipeline uses none of it, and it doubles start-up time on 2 cores
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra_env or {})}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, MlflowServer(url, root, proc.pid, log)
        except OSError:
            time.sleep(0.5)
    stop_process_group(proc)
    raise RuntimeError(f"mlflow server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """TERM the process group we started, then KILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


def long_mode() -> bool:
    """``FAULTS=long``: the slowest variants of a check run too (tests/faults/conftest.py
    refuses any other value)."""
    return os.environ.get("FAULTS", "quick").strip().lower() == "long"


def long_variant(*values: Any, reason: str, id: str | None = None) -> Any:
    """A ``pytest.param`` that runs only in the long mode: a slower variant of a check whose
    other cases run in every mode."""
    import pytest

    skip = pytest.mark.skipif(not long_mode(), reason=f"long mode only (FAULTS=long): {reason}")
    return pytest.param(*values, marks=skip, id=id)


POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg2
    except ImportError:
        return "psycopg2 is not installed"
    try:
        psycopg2.connect(dbname="postgres", connect_timeout=3, **POSTGRES).close()
    except Exception as exc:
        return f"PostgreSQL is not reachable at 127.0.0.1:5432 as user postgres ({exc})"
    return None


def create_postgres_database(prefix: str) -> tuple[str, str]:
    """A fresh, empty database; returns (name, SQLAlchemy URL)."""
    import uuid

    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(dbname="postgres", **POSTGRES)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the lock installs psycopg2
    return name, f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"


def drop_postgres_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", **POSTGRES)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def worker_hostname() -> str:
    """``[core] hostname_callable`` for test workers: the name their environment gives
    them (two Celery workers on one machine would otherwise share the host name)."""
    import socket

    return os.environ.get("COSINE_RETRAIN_TEST_WORKER") or socket.getfqdn()


def redis_unavailable(host: str = "127.0.0.1", port: int = 6379) -> str | None:
    """Why Redis cannot be used here, or None when it answers PING."""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return None
            return f"Redis at {host}:{port} did not answer PING"
    except OSError as exc:
        return f"Redis is not reachable at {host}:{port} ({exc})"


# a small training config and gate SLOs it can meet: the real job, 100 steps
TINY_REPLAY_ENV = {
    "COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG": str(ROOT / "tests" / "fixtures" / "tiny_train.yaml"),
    "COSINE_RETRAIN_GATE__MIN_AUC": "0.55",
    "COSINE_RETRAIN_GATE__MIN_SLICE_AUC": "0.45",
    "COSINE_RETRAIN_GATE__MAX_AUC_DROP": "0.05",
}


def run_demo(home: Path, months: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline demo`` (the README's main job) with the tiny config."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--months", months, "--home", str(home)],
        cwd=ROOT,
        env={**os.environ, **TINY_REPLAY_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def airflow_script(
    script: str, *args: str, home: Path, extra_env: dict[str, str] | None = None
) -> Any:
    """Run ``script`` in a fresh interpreter with an Airflow home of its own (and a
    metadata database there that nothing needs to reach); its last line of output,
    read as JSON."""
    import json

    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dag_test_env(airflow_home: Path, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``dag.test()`` driver: this checkout's DAGs, an Airflow home
    (created) with a SQLite metadata database of its own, the cosine-retrain ``home``,
    none of the caller's ``COSINE_RETRAIN_*`` or ``MLFLOW_TRACKING_URI``; then ``extra``."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSINE_RETRAIN_")}
    env.pop("MLFLOW_TRACKING_URI", None)
    return {
        **env,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home}/airflow.db",
        "PYTHONPATH": str(ROOT),
        "COSINE_RETRAIN_HOME": str(home),
        **extra,
    }


def dag_cases(
    folder: Path, cases: list[dict[str, Any]], *dag_ids: str
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """For a ``dag.test()`` driver (a fresh interpreter with :func:`dag_test_env`): the
    metadata database migrated and ``dag_ids`` parsed from ``folder`` as the DAG processor
    parses them, then each case (a dict with ``name`` and ``env``) with its name logged
    and its ``env`` set: (the DAGs by id, the case)."""
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], check=True, capture_output=True)
    from airflow.dag_processing.dagbag import BundleDagBag

    bag = BundleDagBag(folder, bundle_path=folder)
    dags = {dag_id: bag.dags[dag_id] for dag_id in dag_ids}
    for case in cases:
        print("case", case["name"], file=sys.stderr, flush=True)
        os.environ.update(case["env"])
        yield dags, case


def logged_script(script: str, *args: str, env: dict[str, str], log: Path) -> Any:
    """Run ``script`` (a long ``dag.test()`` driver) in a fresh interpreter with ``env``,
    its stderr going to ``log`` (read back when it fails); its last line of output, read
    as JSON."""
    import json

    with log.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=900,
        )
    assert proc.returncode == 0, log.read_text()[-6000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stack_env(
    airflow_home: Path, home: Path, port: int, db_url: str, executor: str
) -> dict[str, str]:
    """What a test's own Airflow stack shares: this checkout's DAGs, its own metadata
    database, loopback ports of its own, and a cosine-retrain home."""
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": executor,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "COSINE_RETRAIN_HOME": str(home),
        "COSINE_RETRAIN_DATASET_SPEC": str(ROOT / "configs" / "datasets" / "flights.yaml"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


# cron schedules that tick every minute: were they on, a stack that runs a minute
# would start runs of its own
EVERY_MINUTE = {
    **{
        f"COSINE_RETRAIN_{section}__SCHEDULE": "* * * * *"
        for section in ("MONITOR", "RETRAIN", "TUNE")
    },
    "COSINE_RETRAIN_INGEST__LANDING_SCHEDULE": "* * * * *",
}


@contextlib.contextmanager
def live_stack(
    home: Path, extra_env: dict[str, str] | None = None, *, schedules: bool = False
) -> Iterator[Any]:
    """``./run ui``'s stack on ``home`` with every DAG unpaused (the scheduler follows
    the assets) and, as ``./run ui`` starts it, no cron schedule unless ``schedules``:
    it runs only what the test drives. Its metadata database is a fresh PostgreSQL
    database where one is reachable (SQLite, the local default, makes the api-server
    wait on the writes of four components and the task processes: on two busy cores a
    request can wait past the lock timeout), else SQLite in the home. Stopped, the
    database dropped and the environment restored at the end."""
    from pipeline.apps.ui import start_stack

    old = dict(os.environ)
    db_name, database = (None, None)
    if postgres_unavailable() is None:
        db_name, database = create_postgres_database("airflow_stack")
    try:
        running = start_stack(
            home,
            airflow_port=free_port(),
            mlflow_port=free_port(),
            schedules=schedules,
            database=database,
            extra_env={
                **TINY_REPLAY_ENV,
                **EVERY_MINUTE,
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                **(extra_env or {}),
            },
        )
        try:
            yield running
        finally:
            running.stop(grace=10)
    finally:
        os.environ.clear()
        os.environ.update(old)
        if db_name is not None:
            drop_postgres_database(db_name)


def start_until_paused(
    cmd: list[str],
    marker: Path,
    pause: str,
    *,
    timeout: float,
    poll: float,
    env: dict[str, str] | None = None,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with the fault hook ``pause`` (``PHASE@N:SECONDS``, training/checkpoint)
    writing ``marker``, and wait until it has paused there (asserted): the process, for
    the test to kill. ``env`` is the child's whole environment (default: this one's)."""
    from training.checkpoint.files import FAULT_MARKER_ENV, FAULT_PAUSE_ENV

    child_env = {**(env or os.environ), FAULT_PAUSE_ENV: pause, FAULT_MARKER_ENV: str(marker)}
    proc = subprocess.Popen(
        cmd, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen
    )
    deadline = time.monotonic() + timeout
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(poll)
    assert marker.exists(), (
        "the job never reached the pause",
        proc.poll(),
        proc.stderr.read().decode()[-3000:] if proc.stderr and proc.poll() is not None else "",
    )
    return proc


def xcom_values(home: Path, dag_id: str, task_id: str, key: str = "return_value") -> list[Any]:
    """Every XCom ``key`` that ``dag_id.task_id`` pushed in the home's Airflow database
    (SQLite, as the demo keeps it), decoded from JSON."""
    import json
    import sqlite3

    db = sqlite3.connect(home / "airflow" / "airflow.db")
    try:
        rows = db.execute(
            "SELECT value FROM xcom WHERE dag_id=? AND task_id=? AND key=?",
            (dag_id, task_id, key),
        ).fetchall()
    finally:
        db.close()
    return [json.loads(value) for (value,) in rows]
