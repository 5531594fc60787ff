"""The promotion path against a real MLflow server: gate, canary scoring, review,
promotion, rollback. Run ``a`` becomes the first champion; run ``b`` is gated,
served as canary, judged and promoted or rolled back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pipeline.base.config import load_config
from pipeline.base.store import LocalStore, get_json, put_frame
from pipeline.base.tracking import build_client
from pipeline.steps.canary.review import apply_review, review_canary
from pipeline.steps.canary.routing import route_to_canary, score_batch
from pipeline.steps.promotion.actions import promote, reject_canary, rollback_champion
from pipeline.steps.promotion.gate import GateFailed, evaluate_gate, gate_version
from pipeline.steps.registry.aliases import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    RegistryError,
    alias_history,
    current_alias,
)
from pipeline.steps.registry.holdout import training_holdout
from pipeline.steps.registry.registration import register_training_run
from tests.pipeline.base.test_alerts import Receiver
from tests.pipeline.steps.test_registration import as_text_categories
from training.data import flights
from training.data.spec import load_spec

SPEC = load_spec("configs/datasets/flights.yaml")
# the tiny runs (4,000 rows, 100 steps) reach AUC ~0.63, and 0.45-0.66 per origin
PERMISSIVE = {"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 150, "max_auc_drop": 0.05}


class Env:
    def __init__(self, url: str, home: Path, **gate: Any) -> None:
        self.url = url
        self.home = home
        self.name = f"m_{uuid.uuid4().hex[:8]}"
        self.store = LocalStore(home / "store")
        self.configure(**gate)

    def configure(
        self,
        alerts: dict[str, Any] | None = None,
        canary: dict[str, Any] | None = None,
        **gate: Any,
    ) -> None:
        self.config = load_config(
            None,
            home=self.home,
            mlflow={"tracking_uri": self.url, "model_name": self.name},
            gate={**PERMISSIVE, **gate},
            canary={"min_rows": 300, **(canary or {})},
            alerts=alerts or {},
        )
        self.client = build_client(self.config)


@pytest.fixture(scope="module")
def holdout(mlflow_server: Any, trained_runs: Any) -> pd.DataFrame:
    client = build_client(load_config(None, mlflow={"tracking_uri": mlflow_server.url}))
    return training_holdout(client, trained_runs["b"].run_id, SPEC)


@pytest.fixture(scope="module")
def promoted(  # type: ignore[no-untyped-def]
    mlflow_server: Any, trained_runs: Any, holdout: pd.DataFrame, tmp_path_factory: Any
):
    """a -> champion (first model), b -> canary."""
    env = Env(mlflow_server.url, tmp_path_factory.mktemp("home"))
    reg_a = register_training_run(
        env.client, env.store, SPEC, trained_runs["a"].run_id, name=env.name
    )
    first = gate_version(env.client, env.store, env.config, SPEC, env.name, holdout)
    reg_b = register_training_run(
        env.client, env.store, SPEC, trained_runs["b"].run_id, name=env.name
    )
    second = gate_version(env.client, env.store, env.config, SPEC, env.name, holdout)
    return env, reg_a, reg_b, first, second


def test_the_first_model_passes_on_absolute_slos_and_becomes_champion(promoted: Any) -> None:
    env, reg_a, _, first, _ = promoted
    assert first.passed
    assert first.first_model
    assert first.champion_version is None
    assert first.version == reg_a.challenger.version
    drop = next(c for c in first.checks if c.name == "auc_drop_vs_champion")
    assert "first model" in drop.detail
    tags = env.client.get_model_version(env.name, first.version).tags
    assert tags["gate.status"] == "passed"
    assert tags["gate.first_model"] == "true"
    assert tags["canary.status"] == "skipped_first_model"
    history = [(m.alias, m.to_version) for m in alias_history(env.store, env.name)]
    assert (CHAMPION, first.version) in history
    assert (
        "first model"
        in env.client.get_model_version(env.name, first.version).tags["alias.champion.why"]
    )


def test_the_gate_scores_the_champion_now_on_the_same_holdout(
    promoted: Any, holdout: pd.DataFrame
) -> None:
    env, _reg_a, _reg_b, first, second = promoted
    assert second.passed, second.describe()
    assert second.champion_version == first.version
    mlflow.set_tracking_uri(env.url)
    y = holdout[SPEC.target]

    def auc(version: str) -> float:
        model = mlflow.pyfunc.load_model(f"models:/{env.name}/{version}")
        cols = model.metadata.get_input_schema().input_names()
        return roc_auc_score(y, model.predict(as_text_categories(holdout[cols]))["probability"])

    checks = {c.name: c for c in second.checks}
    expected_drop = auc(first.version) - auc(second.version)
    assert checks["auc_drop_vs_champion"].value == pytest.approx(expected_drop, abs=1e-9)
    assert checks["auc"].value == pytest.approx(auc(second.version), abs=1e-9)
    # per slice: every origin has >= 150 rows in the holdout and is judged on its own rows
    for origin in ("EWR", "JFK", "LGA"):
        rows = holdout[SPEC.slices[0]] == origin
        assert rows.sum() >= 150
        model = mlflow.pyfunc.load_model(f"models:/{env.name}/{second.version}")
        cols = model.metadata.get_input_schema().input_names()
        p = model.predict(as_text_categories(holdout.loc[rows, cols]))["probability"]
        assert checks[f"auc[origin={origin}]"].value == pytest.approx(
            roc_auc_score(y[rows], p), abs=1e-9
        )
    assert checks["p95_latency_ms"].value > 0
    assert checks["nan_count"].value == 0
    assert any(c.name == "small_slices" and "carrier=" in c.detail for c in second.checks)


def test_a_passing_challenger_becomes_canary_and_the_champion_stays(promoted: Any) -> None:
    env, _, _, first, second = promoted
    assert current_alias(env.client, env.name, CHAMPION) == first.version
    assert current_alias(env.client, env.name, CANARY) == second.version
    assert current_alias(env.client, env.name, CHALLENGER) is None
    report = get_json(
        env.store,
        env.client.get_model_version(env.name, second.version)
        .tags["gate.report"]
        .split("/store/", 1)[1],
    )
    assert report["passed"] is True
    assert {c["name"] for c in report["checks"]} >= {"auc", "nan_count", "p95_latency_ms"}


def test_a_failing_challenger_moves_nothing_and_is_tagged_with_its_reasons(
    mlflow_server: Any, trained_runs: Any, holdout: pd.DataFrame, tmp_path: Path
) -> None:
    env = Env(mlflow_server.url, tmp_path)
    register_training_run(env.client, env.store, SPEC, trained_runs["a"].run_id, name=env.name)
    gate_version(env.client, env.store, env.config, SPEC, env.name, holdout)  # champion
    reg = register_training_run(
        env.client, env.store, SPEC, trained_runs["b"].run_id, name=env.name
    )
    receiver = Receiver()
    env.configure(alerts={"webhook_url": receiver.url()}, min_auc=0.99, max_p95_latency_ms=0.001)
    before = [(m.alias, m.to_version) for m in alias_history(env.store, env.name)]
    with pytest.raises(GateFailed) as failed:
        gate_version(env.client, env.store, env.config, SPEC, env.name, holdout)
    result = failed.value.result
    assert not result.passed
    assert {c.name for c in result.failures} == {"auc", "p95_latency_ms"}
    assert "FAIL auc" in str(failed.value)
    tags = env.client.get_model_version(env.name, reg.challenger.version).tags
    assert tags["gate.status"] == "failed"
    assert "auc" in tags["gate.reasons"]
    assert "p95_latency_ms" in tags["gate.reasons"]
    assert current_alias(env.client, env.name, CANARY) is None
    assert current_alias(env.client, env.name, CHALLENGER) == reg.challenger.version
    assert [(m.alias, m.to_version) for m in alias_history(env.store, env.name)] == before
    # one gate_failed alert reached the (real, local) webhook with every failed check
    receiver.stop()
    assert len(receiver.bodies) == 1
    alert = receiver.bodies[0]
    assert alert["kind"] == "gate_failed"
    assert alert["run_key"] == f"{env.name}-v{reg.challenger.version}"
    assert alert["details"]["version"] == reg.challenger.version
    assert [c.split(":")[0] for c in alert["details"]["checks"]] == [
        "FAIL auc",
        "FAIL p95_latency_ms",
    ]
    # a failed version can never be made champion, whoever asks
    env.client.set_registered_model_alias(env.name, CANARY, reg.challenger.version)
    with pytest.raises(RegistryError, match="only a version that passed its gate"):
        promote(env.client, env.store, env.config, env.name, reg.challenger.version, why="force")
    assert current_alias(env.client, env.name, CHAMPION) != reg.challenger.version


def test_routing_is_a_stable_hash_of_the_row_id() -> None:
    ids = [f"id-{i}" for i in range(20_000)]
    mask = route_to_canary(ids, 0.2, "salt")
    assert abs(mask.mean() - 0.2) < 0.01
    assert np.array_equal(route_to_canary(ids[::-1], 0.2, "salt")[::-1], mask)  # order-free
    assert not np.array_equal(route_to_canary(ids, 0.2, "pepper"), mask)
    wider = route_to_canary(ids, 0.5, "salt")
    assert (wider | ~mask).all()  # raising the share only adds rows
    digest = hashlib.blake2b(b"salt\x00id-7", digest_size=8).digest()
    assert mask[7] == (int.from_bytes(digest, "big") / 2**64 < 0.2)


def test_scoring_shadows_first_then_routes_rows_and_records_the_version(promoted: Any) -> None:
    """After its gate the canary first scores whole batches unserved (shadow), beside the
    champion's scores, until the labels of its shadow rows reach the review's minimum;
    from the next batch it serves its share."""
    env, _, _, first, second = promoted
    features, labels = flights.load_months([3])
    mlflow.set_tracking_uri(env.url)

    def direct(version: str, rows: pd.DataFrame) -> np.ndarray:
        model = mlflow.pyfunc.load_model(f"models:/{env.name}/{version}")
        cols = model.metadata.get_input_schema().input_names()
        return model.predict(as_text_categories(rows[cols]))["probability"].to_numpy()

    shadowed = features.sample(2000, random_state=1).reset_index(drop=True)
    summary = score_batch(env.client, env.store, env.config, SPEC, env.name, "2013-02", shadowed)
    assert (summary.shadow_rows, summary.canary_rows) == (2000, 0)
    assert summary.key.endswith(
        f"champion-v{first.version}_shadow-v{second.version}/predictions.parquet"
    )
    preds = pd.read_parquet(env.store.root / summary.key)
    assert (preds["alias"] == CHAMPION).all()  # the champion serves every row
    assert np.allclose(preds["score"].to_numpy(), direct(first.version, shadowed))
    assert np.allclose(preds["shadow_score"].to_numpy(), direct(second.version, shadowed))
    assert set(preds["shadow_version"]) == {second.version}
    again = score_batch(env.client, env.store, env.config, SPEC, env.name, "2013-02", shadowed)
    assert again.reused
    assert again.shadow_rows == 2000

    # labels land a batch late: with no paired labels yet, the next batch is shadow too
    waiting = features.sample(1000, random_state=2).reset_index(drop=True)
    held = score_batch(env.client, env.store, env.config, SPEC, env.name, "2013-02b", waiting)
    assert (held.shadow_rows, held.canary_rows) == (1000, 0)
    # the shadow's labels: 2,000 paired rows, over the review's 300; the canary serves next
    paired = labels[labels["flight_id"].isin(shadowed["flight_id"])].assign(batch_id="2013-02")
    review = review_canary(env.client, env.store, env.config, SPEC, env.name, paired)
    assert review.shadow_rows == 2000 >= env.config.canary.min_rows

    batch = features.sample(3000, random_state=0).reset_index(drop=True)
    summary = score_batch(env.client, env.store, env.config, SPEC, env.name, "2013-03", batch)
    assert summary.shadow_rows == 0
    assert summary.champion_version == first.version
    assert summary.canary_version == second.version
    assert not summary.reused
    preds = pd.read_parquet(env.store.root / summary.key)
    expected = route_to_canary(batch["flight_id"].tolist(), 0.2, "canary-v1")
    assert ((preds["alias"] == CANARY).to_numpy() == expected).all()
    assert set(preds.loc[preds["alias"] == CANARY, "model_version"]) == {second.version}
    assert set(preds.loc[preds["alias"] == CHAMPION, "model_version"]) == {first.version}
    canary_scores = direct(second.version, batch.loc[expected])
    assert np.allclose(preds.loc[expected, "score"].to_numpy(), canary_scores)
    again = score_batch(env.client, env.store, env.config, SPEC, env.name, "2013-03", batch)
    assert again.reused
    assert again.canary_rows == summary.canary_rows


def _fake_served(env: Env, batch: str, champion: str, canary: str, rows: pd.DataFrame) -> None:
    key = f"predictions/flights/{batch}/champion-v{champion}_canary-v{canary}/predictions.parquet"
    put_frame(env.store, key, rows)


def _served(ids: list[str], probs: np.ndarray, alias: str, version: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"flight_id": ids, "score": probs, "model_version": version, "alias": alias}
    )


def serve_split(
    env: Env,
    batch: str,
    ids: list[str],
    canary_p: np.ndarray,
    champion_p: np.ndarray,
    salt: str,
    *,
    champion: str = "1",
    canary: str = "2",
    scored_at: str | None = None,
) -> np.ndarray:
    """Store ``batch``'s served predictions as scoring writes them: the rows that
    ``route_to_canary(ids, 0.5, salt)`` sends to the canary scored ``canary_p`` by version
    ``canary``, the others ``champion_p`` by ``champion``. Returns the routing mask."""
    to_canary = route_to_canary(ids, 0.5, salt)
    routed = np.array(ids)
    served = pd.concat(
        [
            _served(list(routed[to_canary]), canary_p[to_canary], CANARY, canary),
            _served(list(routed[~to_canary]), champion_p[~to_canary], CHAMPION, champion),
        ]
    )
    if scored_at is not None:
        served["scored_at"] = scored_at
    _fake_served(env, batch, champion, canary, served)
    return to_canary


def _welch_non_inferiority(loss_c: np.ndarray, loss_h: np.ndarray, margin: float) -> str:
    """Independent reference: two one-sided Welch t-tests at 2.5 % each."""
    better = stats.ttest_ind(loss_c - margin, loss_h, equal_var=False, alternative="less")
    worse = stats.ttest_ind(loss_c - margin, loss_h, equal_var=False, alternative="greater")
    if better.pvalue < 0.025:
        return "success"
    if worse.pvalue < 0.025:
        return "failure"
    return "inconclusive"


def _loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@pytest.mark.parametrize(
    ("canary_quality", "expected"),
    [("same", "success"), ("miscalibrated", "failure"), ("slightly_worse", "inconclusive")],
)
def test_review_outcomes_match_welch_tests(
    mlflow_server: Any, tmp_path: Path, canary_quality: str, expected: str
) -> None:
    """``canary.test: fixed`` (today's test) decides as two one-sided Welch tests."""
    env = Env(mlflow_server.url, tmp_path)
    env.configure(canary={"test": "fixed"})
    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 2, n)
    good = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.05, n), 0.01, 0.99)
    canary_p = {
        "same": good,
        "miscalibrated": np.clip(1 - good + rng.normal(0, 0.05, n), 0.01, 0.99),
        "slightly_worse": np.clip(good + rng.normal(0, 0.12, n), 0.01, 0.99),
    }[canary_quality]
    ids = [f"r{i}" for i in range(n)]
    to_canary = serve_split(env, "2013-05", ids, canary_p, good, "x")
    _canary_at(env, version="2", champion="1")
    labels = pd.DataFrame({"flight_id": ids, "late": y, "batch_id": "2013-05"})
    review = review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
    reference = _welch_non_inferiority(
        _loss(y[to_canary], canary_p[to_canary]), _loss(y[~to_canary], good[~to_canary]), 0.005
    )
    assert reference == expected, "precondition: the synthetic case is what it claims"
    assert review.outcome == expected, review.describe()
    assert review.canary.rows == int(to_canary.sum())
    assert review.champion.rows == n - int(to_canary.sum())


