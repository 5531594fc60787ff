"""A person approves a promotion from Airflow's UI (Required Actions), in a real browser.

The real stack of ``./run ui`` (api-server, scheduler, dag-processor, triggerer, MLflow)
with ``canary.require_approval``: a champion and a canary registered and gated through
the flow, a labelled batch on which the canary is clearly better; ``canary_review`` is
triggered through the REST API, the scheduler runs it until ``approve`` waits for
input; then Chromium opens the Required Actions page, the person reads the evidence,
writes a comment and clicks Approve; the run finishes and ``champion`` has moved, with
the person and the comment in the alias audit trail.
Screenshots go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.steps.registry.aliases import CHAMPION, alias_history, current_alias
from tests.dags.test_approval_run import BATCH, _stage
from tests.support import live_stack
from tests.ui.test_ui import CHROMIUM, SHOTS, _api, _page, browser  # noqa: F401 (fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")

MODEL = "flight_delay_approval"
COMMENT = "read the card: canary better on every slice"


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
        yield stack, env, champion, canary


@pytest.fixture(scope="module")
def token(staged: Any) -> str:
    stack = staged[0]
    body = {"username": stack.user, "password": stack.password}
    return str(_api(stack, "POST", "/auth/token", body)["access_token"])


def _states(stack: Any, token: str, quoted: str) -> dict[str, str]:
    path = f"/api/v2/dags/canary_review/dagRuns/{quoted}/taskInstances"
    return {t["task_id"]: t["state"] for t in _api(stack, "GET", path)["task_instances"]}


def _wait(stack: Any, token: str, quoted: str, done: Any, what: str) -> dict[str, str]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        states = _states(stack, token, quoted)
        if done(states):
            return states
        time.sleep(3)
    raise AssertionError(f"{what}: {states}; logs in {stack.home}/airflow/logs")


def test_a_person_approves_from_required_actions_and_the_champion_moves(
    staged: Any,
    token: str,
    browser: Any,  # noqa: F811 (the imported fixture)
) -> None:
    stack, env, champion, canary = staged
    _api(stack, "PATCH", "/api/v2/dags/canary_review", {"is_paused": False})
    run = stack.trigger("canary_review", {"batch_id": BATCH})
    quoted = urllib.parse.quote(run["dag_run_id"], safe="")
    states = _wait(
        stack,
        token,
        quoted,
        lambda s: (
            s.get("approve") in ("awaiting_input", "deferred", "failed", "skipped")
            or s.get("review") == "failed"
        ),
        "the approval task never waited for input",
    )
    assert states["approve"] in ("awaiting_input", "deferred"), states

    page = _page(browser, stack, token)
    page.goto(f"{stack.airflow_url}/required_actions")
    page.get_by_text(f"Promote {MODEL} v{canary} to champion?").first.wait_for()
    page.screenshot(path=str(SHOTS / "airflow-required-actions.png"), full_page=True)
    page.get_by_text(f"Promote {MODEL} v{canary} to champion?").first.click()
    page.get_by_role("button", name="Approve").first.wait_for()
    page.get_by_text("Gate checks").first.wait_for()  # the evidence: the model card
    page.screenshot(path=str(SHOTS / "airflow-approval-form.png"), full_page=True)
    page.get_by_role("textbox").first.fill(COMMENT)
    page.get_by_role("button", name="Approve").first.click()
    states = _wait(
        stack,
        token,
        quoted,
        lambda s: s.get("record_approval") in ("success", "failed", "upstream_failed", "skipped"),
        "the answer was never recorded",
    )
    page.screenshot(path=str(SHOTS / "airflow-approval-done.png"), full_page=True)
    page.context.close()
    assert states["record_approval"] == "success", states
    assert current_alias(env.client, MODEL, CHAMPION) == canary
    decision = next(m for m in alias_history(env.store, MODEL) if m.action == "approved")
    assert decision.who.startswith(f"{stack.user} (Airflow user")
    assert COMMENT in decision.why
    assert decision.from_version == champion
