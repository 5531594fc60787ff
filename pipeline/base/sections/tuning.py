"""The ``tune`` section: Optuna's search over the cosine schedule (docs/training.md, Tuning).

Each search dimension is a dotted training-config field with its bounds; the names
the tuner may search are :data:`TUNABLE`.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.base.sections.common import Section

__all__ = ["TUNABLE", "ParamRange", "TuneConfig"]

# The training-config fields the tuner searches: the schedule's peak, the
# first cycle's length in epochs, the cycle multiplier, the restart peak's decay, the
# optimizer's weight decay and the warmup in epochs.
TUNABLE = (
    "schedule.lr_max",
    "schedule.cycle_epochs",
    "schedule.cycle_mult",
    "schedule.peak_decay",
    "optim.weight_decay",
    "schedule.warmup_epochs",
)


class ParamRange(Section):
    """One dimension of the search: a float in [low, high] (log-uniform with log)."""

    low: float = Field(description="smallest value tried")
    high: float = Field(description="largest value tried (>= low; equal: fixed)")
    log: bool = Field(False, description="sample log-uniformly (low must be > 0)")


def _default_space() -> dict[str, ParamRange]:
    return {
        "schedule.lr_max": ParamRange(low=1e-3, high=1e-2, log=True),
        "schedule.cycle_epochs": ParamRange(low=1.0, high=4.0),
        "schedule.cycle_mult": ParamRange(low=1.0, high=2.0),
        "schedule.peak_decay": ParamRange(low=0.5, high=1.0),
        "optim.weight_decay": ParamRange(low=1e-6, high=1e-2, log=True),
        "schedule.warmup_epochs": ParamRange(low=0.0, high=0.75),
    }


class TuneConfig(Section):
    """Tuning the schedule with Optuna's TPE sampler (``python -m pipeline tune``, the
    ``tune`` DAG). Trials train on a tuning window and are pruned at cycle ends; the
    best trial's config is adopted by later retrains only after it beats the current
    config on a held-out window it was not tuned on."""

    schedule: str | None = Field(
        "0 4 1 */3 *",
        description="cron of the tune DAG (UTC; default quarterly); null: manual runs only",
    )
    space: dict[str, ParamRange] = Field(
        default_factory=_default_space,
        description="training-config field -> {low, high, log}; the fields a study may "
        f"search: {', '.join(TUNABLE)}",
    )
    n_trials: int = Field(12, ge=1, description="trials a study runs in all (a resumed study too)")
    budget_usd: float | None = Field(
        None,
        gt=0.0,
        description="dollars the trials may cost (the job's cost meter, summed); no trial "
        "starts when the next (priced as the dearest so far) would pass it; null: no limit",
    )
    storage: str | None = Field(
        None,
        description="Optuna RDB storage URL (e.g. postgresql://...); default: "
        "sqlite:///<home>/tuning.db. A killed study resumes from it",
    )
    study_name: str | None = Field(
        None,
        description="default: '<dataset>-tune-<first>-<last batch of the tuning window>' (a new "
        "window, a new study); the same name continues the same study",
    )
    window_batches: int = Field(
        3, ge=1, le=60, description="labelled batches of the tuning window (before the held-out)"
    )
    holdout_batches: int = Field(
        3,
        ge=1,
        le=60,
        description="the latest labelled batches: the held-out window the tuned config must "
        "win on (never tuned on)",
    )
    seed: int = Field(0, description="the TPE sampler's seed")
    startup_trials: int = Field(
        4, ge=0, description="trials sampled at random before TPE; the pruner waits for as many"
    )
    prune_below: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="also prune a trial at any cycle end whose best val AUC is below this",
    )
    adopt_min_gain: float = Field(
        0.0,
        ge=0.0,
        description="the tuned config is adopted when its best val AUC on the held-out window "
        "beats the current config's by more than this",
    )

    @model_validator(mode="after")
    def _space(self) -> TuneConfig:
        if not self.space:
            raise ValueError(f"tune.space is empty: give at least one of {', '.join(TUNABLE)}")
        for name, r in self.space.items():
            if name not in TUNABLE:
                raise ValueError(
                    f"tune.space.{name}: unknown parameter; the tuner searches {', '.join(TUNABLE)}"
                )
            if not r.low <= r.high:
                raise ValueError(f"tune.space.{name}: low {r.low:g} is above high {r.high:g}")
            if r.log and r.low <= 0:
                raise ValueError(f"tune.space.{name}: log needs low > 0, got {r.low:g}")
        return self
