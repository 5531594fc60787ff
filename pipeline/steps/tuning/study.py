"""The tuning study: Optuna trials that train through the job's typed API.

:func:`run_study` runs (or continues) one study in an RDB storage: a TPE sampler,
each trial's values on top of a base training config, trained by
:func:`training.api.train` with :class:`~pipeline.steps.tuning.space.CyclePruner` as
its cycle hook (at each cycle end the trial's running best val AUC is reported at the
epochs run; the pruner, successive halving by default, may end the run there), each
trial an MLflow run nested under the study's parent run.

It stops at ``tune.n_trials`` ended trials (complete, pruned or failed), or when the
trials' summed costs (the job's cost meter) reach ``tune.budget_usd``: each trial runs
with what is left as its own ``cost.budget_usd`` and stops there (PRUNED, stopped by
the budget) and the study ends with it, so the study spends at most its budget plus
what the job runs between two budget checks (at most an evaluation interval). A trial
whose run diverges (the NaN guard's :class:`~training.api.TrainingDiverged`) or closes
no cycle with a finite val AUC is FAIL with its reason, and the study goes on.

The pick (:mod:`pipeline.steps.tuning.pick`) is the cheapest measured config within
``tune.adopt_max_loss`` of the highest val AUC: a trial as it ran, or (with
``schedule.max_cycles`` searched) its first k cycles, whose run is the trial's cut short;
one that holds on ``tune.judge_seeds`` seeds beside the highest (``confirm_pick``).

Killed and run again, it continues: finished trials are kept; a trial left RUNNING
whose heartbeat is older than its grace period (its process is gone) is marked FAIL
(not counted) and queued again with its values by Optuna's RetryHeartbeatStaleTrialCallback,
and its training run (named by its values) resumes from its own checkpoint. A trial
whose heartbeat is fresh belongs to a live process and is left alone.
:func:`log_study` puts the study's figures and plots (optimization history, parameter
importances) on the parent run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from pipeline.base.sections import INTEGER, TuneConfig
from pipeline.steps.tuning.pick import Pick, PickCheck, TrialSummary, confirm_pick, ranked
from pipeline.steps.tuning.space import (
    CyclePruner,
    build_pruner,
    build_sampler,
    check_space,
    epoch_step,
    prune_warmup_epochs,
    start_value,
    suggest,
    training_updates,
)
from training import api

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

    from training.api import TrainConfig, TrainResult

__all__ = ["StudySummary", "TuneInterrupted", "run_study", "start_values"]

log = logging.getLogger(__name__)


class TuneInterrupted(RuntimeError):
    """A trial's run was preempted (SIGTERM): the study stops; run again, it resumes
    (the trial is marked FAIL, its values queued again, its run continues)."""


PARENT_ATTR = "mlflow_parent_run_id"


class StudySummary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    study: str
    storage: str
    trials: list[TrialSummary]
    best_trial: int | None
    best_value: float | None
    best_params: dict[str, int | float]
    # the pick is the best trial's first best_cycles cycles (best_params' schedule.max_cycles)
    best_cycles: int | None = None
    best_steps: int | None = None  # its optimizer steps on the tuning window
    checks: list[PickCheck] = []  # cheaper candidates checked on more seeds (confirm_pick)
    spent_usd: float
    steps: int
    stop_reason: str
    mlflow_run_id: str | None = None


def _run_name(study: str, params: dict[str, int | float]) -> str:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return f"{study}-{key}"


def _open_storage(tune: TuneConfig, url: str) -> Any:
    """Optuna's RDB storage with heartbeats: a trial's process records one every
    ``tune.heartbeat_seconds``; a RUNNING trial silent for three of them is stale (its
    process is gone), failed and queued again by Optuna's RetryHeartbeatStaleTrialCallback
    (at most ``tune.max_retries`` times)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with _quiet_heartbeats():
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=tune.heartbeat_seconds,
            grace_period=3 * tune.heartbeat_seconds,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                max_retry=tune.max_retries
            ),
        )


@contextmanager
def _quiet_heartbeats() -> Iterator[None]:
    """Optuna marks heartbeats experimental and says they go with Study.optimize; this
    study asks and tells, and records each trial's heartbeat itself (:func:`_heartbeat`)."""
    import warnings

    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


