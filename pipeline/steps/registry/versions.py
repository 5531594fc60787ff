"""Model versions of one candidate of one run: logged, created, found again, deduplicated.

:func:`register_candidate` makes a version idempotent: it is found again by the
tags ``training_run_id`` + ``candidate`` before anything is created; it is
created only after the model's artifacts were uploaded and listed back; the MLflow
client's own retry of a create whose answer was lost (a second version) is undone
at once (the lowest version of a candidate is kept).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.base.records import Stored
from pipeline.base.tracking import mlflow_uris
from pipeline.steps.registry.aliases import RegistryError
from training.api import PROJECT_ROOT

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from training.api import DatasetSpec

__all__ = ["RegisteredVersion", "ensure_model", "register_candidate"]

log = logging.getLogger(__name__)

MODEL_CODE = PROJECT_ROOT / "training" / "model" / "mlflow_model.py"
TRAINING_CODE = PROJECT_ROOT / "training"  # the package travels with the model (code_paths)


@dataclass(frozen=True)
class RegisteredVersion(Stored):
    name: str
    version: str
    candidate: str  # "cycle-00".."cycle-NN" or "ensemble"
    cycle: int | None
    step: int | None
    lr: float | None
    val_auc: float  # on the run's holdout
    val_loss: float
    training_run_id: str
    model_uri: str
    created: bool  # False: found from an earlier (retried) registration


def _versions_of(
    client: MlflowClient, name: str, run_id: str, candidate: str
) -> list[ModelVersion]:
    """Every version of ``candidate`` of ``run_id``, lowest first.

    A failed search raises: answering "none" while MLflow is away would register
    the candidate a second time.
    """
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(
            f"name='{name}' and tags.training_run_id='{run_id}' and tags.candidate='{candidate}'"
        )
    except MlflowException as exc:
        raise RegistryError(
            f"cannot look up the versions of {name} at {client.tracking_uri} "
            f"(run {run_id}, {candidate}): {str(exc).splitlines()[0][:300]}; "
            "registration is safe to retry once MLflow answers"
        ) from None
    return sorted(found, key=lambda v: int(v.version))


def _find(client: MlflowClient, name: str, run_id: str, candidate: str) -> ModelVersion | None:
    found = _versions_of(client, name, run_id, candidate)
    return found[0] if found else None


def _drop_duplicates(
    client: MlflowClient, name: str, run_id: str, candidate: str
) -> ModelVersion | None:
    """Keep the lowest version of a candidate, delete the others (unless an alias holds one).

    They come from the MLflow client retrying a ``create_model_version`` whose
    answer was lost (it retries POSTs), or from two registrations racing; both
    sides keep the same, lowest, version.
    """
    found = _versions_of(client, name, run_id, candidate)
    for extra in found[1:]:
        if extra.aliases:
            log.warning(
                "v%s of %s duplicates v%s but holds aliases %s; kept",
                extra.version,
                name,
                found[0].version,
                extra.aliases,
            )
            continue
        log.warning(
            "deleting v%s of %s: a duplicate of v%s (%s of run %s)",
            extra.version,
            name,
            found[0].version,
            candidate,
            run_id,
        )
        client.delete_model_version(name, str(extra.version))
    return found[0] if found else None


def _check_artifacts(
    client: MlflowClient, model_uri: str, model_id: str, checkpoints: list[Path]
) -> None:
    """The logged model's files are there: MLmodel and every checkpoint, listed back."""
    import mlflow

    uri = client.tracking_uri
    names: set[str] = set()
    try:
        todo = [client.get_logged_model(model_id).artifact_location.rstrip("/")]
        while todo:  # the model's tree is a handful of files in a few folders
            folder = todo.pop()
            for item in mlflow.artifacts.list_artifacts(artifact_uri=folder, tracking_uri=uri):
                base = item.path.rsplit("/", 1)[-1]
                if item.is_dir:
                    todo.append(f"{folder}/{base}")
                else:
                    names.add(base)
    except Exception as exc:
        raise RegistryError(
            f"cannot list the artifacts of {model_uri} at {uri}: {str(exc).splitlines()[0][:300]}"
        ) from None
    missing = [n for n in ["MLmodel", *(c.name for c in checkpoints)] if n not in names]
    if missing:
        raise RegistryError(
            f"{model_uri} at {uri} lacks {missing} after logging; no version was created"
        )


