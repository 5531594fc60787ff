"""A panel data set in the canary review: the same people scored in every batch.

Predictions meet labels on (batch, id), and the served rows are de-duplicated per
(batch, id): the evidence of each batch holds exactly its labelled (batch, id)
pairs, with the losses recomputed here from the raw rows (one shadow batch, then
two served ones, each labelled in part, reviewed together against a real MLflow).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.base.store import get_json, put_frame
from pipeline.steps.canary.review import review_canary
from pipeline.steps.canary.shadow import evidence_key
from pipeline.steps.registry.aliases import CANARY, CHAMPION
from tests.pipeline.sequential_reference import log_loss_rows
from tests.pipeline.steps.test_gate_and_canary import SPEC, Env, canary_env_at, route_to_canary

PEOPLE = np.array([f"p{i:04d}" for i in range(1200)])  # every batch: the same ids


def _frame(env: Env, batch: str, pair: str, rows: dict[str, Any], minutes: int) -> None:
    """A batch's stored predictions, as scoring writes them (with ``scored_at``)."""
    frame = pd.DataFrame({"flight_id": PEOPLE, **rows})
    at = datetime(2024, 1, 1, tzinfo=UTC) + pd.Timedelta(minutes=minutes)
    frame["scored_at"] = at.isoformat()
    put_frame(env.store, f"predictions/flights/{batch}/{pair}/predictions.parquet", frame)


def test_evidence_rows_are_the_labelled_batch_and_id_pairs(
    mlflow_server: Any, tmp_path: Path
) -> None:
    env = canary_env_at(mlflow_server.url, tmp_path, canary={"shadow_batches": 1, "min_rows": 100})
    rng = np.random.default_rng(3)
    to_canary = route_to_canary(PEOPLE, 0.5, "s")
    truth: dict[str, dict[str, Any]] = {}
    labels = []
    for i, batch in enumerate(("2024-01", "2024-02", "2024-03")):
        y = rng.integers(0, 2, PEOPLE.size)  # a person's label differs from batch to batch
        champion = np.clip(np.where(y == 1, 0.6, 0.4) + rng.normal(0, 0.2, y.size), 0.01, 0.99)
        other = np.clip(np.where(y == 1, 0.6, 0.4) + rng.normal(0, 0.2, y.size), 0.01, 0.99)
        if i == 0:  # the shadow batch: the champion serves all, the candidate scores all
            _frame(
                env,
                batch,
                "champion-v1_shadow-v2",
                {"score": champion, "model_version": "1", "alias": CHAMPION,
                 "shadow_score": other, "shadow_version": "2"},
                i,
            )  # fmt: skip
        else:
            served = np.where(to_canary, other, champion)
            _frame(
                env,
                batch,
                "champion-v1_canary-v2",
                {"score": served, "model_version": np.where(to_canary, "2", "1"),
                 "alias": np.where(to_canary, CANARY, CHAMPION)},
                i,
            )  # fmt: skip
        labelled = rng.random(PEOPLE.size) < 0.7  # labels for another 70 % in each batch
        labels.append(
            pd.DataFrame({"flight_id": PEOPLE[labelled], "late": y[labelled], "batch_id": batch})
        )
        truth[batch] = {"y": y, "champion": champion, "other": other, "labelled": labelled}
    review_canary(
        env.client, env.store, env.config, SPEC, env.name, pd.concat(labels, ignore_index=True)
    )
    stored = get_json(env.store, evidence_key(env.name, "2"))

    def expect(values: np.ndarray, got: dict[str, float]) -> None:
        assert got["n"] == values.size
        assert got["total"] == pytest.approx(values.sum(), rel=1e-9)

    t = truth["2024-01"]
    rows = t["labelled"]
    expect(
        log_loss_rows(t["y"][rows], t["other"][rows])
        - log_loss_rows(t["y"][rows], t["champion"][rows]),
        stored["shadow"]["2024-01"],
    )
    assert sorted(stored["canary"]) == ["2024-02", "2024-03"]
    for batch in ("2024-02", "2024-03"):
        t = truth[batch]
        arm_c = t["labelled"] & to_canary
        arm_h = t["labelled"] & ~to_canary
        expect(log_loss_rows(t["y"][arm_c], t["other"][arm_c]), stored["canary"][batch]["canary"])
        expect(
            log_loss_rows(t["y"][arm_h], t["champion"][arm_h]), stored["canary"][batch]["champion"]
        )


def test_labels_without_their_batch_are_refused(mlflow_server: Any, tmp_path: Path) -> None:
    from pipeline.steps.registry.aliases import RegistryError

    env = canary_env_at(mlflow_server.url, tmp_path)
    labels = pd.DataFrame({"flight_id": PEOPLE[:10], "late": 0})
    with pytest.raises(RegistryError, match=r"\['batch_id'\] \(rows are \(batch, id\)\)"):
        review_canary(env.client, env.store, env.config, SPEC, env.name, labels)