@contextmanager
def _heartbeat(storage: Any, trial: optuna.trial.Trial) -> Iterator[None]:
    """Record the trial's heartbeat from a thread while its run trains."""
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(storage.get_heartbeat_interval()):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Trials failed as stale (or preempted) and queued again by the retry callback."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _summary(t: optuna.trial.FrozenTrial, retried: set[int]) -> TrialSummary:
    return TrialSummary(
        number=t.number,
        state=t.state.name,
        value=t.value if t.state.name == "COMPLETE" else None,
        params={k: int(v) if k in INTEGER else float(v) for k, v in t.params.items()},
        steps=t.user_attrs.get("steps"),
        cost_usd=t.user_attrs.get("cost_usd"),
        run_name=t.user_attrs.get("run_name"),
        pruned_at_cycle=t.user_attrs.get("pruned_at_cycle"),
        incumbent=bool(t.user_attrs.get("incumbent", False)),
        stopped_by=t.user_attrs.get("stopped_by"),
        fail_reason=t.user_attrs.get("fail_reason")
        or ("stopped while running: queued again" if t.number in retried else None),
        cycles=[(int(n), float(v)) for n, v in t.user_attrs.get("cycles", [])],
    )


def _parent_run(client: MlflowClient | None, study: optuna.Study, experiment: str) -> str | None:
    if client is None:
        return None
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        return str(run_id)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run = client.create_run(
        experiment_id, run_name=f"tune-{study.study_name}", tags={"tune.study": study.study_name}
    )
    study.set_user_attr(PARENT_ATTR, run.info.run_id)
    return run.info.run_id


def start_values(tune: TuneConfig, base: TrainConfig) -> dict[str, int | float] | None:
    """The start config's values of the searched fields, when all lie in the space
    (then the study's trial 0 trains the config it must beat), else None."""
    values = {}
    for key, r in tune.space.items():
        value = start_value(key, base)
        if value is None or not r.low <= value <= r.high:
            return None
        values[key] = int(value) if key in INTEGER else float(value)
    return values


