"""The sequential canary review and the shadow against a real MLflow server: evidence
accumulates across batches (once per batch, however often a batch is reviewed), the
decision matches an independent computation of the confidence sequences from the raw
rows, and the shadow's paired evidence rolls a worse candidate back before it serves
or lets an equal one through."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.base.store import get_json, put_frame
from pipeline.steps.canary.review import apply_review, review_canary
from pipeline.steps.canary.shadow import evidence_key, in_shadow
from pipeline.steps.promotion.rules import canary_rules
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias
from tests.pipeline.sequential_reference import cs_radius, log_loss_rows
from tests.pipeline.steps.test_gate_and_canary import (
    SPEC,
    Env,
    _served,
    canary_env_at,
    serve_split,
)

MARGIN = 0.02


def _batch(rng: np.random.Generator, n: int, canary_noise: float) -> tuple[Any, ...]:
    y = rng.integers(0, 2, n)
    base = np.where(y == 1, 0.65, 0.35)
    champion = np.clip(base + rng.normal(0, 0.15, n), 0.01, 0.99)
    canary = np.clip(base + rng.normal(0, canary_noise, n), 0.01, 0.99)
    return y, champion, canary


def test_the_review_accumulates_batches_once_each_and_decides_like_the_reference(
    mlflow_server: Any, tmp_path: Path
) -> None:
    env = canary_env_at(mlflow_server.url, tmp_path, canary={"margin": MARGIN, "shadow_batches": 0})
    rules = canary_rules(env.config, SPEC)
    alpha = 1 - rules.confidence  # no shadow: the split CS spends all of alpha
    rng = np.random.default_rng(5)
    all_c: list[np.ndarray] = []
    all_h: list[np.ndarray] = []
    outcomes, expected = [], []
    for month in range(1, 7):
        batch = f"2014-{month:02d}"
        y, champion, canary = _batch(rng, 1600, canary_noise=0.12)
        ids = [f"{batch}-{i}" for i in range(y.size)]
        stamp = datetime.now(UTC).isoformat()
        to_canary = serve_split(env, batch, ids, canary, champion, "s", scored_at=stamp)
        labels = pd.DataFrame({"flight_id": ids, "late": y, "batch_id": batch})
        review = review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
        all_c.append(log_loss_rows(y[to_canary], canary[to_canary]))
        all_h.append(log_loss_rows(y[~to_canary], champion[~to_canary]))
        lc, lh = np.concatenate(all_c), np.concatenate(all_h)
        assert review.canary.rows == lc.size  # the evidence of every batch so far
        assert review.batches == month
        d = lc.mean() - lh.mean()
        r = cs_radius(lc, alpha / 2, 4 * 300) + cs_radius(lh, alpha / 2, 4 * 300)
        assert review.interval[0] == pytest_approx(d - r)
        assert review.interval[1] == pytest_approx(d + r)
        expected.append(
            "success" if d + r < MARGIN else "failure" if d - r > MARGIN else "inconclusive"
        )
        outcomes.append(review.outcome)
        if review.outcome == "success":
            # reviewing a batch again replaces its own evidence: the totals do not move
            again = review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
            assert again.canary.rows == lc.size
            assert again.interval == review.interval
            break
    assert outcomes == expected
    assert outcomes[0] == "inconclusive"  # one batch is not enough for this effect...
    assert outcomes[-1] == "success"  # ...a few months are
    stored = get_json(env.store, evidence_key(env.name, "2"))
    assert sorted(stored["canary"]) == [f"2014-{m:02d}" for m in range(1, len(outcomes) + 1)]
    assert sum(b["canary"]["n"] for b in stored["canary"].values()) == sum(a.size for a in all_c)


def pytest_approx(x: float) -> Any:
    import pytest

    return pytest.approx(x, rel=1e-9, abs=1e-12)


def _fake_shadow(env: Env, batch: str, ids: list[str], champion: Any, shadow: Any) -> None:
    frame = _served(ids, champion, CHAMPION, "1")
    frame["scored_at"] = datetime.now(UTC).isoformat()
    frame["shadow_score"] = shadow
    frame["shadow_version"] = "2"
    key = f"predictions/flights/{batch}/champion-v1_shadow-v2/predictions.parquet"
    put_frame(env.store, key, frame)


def _review_shadow(env: Env, rng: np.random.Generator, noise: float) -> tuple[Any, ...]:
    """A batch of 3,000 shadow rows whose candidate scores are the champion's plus
    ``noise``, reviewed: ``(y, champion, shadow, review)``."""
    y, champion, _ = _batch(rng, 3000, 0.12)
    shadow = np.clip(champion + rng.normal(0, noise, y.size), 0.01, 0.99)
    ids = [f"s{i}" for i in range(y.size)]
    _fake_shadow(env, "2014-01", ids, champion, shadow)
    labels = pd.DataFrame({"flight_id": ids, "late": y, "batch_id": "2014-01"})
    review = review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
    return y, champion, shadow, review


def _review_served(env: Env, rng: np.random.Generator, batch: str, prefix: str) -> Any:
    """A batch of 1,000 rows split between canary v2 and champion v1, reviewed."""
    y, champion, canary = _batch(rng, 1000, 0.15)
    ids = [f"{prefix}{i}" for i in range(y.size)]
    serve_split(env, batch, ids, canary, champion, "s")
    labels = pd.DataFrame({"flight_id": ids, "late": y, "batch_id": batch})
    return review_canary(env.client, env.store, env.config, SPEC, env.name, labels)


def test_a_worse_challenger_is_rolled_back_from_its_shadow(
    mlflow_server: Any, tmp_path: Path
) -> None:
    env = canary_env_at(mlflow_server.url, tmp_path)
    y, champion, worse, review = _review_shadow(env, np.random.default_rng(8), 0.2)
    d = log_loss_rows(y, worse) - log_loss_rows(y, champion)
    r = cs_radius(d, 0.025, round(4 * 300 / 0.2))  # alpha / 2 each: shadow and canary
    assert d.mean() - r > 0.005, "precondition: the paired CS shows it worse"
    assert review.outcome == "failure", review.describe()
    assert "in shadow" in review.reason
    assert review.shadow_rows == y.size
    assert review.shadow_interval[0] == pytest_approx(d.mean() - r)
    assert review.canary.rows == 0  # it never served
    tags = env.client.get_model_version(env.name, "2").tags  # what its model card shows
    assert tags["shadow.verdict"] == "inferior"
    assert tags["shadow.rows"] == str(y.size)
    assert tags["shadow.interval"] == f"[{d.mean() - r:+.5f}, {d.mean() + r:+.5f}]"
    action = apply_review(env.client, env.store, env.config, review)
    assert action.action == "rejected"
    assert current_alias(env.client, env.name, CANARY) is None
    assert current_alias(env.client, env.name, CHAMPION) == "1"


def test_an_equal_challenger_leaves_its_shadow_early_and_is_promoted_with_that_evidence(
    mlflow_server: Any, tmp_path: Path
) -> None:
    env = canary_env_at(mlflow_server.url, tmp_path, canary={"shadow_batches": 3})
    rules = canary_rules(env.config, SPEC, [3000])
    assert in_shadow(env.store, rules, SPEC.name, env.name, "2")  # before any evidence
    rng = np.random.default_rng(9)
    _, _, _, review = _review_shadow(env, rng, 0.005)
    assert review.outcome == "inconclusive", review.describe()
    assert "non-inferior in shadow" in review.reason
    assert review.shadow_interval[1] < 0.005
    # one batch of 3: the paired evidence ends the shadow; the canary now serves
    assert not in_shadow(env.store, rules, SPEC.name, env.name, "2")
    # its own served rows: enough of them, and no sign of inferiority -> promoted
    final = _review_served(env, rng, "2014-02", "c")
    assert final.interval[0] <= 0.005 <= final.interval[1], "precondition: split undecided"
    assert final.outcome == "success", final.describe()
    assert "non-inferior in shadow (paired)" in final.reason
    assert final.shadow_rows == 3000
    assert apply_review(env.client, env.store, env.config, final).action == "promoted"
    assert current_alias(env.client, env.name, CHAMPION) == "2"


def test_an_undecided_canary_reaches_its_horizon_and_a_person_decides(
    mlflow_server: Any, tmp_path: Path
) -> None:
    env = canary_env_at(
        mlflow_server.url, tmp_path, canary={"shadow_batches": 0, "horizon_batches": 2}
    )
    rng = np.random.default_rng(10)
    outcomes = []
    for month in (1, 2):
        batch = f"2014-{month:02d}"
        outcomes.append(_review_served(env, rng, batch, f"{batch}-"))
    assert [r.outcome for r in outcomes] == ["inconclusive", "needs_decision"]
    assert "undecided after 2 labelled batches (horizon 2)" in outcomes[1].reason