def _canary_at(env: Env, *, version: str, champion: str) -> None:
    """Two registered versions that passed their gate: champion and canary."""
    from mlflow.exceptions import MlflowException

    from pipeline.steps.registry.aliases import move_alias

    with contextlib.suppress(MlflowException):
        env.client.create_registered_model(env.name)
    while len(env.client.search_model_versions(f"name='{env.name}'")) < int(version):
        env.client.create_model_version(
            env.name, "s3://nowhere/model", tags={"gate.status": "passed"}
        )
    move_alias(env.client, env.store, env.name, CHAMPION, champion, why="test setup")
    move_alias(env.client, env.store, env.name, CANARY, version, why="test setup")


def canary_env_at(url: str, home: Path, **settings: Any) -> Env:
    """An :class:`Env` (``settings`` as :meth:`Env.configure` takes them) whose registry
    holds v1 as champion and v2 as canary."""
    env = Env(url, home, **settings)
    _canary_at(env, version="2", champion="1")
    return env


@pytest.fixture
def canary_env(mlflow_server: Any, tmp_path: Path) -> Env:
    """v1 champion, v2 canary."""
    return canary_env_at(mlflow_server.url, tmp_path)


def test_too_few_labels_is_inconclusive_then_a_person_decides(canary_env: Env) -> None:
    env = canary_env
    ids = [f"r{i}" for i in range(100)]
    served = pd.concat(
        [
            _served(ids[:50], np.full(50, 0.3), CANARY, "2"),
            _served(ids[50:], np.full(50, 0.3), CHAMPION, "1"),
        ]
    )
    _fake_served(env, "2013-06", "1", "2", served)
    labels = pd.DataFrame({"flight_id": ids, "late": [0, 1] * 50, "batch_id": "2013-06"})
    review = review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
    assert review.outcome == "inconclusive"
    assert "too few labelled rows (canary 50, champion 50" in review.reason
    later = datetime.now(UTC) + timedelta(hours=73)
    late = review_canary(env.client, env.store, env.config, SPEC, env.name, labels, now=later)
    # sequential (the default): batches are the clock, not hours (monthly labels would
    # make every second review a person's question); one batch of 12 is no horizon
    assert late.outcome == "inconclusive", late.reason
    env.configure(canary={"test": "fixed"})  # the fixed test keeps max_wait_hours (72 h)
    late = review_canary(env.client, env.store, env.config, SPEC, env.name, labels, now=later)
    assert late.outcome == "needs_decision"
    assert "the canary has waited 73 h (limit 72 h): a person decides" in late.reason
    kept = apply_review(env.client, env.store, env.config, late)
    assert kept.action == "kept"
    assert current_alias(env.client, env.name, CANARY) == "2"
    tags = env.client.get_model_version(env.name, "2").tags
    assert tags["canary.last_outcome"] == "needs_decision"