def run_study(
    tune: TuneConfig,
    base: TrainConfig,
    *,
    storage: str,
    name: str,
    output_dir: Path,
    client: MlflowClient | None = None,
    experiment: str | None = None,
    train_updates: dict[str, Any] | None = None,
    data: Any = None,
    spec: Any = None,
) -> StudySummary:
    """Run (or continue) the study ``name`` in ``storage``; ``base`` with
    ``train_updates`` is what every trial trains, with its values on top. MLflow: with
    ``client``, trials nest under the study's parent run in ``experiment``."""
    import optuna

    check_space(tune, base)  # before any trial, and before the storage is touched
    rdb = _open_storage(tune, storage)
    study = optuna.create_study(
        storage=rdb,
        study_name=name,
        sampler=build_sampler(tune),
        pruner=build_pruner(tune, prune_warmup_epochs(tune, base)),
        direction="maximize",
        load_if_exists=True,
    )
    with _quiet_heartbeats():  # RUNNING with a stale heartbeat: FAIL, queued again
        optuna.storages.fail_stale_trials(study)
    if not study.trials:  # trial 0: the start config itself, the incumbent to beat
        incumbent = start_values(tune, base)
        if incumbent:
            study.enqueue_trial(incumbent, user_attrs={"incumbent": True})
    study.sampler = build_sampler(tune, len(study.trials))
    parent = _parent_run(client, study, experiment or name)

    def run_config(
        params: dict[str, Any], run_name: str, left: float | None, tags: dict[str, str]
    ) -> TrainConfig:
        """One run of the study: the base config with the study's updates and ``params``,
        its own name, ``left`` of the budget as its own, nested under the parent run with
        ``tags``."""
        updates: dict[str, Any] = {
            **(train_updates or {}),
            **training_updates(params, base),
            "run_name": run_name,
            "output_dir": str(output_dir),
            "progress": "off",
        }
        if left is not None:  # what is left: the run stops there
            updates["cost.budget_usd"] = left
        if parent is not None:
            updates["mlflow.parent_run_id"] = parent
            updates["mlflow.tags"] = {**base.mlflow.tags, "tune.study": name, **tags}
        return api.updated(base, updates)

    while True:
        trials = study.get_trials(deepcopy=False)
        spent = sum(float(t.user_attrs.get("cost_usd", 0.0)) for t in trials)
        retried = _retried(trials)
        counted = len([t for t in trials if _counts(t, retried)])
        if counted >= tune.n_trials:
            reason = f"{counted} of tune.n_trials={tune.n_trials} trials finished"
            break
        if tune.budget_usd is not None and spent >= tune.budget_usd:
            reason = f"budget: ${spent:.6f} spent of tune.budget_usd=${tune.budget_usd:g}"
            break
        with _quiet_heartbeats():
            trial = study.ask()
        rdb.record_heartbeat(trial._trial_id)  # at once: a trial without one is never stale
        params = suggest(trial, tune)
        run_name = _run_name(name, params)
        trial.set_user_attr("run_name", run_name)
        left = None if tune.budget_usd is None else tune.budget_usd - spent
        config = run_config(params, run_name, left, {"tune.trial": str(trial.number)})
        pruner = CyclePruner(trial)
        result = api.finished(config)  # a run that ended (a retried trial's values)...
        try:
            if result is None or result.status in ("preempted", "budget_exhausted"):
                with _heartbeat(rdb, trial):
                    result = api.train(
                        config, resume="if_present", data=data, spec=spec, cycle_hooks=[pruner]
                    )
        except api.TrainingDiverged as exc:  # FAIL with its reason; the study goes on
            _fail(study, trial, f"diverged: {exc}")
            continue
        if result.status == "preempted":  # SIGTERM: FAIL, queued again; its run resumes
            _requeue(study, rdb, trial)
            raise TuneInterrupted(
                f"trial {trial.number} stopped by SIGTERM at step {result.steps_done} "
                f"(checkpointed): run the study again to resume it"
            )
        _tell(study, trial, pruner, result)
        if result.status == "budget_exhausted":  # it ran until what was left was spent
            spent = sum(
                float(t.user_attrs.get("cost_usd", 0.0)) for t in study.get_trials(deepcopy=False)
            )
            reason = (
                f"budget: trial {trial.number} spent what was left of "
                f"tune.budget_usd=${tune.budget_usd:g} (${spent:.6f} in all)"
            )
            break
    frozen = study.get_trials(deepcopy=False)
    retried = _retried(frozen)
    trials = [_summary(t, retried) for t in frozen]
    spent = sum(float(t.user_attrs.get("cost_usd", 0.0)) for t in frozen)
    near = _near(tune, base, trials)
    ledger = {"spent": spent}

    def train_seed(params: dict[str, int | float], i: int) -> float | None:
        """``params`` on seed ``base``'s + ``i``: its best val AUC (a diverged run:
        -inf), None when the budget is spent."""
        budget = tune.budget_usd
        if budget is not None and ledger["spent"] >= budget:
            return None
        seed = base.runtime.seed + i
        config = run_config(
            {**params, "runtime.seed": seed},
            f"{_run_name(name, params)}-seed{seed}",
            None if budget is None else budget - ledger["spent"],
            {"tune.confirm": str(seed)},
        )
        result = api.finished(config)
        try:
            if result is None or result.status in ("preempted", "budget_exhausted"):
                result = api.train(config, resume="if_present", data=data, spec=spec)
        except api.TrainingDiverged:
            return -math.inf
        ledger["spent"] += float(result.cost_usd)
        if result.status == "preempted":
            raise TuneInterrupted(f"the pick's check on seed {seed} stopped by SIGTERM: run again")
        if result.status == "budget_exhausted":
            return None
        values = [b.val_auc for b in result.finals if math.isfinite(b.val_auc)]
        return max(values) if values else -math.inf

    best, checks = confirm_pick(
        near, tune.judge_seeds, tune.adopt_confidence, tune.adopt_max_loss, train_seed
    )
    return StudySummary(
        study=study.study_name,
        storage=_mask(storage),
        trials=trials,
        best_trial=best.trial.number if best else None,
        best_value=best.value if best else None,
        best_params=best.params if best else {},
        best_cycles=best.cycles if best else None,
        best_steps=best.steps if best else None,
        checks=checks,
        spent_usd=round(ledger["spent"], 6),
        steps=sum(t.steps or 0 for t in trials),
        stop_reason=reason,
        mlflow_run_id=parent,
    )