def ensure_model(client: MlflowClient, name: str, spec: DatasetSpec) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            about = f"{spec.description.strip()}\n\nTarget: {spec.target_description.strip()}"
            client.create_registered_model(
                name,
                description=about,
                tags={"dataset": spec.name, "target": spec.target},
            )
        except MlflowException as exc:  # created concurrently
            if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise


def _log_model(
    client: MlflowClient,
    experiment_id: str,
    candidate: str,
    checkpoints: list[Path],
    example: pd.DataFrame,
    tags: dict[str, str],
) -> tuple[str, str]:
    """Log a pyfunc "from code" with the checkpoints as artifacts; (model_uri, model_id)."""
    import mlflow
    import pandas as pd

    from training.api import Scorer, as_model_input, model_signature

    scorer = Scorer.from_files(checkpoints)
    # the signature comes from the spec's roles (kept in the preprocessing), never from
    # the example's dtypes: a categorical column all-null in the training window would
    # be inferred as double and refuse every later batch that has values
    signature = model_signature(scorer)
    inputs = as_model_input(example, scorer.input_types)
    import numpy
    import pydantic
    import torch
    import yaml

    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"pandas=={pd.__version__}",
        f"numpy=={numpy.__version__}",
        f"pydantic=={pydantic.VERSION}",
        f"pyyaml=={yaml.__version__}",
        f"mlflow=={mlflow.__version__}",
    ]
    with mlflow_uris(client.tracking_uri, experiment_id):
        info = mlflow.pyfunc.log_model(
            name=candidate,
            python_model=str(MODEL_CODE),
            artifacts={f"checkpoint_{i}": str(p) for i, p in enumerate(checkpoints)},
            code_paths=[str(TRAINING_CODE)],
            signature=signature,
            input_example=inputs.head(5),
            pip_requirements=requirements,  # inferring them costs 35-55 s (STACK_NOTES)
            tags=tags,
        )
    return info.model_uri, info.model_id


def register_candidate(
    client: MlflowClient,
    name: str,
    run_id: str,
    experiment_id: str,
    candidate: str,
    checkpoints: list[Path],
    holdout: pd.DataFrame,
    tags: dict[str, str],
    description: str,
    *,
    cycle: int | None,
    step: int | None,
    lr: float | None,
    auc: float,
    loss: float,
) -> RegisteredVersion:
    def found(version: str, uri: str, created: bool) -> RegisteredVersion:
        return RegisteredVersion(
            name, str(version), candidate, cycle, step, lr, auc, loss, run_id, uri, created
        )

    existing = _find(client, name, run_id, candidate)
    if existing is not None:
        log.info("%s of run %s is already v%s of %s", candidate, run_id, existing.version, name)
        return found(existing.version, existing.source, created=False)
    if not math.isfinite(auc):
        raise RegistryError(f"{candidate} of run {run_id} scores a non-finite AUC on the holdout")
    model_uri, model_id = _log_model(
        client, experiment_id, candidate, checkpoints, holdout, {"training_run_id": run_id}
    )
    _check_artifacts(client, model_uri, model_id, checkpoints)
    # the registry store looks the logged model up through MLflow's *global* tracking
    # URI (not this client's): point it at ours for the call
    with mlflow_uris(client.tracking_uri):
        version = client.create_model_version(
            name, model_uri, run_id=run_id, tags=tags, description=description, model_id=model_id
        )
    kept = _drop_duplicates(client, name, run_id, candidate) or version
    if str(kept.version) != str(version.version):
        log.info(
            "%s of run %s: keeping v%s, not v%s", candidate, run_id, kept.version, version.version
        )
    version = kept
    log.info("registered %s of run %s as v%s of %s", candidate, run_id, version.version, name)
    return found(version.version, model_uri, created=True)
