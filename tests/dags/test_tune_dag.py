"""The ``tune`` DAG from dags/tune.py, run with ``dag.test()`` on a home of loans
batches (not flights): its task calls the flow, which runs the study, writes the
versioned config and judges it on the held-out window."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import optuna
import pytest
import yaml

from pipeline.steps.tuning.configs import read_verdict, tuned_versions
from tests.pipeline.flow.tuning_support import SPACE_WITHOUT_START, make_env
from tests.support import airflow_script

ROOT = Path(__file__).resolve().parents[2]

RUN = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from pathlib import Path
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ)
    from airflow.dag_processing.dagbag import BundleDagBag
    folder = Path(sys.argv[1])
    bag = BundleDagBag(folder, bundle_path=folder)
    dag = bag.dags["tune"]
    run = dag.test(run_conf={"trials": 2})
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print(json.dumps({"run": str(run.state), "tasks": states,
                      "schedule": dag.timetable.summary}))
    """
)


def test_the_tune_dag_runs_the_study_and_judges_its_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env(
        tmp_path, monkeypatch, startup_trials=2, space=SPACE_WITHOUT_START, judge_seeds=2
    )
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(json.loads(env.config.model_dump_json())))
    out = airflow_script(
        RUN,
        str(ROOT / "dags"),
        home=tmp_path / "airflow",
        extra_env={
            "COSINE_RETRAIN_CONFIG": str(cfg),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        },
    )
    assert out["run"] == "success", out
    assert out["tasks"] == {"study": "success"}
    assert out["schedule"] == env.config.tune.schedule  # the quarterly cron from the config
    # what the task did, read from the storage and the store (not from its XCom)
    study = optuna.load_study(
        study_name="loans-tune-2024-01-2024-02", storage=f"sqlite:///{env.home / 'tuning.db'}"
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]  # --trials 2
    assert tuned_versions(env.store, env.dataset) == [1]
    verdict = read_verdict(env.store, env.dataset, 1)
    assert verdict is not None
    assert verdict.holdout == ["2024-03", "2024-04"]
