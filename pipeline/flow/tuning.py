"""Tuning the cosine schedule: an Optuna study, a versioned config, a held-out verdict.

``tune(env)`` (the ``tune`` command and DAG):

1. windows: the held-out window is the latest ``tune.holdout_batches`` labelled
   batches, the tuning window the ``tune.window_batches`` before them (or as given);
2. :func:`run_study`: a TPE study (Optuna, RDB storage: ``tune.storage``, else
   ``sqlite:///<home>/tuning.db``) whose trials train the tuning window through
   :func:`training.api.train`, each an MLflow run nested under the study's parent
   run, its running best val AUC reported at the epochs run at each cycle end and the
   trial pruned there when the pruner (successive halving) says so
   (:class:`~pipeline.steps.tuning.space.CyclePruner`). A study per tuning window
   (:func:`study_name`). It stops at ``tune.n_trials`` ended trials, or when the trials
   have spent ``tune.budget_usd`` (each runs with what is left as its own budget);
3. the best trial's config is written as ``tuning/<dataset>/v<N>.yaml``
   (:mod:`pipeline.steps.tuning.configs`);
4. :func:`judge`: the config in use now and the tuned one train the held-out window
   with ``tune.judge_seeds`` paired seeds; the tuned one is adopted (later retrains
   start from it) only when the lower bound of its mean gain's interval beats
   ``tune.adopt_min_gain``, or when it is cheaper and not worse beyond the noise.

Killed at any point and run again, the study continues: finished trials are kept,
a trial left RUNNING is marked FAIL and its values are queued again; its training
run (named by its values) resumes from its own checkpoint.
"""

from __future__ import annotations

import logging
import math
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from pipeline.base import tracking
from pipeline.base.config import resolve_path
from pipeline.base.layout import committed_versions, labelled_batches
from pipeline.base.sections import TuneConfig
from pipeline.flow.env import Env
from pipeline.flow.records import BatchVersions, Plan, Record
from pipeline.flow.retrain import export_window
from pipeline.steps.tuning.configs import (
    Verdict,
    file_sha256,
    gain_interval,
    read_verdict,
    read_version,
    train_config_path,
    tuned_versions,
    write_verdict,
    write_version,
)
from pipeline.steps.tuning.report import log_study
from pipeline.steps.tuning.space import TuneError, check_space, training_updates
from pipeline.steps.tuning.study import StudySummary, TuneInterrupted, run_study
from training import api
from training.api import BATCH_COLUMN, TrainConfig, TrainResult

__all__ = [
    "StudySummary",
    "TuneError",
    "TuneSummary",
    "export_batches",
    "judge",
    "storage_url",
    "study_name",
    "tune",
    "tune_windows",
]

log = logging.getLogger(__name__)


class TuneSummary(Record):
    study: StudySummary
    window: list[str]
    holdout: list[str]
    version: int | None
    verdict: Verdict | None  # the held-out verdict as stored beside the version


# ------------------------------------------------------------------------------ settings


def storage_url(env: Env) -> str:
    """Optuna's RDB storage: ``tune.storage``, else a SQLite file under the home."""
    if env.config.tune.storage:
        return env.config.tune.storage
    env.home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{env.home / 'tuning.db'}"


def study_name(tune: TuneConfig, dataset: str, window: list[str]) -> str:
    """``<tune.study_name or <dataset>-tune>-<first>-<last batch of the window>``: a
    study per tuning window, so a reused ``tune.study_name`` never mixes windows."""
    return f"{tune.study_name or f'{dataset}-tune'}-{window[0]}-{window[-1]}"


def base_config_path(env: Env) -> Path:
    """The config the study starts from and the verdict compares with: what a retrain
    uses now (the adopted tuned version, else ``retrain.train_config``)."""
    shipped = resolve_path(env.config.retrain.train_config)
    return train_config_path(env.store, env.dataset, shipped, env.home)


# ------------------------------------------------------------------------------ windows


