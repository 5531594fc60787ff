"""What the cosine-retrain DAGs share: assets, task defaults, the error policy.

No logic lives here or in the DAG files: every task body calls one function of
:mod:`pipeline.flow`. Nothing touches a database, a connection or a service at
parse time; the configuration is read from the environment
(``COSINE_RETRAIN_*``, ``$COSINE_RETRAIN_CONFIG``) only to name schedules.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Asset

from pipeline.config import load_config
from pipeline.notifiers import PipelineNotifier, dag_failure_callback
from pipeline.storage import ID_PATTERN as ID_PATTERN  # the DAG params' id pattern

CONFIG = load_config()  # environment and YAML only: no I/O beyond reading the file

# The lineage users see in the UI: a batch lands -> the monitor may request a
# retrain -> the retrain trains, registers, gates; labels land -> the canary is reviewed.
BATCH_LANDED = Asset(name="batch_landed")
LABELS_LANDED = Asset(name="labels_landed")
RETRAIN_REQUEST = Asset(name="retrain_request")

START = pendulum.datetime(2024, 1, 1, tz="UTC")
TAGS = ["cosine-retrain"]

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "ml-platform",
    # transient failures (a server restarting, a network blip) retry with backoff;
    # permanent ones (bad data, a refused gate, a bad config) fail at once: see permanent()
    "retries": 2,
    "retry_delay": timedelta(seconds=10),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=5),
    "on_failure_callback": PipelineNotifier(),
}
DAG_FAILURE_CALLBACK = dag_failure_callback


@contextlib.contextmanager
def permanent() -> Iterator[None]:
    """Turn errors that a retry cannot fix into AirflowFailException (no retry)."""
    from airflow.sdk.exceptions import AirflowFailException

    from pipeline.config import ConfigError
    from pipeline.gate import GateFailed
    from pipeline.ingest import IngestError
    from pipeline.registry import RegistryError
    from pipeline.storage import InvalidKey, ObjectExists
    from pipeline.validation import ValidationFailed
    from training.checkpoint import CheckpointError
    from training.config import ConfigError as TrainConfigError
    from training.data.spec import DataError
    from training.trainer import TrainingDiverged

    try:
        yield
    except (
        ValidationFailed,
        GateFailed,
        IngestError,
        RegistryError,
        ConfigError,
        TrainConfigError,
        DataError,
        CheckpointError,
        TrainingDiverged,
        InvalidKey,
        ObjectExists,
        ValueError,
    ) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def env() -> Any:
    """The pipeline environment of a task (built at run time, never at parse time)."""
    from pipeline.flow import build_env

    return build_env()


def newest_event_extra(triggering_asset_events: Any, key: str) -> Any:
    """``extra[key]`` of the newest triggering asset event, if any (STACK_NOTES 1.2:
    every event since the last run is there; the newest one wins)."""
    newest = None
    for events in (triggering_asset_events or {}).values():
        for event in events:
            if key in (event.extra or {}) and (
                newest is None or event.timestamp > newest.timestamp
            ):
                newest = event
    return newest.extra[key] if newest is not None else None
