"""Airflow callbacks: PipelineNotifier and dag_failure_callback, with realistic contexts
(a real DAG and operator, a task instance as the task runner gives it) and, marked
slow, under ``airflow dags test`` with a failing task, posting to a real receiver."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pendulum
import pytest

from pipeline.apps.notifiers import PipelineNotifier, alert_from_context, dag_failure_callback
from pipeline.base.alerts import AlertKind
from tests.pipeline.base.test_alerts import Receiver, expected_id
from tests.pipeline.base.test_alerts import receiver as receiver
from tests.pipeline.cli_support import clear_pipeline_env

ROOT = Path(__file__).resolve().parents[3]
RUN_ID = "manual__2026-11-23T12:41:22.227258+00:00"
LOG_URL = "http://localhost:8080/dags/retrain/runs/manual__2026/tasks/train?try_number=2"


@pytest.fixture
def env(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    clear_pipeline_env(monkeypatch)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__WEBHOOK_URL", receiver.url())
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__TIMEOUT_S", "2")
    return tmp_path / "home"


def task_context(task_id: str = "train", try_number: int = 2, **extra: Any) -> dict[str, Any]:
    """What a task-level failure callback receives (the keys notify() reads, real types)."""
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    dag = DAG("retrain", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    task = EmptyOperator(task_id=task_id, dag=dag)
    ti = SimpleNamespace(
        dag_id="retrain",
        task_id=task_id,
        run_id=RUN_ID,
        try_number=try_number,
        map_index=-1,
        log_url=LOG_URL,
        task=task,
    )
    return {
        "dag": dag,
        "task": task,
        "ti": ti,
        "task_instance": ti,
        "run_id": RUN_ID,
        "logical_date": pendulum.datetime(2026, 11, 23, 12, tz="UTC"),
        "exception": RuntimeError("loss is NaN at step 1204"),
        **extra,
    }


def test_task_failure_alert_from_a_notifier(env: Path, receiver: Receiver) -> None:
    notifier = PipelineNotifier()
    notifier(task_context())
    assert notifier.last_result is not None
    assert notifier.last_result.channels == {"webhook": "ok"}
    (body,) = receiver.bodies
    run_key = f"retrain/{RUN_ID}/train/try2"
    assert body["kind"] == "task_failed"
    assert body["severity"] == "critical"
    assert body["run_key"] == run_key
    assert body["alert_id"] == expected_id("task_failed", run_key)
    assert body["title"] == "Task retrain.train failed (try 2)"
    assert body["text"] == (
        f"run {RUN_ID}\nerror: RuntimeError: loss is NaN at step 1204\nlog: {LOG_URL}"
    )
    assert body["details"] == {
        "dag_id": "retrain",
        "run_id": RUN_ID,
        "task_id": "train",
        "try_number": 2,
        "map_index": -1,
        "exception": "RuntimeError: loss is NaN at step 1204",
        "log_url": LOG_URL,
        "logical_date": "2026-11-23T12:00:00+00:00",
    }
    # the same failure reported twice (a re-run callback) is one alert
    PipelineNotifier()(task_context())
    assert len(receiver.requests) == 1
    # the next try is another failure
    PipelineNotifier()(task_context(try_number=3))
    assert [b["run_key"] for b in receiver.bodies][1] == f"retrain/{RUN_ID}/train/try3"


def test_templates_render_per_task(env: Path, receiver: Receiver) -> None:
    notifier = PipelineNotifier(
        kind="promoted",
        title="{{ ti.task_id }} promoted in {{ dag.dag_id }}",
        run_key="{{ dag.dag_id }}/{{ ti.task_id }}",
        details={"version": "7"},
    )
    notifier(task_context("promote_a"))
    notifier(task_context("promote_b"))  # one notifier in default_args serves every task
    assert [(b["title"], b["run_key"]) for b in receiver.bodies] == [
        ("promote_a promoted in retrain", "retrain/promote_a"),
        ("promote_b promoted in retrain", "retrain/promote_b"),
    ]
    assert receiver.bodies[0]["severity"] == "info"
    assert receiver.bodies[0]["details"]["version"] == "7"
    assert notifier.title == "{{ ti.task_id }} promoted in {{ dag.dag_id }}"


def test_dag_failure_callback(env: Path, receiver: Receiver) -> None:
    context = task_context(reason="task_failure")
    context.pop("exception")  # DAG-level contexts have none (STACK_NOTES §1.3)
    dag_failure_callback(context)
    (body,) = receiver.bodies
    assert body["run_key"] == f"retrain/{RUN_ID}"
    assert body["title"] == "DAG retrain run failed: task_failure"
    assert body["text"].splitlines() == [
        f"run {RUN_ID}",
        "last failed task: train",
        "reason: task_failure",
        f"log: {LOG_URL}",
    ]
    assert "task_id" not in body["details"]


def test_notifier_at_dag_level_with_a_serialized_dag(env: Path, receiver: Receiver) -> None:
    # DAG-level callbacks may get a SerializedDAG, which has no get_template_env (§0.1)
    context = task_context(reason="task_failure")
    context["dag"] = SimpleNamespace(dag_id="retrain")
    PipelineNotifier(level="dag", title="{{ run_id }} failed")(context)
    (body,) = receiver.bodies
    assert body["title"] == f"{RUN_ID} failed"
    assert body["run_key"] == f"retrain/{RUN_ID}"


def test_a_notifier_never_raises(
    env: Path,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__TIMEOUT_S", "-1")  # an invalid config
    notifier = PipelineNotifier()
    notifier(task_context())
    assert notifier.last_result is None
    assert "could not send the pipeline alert" in caplog.text
    PipelineNotifier(title="{{ undefined_thing.attr }}")(task_context())  # a broken template
    assert receiver.requests == []
    with pytest.raises(ValueError, match="unknown alert kind"):
        PipelineNotifier(kind="nan")  # a typo fails when the DAG file is parsed


def test_alert_from_a_mapped_task() -> None:
    context = task_context()
    context["ti"].map_index = 3
    alert = alert_from_context(context, AlertKind.NAN, details={"nan_count": 4})
    assert alert.run_key == f"retrain/{RUN_ID}/train/map3/try2"
    assert alert.title == "nan_detected: retrain.train[3]"
    assert alert.severity == "critical"
    assert alert.details["nan_count"] == 4


DAG_FILE = """
import pendulum
from airflow.sdk import dag, task
from pipeline.apps.notifiers import PipelineNotifier, dag_failure_callback