def test_success_promotes_and_keeps_the_previous_champion_then_rollback(canary_env: Env) -> None:
    env = canary_env
    result = promote(env.client, env.store, env.config, env.name, "2", why="canary non-inferior")
    assert result.action == "promoted"
    assert current_alias(env.client, env.name, CHAMPION) == "2"
    assert current_alias(env.client, env.name, PREVIOUS) == "1"
    assert current_alias(env.client, env.name, CANARY) is None
    assert env.client.get_model_version(env.name, "2").tags["canary.status"] == "promoted"
    again = promote(env.client, env.store, env.config, env.name, "2", why="retried task")
    assert again.action == "lost"  # nothing moves twice
    back = rollback_champion(env.client, env.store, env.config, env.name, why="bad week")
    assert back.action == "rolled_back"
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    assert current_alias(env.client, env.name, PREVIOUS) is None
    assert env.client.get_model_version(env.name, "2").tags["champion.status"] == "rolled_back"
    moves = [(m.alias, m.from_version, m.to_version) for m in alias_history(env.store, env.name)]
    assert moves[-5:] == [
        (PREVIOUS, None, "1"),
        (CHAMPION, "1", "2"),
        (CANARY, "2", None),
        (CHAMPION, "2", "1"),
        (PREVIOUS, "1", None),
    ]
    with pytest.raises(RegistryError, match="no previous_champion"):
        rollback_champion(env.client, env.store, env.config, env.name, why="again")