def _near(tune: TuneConfig, base: TrainConfig, trials: list[TrialSummary]) -> list[Pick]:
    """:func:`ranked` with the study's settings: a shorter config only where
    ``schedule.max_cycles`` is searched (:func:`fewest_cycles`), and only one the training
    job accepts."""
    cycles = tune.space.get("schedule.max_cycles")

    def valid(params: dict[str, int | float]) -> bool:
        try:
            api.updated(base, training_updates(params, base))
        except api.ConfigError:
            return False
        return True

    low = fewest_cycles(int(cycles.low), base) if cycles is not None else None
    return ranked(trials, tune.adopt_max_loss, base.optim.batch_size, low, valid)


def fewest_cycles(low: int, base: TrainConfig) -> int:
    """The fewest cycles a trial's shorter config (its first k cycles, ``max_cycles`` k)
    may have: the space's low bound and, with cycle-aware stopping on, one more than
    ``stopping.min_cycles``. A run of ``min_cycles`` cycles or fewer is a fixed length:
    the rule can no longer let it go on after a cycle that won. Measured on the tuning
    window it is cheapest exactly where the first cycles hold the best (2013 months
    1-3), and it has nothing to spend where later cycles win (months 4-6: one cycle
    was 0.0182 behind the shipped run's three on seed 0; docs/benchmarks.md)."""
    if base.stopping.enabled:
        return max(low, base.stopping.min_cycles + 1)
    return low


def _counts(t: optuna.trial.FrozenTrial, retried: set[int]) -> bool:
    """Toward ``n_trials``: every ended trial but a stopped one queued again."""
    name = t.state.name
    return name in ("COMPLETE", "PRUNED") or (name == "FAIL" and t.number not in retried)


def _requeue(study: Any, storage: Any, trial: Any) -> None:
    """A trial whose process is stopping (SIGTERM): FAIL, and queued again by the retry
    callback now rather than after its heartbeat's grace period."""
    from optuna.trial import TrialState

    study.tell(trial, state=TrialState.FAIL)
    storage.get_heartbeat_stale_trial_callback()(study, study._storage.get_trial(trial._trial_id))


def _fail(study: Any, trial: Any, reason: str) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("fail_reason", reason[:500])
    study.tell(trial, state=TrialState.FAIL)
    log.warning("trial %d failed: %s", trial.number, reason)


def _tell(study: Any, trial: Any, pruner: CyclePruner, result: TrainResult) -> None:
    from optuna.trial import TrialState

    schedule = api.CosineSchedule(**result.schedule)
    spe = int(result.schedule["steps_per_epoch"])
    running, cycles = -math.inf, []
    for b in result.finals:  # cycles closed before a resume reached no hook
        running = max(running, b.val_auc) if math.isfinite(b.val_auc) else running
        done = schedule.cycle_end_step(b.cycle) + 1
        if b.cycle not in pruner.reported and math.isfinite(running):
            trial.report(running, epoch_step(done, spe))
        if math.isfinite(running):
            cycles.append((done, running))
    trial.set_user_attr("cycles", cycles)
    trial.set_user_attr("cost_usd", float(result.cost_usd))
    trial.set_user_attr("steps", int(result.steps_done))
    trial.set_user_attr("mlflow_run_id", result.mlflow_run_id)
    if result.status in ("pruned", "budget_exhausted"):
        stopped_by = "pruner" if result.status == "pruned" else "budget"
        trial.set_user_attr("stopped_by", stopped_by)
        trial.set_user_attr("pruned_at_cycle", pruner.pruned_at)
        study.tell(trial, state=TrialState.PRUNED)
        log.info("trial %d stopped by the %s: %s", trial.number, stopped_by, result.stop_reason)
        return
    value = max((b.val_auc for b in result.finals), default=float("nan"))
    if value != value:
        _fail(study, trial, "no cycle closed with a finite val AUC")
        return
    study.tell(trial, value)
    log.info("trial %d: best val AUC %.4f in %d steps", trial.number, value, result.steps_done)


def _mask(url: str) -> str:
    import re

    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)