@dag(
    dag_id="alerts_probe",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    on_failure_callback=dag_failure_callback,
    default_args={"retries": 0, "on_failure_callback": PipelineNotifier()},
)
def alerts_probe():
    @task
    def boom():
        raise RuntimeError("asked to fail")

    boom()


alerts_probe()
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_airflow_dags_test_sends_the_alerts(tmp_path: Path, receiver: Receiver) -> None:
    home = tmp_path / "airflow"
    dags = home / "dags"
    dags.mkdir(parents=True)
    (dags / "probe.py").write_text(textwrap.dedent(DAG_FILE))
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COSINE_RETRAIN_", "AIRFLOW")) and k.lower() != "http_proxy"
    }
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=str(ROOT),
        COSINE_RETRAIN_HOME=str(tmp_path / "home"),
        COSINE_RETRAIN_ALERTS__WEBHOOK_URL=receiver.url(),
    )
    airflow = str(Path(sys.executable).parent / "airflow")
    t0 = time.monotonic()
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=90)
    run = subprocess.run(
        [airflow, "dags", "test", "alerts_probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    elapsed = time.monotonic() - t0
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # the DAG run failed
    bodies = {b["run_key"].count("/"): b for b in receiver.bodies}
    assert len(receiver.bodies) == 2, (receiver.bodies, run.stdout[-3000:])
    task_alert, dag_alert = bodies[3], bodies[1]
    run_id = dag_alert["details"]["run_id"]
    assert task_alert["run_key"] == f"alerts_probe/{run_id}/boom/try1"
    assert task_alert["title"] == "Task alerts_probe.boom failed (try 1)"
    assert task_alert["details"]["exception"] == "RuntimeError: asked to fail"
    assert "/dags/alerts_probe/runs/" in task_alert["details"]["log_url"]
    assert dag_alert["run_key"] == f"alerts_probe/{run_id}"
    assert dag_alert["details"]["reason"] == "task_failure"
    print(f"airflow db migrate + dags test: {elapsed:.1f} s")