def tune_windows(
    env: Env, window: list[str] | None = None, holdout: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """(tuning window, held-out window): as given, else the latest ``holdout_batches``
    labelled batches held out and the ``window_batches`` before them tuned on."""
    t = env.config.tune
    batches = labelled_batches(env.store, env.dataset)
    for given in (window or [], holdout or []):
        missing = sorted(set(given) - set(batches))
        if missing:
            raise TuneError(f"batches {missing} have no labels in the store (have: {batches})")
    holdout = holdout or batches[-t.holdout_batches :]
    window = window or [b for b in batches if b < min(holdout)][-t.window_batches :]
    if not window or not holdout:
        raise TuneError(
            f"tuning needs {t.window_batches} + {t.holdout_batches} labelled batches "
            f"(tune.window_batches, tune.holdout_batches); the store has {len(batches)} "
            f"of data set {env.dataset}"
        )
    if set(window) & set(holdout):
        raise TuneError(f"the tuning window {window} and the held-out {holdout} overlap")
    return window, holdout


def export_batches(env: Env, batches: list[str], run_name: str) -> dict[str, str]:
    """The batches' features and labels as files (:func:`~pipeline.flow.retrain.export_window`),
    as the training config's ``data.*`` updates."""
    versions = {
        b: BatchVersions(
            features=committed_versions(env.store, env.dataset, b)[-1],
            labels=committed_versions(env.store, env.dataset, b, "labels")[-1],
        )
        for b in batches
    }
    plan = Plan(
        trigger="manual",
        reasons=["tune"],
        window=batches,
        skip=False,
        reason="tune",
        versions=versions,
        run_name=run_name,
    )
    w = export_window(env, plan)
    return {
        "data.dataset": str(resolve_path(env.config.dataset_spec)),
        "data.source": "files",
        "data.batch_column": BATCH_COLUMN,  # rows keyed by (batch, id), as the retrain's
        "data.features": w.features,
        "data.labels": w.labels,
    }


# ------------------------------------------------------------------------------ verdict


def judge(
    env: Env,
    *,
    version: int,
    current: Path,
    tuned: Path,
    holdout_updates: dict[str, Any],
    holdout: list[str],
    parent: str | None,
    experiment: str,
) -> Verdict:
    """Train the config in use (``current``) and the tuned one on the held-out window with
    ``tune.judge_seeds`` seeds, paired (the same seed and data on both sides); adopt the
    tuned one when the lower bound of the mean gain's interval
    (:func:`~pipeline.steps.tuning.configs.gain_interval`) exceeds ``tune.adopt_min_gain``
    ("better"), or when it trains at least ``tune.adopt_min_saving`` fewer rows and that
    lower bound is not below ``-tune.adopt_max_loss`` ("cheaper"). The verdict, with the
    interval, is written beside the version, adopted or not."""
    t = env.config.tune
    configs = {"current": api.load_config(current), "tuned": api.load_config(tuned)}
    seeds = [configs["current"].runtime.seed + i for i in range(t.judge_seeds)]
    auc: dict[str, list[float]] = {"current": [], "tuned": []}
    rows: dict[str, list[int]] = {"current": [], "tuned": []}
    steps: dict[str, list[int]] = {"current": [], "tuned": []}
    for seed in seeds:
        for which, base in configs.items():
            run_name = f"judge-{env.dataset}-v{version}-{which}-s{seed}"
            done = _held_out_run(
                env, base, holdout_updates, run_name, seed, which, parent, experiment
            )
            auc[which].append(max((b.val_auc for b in done.finals), default=float("nan")))
            steps[which].append(done.steps_done)
            rows[which].append(done.steps_done * base.optim.batch_size)
    gains = [a - b for a, b in zip(auc["tuned"], auc["current"], strict=True)]
    gain, low, high = gain_interval(gains, t.adopt_confidence)
    work = {k: statistics.fmean(v) for k, v in rows.items()}
    saving = 1 - work["tuned"] / work["current"] if work["current"] else 0.0
    basis = None
    if low > t.adopt_min_gain:
        basis = "better"
    elif saving >= t.adopt_min_saving and low >= -t.adopt_max_loss:
        basis = "cheaper"
    current_name = current.stem if current.parent.name == env.dataset else "file"
    mean = {k: statistics.fmean(v) for k, v in auc.items()}
    reason = (
        f"on the held-out window {','.join(holdout)}, {len(seeds)} paired seed(s): the tuned "
        f"v{version} reached best val AUC {mean['tuned']:.4f} against {mean['current']:.4f} "
        f"for the current config ({current_name}): gain {gain:+.4f}, "
        f"{t.adopt_confidence:.0%} interval [{low:+.4f}, {high:+.4f}]; it trains "
        f"{saving:+.1%} fewer rows; "
        + {
            "better": f"adopted (better: the interval is above +{t.adopt_min_gain:g})",
            "cheaper": f"adopted (cheaper, and no worse than -{t.adopt_max_loss:g})",
            None: (
                f"not adopted (needs the interval above +{t.adopt_min_gain:g}, or "
                f"{t.adopt_min_saving:.0%} fewer rows with it above -{t.adopt_max_loss:g})"
            ),
        }[basis]
    )
    verdict = Verdict(
        version=version,
        adopted=basis is not None,
        holdout=holdout,
        tuned_auc=mean["tuned"],
        current_auc=mean["current"],
        current=current_name,
        min_gain=t.adopt_min_gain,
        tuned_steps=round(statistics.fmean(steps["tuned"])),
        current_steps=round(statistics.fmean(steps["current"])),
        reason=reason,
        judged_at=datetime.now(UTC).isoformat(timespec="seconds"),
        seeds=seeds,
        gains=gains,
        gain_low=low if math.isfinite(low) else None,  # one seed: no interval
        gain_high=high if math.isfinite(high) else None,
        confidence=t.adopt_confidence,
        tuned_examples=round(work["tuned"]),
        current_examples=round(work["current"]),
        basis=basis,
    )
    write_verdict(env.store, env.dataset, verdict)
    log.info("tuned config verdict: %s", reason)
    return verdict


def _held_out_run(
    env: Env,
    base: TrainConfig,
    holdout_updates: dict[str, Any],
    run_name: str,
    seed: int,
    which: str,
    parent: str | None,
    experiment: str,
) -> TrainResult:
    updates = {
        **holdout_updates,
        "run_name": run_name,
        "runtime.seed": seed,
        "output_dir": str(env.home / "runs" / "tuning"),
        "progress": "off",
    }
    tags = {"tune.judge": which, "tune.seed": str(seed)}
    updates.update(_mlflow_updates(env, experiment, parent, tags))
    config = api.updated(base, updates)
    done = api.finished(config)
    if done is None or done.status == "preempted":
        done = api.train(config, resume="if_present")
    if done.status == "preempted":
        raise TuneInterrupted(f"the {which} config's held-out run stopped by SIGTERM")
    return done


def _mlflow_updates(
    env: Env, experiment: str, parent: str | None, tags: dict[str, str]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mlflow.tracking_uri": tracking.tracking_uri(env.config),
        "mlflow.experiment": experiment,
        "mlflow.tags": tags,
    }
    if parent is not None:
        out["mlflow.parent_run_id"] = parent
    location = tracking.artifact_location(env.config)
    if location is not None:
        out["mlflow.artifact_location"] = location
    return out


# ------------------------------------------------------------------------------ tune


def tune(
    env: Env,
    *,
    window: list[str] | None = None,
    holdout: list[str] | None = None,
    n_trials: int | None = None,
) -> TuneSummary:
    """Study, versioned config, verdict (the module's steps 1-4); safe to run again
    after a kill: each step continues or returns what it already wrote."""
    settings = env.config.tune
    if n_trials is not None:
        settings = TuneConfig.model_validate({**settings.model_dump(), "n_trials": n_trials})
    current = base_config_path(env)
    base = api.load_config(current)
    check_space(settings, base)
    window, holdout = tune_windows(env, window, holdout)
    name = study_name(settings, env.dataset, window)
    experiment = f"{env.experiment}-tuning"
    tuning_data = export_batches(env, window, f"{name}-window")
    mlflow = _mlflow_updates(env, experiment, None, {})
    storage = storage_url(env)
    summary = run_study(
        settings,
        base,
        storage=storage,
        name=name,
        output_dir=env.home / "runs" / "tuning",
        client=env.client,
        experiment=experiment,
        train_updates={**tuning_data, **mlflow},
    )
    log_study(env.client, summary, storage)
    out = {"study": summary, "window": window, "holdout": holdout}
    best = next((t for t in summary.trials if t.number == summary.best_trial), None)
    if best is None or (best.incumbent and summary.best_cycles is None):
        # nothing beat the start config (as it ran): nothing to judge
        return TuneSummary(**out, version=None, verdict=None)
    version = next(
        (
            v
            for v in tuned_versions(env.store, env.dataset)
            if (r := read_version(env.store, env.dataset, v)).study == name
            and r.trial == summary.best_trial
            and r.params == summary.best_params
        ),
        None,
    )
    if version is None:
        config = api.updated(base, training_updates(summary.best_params, base))
        text = _yaml(config, name, summary.best_trial, window)
        meta = {
            "study": name,
            "trial": summary.best_trial,
            "value": float(summary.best_value or 0.0),
            "params": summary.best_params,
            "window": window,
            "base_config": str(current),
            "base_sha256": file_sha256(resolve_path(env.config.retrain.train_config)),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        version = write_version(env.store, env.dataset, text, meta)
    tuned_path = env.home / "tuning" / env.dataset / f"v{version}.yaml"
    if not tuned_path.exists():
        env.store.get_file(f"tuning/{env.dataset}/v{version}.yaml", tuned_path)
    done = read_verdict(env.store, env.dataset, version)
    if done is not None:
        verdict = done
    else:
        verdict = judge(
            env,
            version=version,
            current=current,
            tuned=tuned_path,
            holdout_updates=export_batches(env, holdout, f"{name}-holdout"),
            holdout=holdout,
            parent=summary.mlflow_run_id,
            experiment=experiment,
        )
    if summary.mlflow_run_id is not None:
        env.client.set_tag(summary.mlflow_run_id, "tune.verdict", verdict.reason)
        env.client.set_terminated(summary.mlflow_run_id)
    return TuneSummary(**out, version=version, verdict=verdict)


def _yaml(config: TrainConfig, study: str, trial: int, window: list[str]) -> str:
    data = config.model_dump(mode="json", exclude={"run_name"})
    head = (
        f"# Tuned by study {study}, trial {trial}, on the window {','.join(window)}\n"
        "# (python -m pipeline tune; docs/training.md, Tuning). Adopted only after its\n"
        "# held-out verdict (the .verdict.json beside it).\n"
    )
    return head + yaml.safe_dump(data, sort_keys=False)
