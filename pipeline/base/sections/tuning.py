"""The ``tune`` section: Optuna's search over the cosine schedule (docs/training.md, Tuning).

Each search dimension is a dotted training-config field with its bounds; the names
the tuner may search are :data:`TUNABLE`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.base.sections.common import Batches, Fraction, Section, Share

__all__ = ["INTEGER", "TUNABLE", "ParamRange", "TuneConfig"]

# The training-config fields the tuner searches: the schedule's peak, the
# first cycle's length in epochs, the cycle multiplier, the restart peak's decay, the
# optimizer's weight decay and the warmup in epochs; and what drives the cost: the
# number of cycles, the batch size, the model's width and the cycle-aware stopping
# rule's settings. ``model.width`` is the widest hidden layer's units, the others kept
# in their ratio to it (:func:`pipeline.steps.tuning.space.training_updates`).
TUNABLE = (
    "schedule.lr_max",
    "schedule.cycle_epochs",
    "schedule.cycle_mult",
    "schedule.peak_decay",
    "optim.weight_decay",
    "schedule.warmup_epochs",
    "schedule.max_cycles",
    "optim.batch_size",
    "model.width",
    "stopping.patience",
    "stopping.min_delta",
)
# the integer ones (searched as integers; their bounds must be whole numbers)
INTEGER = ("schedule.max_cycles", "optim.batch_size", "model.width", "stopping.patience")


class ParamRange(Section):
    """One dimension of the search: a float in [low, high] (log-uniform with log)."""

    low: float = Field(description="smallest value tried")
    high: float = Field(description="largest value tried (>= low; equal: fixed)")
    log: bool = Field(False, description="sample log-uniformly (low must be > 0)")


def _default_space() -> dict[str, ParamRange]:
    """Around the shipped flights config, towards what costs less: cycles no longer than
    its first (3 epochs) and growing no faster (1.5x), batches from its 512 up (fewer
    optimizer steps for the same rows), a narrower model; the search finds the best val
    AUC there, the pick the cheapest within the noise of it (docs/benchmarks.md, the
    tuning sections, for what a wider space did)."""
    return {
        "schedule.lr_max": ParamRange(low=1e-3, high=1e-2, log=True),
        "schedule.cycle_epochs": ParamRange(low=1.0, high=3.0),
        "schedule.cycle_mult": ParamRange(low=1.0, high=1.5),
        "schedule.peak_decay": ParamRange(low=0.5, high=1.0),
        "optim.weight_decay": ParamRange(low=1e-6, high=1e-2, log=True),
        "schedule.warmup_epochs": ParamRange(low=0.0, high=0.75),
        # cost: the most cycles a run may have, while cycle-aware stopping (on in the
        # shipped config, stopping.min_cycles 2) ends it after the first cycle that did
        # not win. From 4: every value of stopping.patience below is valid with every
        # number of cycles (patience <= max_cycles - 2), and a run always keeps a cycle
        # the rule may let it go on to. Not 1 (one cycle, no restart): cheapest on a
        # window whose first cycle is its best (2013 months 1-3), and 0.0182 AUC behind
        # on months 4-6, where the second and third cycles win (docs/benchmarks.md)
        "schedule.max_cycles": ParamRange(low=4, high=5),
        "stopping.patience": ParamRange(low=1, high=2),
        "stopping.min_delta": ParamRange(low=0.0, high=0.002),
        # rows per optimizer step (the schedule is in epochs: the rows trained do not
        # change with it, the steps do) and the model's widest hidden layer
        "optim.batch_size": ParamRange(low=512, high=2048, log=True),
        "model.width": ParamRange(low=64, high=256, log=True),
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
    n_trials: int = Field(
        12,
        ge=1,
        description="trials a study runs in all, failed ones included (a resumed study too)",
    )
    budget_usd: float | None = Field(
        None,
        gt=0.0,
        description="dollars the trials may cost (the job's cost meter, summed): each trial "
        "runs with what is left as its own cost.budget_usd and stops there; null: no limit",
    )
    storage: str | None = Field(
        None,
        description="Optuna RDB storage URL (e.g. postgresql://...); default: "
        "sqlite:///<home>/tuning.db. A killed study resumes from it",
    )
    study_name: str | None = Field(
        None,
        description="the study is '<this>-<first>-<last batch of the tuning window>' (default "
        "'<dataset>-tune'): a new window, a new study; the same window continues it",
    )
    window_batches: Batches = Field(
        3, description="labelled batches of the tuning window (before the held-out)"
    )
    holdout_batches: Batches = Field(
        3,
        description="the latest labelled batches: the held-out window the tuned config must "
        "win on (never tuned on)",
    )
    heartbeat_seconds: int = Field(
        30,
        ge=1,
        le=3600,
        description="a running trial records a heartbeat this often; one silent for three "
        "is stale (its process is gone): FAIL, and queued again",
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="times a stale (or preempted) trial is queued again"
    )
    seed: int = Field(0, description="the TPE sampler's seed")
    startup_trials: int = Field(
        4,
        ge=0,
        description="trials sampled at random before TPE; no trial is pruned (but by "
        "prune_below) before as many have completed",
    )
    pruner: Literal["halving", "hyperband", "off"] = Field(
        "halving",
        description="Optuna's pruner at cycle ends, on the running best val AUC at the epochs "
        "run (rungs compare trials whose cycles end at different steps): successive "
        "halving, Hyperband, or none",
    )
    prune_warmup_epochs: float | None = Field(
        None,
        gt=0.0,
        description="the first rung (epochs): no trial is pruned before it; null: the shortest "
        "warmup plus first cycle the space allows (else 1 epoch), so every trial is judged at "
        "its first cycle end, before cycle-aware stopping first decides",
    )
    prune_reduction: int = Field(
        3,
        ge=2,
        le=10,
        description="halving/Hyperband: about 1 in this many trials passes each rung "
        "(rungs at the warm-up rung times its powers)",
    )
    prune_below: Share | None = Field(
        None,
        description="also prune a trial at any cycle end whose best val AUC is below this",
    )
    judge_seeds: int = Field(
        3,
        ge=1,
        le=20,
        description="seeds each side trains the held-out window with, paired (the same seed "
        "on both sides); one seed has no noise estimate, so nothing is adopted. Also the "
        "seeds a cheaper pick must hold on beside the highest trial on the tuning window",
    )
    adopt_confidence: Share = Field(
        0.9,
        description="two-sided confidence of the paired gain's Student-t interval",
    )
    adopt_min_gain: float = Field(
        0.0,
        ge=0.0,
        description="adopted as better when the lower bound of the mean held-out val AUC "
        "gain's interval is above this",
    )
    adopt_max_loss: float = Field(
        0.003,
        ge=0.0,
        description="adopted as cheaper when it trains adopt_min_saving fewer rows and the "
        "gain's lower bound is not below minus this",
    )
    adopt_min_saving: Fraction = Field(
        0.2,
        description="the share of rows trained (steps x batch size) the tuned config must "
        "save to be adopted as cheaper",
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
            if name in INTEGER and not (r.low.is_integer() and r.high.is_integer()):
                raise ValueError(
                    f"tune.space.{name}: an integer field; give whole-number bounds, got "
                    f"{r.low:g} and {r.high:g}"
                )
        return self
