"""The retrain DAG's Kubernetes backend, as production runs it, without a cluster.

From the parsed ``retrain`` DAG (``retrain.backend=kubernetes``): its own tasks plan
the window and export it to the S3 store (moto's server), its ``pod_command`` task
gives the pod's command, and its ``train_pod`` KubernetesPodOperator builds the pod
from the real template (``build_pod_request_obj``, against a kube config that names
an unreachable cluster). That container's command and args then run in a layout
like the trainer image's: its WORKDIR (``configs/`` beside the volume), the
ConfigMap's ``train.yaml`` where the template mounts it (``/config``, mapped to a
folder here), the Secret's keys as its environment; against a real MLflow server.
It trains, and the DAG's next task, ``train_result``, reads the result back. Once
with one process and once under torchrun with two.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import MlflowServer, airflow_script, long_variant

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "fixtures" / "tiny_train.yaml"
TEMPLATE = ROOT / "infra" / "k8s" / "trainer-pod.yaml"
SECRET_EXAMPLE = ROOT / "infra" / "k8s" / "secrets.example.yaml"

# The DAG's own task callables, in the order the scheduler runs them.
PLAN_AND_BUILD = textwrap.dedent(
    """
    import json, sys, types
    from pathlib import Path
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = Path(sys.argv[1])
    bag = BundleDagBag(folder, bundle_path=folder)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["retrain"]
    params = {"until": None, "reason": "the kubernetes pod test", "trigger": "manual"}
    planned = dag.get_task("plan").python_callable(
        params=params, triggering_asset_events={}, dag_run=types.SimpleNamespace(run_type="manual")
    )
    data = dag.get_task("export_window").python_callable(planned)
    command = dag.get_task("pod_command").python_callable(planned, data)
    op = dag.get_task("train_pod")
    # what rendering the operator's templated XComArgs does at run time
    op.cmds, op.arguments = command["cmds"], command["arguments"]
    pod = op.build_pod_request_obj()
    (c,) = [c for c in pod.spec.containers if c.name == "base"]
    env = [
        {"name": e.name, "value": e.value,
         "secret_key": e.value_from.secret_key_ref.key if e.value_from else None,
         "optional": bool(e.value_from and e.value_from.secret_key_ref.optional)}
        for e in c.env
    ]
    mounts = {m.name: m.mount_path for m in c.volume_mounts}
    print(json.dumps({"planned": planned, "data": data, "command": c.command, "args": c.args,
                      "env": env, "mounts": mounts, "image": c.image,
                      "restart": pod.spec.restart_policy}))
    """
)

READ_BACK = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = Path(sys.argv[1])
    dag = BundleDagBag(folder, bundle_path=folder).dags["retrain"]
    planned = json.loads(sys.argv[2])
    print(json.dumps(dag.get_task("train_result").python_callable(planned)))
    """
)


def _kube_config(path: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "nobody", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}],
        "current-context": "nowhere",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Pod:
    """What the DAG built and what its container did."""

    built: dict[str, Any]
    proc: subprocess.CompletedProcess[str]
    worker: dict[str, str]
    airflow_home: Path
    pod_dir: Path

    def after(self, script: str) -> Any:
        """``script`` run as a later task of the same DAG run: the DAG folder and the
        plan as its arguments, the worker's environment (its last line, as JSON)."""
        return airflow_script(
            script,
            str(ROOT / "dags"),
            json.dumps(self.built["planned"]),
            home=self.airflow_home,
            extra_env=self.worker,
        )


