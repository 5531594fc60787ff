"""The canary review's approval tasks: built only when ``canary.require_approval`` is set,
from the DAG file itself (parsed in a fresh interpreter, like the scheduler's processor)."""

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
    dag = bag.dags["canary_review"]
    tasks = {}
    for t in dag.tasks:
        info = {"type": type(t).__name__, "upstream": sorted(t.upstream_task_ids)}
        if hasattr(t, "options"):
            info.update(
                options=t.options, defaults=t.defaults, subject=t.subject, body=t.body,
                timeout_s=t.response_timeout.total_seconds(), params=sorted(t.params),
                retries=t.retries, assigned=t.assigned_users,
            )
        tasks[t.task_id] = info
    print(json.dumps({"errors": {str(k): v for k, v in bag.import_errors.items()},
                      "tasks": tasks}))
    """
)


def _tasks(home: Path, **env: str) -> dict[str, Any]:
    """The canary review's tasks, parsed from the DAG folder with ``env`` (which must
    parse without import errors)."""
    out = airflow_script(PARSE, str(ROOT / "dags"), home=home, extra_env=env)
    assert out["errors"] == {}
    return out["tasks"]


def test_no_approval_task_unless_configured(tmp_path: Path) -> None:
    tasks = _tasks(tmp_path)
    assert {"held", "approve", "record_approval"}.isdisjoint(tasks)
    assert "review" in tasks


def test_required_approval_adds_a_human_in_the_loop_task(tmp_path: Path) -> None:
    tasks = _tasks(
        tmp_path,
        COSINE_RETRAIN_CANARY__REQUIRE_APPROVAL="true",
        COSINE_RETRAIN_CANARY__APPROVAL_TIMEOUT_HOURS="6",
    )
    assert tasks["held"]["upstream"] == ["review"]
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
    tasks = _tasks(
        tmp_path,
        COSINE_RETRAIN_CANARY__REQUIRE_APPROVAL="true",
        COSINE_RETRAIN_CANARY__APPROVERS='["7:alice", "8"]',
    )
    assert tasks["approve"]["assigned"] == [
        {"id": "7", "name": "alice"},
        {"id": "8", "name": "8"},
    ]


def test_an_approver_without_a_user_id_is_refused_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"approvers.*':alice' has no Airflow user id"):
        load_config(None, home=tmp_path, canary={"approvers": [":alice"]})
