"""The MLflow model registry: every cosine cycle's best as a version, aliases with history.

A training run (``python -m training train``, or :func:`training.api.train`) leaves
in MLflow one checkpoint per cosine cycle (``checkpoints/best-cycle-NN.ckpt``) and
``result.json``.
:func:`register_training_run` turns each into a version of the spec's model
(``flight_delay``): an MLflow pyfunc (:class:`training.model.serving.TabularPyfunc`,
logged "from code", so nothing is pickled) that carries its preprocessing and
scores raw rows, with a signature built from the spec's roles (categorical columns
as nullable strings, numeric ones as nullable doubles; never inferred from the
holdout's dtypes) and an input example from real holdout rows. Versions are
tagged with their lineage (cycle, step, lr, metrics, schedule, data snapshot,
reports, code revision). When the mean of the cycle
bests' probabilities (a snapshot ensemble) beats the best single one on the
holdout by more than the holdout's noise (the lower end of a paired bootstrap interval
of the AUC gain, :func:`paired_auc_gain`, above 0: two members cost twice the scoring),
it becomes a version of its own. The best version of the run gets the
``challenger`` alias. Every new version gets its first model card
(:mod:`pipeline.steps.registry.model_card`), linked from its description.

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

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.base.records import Stored
from pipeline.base.store import ObjectStore
from pipeline.steps.registry.aliases import (
    CHALLENGER,
    RegistryError,
    current_alias,
    move_alias,
    version_tags,
)
from pipeline.steps.registry.holdout import download_artifact, training_holdout, workdir
from pipeline.steps.registry.model_card import publish_quietly
from pipeline.steps.registry.versions import RegisteredVersion, ensure_model, register_candidate
from training.api import REGISTRABLE, ResultError, TrainResult

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from training.api import DatasetSpec

__all__ = [
    "RegisteredVersion",
    "Registration",
    "paired_auc_gain",
    "register_training_run",
    "run_result",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration(Stored):
    """A training run's registered versions and the challenger among them: what the
    retrain's register task returns and its gate task reads."""

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


def run_result(client: MlflowClient, run_id: str, work: Path) -> TrainResult:
    """The finished run's ``result.json`` from MLflow, typed; refused unless registrable."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        raise RegistryError(f"no MLflow run {run_id!r} in this tracking server") from None
    path = download_artifact(client, run_id, "result.json", work)
    try:
        result = TrainResult.load(path)
    except ResultError as exc:
        raise RegistryError(f"training run {run_id}: {exc}") from None
    if not result.registrable:
        raise RegistryError(
            f"training run {run_id} ended with status {result.status!r} "
            f"({result.stop_reason}); only {REGISTRABLE} runs are registered"
        )
    return result


ENSEMBLE_RESAMPLES = 400  # bootstrap resamples of the holdout


def paired_auc_gain(
    y: Any,
    a: Any,
    b: Any,
    *,
    resamples: int = ENSEMBLE_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) on the rows ``y``, with its percentile interval from a paired
    bootstrap: each resample draws the rows with replacement and scores both on the
    same draw, so what the two share (which rows are hard) cancels out."""
    import numpy as np

    from training.api import roc_auc

    y, a, b = np.asarray(y), np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    gains = []
    for _ in range(resamples):
        i = rng.integers(0, len(y), len(y))
        gains.append(roc_auc(y[i], a[i]) - roc_auc(y[i], b[i]))
    finite = np.asarray(gains)[np.isfinite(gains)]
    low, high = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return roc_auc(y, a) - roc_auc(y, b), float(low), float(high)


