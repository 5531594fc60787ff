"""When the loop retrains: the drift monitor's and the retrain's schedules and window."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from pipeline.base.sections.common import Batches, Section

__all__ = ["MonitorConfig", "RetrainConfig"]


class MonitorConfig(Section):
    """The drift monitor's own schedule (it also runs whenever a batch lands)."""

    schedule: str | None = Field(
        "0 * * * *", description="cron of the periodic check (UTC); null: on landed batches only"
    )


class RetrainConfig(Section):
    """When and how the retrain DAG trains (docs/design.md, the flow of one retrain)."""

    schedule: str | None = Field(
        "0 3 * * 1", description="cron of scheduled retrains (UTC); null: on requests only"
    )
    window_batches: Batches = Field(
        3,
        description="the latest valid, labelled batches one retrain trains on (its window; "
        "the latest 20 % of the window's rows by timestamp are the validation set)",
    )
    train_config: Path = Field(
        Path("configs/flights.yaml"),
        description="the training job's YAML (model, optimizer, schedule in epochs; "
        "docs/training.md); the retrain sets the window's files, run name and MLflow on it. "
        "Point it at your own data set's file",
    )
    backend: Literal["local", "kubernetes"] = Field(
        "local", description="local: in the Airflow worker; kubernetes: a GPU pod"
    )
    kubernetes_namespace: str = Field("cosine-retrain", description="namespace of the GPU pod")
    trainer_image: str = Field(
        "cosine-retrain-trainer:0.1.0", description="image of the GPU pod (infra/trainer)"
    )
    pod_template_file: Path = Field(
        Path("infra/k8s/trainer-pod.yaml"), description="pod template of the GPU job"
    )
    processes: int = Field(
        1, ge=1, le=64, description="training processes in the pod (>1: torchrun, DDP, one per GPU)"
    )
