"""The control around the canary, against a real MLflow server (registered versions that
passed their gate, stored predictions and labels): one approval path for every entry,
reject and timeout roll back, the horizon counted in labelled batches."""

from __future__ import annotations

import json
import os
import pwd
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.apps.cli import main
from pipeline.base.config import load_config
from pipeline.base.store import LocalStore, put_frame
from pipeline.steps.canary.review import review_canary
from pipeline.steps.landing.ingest import flights_frames, ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.promotion.actions import reject_canary
from pipeline.steps.promotion.approval import APPROVE, REJECT, Answer, decide
from pipeline.steps.registry.aliases import (
    CANARY,
    CHAMPION,
    RegistryError,
    alias_history,
    current_alias,
)
from pipeline.steps.registry.model_card import collect_card, render_markdown
from tests.pipeline.base.test_alerts import Receiver
from tests.pipeline.steps.test_gate_and_canary import (
    SPEC,
    Env,
    _canary_at,
    _served,
    canary_env_at,
    serve_split,
)

BATCH = "2013-03"


@pytest.fixture
def held(mlflow_server: Any, tmp_path: Path, receiver: Receiver) -> Env:
    """v1 champion, v2 canary that a review held for approval (``approval.status``)."""
    env = canary_env_at(
        mlflow_server.url,
        tmp_path,
        alerts={"webhook_url": receiver.url()},
        canary={"require_approval": True, "approval_timeout_hours": 48},
    )
    env.client.set_model_version_tag(env.name, "2", "approval.status", "pending")
    return env


def _moves(env: Env) -> list[tuple[str, str | None, str | None]]:
    return [
        (m.alias, m.from_version, m.to_version)
        for m in alias_history(env.store, env.name)
        if m.action == "moved"
    ]


# ------------------------------------------------------------------ one approval path


def test_approving_a_version_the_review_never_held_is_refused_unless_overridden(
    mlflow_server: Any, tmp_path: Path
) -> None:
    env = canary_env_at(mlflow_server.url, tmp_path)  # a canary no review has held
    before = alias_history(env.store, env.name)
    with pytest.raises(RegistryError, match=r"not held for approval .*approval.status unset"):
        decide(env.client, env.store, env.config, env.name, "2", Answer(APPROVE, "eve", "go"))
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    assert alias_history(env.store, env.name) == before  # a refusal records nothing
    out = decide(
        env.client, env.store, env.config, env.name, "2", Answer(APPROVE, "eve", "hotfix"),
        override=True,
    )  # fmt: skip
    assert out.override
    assert out.promotion is not None
    assert out.promotion.action == "promoted"
    assert current_alias(env.client, env.name, CHAMPION) == "2"
    decision = next(m for m in alias_history(env.store, env.name) if m.action != "moved")
    assert decision.action == "override_approved"
    assert decision.why.startswith("OVERRIDE (v2 was not held for approval")
    assert "hotfix" in decision.why
    tags = env.client.get_model_version(env.name, "2").tags
    assert tags["approval.status"] == "override_approved"


def test_a_held_canary_that_is_no_longer_the_canary_is_refused(held: Env) -> None:
    env = held
    env.client.delete_registered_model_alias(env.name, CANARY)
    with pytest.raises(RegistryError, match="v2 is not the canary"):
        decide(env.client, env.store, env.config, env.name, "2", Answer(APPROVE, "eve", "go"))


