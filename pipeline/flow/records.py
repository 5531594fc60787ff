"""The records the flow composes (a plan, a window, a decision...), between its steps
and, as JSON, between DAG tasks.

Where a step's own record is the result (a landed batch, a validation, a scoring, a
registration) the flow passes that record on as is; these are what the flow itself
adds: a request and its plan, the decision after the budget, what a step changed
in the aliases. Each is a frozen pydantic model that forbids unknown fields: a DAG
task returns ``record.to_xcom()`` and the next task rebuilds it with
``Plan.from_xcom(value)``, which refuses anything that is not exactly a plan (a
step's own record does the same: :mod:`pipeline.base.records`). Nothing downstream
reads a step's result by string keys.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict

from pipeline.base.kinds import Trigger
from training.api import Finding, TrainResult

__all__ = [
    "ApprovalOutcome",
    "BatchVersions",
    "Decision",
    "DriftOutcome",
    "GateOutcome",
    "Plan",
    "Record",
    "RetrainRequest",
    "ReviewOutcome",
    "Trained",
    "Window",
]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_xcom(self) -> dict[str, Any]:
        """Plain JSON values (what a DAG task returns)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_xcom(cls, value: Any) -> Self:
        """The record back from a task's JSON result (a record passes through)."""
        if isinstance(value, cls):
            return value
        return cls.model_validate(value)


# ------------------------------------------------------------------------------ monitor


class DriftOutcome(Record):
    """Drift of a batch against the champion's reference (``checked`` False: none yet)."""

    batch_id: str
    checked: bool
    reason: str = ""
    version: int | None = None
    reference: str | None = None
    drift_share: float | None = None
    threshold: float | None = None
    drifted: bool = False
    drifted_columns: list[str] = []
    value_drifted: list[str] = []  # the columns whose values drifted (what the share counts)
    null_shifts: list[str] = []  # one line per column whose null share moved
    skipped: list[str] = []
    report_uri: str | None = None
    summary_uri: str | None = None
    sampled: bool = False
    reused: bool = False


class Decision(Record):
    """Whether to request a retrain, and why (always a reason, also for no)."""

    retrain: bool
    trigger: Trigger | None
    reason: str
    batch_id: str


class RetrainRequest(Record):
    """What the retrain DAG was asked for: the trigger and every reason given."""

    trigger: Trigger
    reasons: list[str] = []


# ------------------------------------------------------------------------------ labels


class ReviewOutcome(Record):
    outcome: str
    reason: str
    action: str
    version: str | None
    champion: str | None
    canary: str | None
    method: str = "sequential"  # canary.test
    interval: list[float] | None = None  # canary minus champion mean log loss
    shadow_rows: int = 0  # paired rows of the shadow so far
    shadow_interval: list[float] | None = None
    evidence_uri: str | None = None  # the per-batch evidence (sequential review)
    compared_with: str | None = None  # the champion version the evidence is measured against
    batches: int = 0  # labelled batches in the evidence (the horizon's count)


class ApprovalOutcome(Record):
    """A person's answer about promoting ``version`` (``timed_out``: nobody answered)."""

    version: str
    verdict: Literal["approved", "rejected", "timed_out"]
    who: str
    comment: str
    # approved: what the promotion did ("promoted", or "lost"); rejected or timed out:
    # the rollback ("rejected", or "lost" when it was no longer the canary)
    action: str
    champion: str | None
    canary: str | None
    override: bool = False  # approved a version the review never held


# ------------------------------------------------------------------------------ retrain


class BatchVersions(Record):
    features: int
    labels: int


class Plan(Record):
    """The training window and whether to train it (``skip`` with the reason)."""

    trigger: Trigger
    reasons: list[str]
    window: list[str]
    skip: bool
    reason: str
    versions: dict[str, BatchVersions] = {}
    window_key: str | None = None
    run_name: str | None = None
    # labelled batches the window could have held but may not, and why (not validated)
    left_out: dict[str, str] = {}

    @property
    def snapshot(self) -> str:
        """The data snapshot of the window: ``<batch>/v<features version>,...``."""
        return ",".join(f"{b}/v{v.features}" for b, v in self.versions.items())

    def require_run(self) -> str:
        if self.skip or self.run_name is None:
            raise ValueError(f"this plan trains nothing ({self.reason})")
        return self.run_name


class Window(Record):
    """The window's features and labels as files for the training job; no labels when
    the features carry them (``export_window``'s folder of one labelled file a batch)."""

    features: str
    labels: str | None = None
    rows: int
    features_uri: str | None = None
    labels_uri: str | None = None


class Trained(Record):
    """A finished training run as the retrain passes it on: the job's own result, its
    MLflow page (the training task's extra link) and what the health check found."""

    result: TrainResult
    mlflow_run_url: str | None
    health: list[Finding] = []

    def require_run_id(self) -> str:
        if not self.result.mlflow_run_id:
            raise ValueError(
                f"training run {self.result.run_name} has no MLflow run id (was MLflow enabled?)"
            )
        return self.result.mlflow_run_id


class GateOutcome(Record):
    version: str
    passed: bool
    first_model: bool
    checks: list[str]
    champion: str | None
    canary: str | None
