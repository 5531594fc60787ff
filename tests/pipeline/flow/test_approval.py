"""A person's answer about promoting a held canary, against a real MLflow server: approved
moves ``champion`` with the approver and the comment in the audit trail, and the card gets
the approval. (Reject and timeout roll the canary back:
tests/pipeline/steps/test_canary_control.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest

from pipeline.base.config import load_config
from pipeline.flow.approval import decide, evidence
from pipeline.flow.env import Env
from pipeline.steps.promotion.approval import APPROVE
from pipeline.steps.registry.aliases import CANARY, CHAMPION, PREVIOUS, alias_history, current_alias
from tests.pipeline.base.test_alerts import Receiver
from tests.pipeline.flow.retrain_support import register_and_gate

PERMISSIVE = {"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 150, "max_auc_drop": 0.05}


def _env(url: str, home: Path, hook: str) -> Env:
    return Env(
        load_config(
            None,
            home=home,
            mlflow={"tracking_uri": url, "model_name": f"ap_{uuid.uuid4().hex[:8]}"},
            gate=PERMISSIVE,
            canary={"require_approval": True, "approval_timeout_hours": 48},
            alerts={"webhook_url": hook},
        )
    )


@pytest.fixture(scope="module")
def canary(mlflow_server: Any, trained_runs: Any, tmp_path_factory: Any, receiver: Receiver):  # type: ignore[no-untyped-def]
    """Run a's best is champion, run b's the canary, both through the flow's gate, held
    for approval as a review holds it. The tests share it in file order: those that move
    nothing first, the approval last."""
    env = _env(mlflow_server.url, tmp_path_factory.mktemp("home"), receiver.url())
    versions = register_and_gate(env, trained_runs)
    champion, candidate = versions
    assert current_alias(env.client, env.model, CHAMPION) == champion
    assert current_alias(env.client, env.model, CANARY) == candidate
    env.client.set_model_version_tag(env.model, candidate, "approval.status", "pending")
    return env, champion, candidate


def _card(env: Env, version: str, dest: Path) -> str:
    uri = env.client.get_model_version(env.model, version).tags["model_card.uri"]
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(dest), tracking_uri=env.config.mlflow.tracking_uri
    )
    return Path(path).read_text()


def test_the_evidence_asks_the_question_and_carries_the_card(canary: Any) -> None:
    env, champion, candidate = canary
    body = evidence(env, candidate)
    assert body.startswith(f"**Promote {env.model} v{candidate} to champion?**")
    assert f"champion v{champion}" in body
    for section in ("## Gate checks", "## Canary evidence", "## Shadow evidence"):
        assert section in body
    assert "| PASS | auc_drop_vs_champion |" in body  # the gate's own check, from its report


def test_an_answer_that_is_no_option_is_refused(canary: Any) -> None:
    env, champion, candidate = canary
    with pytest.raises(ValueError, match="choose 'Approve' or 'Reject'"):
        decide(env, candidate, chosen="Maybe", who="carol", comment="")
    assert current_alias(env.client, env.model, CHAMPION) == champion


def test_an_approval_moves_the_champion_and_records_who_and_why(
    canary: Any, tmp_path: Path, receiver: Receiver
) -> None:
    env, champion, candidate = canary
    who = "alice (Airflow user 7)"
    out = decide(env, candidate, chosen=APPROVE, who=who, comment="AUC up on every slice")
    assert out.verdict == "approved"
    assert out.action == "promoted"
    assert out.champion == candidate
    assert current_alias(env.client, env.model, PREVIOUS) == champion
    assert current_alias(env.client, env.model, CANARY) is None
    history = alias_history(env.store, env.model)
    approval, *moves = history[-4:]  # the decision first, then the moves it caused
    assert (approval.action, approval.who, approval.to_version) == ("approved", who, candidate)
    assert "AUC up on every slice" in approval.why
    moved = next(m for m in moves if m.alias == CHAMPION)
    assert (moved.from_version, moved.to_version, moved.who) == (champion, candidate, who)
    assert "AUC up on every slice" in moved.why
    tags = env.client.get_model_version(env.model, candidate).tags
    assert tags["approval.status"] == "approved"
    assert tags["approval.by"] == who
    card = _card(env, candidate, tmp_path)
    assert "| approval.comment | AUC up on every slice |" in card
    assert "approved" in card.split("## Alias history", 1)[1]
    assert receiver.bodies[-1]["kind"] == "promoted"