def _served_batch(env: Env, champion: str, canary: str) -> None:
    """A labelled flights batch whose stored predictions make the canary clearly better."""
    _, features, labels = flights_frames(SPEC, 3)
    features = features.head(3000).reset_index(drop=True)
    ingest_frame(env.store, SPEC, features, BATCH)
    labels = labels[labels["flight_id"].isin(features["flight_id"])].reset_index(drop=True)
    ids = labels["flight_id"].astype(str).tolist()
    y = labels["late"].to_numpy()
    rng = np.random.default_rng(0)
    informed = np.clip(np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.05, y.size), 0.01, 0.99)
    flat = np.clip(0.5 + rng.normal(0, 0.05, y.size), 0.01, 0.99)
    stamp = datetime.now(UTC).isoformat()
    serve_split(
        env,
        BATCH,
        ids,
        informed,
        flat,
        "control-test",
        champion=champion,
        canary=canary,
        scored_at=stamp,
    )
    ingest_labels(env.store, SPEC, labels, BATCH)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_server: Any) -> Env:
    """The command line's config (environment variables), approval required; its
    registry: v1 champion, v2 canary; a batch whose labels make v2 clearly better."""
    for name in list(os.environ):
        if name.startswith("COSINE_RETRAIN_"):
            monkeypatch.delenv(name)
    env = Env(mlflow_server.url, tmp_path)
    settings = {
        "HOME": str(tmp_path),
        "MLFLOW__TRACKING_URI": mlflow_server.url,
        "MLFLOW__MODEL_NAME": env.name,
        "CANARY__REQUIRE_APPROVAL": "true",
        "CANARY__MIN_ROWS": "300",
        "CANARY__SHADOW_BATCHES": "0",
    }
    for key, value in settings.items():
        monkeypatch.setenv(f"COSINE_RETRAIN_{key}", value)
    config = load_config(None)
    assert config.canary.require_approval
    env.store = LocalStore(config.home / "store")
    _canary_at(env, version="2", champion="1")
    _served_batch(env, "1", "2")
    return env


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refuses the command line
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_review_holds_as_the_dag_does_and_the_cli_answer_names_the_os_user(
    cli: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cli
    code, out, err = _run(capsys, "canary", "review", BATCH, "--json")
    assert code == 0, err
    review = json.loads(out)
    assert review["outcome"] == "success", review["reason"]
    assert current_alias(env.client, env.name, CHAMPION) == "1"  # held, not promoted
    assert env.client.get_model_version(env.name, "2").tags["approval.status"] == "pending"

    code, out, err = _run(capsys, "approval", "approve", "2", "--who", "mallory", "--reason", "x")
    assert code == 2  # free-text identities are gone
    assert "--who" in err
    code, out, err = _run(capsys, "approval", "approve", "2")
    assert code == 2
    assert "--reason" in err
    code, out, err = _run(capsys, "approval", "approve", "2", "--reason", "  ")
    assert code == 2
    assert "--reason must say why" in err

    code, out, err = _run(capsys, "approval", "approve", "2", "--reason", "read the card")
    assert code == 0, err
    user = pwd.getpwuid(os.getuid()).pw_name
    assert out.startswith(f"approved: v2 by {user} (command line) (read the card)")
    assert current_alias(env.client, env.name, CHAMPION) == "2"
    decision = next(m for m in alias_history(env.store, env.name) if m.action == "approved")
    assert decision.who == f"{user} (command line)"


def test_a_review_while_the_approval_waits_neither_holds_nor_asks_again(
    cli: Env,
    capsys: pytest.CaptureFixture[str],
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The approval waits in a run of its own (the ``approval`` DAG): later reviews go on,
    record their evidence, and return ``awaiting_approval`` instead of a second question."""
    env = cli
    monkeypatch.setenv("COSINE_RETRAIN_ALERTS__WEBHOOK_URL", receiver.url())
    code, out, err = _run(capsys, "canary", "review", BATCH)
    assert code == 0, err
    assert out.strip().endswith("-> held"), out
    held_at = env.client.get_model_version(env.name, "2").tags["canary.last_review"]
    alerts = len(receiver.bodies)
    code, out, err = _run(capsys, "canary", "review", BATCH)
    assert code == 0, err
    assert out.strip().endswith("-> awaiting_approval"), out
    tags = env.client.get_model_version(env.name, "2").tags
    assert tags["approval.status"] == "pending"  # still the one question, unanswered
    assert tags["canary.last_review"] != held_at  # the later review's evidence is recorded
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    assert current_alias(env.client, env.name, CANARY) == "2"
    assert len(receiver.bodies) == alerts  # no "needs a decision" alert either
    # answered, the next review judges afresh (approved: the canary is champion now)
    code, out, err = _run(capsys, "approval", "approve", "2", "--reason", "read the card")
    assert code == 0, err
    assert current_alias(env.client, env.name, CHAMPION) == "2"


def test_a_manual_promote_from_the_cli_is_an_override_in_the_audit_trail(
    cli: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cli
    code, out, err = _run(capsys, "approval", "approve", "2", "--reason", "looks fine")
    assert code == 2
    assert "not held for approval" in err
    assert "--override" in err
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    code, out, err = _run(capsys, "canary", "promote", "2", "--reason", "incident fix")
    assert code == 0, err
    assert "approved as an OVERRIDE: v2" in out
    assert current_alias(env.client, env.name, CHAMPION) == "2"
    actions = [m.action for m in alias_history(env.store, env.name)]
    assert "override_approved" in actions


# ------------------------------------------------------------ reject and timeout roll back


def _card(env: Env) -> str:
    return render_markdown(collect_card(env.client, env.store, env.name, "2", reason="test"))


def test_a_rejection_rolls_the_canary_back_with_its_reason(held: Env, receiver: Receiver) -> None:
    env = held
    sent = len(receiver.bodies)
    out = decide(
        env.client, env.store, env.config, env.name, "2",
        Answer(REJECT, "bob (Airflow user 8)", "wait for Q4"),
    )  # fmt: skip
    assert out.verdict == "rejected"
    assert out.promotion is not None
    assert out.promotion.action == "rejected"
    assert current_alias(env.client, env.name, CANARY) is None  # its traffic: the champion's
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    assert _moves(env)[-1] == (CANARY, "2", None)
    history = alias_history(env.store, env.name)
    decision = next(m for m in history if m.action == "approval_rejected")
    assert decision.who == "bob (Airflow user 8)"
    assert "wait for Q4" in decision.why
    removal = history[-1]
    assert (removal.alias, removal.to_version, removal.who) == (CANARY, None, decision.who)
    assert "wait for Q4" in removal.why
    tags = env.client.get_model_version(env.name, "2").tags
    assert tags["canary.status"] == "rejected"
    assert "wait for Q4" in tags["canary.reason"]
    card = _card(env)
    assert "wait for Q4" in card.split("## Alias history", 1)[1]
    assert len(receiver.bodies) == sent  # a person's no is no incident
    # the next review has no canary to ask about: no question every batch
    labels = pd.DataFrame({"flight_id": ["x"], "late": [1]})
    again = review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
    assert again.outcome == "no_canary"


def test_no_answer_in_time_rolls_the_canary_back_and_alerts(held: Env, receiver: Receiver) -> None:
    env = held
    sent = len(receiver.bodies)
    out = decide(env.client, env.store, env.config, env.name, "2", Answer(REJECT, None, ""))
    assert out.verdict == "timed_out"
    assert current_alias(env.client, env.name, CANARY) is None
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    decision = next(m for m in alias_history(env.store, env.name) if m.action != "moved")
    assert decision.action == "approval_timed_out"
    assert "no approval within 48 h: the canary is rolled back" in decision.why
    tags = env.client.get_model_version(env.name, "2").tags
    assert tags["canary.status"] == "rejected"
    assert "48 h" in tags["canary.reason"]
    assert "no approval within 48 h" in _card(env)
    (alert,) = receiver.bodies[sent:]
    assert (alert["kind"], alert["details"]["version"]) == ("approval_timed_out", "2")


def test_a_question_that_went_moot_times_out_without_a_second_alarm(
    held: Env, receiver: Receiver
) -> None:
    """Rolled back while the approval waits (a failed review, a guardrail): the answer,
    when it comes (here: none in time), is recorded and moves nothing, and no alert
    says a rollback happened twice."""
    env = held
    reject_canary(env.client, env.store, env.config, env.name, "2", why="guardrail: NaN")
    sent = len(receiver.bodies)
    out = decide(env.client, env.store, env.config, env.name, "2", Answer(REJECT, None, ""))
    assert out.verdict == "timed_out"
    assert out.promotion is not None
    assert out.promotion.action == "lost"
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    assert any(m.action == "approval_timed_out" for m in alias_history(env.store, env.name))
    assert receiver.bodies[sent:] == []


def test_the_approval_timeout_default_is_72_hours_and_configurable(tmp_path: Path) -> None:
    assert load_config(None, home=tmp_path).canary.approval_timeout_hours == 72.0
    config = load_config(None, home=tmp_path, canary={"approval_timeout_hours": 6})
    assert config.canary.approval_timeout_hours == 6.0


# ---------------------------------------------------------------------------- the horizon


def test_monthly_labels_reach_the_horizon_in_batches_not_hours(
    mlflow_server: Any, tmp_path: Path
) -> None:
    """Sequential: an undecided canary reviewed once a month (every review past 72 h)
    stays inconclusive until ``horizon_batches`` labelled batches, shadow included."""
    env = canary_env_at(
        mlflow_server.url, tmp_path, canary={"horizon_batches": 3, "shadow_batches": 1}
    )
    rng = np.random.default_rng(3)
    start = datetime.now(UTC)
    outcomes = []
    for month in (1, 2, 3):
        batch = f"2014-{month:02d}"
        n = 200 if month == 1 else 400  # a shadow too small to judge; arms undecided
        y = rng.integers(0, 2, n)
        p = np.clip(np.where(y == 1, 0.6, 0.4) + rng.normal(0, 0.2, n), 0.01, 0.99)
        ids = [f"{batch}-{i}" for i in range(n)]
        if month == 1:  # the shadow's batch: champion serves, the canary scores unserved
            frame = _served(ids, p, CHAMPION, "1")
            frame["shadow_score"] = np.clip(p + rng.normal(0, 0.05, n), 0.01, 0.99)
            frame["shadow_version"] = "2"
            key = f"predictions/flights/{batch}/champion-v1_shadow-v2/predictions.parquet"
            put_frame(env.store, key, frame)
        else:
            serve_split(env, batch, ids, p, p, "h")
        labels = pd.DataFrame({"flight_id": ids, "late": y, "batch_id": batch})
        now = start + timedelta(days=31 * month)  # a month later each time
        review = review_canary(env.client, env.store, env.config, SPEC, env.name, labels, now=now)
        assert review.canary_age_hours is not None
        assert review.canary_age_hours > 72
        assert review.batches == month  # the shadow's batch counts: time undecided
        outcomes.append(review.outcome)
    assert outcomes == ["inconclusive", "inconclusive", "needs_decision"]


# ------------------------------------------------------------- evidence bound to a champion


def _served_pair(env: Env, batch: str, champion: str, rng: np.random.Generator) -> Any:
    """A labelled batch served by canary v3 beside ``champion``, reviewed."""
    n = 600
    y = rng.integers(0, 2, n)
    p = np.clip(np.where(y == 1, 0.6, 0.4) + rng.normal(0, 0.2, n), 0.01, 0.99)
    ids = [f"{batch}-{i}" for i in range(n)]
    to_canary = serve_split(env, batch, ids, p, p, "bind", champion=champion, canary="3")
    labels = pd.DataFrame({"flight_id": ids, "late": y, "batch_id": batch})
    review = review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
    return review, int(to_canary.sum())


def test_a_champion_change_starts_a_new_comparison(mlflow_server: Any, tmp_path: Path) -> None:
    from pipeline.base.store import get_json
    from pipeline.steps.canary.shadow import evidence_key
    from pipeline.steps.registry.aliases import move_alias

    env = Env(mlflow_server.url, tmp_path)
    env.configure(canary={"shadow_batches": 0})
    _canary_at(env, version="3", champion="1")
    rng = np.random.default_rng(4)
    first, _ = _served_pair(env, "2014-01", "1", rng)
    assert (first.compared_with, first.batches) == ("1", 1)
    assert "evidence against champion v1" in first.describe()
    move_alias(env.client, env.store, env.name, CHAMPION, "2", why="another promotion")
    second, routed = _served_pair(env, "2014-02", "2", rng)
    assert second.compared_with == "2"
    assert second.batches == 1  # January's rows were measured against v1: not mixed in
    assert second.canary.rows == routed
    stored = get_json(env.store, evidence_key(env.name, "3"))
    assert (stored["champion"], sorted(stored["canary"])) == ("2", ["2014-02"])
    kept = f"reports/canary/{env.name}/v3/evidence-champion-v1.json"
    assert sorted(get_json(env.store, kept)["canary"]) == ["2014-01"]


# ------------------------------------------------------- aliases moved outside the pipeline


def test_an_alias_moved_outside_the_pipeline_is_recorded_and_alerted_once(
    mlflow_server: Any, tmp_path: Path, receiver: Receiver
) -> None:
    from pipeline.steps.registry.audit import check_aliases

    env = canary_env_at(mlflow_server.url, tmp_path, alerts={"webhook_url": receiver.url()})
    assert check_aliases(env.client, env.store, env.config, env.name) == []  # all ours
    sent = len(receiver.bodies)
    env.client.set_registered_model_alias(env.name, CHAMPION, "2")  # the MLflow UI, say
    env.client.delete_registered_model_alias(env.name, CANARY)
    found = check_aliases(env.client, env.store, env.config, env.name)
    assert sorted((m.alias, m.from_version, m.to_version) for m in found) == [
        (CANARY, "2", None),
        (CHAMPION, "1", "2"),
    ]
    assert {m.action for m in found} == {"moved_outside"}
    assert {m.who for m in found} == {"unknown (outside the pipeline)"}
    history = alias_history(env.store, env.name)
    assert [m.action for m in history[-2:]] == ["moved_outside", "moved_outside"]
    alerts = [b for b in receiver.bodies[sent:] if b["details"].get("model") == env.name]
    assert sorted(a["details"]["alias"] for a in alerts) == [CANARY, CHAMPION]
    assert {a["kind"] for a in alerts} == {"alias_moved_outside"}
    # recorded: the trail agrees again, nothing is reported twice (the move is adopted)
    assert check_aliases(env.client, env.store, env.config, env.name) == []
    card = _card(env)
    assert "moved_outside" in card.split("## Alias history", 1)[1]


def test_the_canary_review_checks_the_registry_against_the_audit_trail(
    cli: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    env = cli
    env.client.set_registered_model_alias(env.name, CHAMPION, "2")  # behind its back
    code, _, err = _run(capsys, "canary", "review", BATCH)
    assert code == 0, err
    last = [m for m in alias_history(env.store, env.name) if m.action == "moved_outside"]
    assert [(m.alias, m.from_version, m.to_version) for m in last] == [(CHAMPION, "1", "2")]
