"""The same DAGs under the CeleryExecutor: Redis as broker, PostgreSQL as metadata
database (both at their standard ports on this machine), a scheduler, a
dag-processor, an api-server and two Celery workers. A ``retrain`` run and a
``drift_monitor`` run go through them, and the tasks land on both workers."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import support

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKERS = ("worker-a", "worker-b")


def _skip_reason() -> str | None:
    return support.postgres_unavailable() or support.redis_unavailable()


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def _post(url: str, body: Any, method: str = "POST") -> Any:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("celery")
    home, airflow_home = tmp / "home", tmp / "airflow"
    db_name, db_url = support.create_postgres_database("airflow_celery")
    redis_db = random.randint(1, 15)
    port = support.free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **support.stack_env(airflow_home, home, port, db_url, "CeleryExecutor"),
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.support.worker_hostname",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{db_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG": str(
            ROOT / "tests" / "fixtures" / "tiny_train.yaml"
        ),
        "COSINE_RETRAIN_GATE__MIN_AUC": "0.55",
        "COSINE_RETRAIN_GATE__MIN_SLICE_AUC": "0.45",
    }
    # the data the runs work on: January's features (validated: a retrain trains only on
    # validated batches) and labels, February's features
    land = [sys.executable, "-m", "pipeline"]
    steps = (["ingest", "2013-01"], ["validate", "2013-01"], ["ingest-labels", "2013-01"])
    for args in (*steps, ["ingest", "2013-02"]):
        done = subprocess.run(land + args, cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    migrate = subprocess.run(
        [str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, text=True
    )
    assert migrate.returncode == 0, migrate.stdout[-2000:] + migrate.stderr[-2000:]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = tmp / "logs"
    logs.mkdir()

    def launch(name: str, cmd: list[str], extra: dict[str, str] | None = None) -> None:
        with open(logs / f"{name}.log", "wb") as fh:
            procs[name] = subprocess.Popen(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**env, **(extra or {})},
                start_new_session=True,
                cwd=tmp,
            )

    try:
        for component in ("api-server", "scheduler", "dag-processor"):
            launch(component, [str(BIN / "airflow"), component])
        for name in WORKERS:
            launch(
                name,
                [
                    str(BIN / "airflow"),
                    "celery",
                    "worker",
                    "--concurrency",
                    "1",
                    "--celery-hostname",
                    f"{name}@%h",
                ],
                {"COSINE_RETRAIN_TEST_WORKER": name},
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                health = _get(f"{base}/api/v2/monitor/health")
                dags = _get(f"{base}/api/v2/dags")
                if health["scheduler"]["status"] == "healthy" and dags["total_entries"] >= 4:
                    break
            except (OSError, ValueError, KeyError):
                pass
            for name, proc in procs.items():
                assert proc.poll() is None, (logs / f"{name}.log").read_text()[-3000:]
            time.sleep(2)
        else:
            pytest.fail(f"the Celery stack was not ready in 300 s; logs in {logs}")
        yield {"base": base, "logs": logs, "procs": procs}
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        support.drop_postgres_database(db_name)
        import redis

        redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


def _wait(base: str, dag_id: str, run_id: str, timeout: float = 600) -> dict[str, dict]:
    quoted = urllib.parse.quote(run_id, safe="")
    deadline = time.monotonic() + timeout
    state = "queued"
    while time.monotonic() < deadline:
        state = _get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{quoted}")["state"]
        if state in ("success", "failed"):
            break
        time.sleep(3)
    tis = _get(f"{base}/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]
    assert state == "success", {t["task_id"]: t["state"] for t in tis}
    return {t["task_id"]: t for t in tis}


def test_retrain_and_monitor_runs_spread_over_both_celery_workers(
    celery_stack: dict[str, Any],
) -> None:
    base = celery_stack["base"]
    retrain = _post(
        f"{base}/api/v2/dags/retrain/dagRuns",
        {"logical_date": None, "conf": {"trigger": "manual", "reason": "celery test"}},
    )
    monitor = _post(
        f"{base}/api/v2/dags/drift_monitor/dagRuns",
        {"logical_date": None, "conf": {"batch_id": "2013-02"}},
    )
    retrain_tis = _wait(base, "retrain", retrain["dag_run_id"])
    monitor_tis = _wait(base, "drift_monitor", monitor["dag_run_id"])
    if retrain_tis["skip"]["state"] == "success":
        # unpaused, the retrain DAG also starts its latest cron tick (catchup off): when
        # that run trained the window first, ours coalesced into it (one at a time)
        runs = _get(f"{base}/api/v2/dags/retrain/dagRuns?limit=20")["dag_runs"]
        trained = [
            tis
            for tis in (_wait(base, "retrain", r["dag_run_id"]) for r in runs)
            if tis["train"]["state"] == "success"
        ]
        assert len(trained) == 1, [r["dag_run_id"] for r in runs]
        retrain_tis = trained[0]
    assert retrain_tis["skip"]["state"] == "skipped"
    for task_id in ("plan", "export_window", "train", "register", "gate"):
        assert retrain_tis[task_id]["state"] == "success", task_id
    ran = [t for t in [*retrain_tis.values(), *monitor_tis.values()] if t["state"] == "success"]
    hosts = {t["hostname"] for t in ran}
    assert hosts == set(WORKERS), hosts
    for name in WORKERS:  # each worker's own log shows the tasks it executed
        log = (celery_stack["logs"] / f"{name}.log").read_text()
        assert "execute_workload" in log or "succeeded" in log, log[-2000:]
