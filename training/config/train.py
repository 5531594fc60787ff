"""The training job's configuration: one validated object, from YAML and flags.

Every field has a default for the local run, so ``python -m training train``
works with no file at all. Validation happens once, at load, and every mistake
names the field and the allowed values. The resolved configuration and its
hashes go into every checkpoint and MLflow run; on resume, the fields that
define the result (``definition_hash``) must match.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from training.config.locations import DEFAULT_HOME
from training.config.schedule import LENGTHS, ScheduleConfig
from training.config.schedule import ConfigSection as _Section
from training.config.text import ConfigError, describe_errors, parse_override, read_yaml, set_dotted
from training.schedule import PlateauRule

__all__ = ["ConfigError", "ScheduleConfig", "TrainConfig", "load_config", "parse_override"]

# Fields that do not change what is computed: they may differ on resume
# (e.g. raise the budget of a run stopped for cost, or point at another MLflow).
OPERATIONAL_FIELDS = (
    "run_name",
    "output_dir",
    "progress",
    "checkpoint",
    "cost",
    "mlflow",
    "pushgateway",
)


class DataConfig(_Section):
    """What the job trains on: features and labels joined on the spec's id column."""

    dataset: Path = Field(Path("configs/datasets/flights.yaml"), description="dataset spec YAML")
    source: Literal["flights", "files"] = Field(
        "flights", description="the bundled 2013 flights (data.months), or files"
    )
    months: list[int] = Field(default_factory=lambda: [1, 2, 3], description="bundled 2013 months")
    features: str | list[str] | None = Field(
        None,
        description="features: a CSV/Parquet file (path or s3:// URI), a folder (its *.csv "
        "and *.parquet files, sorted by name) or a list of them, concatenated",
    )
    labels: str | list[str] | None = Field(
        None,
        description="labels (id and target): a file, a folder or a list, as features; "
        "unset: the features carry the target column (the pipeline's window)",
    )
    batch_column: str | None = Field(
        None,
        description="column of features and labels naming each row's batch: rows join on "
        "(batch, id), and an id may recur once per batch (the spec's id_scope); unset: "
        "the id alone",
    )
    valid_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="latest rows held out")
    max_rows: int | None = Field(None, ge=100, description="keep only the latest N rows")
    streaming: Literal["auto", "on", "off"] = Field(
        "auto",
        description="read the rows a few Parquet row groups at a time, in bounded memory "
        "(training/data/stream.py); auto: stream Parquet features that carry their labels "
        "(data.labels unset), off: read them whole",
    )
    shuffle_units: int = Field(
        4, ge=1, description="row groups shuffled together when streaming (held in memory)"
    )

    @model_validator(mode="after")
    def _source(self) -> DataConfig:
        if self.source == "files" and not self.features:
            raise ValueError("data.source 'files' needs data.features (and data.labels)")
        if self.streaming == "on" and (self.source != "files" or self.labels):
            raise ValueError(
                "data.streaming 'on' reads Parquet features that carry their labels: set "
                "data.source 'files' and leave data.labels unset, or data.streaming 'off'"
            )
        if self.source == "flights" and (
            not self.months or any(not 1 <= m <= 12 for m in self.months)
        ):
            raise ValueError(
                f"data.months must be a non-empty list of months 1..12, got {self.months}"
            )
        return self


class ModelConfig(_Section):
    """The tabular MLP: one embedding per categorical column, then dense layers."""

    hidden: list[int] = Field(
        default_factory=lambda: [256, 128], description="widths of the hidden layers"
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="dropout after each hidden layer")
    embedding_dim_max: int = Field(
        16, ge=1, le=512, description="largest embedding (1.6 * categories**0.56 below it)"
    )
    min_category_count: int = Field(
        5, ge=1, description="rarer categories share the unknown bucket"
    )
    max_categories: int = Field(1000, ge=1, description="most frequent categories kept")

    @model_validator(mode="after")
    def _hidden(self) -> ModelConfig:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"model.hidden must list positive layer sizes, got {self.hidden}")
        return self