def test_failure_rolls_the_canary_back_and_tags_it_rejected(canary_env: Env) -> None:
    env = canary_env
    result = reject_canary(env.client, env.store, env.config, env.name, "2", why="worse by 0.1")
    assert result.action == "rejected"
    assert current_alias(env.client, env.name, CANARY) is None
    assert current_alias(env.client, env.name, CHAMPION) == "1"
    tags = env.client.get_model_version(env.name, "2").tags
    assert tags["canary.status"] == "rejected"
    assert tags["canary.reason"] == "worse by 0.1"
    env.client.set_registered_model_alias(env.name, CANARY, "2")  # someone re-points it by hand
    with pytest.raises(RegistryError, match="failed its canary"):
        promote(env.client, env.store, env.config, env.name, "2", why="force")
    assert current_alias(env.client, env.name, CHAMPION) == "1"


def test_evaluate_gate_refuses_a_holdout_without_labels(
    promoted: Any, holdout: pd.DataFrame
) -> None:
    env, _, _, first, _ = promoted
    with pytest.raises(RegistryError, match="no target column 'late'"):
        evaluate_gate(
            env.client, env.config, SPEC, env.name, first.version, holdout.drop(columns="late")
        )
    with pytest.raises(RegistryError, match="holdout is empty"):
        evaluate_gate(env.client, env.config, SPEC, env.name, first.version, holdout.head(0))
    assert json.dumps(first.to_dict())  # the report is plain JSON