def _run_pod(
    tmp_path: Path,
    mlflow_server: MlflowServer,
    s3_server: Any,
    *,
    processes: int,
    train_yaml: Path = TINY,
    experiment: str,
) -> Pod:
    bucket = s3_server.new_bucket()
    airflow_home = tmp_path / "airflow"
    secrets = {  # what the cosine-retrain-secrets Secret holds in the cluster
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint,
    }
    assert set(secrets) <= set(yaml.safe_load(SECRET_EXAMPLE.read_text())["stringData"])
    worker = {  # the Airflow worker's side: the pipeline's config and a kube config
        "COSINE_RETRAIN_HOME": str(tmp_path / "home"),
        "COSINE_RETRAIN_RETRAIN__BACKEND": "kubernetes",
        "COSINE_RETRAIN_RETRAIN__PROCESSES": str(processes),
        "COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG": str(train_yaml),
        "COSINE_RETRAIN_MLFLOW__TRACKING_URI": mlflow_server.url,
        "COSINE_RETRAIN_MLFLOW__EXPERIMENT": experiment,
        "COSINE_RETRAIN_STORAGE__KIND": "s3",
        "COSINE_RETRAIN_STORAGE__BUCKET": bucket,
        "COSINE_RETRAIN_STORAGE__ENDPOINT_URL": s3_server.endpoint,
        "COSINE_RETRAIN_STORAGE__REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "KUBECONFIG": str(_kube_config(tmp_path / "kubeconfig")),
    }
    land = [sys.executable, "-m", "pipeline"]
    for args in (["ingest", "2013-01"], ["validate", "2013-01"], ["ingest-labels", "2013-01"]):
        done = subprocess.run(
            land + args,
            cwd=ROOT,
            env={**worker, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    built = airflow_script(PLAN_AND_BUILD, str(ROOT / "dags"), home=airflow_home, extra_env=worker)

    planned, data = built["planned"], built["data"]
    assert not planned["skip"], planned
    assert data["features_uri"].startswith(f"s3://{bucket}/")
    assert built["restart"] == "Never"
    assert built["image"] == "cosine-retrain-trainer:0.1.0"
    head = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    runner = head if processes > 1 else []
    assert built["command"] == ["python", *runner, "-m", "training"]
    args = built["args"]
    assert args[:5] == [
        "train",
        "--config",
        "/config/train.yaml",
        "--run-name",
        planned["run_name"],
    ]
    assert "--resume-if-present" in args
    assert args.count("train") == 1  # the template's own args are replaced, not appended

    # the pod: the image's WORKDIR holds configs/; the ConfigMap is the shipped config
    pod_dir = tmp_path / "pod"
    shutil.copytree(ROOT / "configs", pod_dir / "configs")
    config_dir = tmp_path / "configmap"
    config_dir.mkdir()
    shutil.copy(train_yaml, config_dir / "train.yaml")
    assert built["mounts"]["train-config"] == "/config"
    args = [
        a.replace("/config/", f"{config_dir}/", 1) if a.startswith("/config/") else a for a in args
    ]
    env: dict[str, str] = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for e in built["env"]:
        if e["secret_key"] is None:
            env[e["name"]] = e["value"]
        elif e["secret_key"] in secrets:
            env[e["name"]] = secrets[e["secret_key"]]
        else:
            assert e["optional"], e  # every required key is in the Secret
    env["MPLCONFIGDIR"] = str(tmp_path / "mpl")  # the template's /tmp is an emptyDir
    command = [sys.executable, *built["command"][1:]]
    proc = subprocess.run(
        command + args, cwd=pod_dir, env=env, capture_output=True, text=True, timeout=900
    )
    return Pod(built, proc, worker, airflow_home, pod_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    "processes",
    [
        long_variant(1, reason="torchrun-2 runs the same pod with DDP", id="one-process"),
        pytest.param(2, id="torchrun-2"),
    ],
)
def test_the_dags_pod_trains_and_the_next_task_reads_it_back(
    processes: int, mlflow_server: MlflowServer, s3_server: Any, tmp_path: Path
) -> None:
    pod = _run_pod(
        tmp_path, mlflow_server, s3_server, processes=processes, experiment=f"k8s-{processes}"
    )
    proc, planned = pod.proc, pod.built["planned"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(
        (pod.pod_dir / ".cosine-retrain" / "runs" / planned["run_name"] / "result.json").read_text()
    )
    assert result["world_size"] == processes
    assert result["status"] == "completed"

    trained = pod.after(READ_BACK)  # the job's own result, as the next task receives it
    assert trained["result"]["status"] == "completed"
    assert trained["result"]["mlflow_run_id"] == result["mlflow_run_id"]
    assert [c["cycle"] for c in trained["result"]["cycles"] if c["final"]] == [0, 1, 2]
    assert trained["mlflow_run_url"].endswith(f"/runs/{result['mlflow_run_id']}")


# The train_pod task's own failure callbacks (from the parsed DAG), as Airflow calls
# them after the pod failed; then the alerts the store recorded.
FAILED_POD = textwrap.dedent(
    """
    import json, sys, types
    from pathlib import Path
    from airflow.dag_processing.dagbag import BundleDagBag
    from pipeline.base.alerts import list_alerts
    from pipeline.base.config import load_config
    from pipeline.base.store import build_store

    folder = Path(sys.argv[1])
    dag = BundleDagBag(folder, bundle_path=folder).dags["retrain"]
    planned = json.loads(sys.argv[2])
    op = dag.get_task("train_pod")
    ti = types.SimpleNamespace(
        dag_id="retrain", task_id="train_pod", run_id="manual__pod", try_number=1,
        map_index=-1, log_url=None,
        xcom_pull=lambda task_ids, key: planned if task_ids == "plan" else None,
    )
    context = {"ti": ti, "dag": dag, "run_id": "manual__pod",
               "exception": RuntimeError("Pod returned a failure")}
    for _ in range(2):  # the callbacks of two tries: still one nan_detected
        for callback in op.on_failure_callback:
            callback(context)
    config = load_config()
    store = build_store(config)
    print(json.dumps([
        {"kind": a.kind, "run_key": a.run_key, "channels": a.channels}
        for a in list_alerts(store)
    ]))
    """
)


@pytest.mark.slow
def test_a_diverged_pod_sends_nan_detected_once(
    mlflow_server: MlflowServer, s3_server: Any, tmp_path: Path
) -> None:
    diverging = tmp_path / "diverging.yaml"
    config = yaml.safe_load(TINY.read_text())
    config["fault_injection"] = {"nan_steps": list(range(20, 40))}
    config["nan_guard"] = {"max_consecutive": 2, "max_rollbacks": 1}
    diverging.write_text(yaml.safe_dump(config))
    pod = _run_pod(
        tmp_path,
        mlflow_server,
        s3_server,
        processes=1,
        train_yaml=diverging,
        experiment="k8s-diverged",
    )
    assert pod.proc.returncode == 1, pod.proc.stdout[-2000:] + pod.proc.stderr[-2000:]
    assert "training diverged" in pod.proc.stderr
    planned = pod.built["planned"]
    alerts = pod.after(FAILED_POD)
    kinds = sorted(a["kind"] for a in alerts)
    # task_failed once per try (its key has the try), nan_detected once per run
    assert kinds.count("nan_detected") == 1, alerts
    (nan,) = [a for a in alerts if a["kind"] == "nan_detected"]
    assert nan["run_key"] == planned["run_name"]
    assert "task_failed" in kinds