# A window smaller than this many batches of ``optim.batch_size`` rows trains with a
# smaller batch (halved until it fits), as the schedule's epochs scale with the rows.
MIN_STEPS_PER_EPOCH = 2


class OptimConfig(_Section):
    """The optimizer and the batch."""

    name: Literal["adamw", "sgd"] = Field("adamw", description="AdamW, or SGD with momentum")
    weight_decay: float = Field(1e-4, ge=0.0, description="decoupled (AdamW) or L2 (SGD)")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW's (beta1, beta2)")
    batch_size: int = Field(
        512,
        ge=1,
        description="examples per optimizer step (all ranks); halved for a window of "
        f"fewer than {MIN_STEPS_PER_EPOCH} batches of training rows",
    )
    grad_accum_steps: int = Field(1, ge=1, description="micro-batches per optimizer step")
    grad_clip_norm: float | None = Field(
        1.0, gt=0.0, description="clip the gradient's global norm to this; null: no clipping"
    )
    anneal_momentum: bool = Field(False, description="momentum / beta1 moves inversely to lr")
    momentum_range: tuple[float, float] = Field(
        (0.85, 0.95), description="(at the peak rate, at the floor) with anneal_momentum"
    )
    reset_moments_at_restart: bool = Field(
        False, description="zero the optimizer's moments at every warm restart"
    )

    @model_validator(mode="after")
    def _ranges(self) -> OptimConfig:
        lo, hi = self.momentum_range
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(
                f"optim.momentum_range must satisfy 0 <= low <= high < 1, got {lo, hi}"
            )
        b1, b2 = self.betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"optim.betas must be in [0, 1), got {self.betas}")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"optim.batch_size {self.batch_size} must be a multiple of "
                f"optim.grad_accum_steps {self.grad_accum_steps}"
            )
        return self

    def batch_size_for(self, train_rows: int, world_size: int = 1) -> int:
        """The batch for ``train_rows`` training rows: ``batch_size``, halved while the
        rows fill fewer than :data:`MIN_STEPS_PER_EPOCH` batches and the half still divides
        over ``world_size`` ranks x ``grad_accum_steps`` (then it may stay too large: the
        trainer refuses it, naming the rows)."""
        size, unit = self.batch_size, world_size * self.grad_accum_steps
        while train_rows < MIN_STEPS_PER_EPOCH * size and size % 2 == 0 and (size // 2) % unit == 0:
            size //= 2
        return size


class PlateauConfig(_Section):
    """A warm restart requested when the validation loss stops improving."""

    enabled: bool = Field(False, description="restart the cycle early on a plateau")
    patience: int = Field(3, ge=0, description="evaluations without improvement before it")
    threshold: float = Field(1e-3, ge=0.0, description="the smallest change that counts")
    threshold_mode: Literal["rel", "abs"] = Field(
        "rel", description="threshold relative to the best loss, or absolute"
    )
    cooldown: int = Field(0, ge=0, description="evaluations ignored after a restart")
    min_cycle_steps: int = Field(0, ge=0, description="a cycle runs at least this long")

    def build(self) -> PlateauRule | None:
        if not self.enabled:
            return None
        return PlateauRule(
            patience=self.patience,
            threshold=self.threshold,
            threshold_mode=self.threshold_mode,
            cooldown=self.cooldown,
            min_cycle_steps=self.min_cycle_steps,
        )


class StoppingConfig(_Section):
    """Cycle-aware stopping (training/engine/stopping.py): at a cycle end, start no further cycle
    after ``patience`` cycles in a row whose best did not beat the best so far."""

    enabled: bool = Field(False, description="stop at a cycle end when later cycles stop winning")
    min_delta: float = Field(
        0.0, ge=0.0, description="a cycle wins when it beats the best so far by more (eval.metric)"
    )
    patience: int = Field(1, ge=1, description="cycles in a row without a win, then stop")
    min_cycles: int = Field(2, ge=2, description="cycles always run before the rule may stop")


class EvalConfig(_Section):
    """Validation passes: when, on which metric the cycle bests are chosen."""

    every_steps: int = Field(100, ge=1, description="also at every cycle end")
    metric: Literal["val_auc", "val_loss"] = Field(
        "val_auc", description="what makes a cycle's best (AUC up, loss down)"
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="rows per forward pass; default 2048 on CPU (activations stay in "
        "cache: 22 % faster than 8192 on the flights model), 16384 on CUDA",
    )

    def rows_per_pass(self, device_type: str) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return 16384 if device_type == "cuda" else 2048


class CheckpointConfig(_Section):
    """How often ``last`` (the resume point) is written; also on SIGTERM and at the end."""

    every_steps: int = Field(200, ge=1, description="optimizer steps between writes")
    every_seconds: float = Field(60.0, gt=0.0, description="or this long, whichever comes first")


class NanGuardConfig(_Section):
    """Non-finite steps are skipped; persisting ones roll the run back with a lower peak."""

    max_consecutive: int = Field(5, ge=1, description="bad steps in a row before a rollback")
    rollback_factor: float = Field(0.5, gt=0.0, lt=1.0, description="peak multiplier per rollback")
    max_rollbacks: int = Field(2, ge=0, description="then the run has diverged (exit 1)")
    check_every_steps: int = Field(50, ge=1, description="one host sync per this many steps")


class CostConfig(_Section):
    """The cost meter: device time at a price, and the run's budget."""

    cpu_usd_per_hour: float = Field(0.20, ge=0.0, description="per process")
    gpu_usd_per_hour: float = Field(2.50, ge=0.0, description="per GPU")
    budget_usd: float | None = Field(None, gt=0.0, description="stop cleanly when spent")


class RuntimeConfig(_Section):
    """Where and how the job computes."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when there")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="mixed precision; auto: bf16 (else fp16) on CUDA, off on CPU"
    )
    seed: int = Field(0, description="model init and the data order")
    deterministic: bool = Field(
        True, description="deterministic kernels: a resumed run equals one never stopped"
    )
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: torch's")


class MlflowConfig(_Section):
    """Where the run is recorded (a local metrics.jsonl is always written)."""

    enabled: bool = Field(True, description="false: metrics.jsonl only")
    tracking_uri: str | None = Field(
        None, description="default: $MLFLOW_TRACKING_URI or local sqlite"
    )
    experiment: str | None = Field(None, description="default: the spec's model name")
    artifact_location: str | None = Field(
        None, description="artifact root of a new experiment; default <home>/mlartifacts (SQLite)"
    )
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags of the run")
    parent_run_id: str | None = Field(None, description="nest the run under this one")


class PushgatewayConfig(_Section):
    """Optional Prometheus Pushgateway for live run metrics (training/telemetry/pushgateway.py)."""

    url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="e.g. http://pushgateway:9091; default: $COSINE_RETRAIN_PUSHGATEWAY_URL",
    )
    job: str = Field("cosine_retrain", min_length=1, description="the Pushgateway job label")
    timeout_s: float = Field(2.0, gt=0.0, le=30.0, description="per push (connect, read)")


class FaultInjection(_Section):
    """For tests and drills only: make chosen steps produce a non-finite loss."""

    nan_steps: list[int] = Field(default_factory=list, description="steps whose loss is NaN")
    nan_above_lr: float | None = Field(None, gt=0.0, description="NaN loss while lr exceeds this")


class TrainConfig(_Section):
    """The training job's whole configuration (``python -m training train``)."""

    run_name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="the run's folder and MLflow name (needed to resume it)",
    )
    output_dir: Path = Field(DEFAULT_HOME / "runs", description="where runs live")
    progress: Literal["auto", "on", "off"] = Field(
        "auto", description="a progress bar (auto: on a terminal), else a log line per 10 %"
    )

    @field_validator("progress", mode="before")
    @classmethod
    def _yaml_bool(cls, value: Any) -> Any:
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    plateau: PlateauConfig = Field(default_factory=PlateauConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    nan_guard: NanGuardConfig = Field(default_factory=NanGuardConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    pushgateway: PushgatewayConfig = Field(default_factory=PushgatewayConfig)
    fault_injection: FaultInjection = Field(default_factory=FaultInjection)

    @model_validator(mode="after")
    def _stopping_can_fire(self) -> TrainConfig:
        """The rule stops only after a cycle that is not the last (cycle c, 0-based,
        c <= K - 2) with ``patience`` losing cycles behind it (cycle 0 sets the mark, so
        c >= patience) and c + 1 >= ``min_cycles``. From three cycles on, settings that
        can never stop the run are an error, not a silent no-op (with one or two cycles
        no setting can: the rule only records)."""
        k, s = self.schedule.max_cycles, self.stopping
        if not s.enabled or k is None or k < 3:
            return self
        if s.patience > k - 2 or s.min_cycles > k - 1:
            raise ValueError(
                f"stopping.patience {s.patience} and stopping.min_cycles {s.min_cycles} can "
                f"never stop a run of schedule.max_cycles {k} cycles (the last cycle ends it "
                f"anyway): use patience <= {k - 2} and min_cycles <= {k - 1}, or more cycles"
            )
        return self

    def steps_per_epoch(self, train_rows: int, world_size: int = 1) -> int:
        """Optimizer steps per epoch of ``train_rows`` training rows (what epoch forms
        of the schedule are multiplied by), at the batch those rows get
        (:meth:`OptimConfig.batch_size_for`); 0 when the rows fill no batch."""
        return train_rows // self.optim.batch_size_for(train_rows, world_size)

    def resolved(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())

    def definition(self) -> dict[str, Any]:
        d = self.resolved()
        for key in OPERATIONAL_FIELDS:
            d.pop(key, None)
        if not self.stopping.enabled:  # off: the definitions (and hashes) of before it existed
            d.pop("stopping", None)
        if self.data.batch_column is None:  # likewise
            d["data"].pop("batch_column", None)
        for key, default in (("streaming", "auto"), ("shuffle_units", 4)):  # likewise
            if d["data"][key] == default:
                d["data"].pop(key)
        return d

    def definition_hash(self) -> str:
        return _hash(self.definition())

    def config_hash(self) -> str:
        return _hash(self.resolved())


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def diff_definitions(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted field names whose values differ between two ``definition()`` dicts."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += diff_definitions(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: saved {a!r}, now {b!r}")
    return out


def _other_forms_off(raw: dict[str, Any], overridden: set[str]) -> None:
    """An override of one form of a schedule length (``--set schedule.cycle_steps=400``)
    replaces the file's other form (``cycle_epochs``) unless that is overridden too."""
    section = raw.get("schedule")
    if not isinstance(section, dict):
        return
    for name in LENGTHS:
        for unit, other in (("steps", "epochs"), ("epochs", "steps")):
            key = f"schedule.{name}_{unit}"
            if (
                key in overridden
                and f"schedule.{name}_{other}" not in overridden
                and section.get(f"{name}_{unit}") is not None
            ):
                section[f"{name}_{other}"] = None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read YAML (optional) and apply ``key.sub=value`` overrides (values parsed as YAML)."""
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        loaded = read_yaml(Path(path), "config file", ConfigError)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of sections")
        raw = loaded or {}
    parsed = [parse_override(item) for item in overrides or []]
    for key, value in parsed:
        set_dotted(raw, key, value)
    _other_forms_off(raw, {key for key, _ in parsed})
    try:
        config = TrainConfig.model_validate(raw)
    except ValidationError as exc:
        lines = describe_errors(exc, TrainConfig)
        raise ConfigError(f"invalid training config ({where}):\n" + "\n".join(lines)) from None
    sched = config.schedule
    if not math.isfinite(sched.lr_max):
        raise ConfigError(f"invalid training config ({where}):\n  schedule.lr_max: must be finite")
    return config