def _scores(scorer: Any, holdout: pd.DataFrame, target: str) -> tuple[Any, float, float]:
    from training.api import log_loss, roc_auc

    prob = scorer.predict_proba(holdout)
    y = holdout[target].to_numpy()
    return prob, roc_auc(y, prob), log_loss(y, prob)


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
    ensemble_confidence: float = 0.95,
    work: Path | None = None,
) -> Registration:
    """Register every cycle's best of ``run_id`` (and the ensemble if it wins); set ``challenger``.

    ``lineage`` (data snapshot keys, validation and drift report locations...)
    becomes version tags. ``holdout`` defaults to the run's own validation rows. The
    ensemble is registered when the lower end of the paired bootstrap interval of its AUC
    gain over the best single (:func:`paired_auc_gain`, two-sided ``ensemble_confidence``)
    is above 0.
    """
    name = name or spec.model_name
    with workdir(work) as folder:
        result = run_result(client, run_id, folder)
        finals = result.finals
        if not finals:
            raise RegistryError(
                f"training run {run_id} closed no cosine cycle ({result.stop_reason}): "
                "nothing to register; lengthen the run or raise its budget"
            )
        experiment_id = client.get_run(run_id).info.experiment_id
        if holdout is None:
            holdout = training_holdout(client, run_id, spec, folder, store=store)
        ensure_model(client, name, spec)
        base = _base_tags(result, run_id, lineage or {})

        from training.api import BestPayload, Scorer

        def register(
            candidate: str, files: list[Path], tags: dict[str, str], description: str, **about: Any
        ) -> RegisteredVersion:
            return register_candidate(
                client, name, run_id, experiment_id, candidate, files, holdout, tags, description,
                **about,
            )  # fmt: skip

        versions: list[RegisteredVersion] = []
        probs: dict[int, Any] = {}
        paths: dict[int, Path] = {}
        for best in finals:
            cycle = best.cycle
            candidate = f"cycle-{cycle:02d}"
            path = download_artifact(client, run_id, f"checkpoints/{Path(best.path).name}", folder)
            ckpt = BestPayload.load(path)  # checksum + weights_only + strict payload
            if ckpt.cycle != cycle or ckpt.step != best.step:
                raise RegistryError(
                    f"{path.name} of run {run_id} is not cycle {cycle}'s best at step "
                    f"{best.step} (it says cycle {ckpt.cycle}, step {ckpt.step})"
                )
            paths[cycle] = path
            prob, auc, loss = _scores(Scorer([ckpt.to_mapping()]), holdout, spec.target)
            probs[cycle] = prob
            tags = {
                **base,
                "candidate": candidate,
                "kind": "cycle_best",
                "cycle": str(cycle),
                "step": str(best.step),
                "lr": repr(float(best.lr)),
                "val_auc": f"{auc:.6f}",
                "val_loss": f"{loss:.6f}",
                "checkpoint_sha256": best.sha256,
            }
            description = (
                f"Best of cosine cycle {cycle} (step {best.step}, lr {best.lr:.3g}, "
                f"holdout AUC {auc:.4f}) of training run {result.run_name}."
            )
            where = {"cycle": cycle, "step": best.step, "lr": float(best.lr)}
            versions.append(
                register(candidate, [path], tags, description, **where, auc=auc, loss=loss)
            )

        summary: dict[str, Any] = {}
        if ensemble and len(probs) >= 2:
            import numpy as np

            from training.api import log_loss, roc_auc

            y = holdout[spec.target].to_numpy()
            mean = np.mean([probs[c] for c in sorted(probs)], axis=0)
            e_auc, e_loss = roc_auc(y, mean), log_loss(y, mean)
            single = max(versions, key=lambda v: v.val_auc)
            assert single.cycle is not None  # every version so far is a cycle's best
            _, low, high = paired_auc_gain(
                y, mean, probs[single.cycle], confidence=ensemble_confidence
            )
            summary = {
                "members": sorted(probs),
                "auc": round(e_auc, 6),
                "log_loss": round(e_loss, 6),
                "best_single_auc": round(single.val_auc, 6),
                "gain_interval": [round(low, 6), round(high, 6)],
                "registered": bool(low > 0),
            }
            if low > 0:  # it wins by more than the holdout's noise: worth its serving cost
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
                    f"{sorted(probs)} of training run {result.run_name} (holdout AUC "
                    f"{e_auc:.4f} against {single.val_auc:.4f} for the best single one)."
                )
                files = [paths[c] for c in sorted(paths)]
                nowhere = {"cycle": None, "step": None, "lr": None}
                versions.append(
                    register(
                        "ensemble", files, tags, description, **nowhere, auc=e_auc, loss=e_loss
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
    for v in versions:  # a retried registration adds no card to a version that has one
        if v.created or not version_tags(client, name, v.version).get("model_card.revision"):
            publish_quietly(client, store, name, v.version, reason="registered")
    return Registration(name, run_id, tuple(versions), challenger, summary)


def _base_tags(result: TrainResult, run_id: str, lineage: dict[str, str]) -> dict[str, str]:
    """Tags every version of the run carries: the run, its schedule, data and code."""
    schedule = result.schedule
    tags = {
        "training_run_id": run_id,
        "training_run_name": result.run_name,
        "schedule": json.dumps(schedule, sort_keys=True),
        "schedule_fingerprint": result.schedule_fingerprint[:16],
        "data_fingerprint": str(result.data.get("data_fingerprint", "")),
        "first_valid_time": str(result.data.get("first_valid_time", "")),
        "nan_count": str(result.nan_count),
        "cost_usd": str(result.cost_usd),
        "training_status": result.status,
        "config_hash": result.config_hash[:16],
        # the revision of the code that trained (the run's), not of this process
        "code_revision": result.code_revision,
    }
    for key in ("cycle_steps", "cycle_mult", "peak_decay", "lr_max", "lr_min", "warmup_steps"):
        if key in schedule:
            tags[f"schedule.{key}"] = str(schedule[key])
    for key, value in lineage.items():
        tags[f"lineage.{key}"] = str(value)[:5000]
    return tags
