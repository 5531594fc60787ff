"""What a run says about itself: MLflow tags and params, and its curves plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.checkpoint.atomic import atomic_write_text
from training.config.locations import artifact_location, code_revision, tracking_uri
from training.telemetry.recorder import Telemetry, read_metrics

if TYPE_CHECKING:
    from training.config.train import TrainConfig
    from training.data.dataset import PreparedData
    from training.data.spec import DatasetSpec
    from training.engine.nan_guard import LoopState
    from training.engine.runtime import Runtime
    from training.results import TrainResult
    from training.schedule import CosineSchedule

__all__ = ["cycle_ends", "open_telemetry", "plot_curves", "publish", "run_params", "run_tags"]

log = logging.getLogger("training.engine.trainer")


def run_tags(
    config: TrainConfig,
    schedule: CosineSchedule,
    data: PreparedData,
    spec: DatasetSpec,
    runtime: Runtime,
    world_size: int,
) -> dict[str, str]:
    return {
        "git_revision": code_revision(),
        "config_hash": config.config_hash()[:16],
        "definition_hash": config.definition_hash()[:16],
        "schedule_fingerprint": schedule.fingerprint()[:16],
        "data_fingerprint": data.fingerprint[:16],
        "dataset": spec.name,
        "device": str(runtime.device),
        "amp": runtime.amp,
        "world_size": str(world_size),
        **config.mlflow.tags,
    }


def cycle_ends(schedule: CosineSchedule, total_steps: int) -> list[int]:
    if schedule.max_cycles is not None:
        return schedule.cycle_end_steps()
    return [e for e in schedule.cycle_end_steps(64) if e < total_steps]


def run_params(
    config: TrainConfig, schedule: CosineSchedule, data: PreparedData, total_steps: int
) -> dict[str, Any]:
    params: dict[str, Any] = {f"schedule.{k}": v for k, v in schedule.to_dict().items()}
    params["schedule.total_steps"] = total_steps
    params["schedule.cycle_end_steps"] = cycle_ends(schedule, total_steps)

    def flatten(prefix: str, obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                flatten(f"{prefix}.{k}" if prefix else k, v)
        else:
            params.setdefault(prefix, obj)

    definition = config.definition()
    definition.pop("schedule", None)
    flatten("", definition)
    for k, v in data.describe().items():
        params[f"data.{k}"] = v
    return params


def plot_curves(
    records: list[dict[str, Any]],
    schedule: CosineSchedule,
    best_steps: list[int],
    out: Path,
    title: str,
    stop_step: int | None = None,
) -> Path | None:
    """The run's lr trace with its cycle boundaries, losses and validation curves."""
    from training.telemetry.plots import plot_training_curves

    steps = [r for r in records if "lr" in r]
    if not steps:
        return None
    evals = [r for r in records if "val_loss" in r]
    return plot_training_curves(
        schedule,
        [r["step"] for r in steps],
        [r["lr"] for r in steps],
        [r["train_loss"] for r in steps],
        [r["step"] for r in evals],
        [r["val_loss"] for r in evals],
        [r["val_auc"] for r in evals],
        out,
        best_steps=best_steps,
        stop_step=stop_step,
        title=title,
    )


def open_telemetry(
    config: TrainConfig,
    run_dir: Path,
    run_name: str,
    state: LoopState,
    *,
    enabled: bool,
    experiment: str,
    tags: dict[str, str],
    params: dict[str, Any],
    pending: list[Any] | None,
) -> Telemetry:
    """Start (or, with the checkpoint's ``pending`` telemetry, resume) the run's telemetry
    and write ``config.resolved.json`` beside its checkpoints."""
    uri = tracking_uri(config.mlflow.tracking_uri, config.output_dir.parent)
    telemetry = Telemetry(
        enabled=enabled,
        run_dir=run_dir,
        tracking_uri=uri if config.mlflow.enabled else None,
        experiment=experiment,
        artifact_location=artifact_location(
            config.mlflow.artifact_location, uri, config.output_dir.parent
        ),
    )
    resumed = pending is not None
    telemetry.start(
        run_name=run_name,
        run_key=str(state.telemetry_key),
        tags=tags,
        params=params,
        resume_run_id=state.mlflow_run_id,
        resume=resumed,
        resume_step=state.step if resumed else None,
        pending=pending or (),
        parent_run_id=config.mlflow.parent_run_id,
    )
    if resumed:
        log.info("resumed %s at step %d", run_name, state.step)
    if enabled:
        atomic_write_text(run_dir / "config.resolved.json", json.dumps(config.resolved(), indent=2))
    return telemetry


def publish(
    result: TrainResult, telemetry: Telemetry, schedule: CosineSchedule, best_steps: list[int]
) -> None:
    """The end of a run: its cost, ``result.json`` (atomic), tags, artifacts and curves."""
    run_dir = Path(result.run_dir)
    telemetry.record(max(0, result.steps_done - 1), {"cost_usd": result.cost_usd})
    telemetry.commit()
    path = run_dir / "result.json"
    atomic_write_text(path, result.to_json())
    # the sender process logs these while this one draws the plot (0.15 s)
    telemetry.set_tags(
        {
            "status": result.status,
            "stop_reason": result.stop_reason,
            "nan_count": result.nan_count,
            "best_cycle": result.best_cycle,
        }
    )
    telemetry.log_artifact(path)
    telemetry.log_artifact(run_dir / "config.resolved.json")
    curves = plot_curves(
        read_metrics(telemetry.metrics_path),
        schedule,
        best_steps,
        run_dir / "curves.png",
        f"{result.run_name}: lr, losses and validation AUC",
        result.stopping.stop_step if result.stopping else None,
    )
    if curves is not None:
        telemetry.log_artifact(curves)
