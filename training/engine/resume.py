"""Resume and rollback: the ``last`` checkpoint written from, and loaded into, the live run.

:func:`resume_point` reads the newest usable ``last`` (falling back to
``last.prev``) and refuses one that belongs to another run definition;
:func:`last_payload` captures the live objects; :func:`restore` puts a payload back
into them (``keep_counters``: a rollback keeps what happened since, such as the
NaN count, the rollbacks and the time spent).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.checkpoint.files import CheckpointError, load_latest
from training.checkpoint.payload import Identity, LastPayload
from training.config.train import TrainConfig, diff_definitions
from training.engine.nan_guard import LoopState
from training.schedule import ScheduleMismatchError

if TYPE_CHECKING:
    from training.engine.loop import StepRunner
    from training.schedule import CosineAnnealingScheduler

__all__ = ["last_payload", "load_last", "restore", "resume_point"]

log = logging.getLogger("training.engine.trainer")


def load_last(path: Path) -> tuple[LastPayload, Path]:
    """The newest usable ``last`` checkpoint at ``path`` (else its ``.prev``), typed."""
    data, used, problems = load_latest(path)
    for p in problems:
        log.warning("%s; resuming from %s instead", p, used)
    if data.get("kind") != "last":
        raise CheckpointError("--resume needs a 'last' checkpoint, not a best-of-cycle one")
    return LastPayload.from_mapping(data, str(used)), used


def resume_point(path: Path, config: TrainConfig) -> LastPayload:
    """The checkpoint to resume from; refused if the run's definition changed since."""
    ckpt, _ = load_last(path)
    same = ckpt.identity.definition_hash == config.definition_hash()
    if not same and not _turns_stopping_on(ckpt, config):
        changes = diff_definitions(ckpt.identity.definition, config.definition())
        raise CheckpointError(
            "the configuration changed since the checkpoint, so resuming would not continue "
            "the same run: " + "; ".join(changes[:8]) + ". Start a new run (another "
            "--run-name) or restore these settings."
        )
    return ckpt


def _turns_stopping_on(ckpt: LastPayload, config: TrainConfig) -> bool:
    """A checkpoint from before the stopping rule existed (no rule state: payload
    version 1, whose definition has no ``stopping``) resumed with the rule on: the same
    run, plus the rule, which the trainer replays over its closed cycles."""
    if ckpt.stopping is not None or not config.stopping.enabled:
        return False
    off = config.model_copy(
        update={"stopping": config.stopping.model_copy(update={"enabled": False})}
    )
    return ckpt.identity.definition_hash == off.definition_hash()


def last_payload(
    identity: Identity,
    runner: StepRunner,
    scheduler: CosineAnnealingScheduler,
    state: LoopState,
    *,
    device_seconds: float,
    pending: list[Any],
    stopping: dict[str, Any],
) -> LastPayload:
    """Everything to continue the run exactly as it is now."""
    counters = asdict(state)
    counters["device_seconds"] = device_seconds
    cuda = runner.runtime.device.type == "cuda"
    scaler = runner.scaler
    return LastPayload(
        identity=identity,
        model=runner.module.state_dict(),
        step=state.step,
        optimizer=runner.optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        scaler=scaler.state_dict() if scaler.is_enabled() else None,
        rng={
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if cuda else [],
        },
        trainer=counters,
        telemetry_pending=pending,
        stopping=stopping,
    )


def restore(
    ckpt: LastPayload,
    runner: StepRunner,
    scheduler: CosineAnnealingScheduler,
    state: LoopState,
    *,
    keep_counters: bool = False,
) -> None:
    """Load ``ckpt`` into the live objects (resume, or a rollback with ``keep_counters``);
    ``state`` is updated in place (the cycle bests hold it)."""
    try:
        runner.module.load_state_dict(ckpt.model, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not fit this model: {exc}") from None
    runner.optimizer.load_state_dict(ckpt.optimizer)
    saved = dict(ckpt.trainer)
    scheduler.group_scales = [float(saved["lr_scale"])]
    try:
        scheduler.load_state_dict(ckpt.scheduler)
    except ScheduleMismatchError as exc:
        raise CheckpointError(f"checkpoint belongs to another schedule: {exc}") from None
    if ckpt.scaler is not None and runner.scaler.is_enabled():
        runner.scaler.load_state_dict(ckpt.scaler)
    torch.set_rng_state(ckpt.rng["torch"])
    if runner.runtime.device.type == "cuda" and ckpt.rng["cuda"]:
        torch.cuda.set_rng_state_all(ckpt.rng["cuda"])
    saved["cycle_best"] = {int(k): v for k, v in saved["cycle_best"].items()}
    if keep_counters:  # a rollback keeps what happened since (NaNs, rollbacks, time)
        for name in LoopState.KEPT_ON_ROLLBACK:
            saved[name] = getattr(state, name)
    try:
        restored = LoopState(**saved)
    except TypeError as exc:
        raise CheckpointError(f"checkpoint's loop state does not fit this job: {exc}") from None
    vars(state).update(vars(restored))
