"""What scoring a batch leaves, whichever engine scored it: the routing of a row,
the summary, the predictions' name, the guardrails' record on the canary version.
(:mod:`pipeline.steps.canary.routing` scores pandas frames,
:mod:`pipeline.steps.canary.spark_routing` Spark's.)"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.base.records import Stored
from pipeline.base.store import ObjectStore
from pipeline.steps.canary.guardrails import GuardrailReport, store_report

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient

__all__ = [
    "ScoringSummary",
    "canary_failure",
    "record_guardrails",
    "route_to_canary",
    "scoring_name",
]


def route_to_canary(ids: Any, share: float, salt: str) -> np.ndarray:
    """Boolean mask: True where a row id is served by the canary."""
    import numpy as np

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"canary share must be in [0, 1], got {share}")
    cut = int(share * 2**64)
    prefix = salt.encode() + b"\x00"
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "big")
            < cut
            for i in ids
        ),
        dtype=bool,
        count=len(ids),
    )


@dataclass(frozen=True)
class ScoringSummary(Stored):
    """Who scored the batch: the champion, and the canary for its share of the rows
    (or, in its shadow phase, for every row, unserved)."""

    dataset: str
    batch_id: str
    rows: int
    champion_version: str | None
    canary_version: str | None
    canary_rows: int
    key: str | None
    reused: bool
    shadow_rows: int = 0  # rows the canary scored unserved (its shadow phase)
    # the canary was rolled back before labels (could not score, or a guardrail): why
    rolled_back: str | None = None

    def describe(self) -> str:
        if self.champion_version is None:
            return f"{self.batch_id}: no champion yet, nothing scored"
        canary = (
            f", canary v{self.canary_version} scored {self.canary_rows}"
            if self.canary_version
            else ""
        )
        if self.shadow_rows:
            canary = f", v{self.canary_version} scored all {self.shadow_rows} in shadow (unserved)"
        again = " (already scored: reused)" if self.reused else ""
        if self.rolled_back:
            again += f"; canary rolled back: {self.rolled_back}"
        return (
            f"{self.batch_id}: {self.rows} rows, champion v{self.champion_version}{canary}{again}"
        )


def scoring_name(champion: str, canary: str | None) -> str:
    return f"champion-v{champion}" + (f"_canary-v{canary}" if canary else "")


def canary_failure(canary: str, exc: BaseException) -> str:
    """Why a canary that could not load or score is rolled back (its reason first)."""
    from pipeline.steps.registry.scoring import describe_serving_error

    text = describe_serving_error(exc).splitlines()[0][:500]
    return f"canary v{canary} could not load or score: {type(exc).__name__}: {text}"


def record_guardrails(
    client: MlflowClient, store: ObjectStore, report: GuardrailReport
) -> str | None:
    """Store the batch's guardrails on the canary version: the breach's reason, or None
    when every guardrail held."""
    key = store_report(store, report)
    version = report.canary_version
    client.set_model_version_tag(report.model, version, "guardrails.last", store.uri(key))
    client.set_model_version_tag(report.model, version, "guardrails.status", report.describe())
    return None if report.passed else report.reason()
