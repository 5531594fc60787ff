"""The retrain DAG's Kubernetes path without a cluster: the exact command the GPU
pod runs, here with torchrun and two processes (gloo on CPU), reading the window
from the S3 store (moto) and logging to an MLflow server on PostgreSQL; then the
DAG's follow-up steps read the result back from MLflow and register it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from pipeline import flow
from pipeline.base.config import load_config
from training.results import TrainResult

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "tests" / "fixtures" / "tiny_train.yaml"


def test_the_pod_command_trains_with_torchrun_on_s3_data_and_postgres_mlflow(
    postgres_mlflow_server: Any, s3_server: Any, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    storage = s3_server.storage(bucket).model_dump(mode="json")
    storage["access_key_id"] = storage["secret_access_key"] = "testing"
    config = load_config(
        None,
        home=tmp_path / "home",
        storage=storage,
        mlflow={"tracking_uri": postgres_mlflow_server.url},
        retrain={"backend": "kubernetes", "processes": 2},
    )
    env = flow.Env(config)
    flow.land(env, "2013-01")
    flow.land(env, "2013-01", labels=True)
    plan = flow.plan_retrain(
        env, flow.RetrainRequest(trigger="manual", reasons=["kubernetes path test"])
    )
    assert not plan.skip, plan
    data = flow.export_window(env, plan)
    assert data.features_uri.startswith(f"s3://{bucket}/")

    cmd = flow.pod_command(env, plan, data, config_path=str(TINY), python=sys.executable).argv
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert "--resume-if-present" in cmd
    pod_env = {  # what the pod gets from the cosine-retrain-secrets Secret
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    # the pod's working directory: the image's WORKDIR holds configs/ (infra/trainer/
    # Dockerfile); checkpoints go to its volume below it
    pod_dir = tmp_path / "pod"
    pod_dir.mkdir()
    shutil.copytree(ROOT / "configs", pod_dir / "configs")
    proc = subprocess.run(
        cmd, cwd=pod_dir, env=pod_env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    trained = flow.train_result_from_mlflow(env, plan)
    assert trained.status == "completed"
    assert len(trained.cycles) == 3
    result = TrainResult.load(pod_dir / ".cosine-retrain" / "runs" / str(plan.run_name))
    assert result.world_size == 2
    client = MlflowClient(postgres_mlflow_server.url)
    assert [
        m.step
        for m in sorted(client.get_metric_history(trained.run_id, "lr"), key=lambda m: m.step)
    ] == list(range(100))

    # a retried pod (preempted after it finished) resumes and changes nothing
    again = subprocess.run(
        cmd, cwd=pod_dir, env=pod_env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resumed" in again.stderr or "completed" in again.stdout

    registration = flow.register(env, plan, trained)
    assert len(registration.versions) >= 3
