"""Guardrails before labels through the drift monitor DAG (``dag.test()`` of the parsed
DAG file, in a fresh interpreter with an Airflow home of its own), against a real MLflow
server with registered pyfunc models: on a landed, validated March batch and before any
label, a canary that returns NaN for one carrier, one that returns a constant, one that
returns the other class's probability (caught by the rank check alone), and one whose
rows arrive off its share (the batch was filtered upstream in a way that follows the hash
split) are each rolled back by the ``score`` task, which succeeds with the
champion's predictions for every row; a healthy canary passes and keeps serving."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.base.store import get_frame
from pipeline.steps.canary.routing import route_to_canary
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.promotion.rules import canary_rules
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias, move_alias
from tests.pipeline.base.test_alerts import Receiver
from tests.pipeline.steps.test_canary_guardrails import log_models, register_pair
from tests.pipeline.steps.test_gate_and_canary import SPEC, Env
from tests.support import dag_test_env, logged_script

ROOT = Path(__file__).resolve().parents[2]
BATCH = "2013-03"

RUN = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from tests.support import dag_cases

    folder, cases = Path(sys.argv[1]), json.loads(sys.argv[2])
    results = {}
    for dags, case in dag_cases(folder, cases, "drift_monitor"):
        dr = dags["drift_monitor"].test(run_conf={"batch_id": case["batch"]})
        tis = {ti.task_id: ti for ti in dr.get_task_instances()}
        scored = tis["score"].xcom_pull(task_ids="score") if "score" in tis else None
        results[case["name"]] = {
            "states": {k: str(ti.state) for k, ti in tis.items()}, "scored": scored}
    print(json.dumps(results, default=str))
    """
)

# canary kind, shadow batches, what the rollback's reason says (None: no rollback)
CASES = {
    "healthy": ("healthy_canary", 0, None),
    "nan": ("nan_for_ua", 0, "BREACH finite"),
    "constant": ("constant", 1, "BREACH constant"),
    "wrong_class": ("wrong_class", 1, "BREACH rank"),
    "split_off": ("healthy_canary", 0, "BREACH srm"),
}


@pytest.fixture(scope="module")
def march() -> pd.DataFrame:
    """3,000 rows of March (every 9th flight, so all days and hours)."""
    from training.data.flights import load_months

    return load_months([3])[0].iloc[::9].head(3000).reset_index(drop=True)


def _batch(env: Env, march: pd.DataFrame, *, split_off: bool) -> pd.DataFrame:
    """March's rows; ``split_off``: every row the hash sends to the canary, and a third of
    the others (an upstream filter that follows the split), so the canary's share of the
    batch is far above its configured one."""
    if not split_off:
        return march
    rules = canary_rules(env.config, SPEC, [len(march)])
    hit = route_to_canary(march["flight_id"].astype(str).tolist(), rules.share, rules.salt)
    keep = hit | (np.arange(len(march)) % 3 == 0)
    return march.loc[keep].reset_index(drop=True)


def test_misbehaving_canaries_are_rolled_back_by_the_drift_monitor_before_labels(
    mlflow_server: Any, tmp_path: Path, march: pd.DataFrame, receiver: Receiver
) -> None:
    logged = log_models(mlflow_server.url, tmp_path)
    staged, cases = {}, []
    for name, (kind, shadow, _) in CASES.items():
        home = tmp_path / name
        env = Env(mlflow_server.url, home)
        env.configure(alerts={"webhook_url": receiver.url()}, canary={"shadow_batches": shadow})
        register_pair(env.client, mlflow_server.url, env.name, logged, kind)
        move_alias(env.client, env.store, env.name, CHAMPION, "1", why="test setup")
        move_alias(env.client, env.store, env.name, CANARY, "2", why="test setup")
        batch = _batch(env, march, split_off=name == "split_off")
        ingest_frame(env.store, SPEC, batch, BATCH)
        staged[name] = (env, batch)
        cases.append(
            {
                "name": name,
                "batch": BATCH,
                "env": {
                    "COSINE_RETRAIN_HOME": str(home),
                    "COSINE_RETRAIN_MLFLOW__MODEL_NAME": env.name,
                    "COSINE_RETRAIN_CANARY__SHADOW_BATCHES": str(shadow),
                },
            }
        )
    environ = dag_test_env(
        tmp_path / "airflow",
        tmp_path,  # the DAG file is parsed with it; each case runs on its own home
        COSINE_RETRAIN_MLFLOW__TRACKING_URI=mlflow_server.url,
        COSINE_RETRAIN_CANARY__MIN_ROWS="300",
        COSINE_RETRAIN_ALERTS__WEBHOOK_URL=receiver.url(),
    )
    log = tmp_path / "dag-test.log"
    out = logged_script(RUN, str(ROOT / "dags"), json.dumps(cases), env=environ, log=log)

    for name, (_, _, why) in CASES.items():
        env, batch = staged[name]
        result = out[name]
        assert result["states"]["score"] == "success", (name, result["states"])
        (scored,) = result["scored"]  # the run's one batch
        preds = get_frame(env.store, scored["key"])
        assert len(preds) == len(batch), name  # every row has a prediction, whatever happened
        assert preds["score"].notna().all(), name
        if why is None:
            assert scored["rolled_back"] is None, scored
            assert current_alias(env.client, env.name, CANARY) == "2"
            assert (preds["alias"] == CANARY).sum() == scored["canary_rows"] > 0
            continue
        assert why in scored["rolled_back"], (name, scored["rolled_back"])
        assert current_alias(env.client, env.name, CANARY) is None, name
        assert current_alias(env.client, env.name, CHAMPION) == "1", name
        assert (preds["alias"] == CHAMPION).all(), name
        tags = env.client.get_model_version(env.name, "2").tags
        assert tags["canary.status"] == "rejected", name
        assert why in tags["canary.reason"], name
        alerts = [b for b in receiver.bodies if b["details"].get("model") == env.name]
        assert [a["kind"] for a in alerts] == ["canary_rolled_back"], name
