"""The typed records that pass between the flow's steps (and, as JSON, between DAG tasks).

Each is a frozen pydantic model that forbids unknown fields: a DAG task returns
``record.to_xcom()`` (plain JSON, readable in the Airflow UI's XCom tab) and the
next task rebuilds it with ``Plan.from_xcom(value)``, which refuses anything that
is not exactly a plan. Nothing downstream reads a step's result by string keys.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ApprovalOutcome",
    "BatchVersions",
    "CycleSummary",
    "Decision",
    "DriftOutcome",
    "GateOutcome",
    "Landed",
    "Plan",
    "QualityOutcome",
    "Record",
    "Registered",
    "RegisteredSummary",
    "RetrainRequest",
    "ReviewOutcome",
    "Scored",
    "TrainSummary",
    "Trigger",
    "Validated",
    "Window",
]

Trigger = Literal["drift", "quality", "scheduled", "manual"]


class Record(BaseModel):
    # from_attributes: a record is read off a step's frozen dataclass by field name
    model_config = ConfigDict(extra="forbid", frozen=True, from_attributes=True)

    def to_xcom(self) -> dict[str, Any]:
        """Plain JSON values (what a DAG task returns)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_xcom(cls, value: Any) -> Self:
        """The record back from a task's JSON result (a record passes through)."""
        if isinstance(value, cls):
            return value
        return cls.model_validate(value)

    @classmethod
    def of(cls, step_record: Any, **more: Any) -> Self:
        """The record read off a step's frozen dataclass (fields by name), plus ``more``."""
        values = {
            name: getattr(step_record, name)
            for name in cls.model_fields
            if name not in more and hasattr(step_record, name)
        }
        return cls.model_validate({**values, **more})


# ------------------------------------------------------------------------------ monitor


class Landed(Record):
    """A batch's features or labels landed (or were already there)."""

    dataset: str
    batch_id: str
    version: int
    kind: Literal["features", "labels"]
    status: Literal["landed", "unchanged"]
    rows: int
    content_sha256: str
    uri: str
    message: str


class Validated(Record):
    batch_id: str
    version: int
    success: bool
    rows: int
    evaluated: int
    docs_uri: str | None
    result_uri: str | None
    reused: bool


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


class Scored(Record):
    """Who scored the batch: the champion, and the canary for its share of the rows
    (or, in its shadow phase, for every row, unserved)."""

    batch_id: str
    rows: int
    champion_version: str | None  # None: no champion yet, nothing was scored
    canary_version: str | None
    canary_rows: int
    key: str | None  # the predictions' key in the store
    reused: bool
    shadow_rows: int = 0  # rows the canary scored unserved (its shadow phase after the gate)


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


class QualityOutcome(Record):
    batch_id: str
    model_version: str | None
    auc: float | None
    slo: float | None
    rows: int
    below_slo: bool
    decision: Decision


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


class ApprovalOutcome(Record):
    """A person's answer about promoting ``version`` (``timed_out``: nobody answered)."""

    version: str
    verdict: Literal["approved", "rejected", "timed_out"]
    who: str
    comment: str
    action: str  # approved: what the promotion did ("promoted", or "lost"); else "none"
    champion: str | None
    canary: str | None


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

    @property
    def snapshot(self) -> str:
        """The data snapshot of the window: ``<batch>/v<features version>,...``."""
        return ",".join(f"{b}/v{v.features}" for b, v in self.versions.items())

    def require_run(self) -> str:
        if self.skip or self.run_name is None:
            raise ValueError(f"this plan trains nothing ({self.reason})")
        return self.run_name


class Window(Record):
    """The window's features and labels as files for the training job."""

    features: str
    labels: str
    rows: int
    features_uri: str | None = None
    labels_uri: str | None = None


class CycleSummary(Record):
    cycle: int
    step: int
    lr: float
    val_auc: float
    val_loss: float


class StoppingLine(Record):
    """What cycle-aware stopping decided (training.results.StoppingSummary, in short)."""

    enabled: bool
    stopped: bool
    stopped_after_cycle: int | None
    stop_step: int | None
    scheduled_steps: int
    steps_saved: int
    usd_saved: float
    decision: str


class Finding(Record):
    kind: str
    step: int
    value: float
    threshold: float
    message: str


class TrainSummary(Record):
    run_id: str | None
    run_name: str
    status: str
    stop_reason: str
    nan_count: int
    cost_usd: float
    cycles: list[CycleSummary]
    mlflow_run_url: str | None
    code_revision: str = "unknown"
    health: list[Finding] = []
    stopping: StoppingLine | None = None  # None: a job from before cycle-aware stopping

    def require_run_id(self) -> str:
        if not self.run_id:
            raise ValueError(
                f"training run {self.run_name} has no MLflow run id (was MLflow enabled?)"
            )
        return self.run_id


class RegisteredSummary(Record):
    version: str
    candidate: str
    cycle: int | None
    step: int | None
    lr: float | None
    val_auc: float
    val_loss: float
    created: bool


class Registered(Record):
    run_id: str
    challenger: str
    versions: list[RegisteredSummary]
    ensemble: dict[str, Any] = {}


class GateOutcome(Record):
    version: str
    passed: bool
    first_model: bool
    checks: list[str]
    champion: str | None
    canary: str | None
