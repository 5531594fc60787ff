"""The MLflow model registry: every cosine cycle's best as a version, aliases with history.

A training run (``python -m training train``) leaves in MLflow one checkpoint
per cosine cycle (``checkpoints/best-cycle-NN.ckpt``) and ``result.json``.
:func:`register_training_run` turns each into a version of the spec's model
(``flight_delay``): an MLflow pyfunc (:class:`training.serving.TabularPyfunc`,
logged "from code", so nothing is pickled) that carries its preprocessing and
scores raw rows, with a signature inferred from real holdout rows and an input
example. Versions are tagged with their lineage (cycle, step, lr, metrics,
schedule, data snapshot, reports, code revision). When the mean of the cycle
bests' probabilities (a snapshot ensemble) beats the best single one on the
holdout, it becomes a version of its own. The best version of the run gets the
``challenger`` alias.

Registration is idempotent: a version is found again by the tags
``training_run_id`` + ``candidate`` before anything is created, so a retried
task creates no second version. It never leaves partial state: a version is
created only after its model's artifacts were uploaded and listed back (a failed
upload leaves no version), the MLflow client's own retry of a create whose
answer was lost (which makes a second version) is undone at once (the lowest
version of a candidate is kept), and the ``challenger`` alias moves only after
every version exists. A lookup that fails is an error, never "not registered".

Every alias move goes through :func:`move_alias`, which records who moved
which alias from which version to which, when and why: as tags on the version
and as one object per move in the store (``registry/<model>/alias-moves/``),
which :func:`alias_history` reads back.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import math
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.storage import ObjectExists, ObjectStore, check_id, get_json, join_key, put_json

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from pipeline.config import PipelineConfig
    from training.data.spec import DatasetSpec

__all__ = [
    "ALIASES",
    "AliasMove",
    "RegisteredVersion",
    "Registration",
    "RegistryError",
    "actor",
    "alias_history",
    "build_client",
    "current_alias",
    "model_name",
    "move_alias",
    "register_training_run",
    "safe_alert",
    "tracking_uri",
    "training_holdout",
    "version_tags",
]

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, CANARY, PREVIOUS = "champion", "challenger", "canary", "previous_champion"
ALIASES = (CHAMPION, CHALLENGER, CANARY, PREVIOUS)
MODEL_CODE = Path(__file__).resolve().parent.parent / "training" / "mlflow_model.py"
TRAINING_CODE = MODEL_CODE.parent
REGISTRABLE = ("completed", "budget_exhausted")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says what to fix."""


# ------------------------------------------------------------------------------ clients


def tracking_uri(config: PipelineConfig) -> str:
    """``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite file."""
    from training.telemetry import default_tracking_uri

    return config.mlflow.tracking_uri or default_tracking_uri(config.home)


def build_client(config: PipelineConfig) -> MlflowClient:
    from mlflow import MlflowClient

    uri = tracking_uri(config)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_name(config: PipelineConfig, spec: DatasetSpec) -> str:
    return config.mlflow.model_name or spec.model_name


def actor() -> str:
    """Who is acting: ``$COSINE_RETRAIN_ACTOR``, the Airflow task, else user@host."""
    if os.environ.get("COSINE_RETRAIN_ACTOR"):
        return os.environ["COSINE_RETRAIN_ACTOR"]
    dag, run = os.environ.get("AIRFLOW_CTX_DAG_ID"), os.environ.get("AIRFLOW_CTX_DAG_RUN_ID")
    if dag and run:
        task = os.environ.get("AIRFLOW_CTX_TASK_ID", "?")
        return f"airflow:{dag}/{run}/{task}"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def safe_alert(
    config: PipelineConfig,
    store: ObjectStore,
    kind: str,
    run_key: str,
    title: str,
    text: str,
    details: dict[str, Any],
) -> None:
    """Send one alert (deduplicated per kind and ``run_key``); a failure to send is
    logged and never changes the decision that caused it."""
    try:
        from pipeline.alerts import Alert, AlertKind, send_alert

        alert = Alert(AlertKind(kind), run_key, title, text, details)
        send_alert(alert, config=config, store=store)
    except Exception:  # the alerts module already retried and recorded the failure
        log.exception("could not send the %s alert for %s", kind, run_key)


