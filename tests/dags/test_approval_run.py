"""The approval with ``canary.require_approval``, run by ``dag.test()`` against a real
MLflow server: the ``canary_review`` run holds the promotion, emits ``promotion_held``
(model, version, batch) and ends; a review while that approval waits records
``awaiting_approval`` and emits nothing. The ``approval`` DAG, run for the event's
version, waits in AWAITING_INPUT until an answer is written through Airflow's own
Required Actions handler (the api-server's ``update_hitl_detail``, as the UI calls it)
or the scheduler's timeout sweep resolves it; then the answer acts. Approve moves
``champion``; Reject rolls the canary back (its traffic returns to the champion); no
answer rolls it back and alerts."""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.base.config import load_config
from pipeline.base.store import put_frame
from pipeline.flow.env import Env
from pipeline.steps.canary.routing import route_to_canary
from pipeline.steps.landing.ingest import flights_frames, ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.registry.aliases import CANARY, CHAMPION, alias_history, current_alias
from tests.pipeline.base.test_alerts import Receiver
from tests.pipeline.flow.retrain_support import register_and_gate
from tests.support import dag_test_env, logged_script

ROOT = Path(__file__).resolve().parents[2]
BATCH = "2013-03"
GATE = {"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 150, "max_auc_drop": 0.05}
TIMEOUT_H = 0.001  # 3.6 s: the timeout case waits it out

# The person (or the clock): a process of its own, as the api-server is, sharing the
# metadata database. It waits until the approval task is parked in AWAITING_INPUT, then
# answers through the api-server's own handler, or lets the scheduler's sweep time it out.
RESPOND = textwrap.dedent(
    """
    import json, sys, time
    from sqlalchemy import select
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    case = json.loads(sys.argv[1])

    class Person:  # what the api-server's auth manager hands the handler
        def get_id(self): return "7"
        def get_name(self): return "alice"

    def parked():
        with create_session() as s:
            ti = s.scalars(select(TI).where(
                TI.dag_id == "approval", TI.task_id == "approve",
                TI.state == TaskInstanceState.AWAITING_INPUT)).first()
            return ti.run_id if ti else None

    deadline = time.time() + 300
    while (run_id := parked()) is None:
        if time.time() > deadline:
            sys.exit("the approval task never waited for input")
        time.sleep(0.5)
    print("parked:", run_id, file=sys.stderr, flush=True)
    if case["answer"] is None:  # nobody answers: the scheduler's sweep, once due
        from airflow.jobs.job import Job
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
        time.sleep(case["timeout_s"] + 1)
        SchedulerJobRunner(job=Job()).check_awaiting_input_timeouts()
    else:
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
        payload = UpdateHITLDetailPayload(
            chosen_options=[case["answer"]], params_input={"comment": case["comment"]})
        with create_session() as s:
            update_hitl_detail(dag_id="approval", dag_run_id=run_id, task_id="approve",
                               update_hitl_detail_payload=payload, user=Person(), session=s)
    print("answered", file=sys.stderr, flush=True)
    """
)

RUN = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    from tests.support import dag_cases

    folder, cases, respond = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    from sqlalchemy import select
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    def held_events():
        with create_session() as s:
            query = (select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                     .where(AssetModel.name == "promotion_held").order_by(AssetEvent.id))
            rows = s.scalars(query)
            return [dict(e.extra) for e in rows]

    def outcome(dr):
        tis = {ti.task_id: ti for ti in dr.get_task_instances()}
        states = {k: str(ti.state) for k, ti in tis.items()}
        done = {k: tis[k].xcom_pull(task_ids=k) for k in ("review", "record_approval")
                if states.get(k) == "success"}
        return states, done

    results = {}
    for dags, case in dag_cases(folder, cases, "canary_review", "approval"):
        review, approval = dags["canary_review"], dags["approval"]
        seen = len(held_events())
        reviews = []
        for _ in range(case["reviews"]):  # the later ones while the approval waits
            states, done = outcome(review.test(run_conf={"batch_id": case["batch"]}))
            reviews.append({"states": states, "action": done.get("review", {}).get("action")})
        events = held_events()[seen:]
        person = subprocess.Popen([sys.executable, "-c", respond, json.dumps(case)])
        dr = approval.test(run_conf={"version": events[-1]["version"]})
        code = person.wait(timeout=120)
        states, done = outcome(dr)
        results[case["name"]] = {"reviews": reviews, "events": events, "states": states,
                                 "recorded": done.get("record_approval"), "person": code}
    print(json.dumps(results, default=str))
    """
)


def _stage(
    url: str, home: Path, hook: str | None, trained_runs: Any, model: str | None = None
) -> tuple[Env, str, str]:
    """Champion (run a) and canary (run b) through the flow's gate, a labelled batch whose
    stored predictions make the canary clearly better than the champion."""
    env = Env(
        load_config(
            None,
            home=home,
            mlflow={"tracking_uri": url, "model_name": model or f"run_{uuid.uuid4().hex[:8]}"},
            gate=GATE,
            canary={"min_rows": 300},
            alerts={"webhook_url": hook} if hook else {},
        )
    )
    versions = register_and_gate(env, trained_runs)
    champion, canary = versions
    label_batch(env, champion, canary, BATCH)
    return env, champion, canary


def label_batch(env: Env, champion: str, canary: str, batch: str) -> None:
    """A flights month (``batch``, 4000 rows) landed, served by champion and canary (the
    canary clearly better), and labelled."""
    _, features, labels = flights_frames(env.spec, batch)
    features = features.head(4000).reset_index(drop=True)
    ingest_frame(env.store, env.spec, features, batch)
    labels = labels[labels["flight_id"].isin(features["flight_id"])].reset_index(drop=True)
    ids = labels["flight_id"].astype(str).tolist()
    y = labels["late"].to_numpy()
    to_canary = route_to_canary(ids, 0.5, "approval-test")
    rng = np.random.default_rng(0)
    informed = np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.05, len(y))
    score = np.where(to_canary, informed, 0.5 + rng.normal(0, 0.05, len(y)))
    served = pd.DataFrame(
        {
            "flight_id": labels["flight_id"],
            "score": np.clip(score, 0.01, 0.99),
            "model_version": np.where(to_canary, canary, champion),
            "alias": np.where(to_canary, CANARY, CHAMPION),
            "scored_at": "2026-01-01T00:00:00+00:00",
        }
    )
    pair = f"champion-v{champion}_canary-v{canary}"
    put_frame(env.store, f"predictions/flights/{batch}/{pair}/predictions.parquet", served)
    ingest_labels(env.store, env.spec, labels, batch)


def _run_dags(tmp_path: Path, cases: list[dict[str, Any]], extra: dict[str, str]) -> Any:
    """The script in a fresh interpreter with an Airflow home of its own; its output in
    files (a dag.test() waiting for input prints nothing for minutes)."""
    # the DAG files are parsed with tmp_path as home; each case runs on its own
    env = dag_test_env(tmp_path / "airflow", tmp_path, **extra)
    log = tmp_path / "dag-test.log"
    return logged_script(RUN, str(ROOT / "dags"), json.dumps(cases), RESPOND, env=env, log=log)


def test_approve_reject_and_timeout_through_the_dag(
    mlflow_server: Any, trained_runs: Any, tmp_path: Path, receiver: Receiver
) -> None:
    answers = {
        "approve": ("Approve", "canary beats champion on every batch"),
        "reject": ("Reject", "hold until the holiday traffic is over"),
        "timeout": (None, ""),
    }
    staged, cases = {}, []
    for name, (answer, comment) in answers.items():
        home = tmp_path / name
        env, champion, canary = _stage(mlflow_server.url, home, receiver.url(), trained_runs)
        staged[name] = (env, champion, canary)
        cases.append(
            {
                "name": name,
                "batch": BATCH,
                "reviews": 2 if name == "approve" else 1,
                "answer": answer,
                "comment": comment,
                "timeout_s": TIMEOUT_H * 3600,
                "env": {
                    "COSINE_RETRAIN_HOME": str(home),
                    "COSINE_RETRAIN_MLFLOW__MODEL_NAME": env.model,
                },
            }
        )
    shared = {
        "COSINE_RETRAIN_MLFLOW__TRACKING_URI": mlflow_server.url,
        "COSINE_RETRAIN_CANARY__REQUIRE_APPROVAL": "true",
        "COSINE_RETRAIN_CANARY__APPROVAL_TIMEOUT_HOURS": str(TIMEOUT_H),
        "COSINE_RETRAIN_CANARY__MIN_ROWS": "300",
        "COSINE_RETRAIN_ALERTS__WEBHOOK_URL": receiver.url(),
    }
    out = _run_dags(tmp_path, cases, shared)

    approved = out["approve"]
    env, champion, canary = staged["approve"]
    first, later = approved["reviews"]
    # the review holds, emits promotion_held and its run ends: nobody waits inside it
    assert first["action"] == "held"
    assert first["states"]["hold"] == "success"
    assert "approve" not in first["states"]
    # a later review while the approval waits: neither held again nor asked again
    assert later["action"] == "awaiting_approval"
    assert later["states"]["hold"] == "skipped"
    assert approved["events"] == [{"model": env.model, "version": canary, "batch": BATCH}]
    assert approved["person"] == 0
    assert approved["states"]["approve"] == "success"
    assert approved["recorded"]["verdict"] == "approved"
    assert approved["recorded"]["who"] == "alice (Airflow user 7)"
    assert current_alias(env.client, env.model, CHAMPION) == canary
    history = alias_history(env.store, env.model)
    decision = next(m for m in history if m.action == "approved")
    assert decision.who == "alice (Airflow user 7)"
    assert "canary beats champion on every batch" in decision.why
    moved = next(m for m in history if m.alias == CHAMPION and m.to_version == canary)
    assert moved.who == "alice (Airflow user 7)"

    rejected = out["reject"]
    assert rejected["person"] == 0
    env, champion, canary = staged["reject"]
    assert rejected["recorded"]["verdict"] == "rejected"
    assert rejected["recorded"]["action"] == "rejected"
    assert current_alias(env.client, env.model, CHAMPION) == champion
    assert current_alias(env.client, env.model, CANARY) is None  # rolled back
    history = alias_history(env.store, env.model)
    decision = next(m for m in history if m.action == "approval_rejected")
    assert decision.who == "alice (Airflow user 7)"
    assert "holiday traffic" in decision.why
    last = history[-1]
    assert (last.alias, last.from_version, last.to_version) == (CANARY, canary, None)

    timed_out = out["timeout"]
    assert timed_out["person"] == 0
    env, champion, canary = staged["timeout"]
    assert timed_out["recorded"]["verdict"] == "timed_out"
    assert current_alias(env.client, env.model, CHAMPION) == champion
    assert current_alias(env.client, env.model, CANARY) is None  # rolled back
    kinds = [(b["kind"], b["details"].get("version")) for b in receiver.bodies]
    assert ("approval_timed_out", canary) in kinds
    history = alias_history(env.store, env.model)
    assert any(m.action == "approval_timed_out" for m in history)
    assert (history[-1].alias, history[-1].to_version) == (CANARY, None)
