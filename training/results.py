"""What a training run tells the outside world, typed: events as it runs, and what it
leaves behind (``result.json`` as :class:`TrainResult`).

The job writes ``<run_dir>/result.json`` (and logs it to MLflow) when it ends;
everything downstream (the pipeline's registration, health check and gate, the
CLI, the benchmarks) reads it back with :meth:`TrainResult.load` or
:meth:`TrainResult.from_json` and uses attributes, never string keys. Loading is
strict: an unknown or a missing field is a :class:`ResultError` that names it
(a result written by another version of the job is refused, not half read).

As it runs, the job tells hooks: a checkpoint hook is any callable taking a
:class:`CheckpointEvent`; the trainer calls each after a ``last`` checkpoint is
written and its telemetry committed (rank 0 only). A hook must return at once and
never raise (the Pushgateway's, :class:`training.telemetry.pushgateway.ProgressPusher`,
queues and pushes from a thread). A cycle hook is any callable taking a
:class:`CycleEndEvent`; the trainer calls each when a cycle closes (its best is
known, the stopping rule has decided). A hook that returns True asks the run to end
there: the trainer writes ``last`` and finishes with status ``pruned`` (the tuner's
pruner, :mod:`pipeline.flow.tuning`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

__all__ = [
    "DIVERGED_TAG",
    "REGISTRABLE",
    "CheckpointEvent",
    "CheckpointHook",
    "CycleBest",
    "CycleEndEvent",
    "CycleHook",
    "ResultError",
    "StoppingSummary",
    "TrainResult",
    "TrainingDiverged",
]

Status = Literal["completed", "budget_exhausted", "preempted", "pruned"]  # pruned: a cycle hook
REGISTRABLE = ("completed", "budget_exhausted")  # runs whose cycle bests may be registered
# read as a field of a pydantic model (pydantic's config of a dataclass): no unknown keys
STRICT = {"extra": "forbid"}

T = TypeVar("T")


class ResultError(ValueError):
    """A result file is missing, not JSON, or not a result of this job."""


class TrainingDiverged(RuntimeError):
    """Non-finite steps persisted through every allowed rollback (the NaN guard's verdict;
    the run ends without a result, its MLflow run tagged :data:`DIVERGED_TAG`)."""


DIVERGED_TAG = "failure"  # its value "diverged" on the MLflow run of a diverged job


def _strict(cls: type[T], data: Any, what: str) -> T:
    if not isinstance(data, dict):
        raise ResultError(f"{what} must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    required = {
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(data))
    if unknown or missing:
        parts = ([f"unknown field(s) {unknown}"] if unknown else []) + (
            [f"missing field(s) {missing}"] if missing else []
        )
        raise ResultError(f"{what}: {'; '.join(parts)} (expected {sorted(fields)})")
    return cls(**data)


@dataclass(frozen=True)
class CycleBest:
    """The best evaluation of one cosine cycle and its checkpoint (``final``: the
    cycle ended, so this is the cycle's best for good)."""

    __pydantic_config__ = STRICT

    cycle: int
    step: int
    lr: float
    val_auc: float
    val_loss: float
    path: str  # relative to the run folder
    sha256: str
    final: bool = False

    def metric(self, name: str) -> float:
        """``val_auc`` or ``val_loss`` by name (the eval metric of a config)."""
        if name not in ("val_auc", "val_loss"):
            raise ValueError(f"metric must be val_auc or val_loss, got {name!r}")
        return float(getattr(self, name))

    @classmethod
    def from_dict(cls, data: Any) -> CycleBest:
        return _strict(cls, data, "a cycle best")


@dataclass(frozen=True)
class StoppingSummary:
    """What cycle-aware stopping (``stopping`` in the config, :mod:`training.engine.stopping`)
    decided: one decision per closed cycle, and what a stop saved. ``usd_saved`` is
    ``steps_saved`` at the run's own average cost per step (``usd_per_step``);
    ``losing_cycles``: the cycles without a win that made the run stop."""

    __pydantic_config__ = STRICT

    enabled: bool
    stopped: bool
    stopped_after_cycle: int | None
    stop_step: int | None  # the last step the run took
    scheduled_steps: int
    steps_done: int
    steps_saved: int
    usd_per_step: float
    usd_saved: float
    losing_cycles: list[int]
    decision: str
    decisions: list[dict[str, Any]]

    def mlflow_metrics(self) -> dict[str, float]:
        return {
            "stopping_steps_saved": float(self.steps_saved),
            "stopping_usd_saved": self.usd_saved,
        }

    def mlflow_tags(self) -> dict[str, str]:
        after = self.stopped_after_cycle
        return {
            "stopping.stopped": str(self.stopped).lower(),
            "stopping.decision": self.decision[:500],
            "stopping.stopped_after_cycle": "" if after is None else str(after),
        }

    @classmethod
    def from_dict(cls, data: Any) -> StoppingSummary:
        return _strict(cls, data, "a stopping summary")


@dataclass(frozen=True)
class TrainResult:
    """What a finished run says about itself (``result.json``); :meth:`load` reads it
    strictly, and so does a pydantic model that holds one (the pipeline's XCom)."""

    __pydantic_config__ = STRICT

    status: Status
    stop_reason: str
    run_name: str
    run_dir: str
    steps_done: int
    total_steps: int
    cycles: list[CycleBest]
    best_cycle: int | None
    nan_count: int
    rollbacks: int
    lr_scale: float
    restarts: list[int]
    cost_usd: float
    device_seconds: float
    device: str
    amp: str
    world_size: int
    mlflow_run_id: str | None
    data: dict[str, Any]
    schedule: dict[str, Any]
    schedule_fingerprint: str
    config_hash: str
    definition_hash: str
    finished_at: str
    code_revision: str = "unknown"
    extra: dict[str, Any] = field(default_factory=dict)
    stopping: StoppingSummary | None = None  # None: a result from before the rule existed

    @property
    def finals(self) -> list[CycleBest]:
        """The bests of the cycles that ended, by cycle."""
        return sorted((c for c in self.cycles if c.final), key=lambda c: c.cycle)

    @property
    def registrable(self) -> bool:
        return self.status in REGISTRABLE

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    @classmethod
    def from_dict(cls, data: Any) -> TrainResult:
        if isinstance(data, dict) and isinstance(data.get("cycles"), list):
            data = {**data, "cycles": [CycleBest.from_dict(c) for c in data["cycles"]]}
        if isinstance(data, dict) and isinstance(data.get("stopping"), dict):
            data = {**data, "stopping": StoppingSummary.from_dict(data["stopping"])}
        return _strict(cls, data, "a training result")

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "result.json") -> TrainResult:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ResultError(f"{where} is not JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except ResultError as exc:
            raise ResultError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainResult:
        """Read ``result.json`` (a file, or a run folder that holds one)."""
        path = Path(path)
        if path.is_dir():
            path = path / "result.json"
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise ResultError(f"{path} does not exist (the run has not finished)") from None
        return cls.from_json(text, str(path))


# ------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class CheckpointEvent:
    run_name: str
    step: int
    total_steps: int
    cost_usd: float
    records: Sequence[tuple[int, int, Mapping[str, Any]]]  # the telemetry just committed


CheckpointHook = Callable[[CheckpointEvent], None]


@dataclass(frozen=True)
class CycleEndEvent:
    run_name: str
    best: CycleBest  # the closed cycle's best (its cycle, step, val_auc, val_loss)
    end_step: int  # the cycle's last step
    cost_usd: float  # the run's cost so far
    steps_per_epoch: int  # optimizer steps per pass over the training rows
    total_steps: int  # the schedule's steps in all (end_step + 1 == total_steps: the last cycle)


CycleHook = Callable[[CycleEndEvent], bool]