def _now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------------------ aliases


@dataclass(frozen=True)
class AliasMove:
    model: str
    alias: str
    from_version: str | None
    to_version: str | None  # None: the alias was removed
    who: str
    why: str
    when: str  # ISO 8601, UTC
    key: str = ""

    def describe(self) -> str:
        target = f"v{self.to_version}" if self.to_version else "(removed)"
        source = f"v{self.from_version}" if self.from_version else "(none)"
        return f"{self.when} {self.alias}: {source} -> {target} by {self.who}: {self.why}"


def current_alias(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None (also when the model does not exist yet)."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise  # MLflow away: "no alias" would be a guess
    value = aliases.get(alias)
    return str(value) if value is not None else None


def move_alias(
    client: MlflowClient,
    store: ObjectStore,
    name: str,
    alias: str,
    version: str | int | None,
    *,
    why: str,
    who: str | None = None,
) -> AliasMove:
    """Point ``alias`` at ``version`` (None removes it) and record the move."""
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}; the pipeline uses {list(ALIASES)}")
    before = current_alias(client, name, alias)
    target = None if version is None else str(version)
    when = _now()
    move = AliasMove(name, alias, before, target, who or actor(), why, when.isoformat())
    if target is None:
        if before is not None:
            client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, target)
        for key, value in (("at", move.when), ("by", move.who), ("why", why[:4000])):
            client.set_model_version_tag(name, target, f"alias.{alias}.{key}", value)
    if before is not None and before != target:
        client.set_model_version_tag(name, before, f"alias.{alias}.left_at", move.when)
    key = join_key(
        "registry",
        check_id(name, "model name"),
        "alias-moves",
        f"{when:%Y%m%dT%H%M%S%f}-{alias}-{uuid.uuid4().hex[:8]}.json",
    )
    put_json(store, key, asdict(move))
    client.set_registered_model_tag(name, "last_alias_move", move.describe()[:5000])
    log.info("alias %s", move.describe())
    return AliasMove(**{**asdict(move), "key": key})


def alias_history(store: ObjectStore, name: str) -> list[AliasMove]:
    """Every recorded alias move of ``name``, oldest first."""
    prefix = join_key("registry", check_id(name, "model name"), "alias-moves")
    moves = [AliasMove(**{**get_json(store, k), "key": k}) for k in store.list(prefix)]
    return sorted(moves, key=lambda m: (m.when, m.key))


def version_tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    return dict(client.get_model_version(name, str(version)).tags)


# ------------------------------------------------------------------------------ registration


@dataclass(frozen=True)
class RegisteredVersion:
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


@dataclass(frozen=True)
class Registration:
    model: str
    training_run_id: str
    versions: tuple[RegisteredVersion, ...]
    challenger: RegisteredVersion
    ensemble: dict[str, Any] = field(default_factory=dict)  # what the ensemble scored

    def describe(self) -> str:
        lines = [f"registered {len(self.versions)} version(s) of {self.model}:"]
        for v in self.versions:
            where = (
                f"cycle {v.cycle} step {v.step} lr {v.lr:.3g}"
                if v.cycle is not None
                else v.candidate
            )
            new = "" if v.created else " (already registered)"
            lines.append(f"  v{v.version}: {where}, val_auc {v.val_auc:.4f}{new}")
        lines.append(f"challenger -> v{self.challenger.version}")
        return "\n".join(lines)


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


