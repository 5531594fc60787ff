"""A run that diverges sends ``nan_detected``, once per run (local backend).

The retrain DAG's ``train`` task is ``flow.train``: here it runs on a real landed
month with the shipped tiny config and NaN losses injected until the guard gives
up; the task fails (TrainingDiverged, no retry) and the alert names the run. The
GPU pod's path (its MLflow run's tags read by the task's failure callback) is
tests/dags/test_kubernetes_pod.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import flow
from pipeline.base.alerts import list_alerts
from tests.support import ROOT
from training.engine.nan_guard import TrainingDiverged


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> flow.Env:
    config = yaml.safe_load((ROOT / "tests" / "fixtures" / "tiny_train.yaml").read_text())
    config["fault_injection"] = {"nan_steps": list(range(20, 40))}
    config["nan_guard"] = {"max_consecutive": 2, "max_rollbacks": 1}
    diverging = tmp_path / "diverging.yaml"
    diverging.write_text(yaml.safe_dump(config))
    for key in ("COSINE_RETRAIN_CONFIG", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG", str(diverging))
    return flow.build_env()


@pytest.mark.slow
def test_a_diverged_run_alerts_nan_detected_once(env: flow.Env) -> None:
    flow.land(env, "2013-01")
    flow.validate(env, "2013-01")  # a retrain trains only on validated batches
    flow.land(env, "2013-01", labels=True)
    plan = flow.plan_retrain(env, flow.RetrainRequest(trigger="manual", reasons=["test"]))
    window = flow.export_window(env, plan)
    for _ in range(2):  # the task, then a retry of it (a person clearing it)
        with pytest.raises(TrainingDiverged, match="consecutive non-finite steps"):
            flow.train(env, plan, window)
    nan = [a for a in list_alerts(env.store) if a.kind == "nan_detected"]
    assert len(nan) == 1, nan
    assert nan[0].run_key == plan.run_name
