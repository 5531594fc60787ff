"""A person rejects a promotion from Airflow's UI (Required Actions), in a real browser,
while the canary review goes on.

The real stack of ``./run ui`` (api-server, scheduler, dag-processor, triggerer, MLflow)
with ``canary.require_approval``: a champion and a canary registered and gated through
the flow, two labelled batches on which the canary is clearly better. Two
``canary_review`` runs are triggered through the REST API: the first holds the
promotion, emits ``promotion_held`` and ends; the scheduler starts an ``approval`` run
for that version, whose ``approve`` waits for input; the second review (the later
batch) completes meanwhile, recording ``awaiting_approval``. Then Chromium opens the
Required Actions page, the person reads the evidence, writes a comment and clicks
Reject: the canary is rolled back (its alias gone from the MLflow registry), with the
person and the comment in the alias audit trail.
Screenshots go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.steps.registry.aliases import CANARY, CHAMPION, alias_history, current_alias
from tests.dags.test_approval_run import BATCH, _stage, label_batch
from tests.support import live_stack
from tests.ui.test_ui import CHROMIUM, SHOTS, _api, _page, browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

MODEL = "flight_delay_approval"
COMMENT = "read the card: wait until the holiday traffic is over"
LATER = "2013-04"  # the later batch, reviewed while the approval waits


def _train(url: str, out: Path) -> dict[str, Any]:
    """The two tiny training runs of tests/conftest.py's trained_runs, on this server."""
    from tests.conftest import train_runs

    return train_runs(
        url, out, "approval-ui", {"a": ["schedule.lr_max=0.01"], "b": ["schedule.lr_max=0.03"]}
    )


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, str, str]]:
    home = tmp_path_factory.mktemp("approval-home")
    extra = {
        "COSINE_RETRAIN_CANARY__REQUIRE_APPROVAL": "true",
        "COSINE_RETRAIN_CANARY__MIN_ROWS": "300",
        "COSINE_RETRAIN_MLFLOW__MODEL_NAME": MODEL,
    }
    with live_stack(home, extra_env=extra) as stack:
        runs = _train(stack.mlflow_url, tmp_path_factory.mktemp("trained"))
        env, champion, canary = _stage(stack.mlflow_url, home, None, runs, model=MODEL)
        label_batch(env, champion, canary, LATER)
        yield stack, env, champion, canary


@pytest.fixture(scope="module")
def token(staged: Any) -> str:
    stack = staged[0]
    body = {"username": stack.user, "password": stack.password}
    return str(_api(stack, "POST", "/auth/token", body)["access_token"])


def _states(stack: Any, dag_id: str, quoted: str) -> dict[str, str]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances"
    return {t["task_id"]: t["state"] for t in _api(stack, "GET", path)["task_instances"]}


def _wait(stack: Any, what: str, check: Any) -> Any:
    """Poll ``check()`` until it returns something (its answer) or 600 s pass."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"{what}; logs in {stack.home}/airflow/logs")


def _run_states(stack: Any, dag_id: str, run_id: str) -> dict[str, str]:
    """A run's state (key ``run``) and its tasks' states, once it ended; else {}."""
    quoted = urllib.parse.quote(run_id, safe="")
    state = _api(stack, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")["state"]
    if state not in ("success", "failed"):
        return {}
    return {"run": state, **_states(stack, dag_id, quoted)}


def _review_action(stack: Any, run_id: str) -> str:
    quoted = urllib.parse.quote(run_id, safe="")
    path = f"/api/v2/dags/canary_review/dagRuns/{quoted}/taskInstances/review/xcomEntries"
    value = _api(stack, "GET", f"{path}/return_value")["value"]
    return str((json.loads(value) if isinstance(value, str) else value)["action"])


def _waiting_approval(stack: Any) -> tuple[str, dict[str, str]] | None:
    """The approval run whose ``approve`` waits for input, and its states; else None."""
    for run in _api(stack, "GET", "/api/v2/dags/approval/dagRuns")["dag_runs"]:
        quoted = urllib.parse.quote(run["dag_run_id"], safe="")
        states = _states(stack, "approval", quoted)
        if states.get("approve") in ("awaiting_input", "deferred"):
            return quoted, states
        assert run["state"] != "failed", states
    return None


def test_a_person_rejects_from_required_actions_while_later_labels_are_reviewed(
    staged: Any,
    token: str,
    browser: Any,  # noqa: F811 (the imported fixture)
) -> None:
    stack, env, champion, canary = staged
    # both batches' reviews at once: one canary_review run at a time, in this order
    first = stack.trigger("canary_review", {"batch_id": BATCH})["dag_run_id"]
    later = stack.trigger("canary_review", {"batch_id": LATER})["dag_run_id"]
    held = _wait(
        stack, "the first review never ended", lambda: _run_states(stack, "canary_review", first)
    )
    assert held["run"] == "success", held
    assert held["hold"] == "success"  # promotion_held emitted; the run ended
    assert _review_action(stack, first) == "held"
    quoted, _ = _wait(stack, "no approval run waited for input", lambda: _waiting_approval(stack))
    reviewed = _wait(
        stack, "the later review never ended", lambda: _run_states(stack, "canary_review", later)
    )
    # the later batch was reviewed while the approval waits: not held, not asked again
    assert reviewed["run"] == "success", reviewed
    assert _review_action(stack, later) == "awaiting_approval"
    assert reviewed["hold"] == "skipped"
    assert _states(stack, "approval", quoted)["approve"] in ("awaiting_input", "deferred")
    runs = _api(stack, "GET", "/api/v2/dags/approval/dagRuns")["dag_runs"]
    assert len(runs) == 1  # one question for the held version

    page = _page(browser, stack, token)
    question = f"Promote {MODEL} v{canary} to champion?"
    page.goto(f"{stack.airflow_url}/required_actions")
    page.get_by_text(question).first.wait_for()
    page.screenshot(path=str(SHOTS / "airflow-required-actions.png"), full_page=True)
    page.get_by_text(question).first.click()
    page.get_by_role("button", name="Reject").first.wait_for()
    page.get_by_text("Gate checks").first.wait_for()  # the evidence: the model card
    page.screenshot(path=str(SHOTS / "airflow-approval-form.png"), full_page=True)
    page.get_by_role("textbox").first.fill(COMMENT)
    page.get_by_role("button", name="Reject").first.click()
    answered = _wait(
        stack,
        "the answer was never recorded",
        lambda: (
            (s := _states(stack, "approval", quoted)).get("record_approval")
            in ("success", "failed", "upstream_failed", "skipped")
            and s
        ),
    )
    page.screenshot(path=str(SHOTS / "airflow-approval-done.png"), full_page=True)
    page.context.close()
    assert answered["record_approval"] == "success", answered
    # rolled back: the canary alias is gone from the registry, the champion stays
    assert current_alias(env.client, MODEL, CANARY) is None
    assert current_alias(env.client, MODEL, CHAMPION) == champion
    history = alias_history(env.store, MODEL)
    decision = next(m for m in history if m.action == "approval_rejected")
    assert decision.who.startswith(f"{stack.user} (Airflow user")
    assert COMMENT in decision.why
    assert decision.to_version == canary
    last = history[-1]
    assert (last.alias, last.from_version, last.to_version) == (CANARY, canary, None)
    assert last.who == decision.who