@contextlib.contextmanager
def mlflow_uris(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for a block, then put back as it was.

    ``mlflow.set_tracking_uri`` and ``set_experiment`` also write
    ``MLFLOW_TRACKING_URI``/``MLFLOW_EXPERIMENT_ID`` into the environment; left
    there, they would follow the process into every later step and subprocess.
    """
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    saved_env = {k: os.environ.get(k) for k in keys}
    # the globals themselves (None when unset), not get_tracking_uri()'s resolved default
    saved = (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        fluent._active_experiment_id,
    )
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        if experiment_id is not None:
            mlflow.set_experiment(experiment_id=experiment_id)
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])  # None unsets
        registry_utils._registry_uri = saved[1]
        fluent._active_experiment_id = saved[2]
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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


def _ensure_model(client: MlflowClient, name: str, spec: DatasetSpec) -> None:
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


def _download(client: MlflowClient, run_id: str, path: str, dest: Path) -> Path:
    from mlflow.exceptions import MlflowException

    try:
        return Path(client.download_artifacts(run_id, path, str(dest)))
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"training run {run_id} has no artifact {path!r} ({exc}); was it logged to MLflow?"
        ) from None


def _run_result(client: MlflowClient, run_id: str, work: Path) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        raise RegistryError(f"no MLflow run {run_id!r} in this tracking server") from None
    result = json.loads(_download(client, run_id, "result.json", work).read_text())
    if result.get("status") not in REGISTRABLE:
        raise RegistryError(
            f"training run {run_id} ended with status {result.get('status')!r} "
            f"({result.get('stop_reason')}); only {REGISTRABLE} runs are registered"
        )
    return result


def _store_key(store: ObjectStore, uri: str) -> str | None:
    """The store key of ``uri`` when the URI lies in this store, else None."""
    base = store.uri("probe")[: -len("probe")]
    return uri[len(base) :] if uri.startswith(base) else None


def training_holdout(
    client: MlflowClient,
    run_id: str,
    spec: DatasetSpec,
    work: Path | None = None,
    *,
    store: ObjectStore | None = None,
) -> pd.DataFrame:
    """The run's validation rows (features + target), rebuilt from its resolved config.

    Training files that lie in ``store`` are read through it (the pipeline's own
    credentials and endpoint), not through the job's default AWS chain.
    """
    from training.config import TrainConfig
    from training.data.dataset import prepare

    with _workdir(work) as folder:
        resolved = json.loads(_download(client, run_id, "config.resolved.json", folder).read_text())
        config = TrainConfig.model_validate(resolved)
        local: dict[str, str] = {}
        for field in ("features", "labels"):
            uri = getattr(config.data, field)
            key = _store_key(store, uri) if store is not None and uri else None
            if key is not None:
                dest = folder / "holdout-data" / f"{field}{Path(key).suffix}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                local[field] = str(store.get_file(key, dest))  # type: ignore[union-attr]
        data = prepare(
            config.data.model_copy(update=local),
            spec,
            min_category_count=config.model.min_category_count,
            max_categories=config.model.max_categories,
        )
    return data.valid_frame


@contextlib.contextmanager
def _workdir(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="cosine-retrain-registry-") as tmp:
        yield Path(tmp)


def _scores(scorer: Any, holdout: pd.DataFrame, target: str) -> tuple[Any, float, float]:
    from training.metrics import log_loss, roc_auc

    prob = scorer.predict_proba(holdout)
    y = holdout[target].to_numpy()
    return prob, roc_auc(y, prob), log_loss(y, prob)


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
    from mlflow.models import infer_signature

    from training.serving import PROBABILITY, Scorer

    scorer = Scorer.from_files(checkpoints)
    inputs = example[scorer.feature_columns]
    signature = infer_signature(inputs, pd.DataFrame({PROBABILITY: scorer.predict_proba(inputs)}))
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


def register_training_run(
    client: MlflowClient,
    store: ObjectStore,
    spec: DatasetSpec,
    run_id: str,
    *,
    name: str | None = None,
    lineage: dict[str, str] | None = None,
    holdout: pd.DataFrame | None = None,
    ensemble: bool = True,
    work: Path | None = None,
) -> Registration:
    """Register every cycle's best of ``run_id`` (and the ensemble if it wins); set ``challenger``.

    ``lineage`` (data snapshot keys, validation and drift report locations...)
    becomes version tags. ``holdout`` defaults to the run's own validation rows.
    """
    name = name or spec.model_name
    with _workdir(work) as folder:
        result = _run_result(client, run_id, folder)
        finals = [c for c in result["cycles"] if c.get("final")]
        if not finals:
            raise RegistryError(
                f"training run {run_id} closed no cosine cycle ({result['stop_reason']}): "
                "nothing to register; lengthen the run or raise its budget"
            )
        experiment_id = client.get_run(run_id).info.experiment_id
        if holdout is None:
            holdout = training_holdout(client, run_id, spec, folder, store=store)
        _ensure_model(client, name, spec)
        base = _base_tags(result, run_id, lineage or {})

        from training.checkpoint import load_checkpoint
        from training.serving import Scorer

        versions: list[RegisteredVersion] = []
        probs: dict[int, Any] = {}
        paths: dict[int, Path] = {}
        for best in sorted(finals, key=lambda c: c["cycle"]):
            cycle = int(best["cycle"])
            candidate = f"cycle-{cycle:02d}"
            path = _download(client, run_id, f"checkpoints/{Path(best['path']).name}", folder)
            ckpt = load_checkpoint(path)  # checksum + weights_only
            if ckpt.get("cycle") != cycle or int(ckpt.get("step", -1)) != int(best["step"]):
                raise RegistryError(
                    f"{path.name} of run {run_id} is not cycle {cycle}'s best at step "
                    f"{best['step']} (it says cycle {ckpt.get('cycle')}, step {ckpt.get('step')})"
                )
            paths[cycle] = path
            prob, auc, loss = _scores(Scorer([ckpt]), holdout, spec.target)
            probs[cycle] = prob
            tags = {
                **base,
                "candidate": candidate,
                "kind": "cycle_best",
                "cycle": str(cycle),
                "step": str(best["step"]),
                "lr": repr(float(best["lr"])),
                "val_auc": f"{auc:.6f}",
                "val_loss": f"{loss:.6f}",
                "checkpoint_sha256": best.get("sha256", ""),
            }
            description = (
                f"Best of cosine cycle {cycle} (step {best['step']}, lr {best['lr']:.3g}, "
                f"holdout AUC {auc:.4f}) of training run {result['run_name']}."
            )
            versions.append(
                _register(
                    client,
                    name,
                    run_id,
                    experiment_id,
                    candidate,
                    [path],
                    holdout,
                    tags,
                    description,
                    cycle=cycle,
                    step=int(best["step"]),
                    lr=float(best["lr"]),
                    auc=auc,
                    loss=loss,
                )
            )

        summary: dict[str, Any] = {}
        if ensemble and len(probs) >= 2:
            import numpy as np

            from training.metrics import log_loss, roc_auc

            y = holdout[spec.target].to_numpy()
            mean = np.mean([probs[c] for c in sorted(probs)], axis=0)
            e_auc, e_loss = roc_auc(y, mean), log_loss(y, mean)
            single = max(versions, key=lambda v: v.val_auc)
            summary = {
                "members": sorted(probs),
                "auc": round(e_auc, 6),
                "log_loss": round(e_loss, 6),
                "best_single_auc": round(single.val_auc, 6),
                "registered": bool(e_auc > single.val_auc),
            }
            if e_auc > single.val_auc:
                tags = {
                    **base,
                    "candidate": "ensemble",
                    "kind": "ensemble",
                    "members": ",".join(str(c) for c in sorted(probs)),
                    "val_auc": f"{e_auc:.6f}",
                    "val_loss": f"{e_loss:.6f}",
                }
                description = (
                    f"Snapshot ensemble: mean probability of the bests of cycles "
                    f"{sorted(probs)} of training run {result['run_name']} (holdout AUC "
                    f"{e_auc:.4f} against {single.val_auc:.4f} for the best single one)."
                )
                versions.append(
                    _register(
                        client,
                        name,
                        run_id,
                        experiment_id,
                        "ensemble",
                        [paths[c] for c in sorted(paths)],
                        holdout,
                        tags,
                        description,
                        cycle=None,
                        step=None,
                        lr=None,
                        auc=e_auc,
                        loss=e_loss,
                    )
                )

    challenger = max(versions, key=lambda v: (v.val_auc, -int(v.version)))
    if current_alias(client, name, CHALLENGER) != challenger.version:
        move_alias(
            client,
            store,
            name,
            CHALLENGER,
            challenger.version,
            why=f"best holdout AUC ({challenger.val_auc:.4f}) of training run {run_id}",
        )
    return Registration(name, run_id, tuple(versions), challenger, summary)


def _base_tags(result: dict[str, Any], run_id: str, lineage: dict[str, str]) -> dict[str, str]:
    schedule = result.get("schedule", {})
    tags = {
        "training_run_id": run_id,
        "training_run_name": str(result.get("run_name")),
        "schedule": json.dumps(schedule, sort_keys=True),
        "schedule_fingerprint": str(result.get("schedule_fingerprint", ""))[:16],
        "data_fingerprint": str(result.get("data", {}).get("data_fingerprint", "")),
        "first_valid_time": str(result.get("data", {}).get("first_valid_time", "")),
        "nan_count": str(result.get("nan_count")),
        "cost_usd": str(result.get("cost_usd")),
        "training_status": str(result.get("status")),
        "config_hash": str(result.get("config_hash", ""))[:16],
        "code_revision": _code_revision(),
    }
    for key in ("cycle_steps", "cycle_mult", "peak_decay", "lr_max", "lr_min", "warmup_steps"):
        if key in schedule:
            tags[f"schedule.{key}"] = str(schedule[key])
    for key, value in lineage.items():
        tags[f"lineage.{key}"] = str(value)[:5000]
    return tags


def _code_revision() -> str:
    from training.trainer import _git_revision

    return _git_revision()


def _register(
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
    existing = _find(client, name, run_id, candidate)
    if existing is not None:
        log.info("%s of run %s is already v%s of %s", candidate, run_id, existing.version, name)
        return RegisteredVersion(
            name,
            str(existing.version),
            candidate,
            cycle,
            step,
            lr,
            auc,
            loss,
            run_id,
            existing.source,
            created=False,
        )
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
    return RegisteredVersion(
        name,
        str(version.version),
        candidate,
        cycle,
        step,
        lr,
        auc,
        loss,
        run_id,
        model_uri,
        created=True,
    )


def lock_key(name: str) -> str:
    return join_key("registry", check_id(name, "model name"), "locks", "aliases.lock")


@contextlib.contextmanager
def alias_lock(store: ObjectStore, name: str, *, timeout_s: float = 30.0, stale_s: float = 300.0):  # type: ignore[no-untyped-def]
    """Serialise alias changes of one model across processes and machines.

    The lock is an object created only if absent (a conditional write on S3,
    a hard link locally), so exactly one holder exists; a lock older than
    ``stale_s`` (its holder died) is broken. Raises RegistryError on timeout.
    """
    import time

    key = lock_key(name)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    while True:
        body = {"token": token, "who": actor(), "since": time.time()}
        try:
            put_json(store, key, body)
            break
        except ObjectExists:
            try:
                held = get_json(store, key)
            except Exception:  # released between the two calls
                continue
            if time.time() - float(held.get("since", 0)) > stale_s:
                log.warning("breaking a stale registry lock held by %s", held.get("who"))
                with contextlib.suppress(Exception):
                    store.delete(key)
                continue
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"the aliases of {name} are locked by {held.get('who')} (key {key}); "
                    "retry later, or delete the key if that process is gone"
                ) from None
            time.sleep(0.2)
    try:
        yield token
    finally:
        with contextlib.suppress(Exception):
            if get_json(store, key).get("token") == token:
                store.delete(key)
