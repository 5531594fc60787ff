"""The approval's wiring, from the DAG files themselves (parsed in a fresh interpreter,
like the scheduler's processor): with ``canary.require_approval`` the canary review only
emits ``promotion_held`` (its run never waits for a person); the ``approval`` DAG,
scheduled on that asset with a run per held version, asks and records the answer."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline.base.config import ConfigError, load_config
from tests.support import airflow_script

ROOT = Path(__file__).resolve().parents[2]

PARSE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from airflow.dag_processing.dagbag import BundleDagBag

    folder = Path(sys.argv[1])
    bag = BundleDagBag(folder, bundle_path=folder)
    out = {}
    for dag_id in ("canary_review", "approval"):
        dag = bag.dags[dag_id]
        tasks = {}
        for t in dag.tasks:
            info = {"type": type(t).__name__, "upstream": sorted(t.upstream_task_ids),
                    "outlets": sorted(a.name for a in t.outlets)}
            if hasattr(t, "options"):
                info.update(
                    options=t.options, defaults=t.defaults, subject=t.subject, body=t.body,
                    timeout_s=t.response_timeout.total_seconds(), params=sorted(t.params),
                    retries=t.retries, assigned=t.assigned_users,
                )
            tasks[t.task_id] = info
        assets = dag.schedule if isinstance(dag.schedule, list) else []
        out[dag_id] = {"tasks": tasks, "max_active_runs": dag.max_active_runs,
                       "schedule": [a.name for a in assets]}
    print(json.dumps({"errors": {str(k): v for k, v in bag.import_errors.items()},
                      "dags": out}))
    """
)


def _parse(home: Path, **env: str) -> dict[str, Any]:
    """Both DAGs as parsed (the folder imported cleanly)."""
    out = airflow_script(PARSE, str(ROOT / "dags"), home=home, extra_env=env)
    assert out["errors"] == {}
    return out["dags"]


def test_no_approval_task_unless_configured(tmp_path: Path) -> None:
    dags = _parse(tmp_path)
    review = dags["canary_review"]["tasks"]
    assert {"hold", "approve", "record_approval"}.isdisjoint(review)
    assert "review" in review


def test_the_review_emits_promotion_held_and_never_waits_for_a_person(tmp_path: Path) -> None:
    dags = _parse(tmp_path, COSINE_RETRAIN_CANARY__REQUIRE_APPROVAL="true")
    review = dags["canary_review"]
    assert review["tasks"]["hold"]["upstream"] == ["review", "which_batches"]
    assert review["tasks"]["hold"]["outlets"] == ["promotion_held"]
    assert not any(t["type"] == "HITLOperator" for t in review["tasks"].values())
    assert review["max_active_runs"] == 1  # one review at a time, never held by an approval


def test_the_approval_dag_asks_in_a_run_per_held_version(tmp_path: Path) -> None:
    dags = _parse(
        tmp_path,
        COSINE_RETRAIN_CANARY__REQUIRE_APPROVAL="true",
        COSINE_RETRAIN_CANARY__APPROVAL_TIMEOUT_HOURS="6",
    )
    dag = dags["approval"]
    assert dag["schedule"] == ["promotion_held"]
    assert dag["max_active_runs"] > 1  # a moot run still waiting never delays the next
    tasks = dag["tasks"]
    assert tasks["held"]["upstream"] == []
    assert tasks["held"]["type"] == "_ShortCircuitDecoratedOperator"
    approve = tasks["approve"]
    assert approve["type"] == "HITLOperator"
    assert approve["upstream"] == ["held"]
    assert approve["options"] == ["Approve", "Reject"]
    assert approve["defaults"] == ["Reject"]  # what a timeout answers, with nobody as responder
    assert approve["timeout_s"] == 6 * 3600
    assert approve["params"] == ["comment"]
    assert approve["retries"] == 0  # a retry would ask the person again
    assert "xcom_pull(task_ids='held')['evidence']" in approve["body"]
    assert tasks["record_approval"]["upstream"] == ["approve", "held"]
    assert approve["assigned"] is None  # no approvers configured: Airflow's own access rules


def test_approvers_are_the_approval_tasks_assigned_users(tmp_path: Path) -> None:
    """Who may answer is configurable; Airflow's api-server refuses anyone else (403)."""
    dags = _parse(
        tmp_path,
        COSINE_RETRAIN_CANARY__REQUIRE_APPROVAL="true",
        COSINE_RETRAIN_CANARY__APPROVERS='["7:alice", "8"]',
    )
    assert dags["approval"]["tasks"]["approve"]["assigned"] == [
        {"id": "7", "name": "alice"},
        {"id": "8", "name": "8"},
    ]


def test_an_approver_without_a_user_id_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"approvers.*':alice' has no Airflow user id"):
        load_config(None, home=tmp_path, canary={"approvers": [":alice"]})
