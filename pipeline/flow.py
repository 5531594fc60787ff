"""The flow of a retrain (DESIGN.md), one function per DAG task.

Every function takes a :class:`Env` (config, store, spec, MLflow client, built
once at the edge) and explicit keys (a batch id, a training window), and
returns a small JSON-able dict (ids, URIs, verdicts, figures, never frames), so
a DAG task is one call and a test or a notebook can run the same step without
Airflow. Each step is keyed and safe to re-run: landing the same month again is
a no-op, scoring a batch again reuses its predictions, a retried training task
resumes its own run or returns its finished result, registering twice creates
nothing.

The drift monitor: :func:`validate` -> :func:`drift` -> :func:`score` ->
:func:`decide`. The retrain: :func:`plan_retrain` -> :func:`export_window` ->
:func:`train` -> :func:`register` -> :func:`gate`. The canary review, when
labels arrive: :func:`quality` and :func:`review`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import PipelineConfig, load_config
from pipeline.registry import CANARY, CHAMPION, current_alias, model_name, safe_alert

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.storage import ObjectStore
    from training.data.spec import DatasetSpec

__all__ = [
    "Env",
    "build_env",
    "decide",
    "drift",
    "export_window",
    "gate",
    "land",
    "newest_batch",
    "plan_retrain",
    "pod_command",
    "quality",
    "register",
    "review",
    "score",
    "train",
    "train_result_from_mlflow",
    "validate",
]

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def resolve_path(path: Path | str) -> Path:
    """A relative path as given when it exists from the CWD, else from the project root
    (Airflow runs tasks from other folders)."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return ROOT / path


@dataclass
class Env:
    config: PipelineConfig

    @functools.cached_property
    def store(self) -> ObjectStore:
        from pipeline.storage import build_store

        return build_store(self.config)

    @functools.cached_property
    def spec(self) -> DatasetSpec:
        from training.data.spec import load_spec

        return load_spec(resolve_path(self.config.dataset_spec))

    @functools.cached_property
    def client(self) -> MlflowClient:
        from pipeline.registry import build_client

        return build_client(self.config)

    @property
    def model(self) -> str:
        return model_name(self.config, self.spec)

    @property
    def dataset(self) -> str:
        return self.spec.name


def build_env(config_path: str | None = None) -> Env:
    """The environment of a DAG task: config from ``$COSINE_RETRAIN_CONFIG``/env vars."""
    return Env(load_config(config_path))


# ------------------------------------------------------------------------------ landing


def land(env: Env, source: str, *, labels: bool = False, batch_id: str | None = None) -> dict:
    """Land a batch (a flights month like ``2013-03``, or a file with ``batch_id``)."""
    from pipeline import ingest

    month = ingest.parse_month(source) if not Path(source).exists() else None
    if month is not None:
        fn = ingest.ingest_flights_labels if labels else ingest.ingest_flights_month
        result = fn(env.store, env.spec, month)
    else:
        if not batch_id:
            raise ValueError(f"{source!r} is not a flights month: a file needs a batch_id")
        check_source(env, source)
        fn = ingest.ingest_labels_file if labels else ingest.ingest_file
        result = fn(env.store, env.spec, source, batch_id, storage=env.config.storage)
    return result.as_dict()


def source_roots(env: Env) -> list[str]:
    """``ingest.source_roots``, or ``<home>/incoming`` when none is configured."""
    roots = list(env.config.ingest.source_roots)
    return roots or [str(resolve_path(env.config.home) / "incoming")]


def check_source(env: Env, source: str) -> None:
    """Refuse a file outside the configured roots (symlinks and ``..`` resolved first):
    the DAG's ``source`` param must not read whatever the worker can read."""
    roots = source_roots(env)
    if "://" in source:
        scheme = source.split("://", 1)[0]
        allowed = [r.rstrip("/") + "/" for r in roots if r.startswith(f"{scheme}://")]
        ok = ".." not in source.split("/") and any(source.startswith(r) for r in allowed)
    else:
        real = Path(source).resolve()
        ok = any(real.is_relative_to(Path(r).resolve()) for r in roots if "://" not in r)
    if not ok:
        raise PermissionError(
            f"{source!r} is outside ingest.source_roots {roots}: put the file there or add "
            "its folder or s3:// prefix to ingest.source_roots"
        )


# ------------------------------------------------------------------------------ monitor


def _champion_reference(env: Env) -> str | None:
    """The reference snapshot stored with the champion (its training sample)."""
    champion = current_alias(env.client, env.model, CHAMPION)
    if champion is None:
        return None
    return env.client.get_model_version(env.model, champion).tags.get("lineage.reference_snapshot")


def validate(env: Env, batch_id: str) -> dict:
    """The spec's Great Expectations suite on the batch; a failure quarantines it,
    sends a ``validation_failed`` alert and raises (nothing downstream runs)."""
    from pipeline.layout import resolve_batch
    from pipeline.validation import ValidationFailed, validate_batch

    ref = resolve_batch(env.store, env.dataset, batch_id)
    try:
        summary = validate_batch(
            env.store,
            env.spec,
            ref,
            reference_id=_champion_reference(env),
            config=env.config.validation,
        )
    except ValidationFailed as exc:
        failed = [f"{f.expectation} {f.column or ''}".strip() for f in exc.summary.failed]
        safe_alert(
            env.config,
            env.store,
            "validation_failed",
            f"{env.dataset}-{batch_id}-v{ref.version}",
            f"batch {batch_id} failed validation and was quarantined",
            str(exc)[:3000],
            {"batch": batch_id, "version": ref.version, "failed": failed},
        )
        raise
    return {
        "batch_id": batch_id,
        "version": ref.version,
        "success": summary.success,
        "rows": summary.rows,
        "evaluated": summary.evaluated,
        "docs_uri": summary.docs_uri,
        "reused": summary.reused,
    }


def drift(env: Env, batch_id: str) -> dict:
    """Evidently drift of the batch against the champion's reference snapshot."""
    from pipeline.drift import check_drift
    from pipeline.layout import resolve_batch

    reference = _champion_reference(env)
    if reference is None:
        return {"batch_id": batch_id, "checked": False, "reason": "no champion yet"}
    ref = resolve_batch(env.store, env.dataset, batch_id)
    summary = check_drift(env.store, env.spec, ref, reference, config=env.config.drift)
    if summary.drifted:
        safe_alert(
            env.config,
            env.store,
            "drift_detected",
            f"{env.dataset}-{batch_id}-v{ref.version}-{reference}",
            f"batch {batch_id} drifted from reference {reference}",
            f"{summary.drift_share:.0%} of columns drifted: {', '.join(summary.drifted_columns)}",
            {"batch": batch_id, "share": summary.drift_share, "report": summary.report_uri},
        )
    return {
        "batch_id": batch_id,
        "checked": True,
        "reference": reference,
        "drift_share": round(summary.drift_share, 4),
        "threshold": summary.share_threshold,
        "drifted": summary.drifted,
        "drifted_columns": list(summary.drifted_columns),
        "report_uri": summary.report_uri,
        "sampled": summary.sampled,
        "reused": summary.reused,
    }


def score(env: Env, batch_id: str) -> dict:
    """Champion and canary score the batch (routing by a stable hash of the row id)."""
    from pipeline.canary import score_batch
    from pipeline.ingest import read_batch
    from pipeline.layout import resolve_batch

    ref = resolve_batch(env.store, env.dataset, batch_id)
    summary = score_batch(
        env.client, env.store, env.config, env.spec, env.model, batch_id, read_batch(env.store, ref)
    )
    return asdict(summary)


def _retrain_request(env: Env, trigger: str, reason: str, batch_id: str) -> dict:
    from pipeline.spend import check_spend

    _, spend = check_spend(trigger, env.config, store=env.store)  # type: ignore[arg-type]
    if not spend.allowed:
        return {"retrain": False, "trigger": trigger, "reason": spend.reason, "batch_id": batch_id}
    return {"retrain": True, "trigger": trigger, "reason": reason, "batch_id": batch_id}


def decide(env: Env, batch_id: str, drift_result: dict) -> dict:
    """Request a retrain when the batch drifted (or there is no champion yet)."""
    if not drift_result.get("checked"):
        if current_alias(env.client, env.model, CHAMPION) is None:
            return _retrain_request(env, "drift", "no champion yet: train the first one", batch_id)
        return {"retrain": False, "reason": drift_result.get("reason", ""), "batch_id": batch_id}
    if drift_result["drifted"]:
        columns = ", ".join(drift_result["drifted_columns"])
        reason = (
            f"drift: {drift_result['drift_share']:.0%} of columns drifted "
            f"(threshold {drift_result['threshold']:.0%}): {columns}"
        )
        return _retrain_request(env, "drift", reason, batch_id)
    return {
        "retrain": False,
        "reason": f"no drift: {drift_result['drift_share']:.0%} of columns drifted "
        f"(threshold {drift_result['threshold']:.0%})",
        "batch_id": batch_id,
    }


# ------------------------------------------------------------------------------ labels


def _latest_labels(env: Env, batch_id: str) -> Any:
    from pipeline.ingest import read_labels
    from pipeline.layout import committed_versions

    versions = committed_versions(env.store, env.dataset, batch_id, "labels")
    if not versions:
        raise ValueError(f"no labels for {env.dataset}/{batch_id} yet")
    return read_labels(env.store, env.dataset, batch_id, versions[-1])


def _predictions(env: Env, batch_id: str) -> Any:
    """Every prediction stored for the batch (any serving pair), or None."""
    import pandas as pd

    from pipeline.storage import get_frame, join_key

    prefix = join_key("predictions", env.dataset, batch_id)
    keys = [k for k in env.store.list(prefix) if k.endswith("predictions.parquet")]
    if not keys:
        return None
    frame = pd.concat([get_frame(env.store, k) for k in sorted(keys)], ignore_index=True)
    # a batch scored again (new serving models) counts once: its latest scoring
    frame = frame.sort_values("scored_at", kind="stable")
    return frame.drop_duplicates(env.spec.id_column, keep="last")


def quality(env: Env, batch_id: str) -> dict:
    """Live AUC of the champion on the labelled rows it served; below the SLO it
    requests a retrain (the label-side trigger)."""
    from pipeline.drift import live_quality

    predictions = _predictions(env, batch_id)
    if predictions is None:
        return {"batch_id": batch_id, "retrain": False, "reason": "no predictions for this batch"}
    served = predictions[predictions["alias"] == CHAMPION]
    version = ",".join(sorted(set(served["model_version"].astype(str)))) or "none"
    summary = live_quality(
        served,
        _latest_labels(env, batch_id),
        env.spec,
        env.config.quality,
        batch_id=batch_id,
        model_version=version,
    )
    out = {
        "batch_id": batch_id,
        "model_version": version,
        "auc": summary.value,
        "slo": summary.slo,
        "rows": summary.rows,
        "below_slo": summary.below_slo,
        "retrain": False,
        "reason": summary.note or f"live AUC {summary.value} >= SLO {summary.slo}",
    }
    if summary.below_slo:
        reason = f"live quality: champion v{version} AUC {summary.value:.4f} < SLO {summary.slo}"
        out.update(_retrain_request(env, "quality", reason, batch_id))
    return out


def review(env: Env, batch_ids: list[str]) -> dict:
    """Compare canary and champion on the labels of these batches; promote, roll back
    or wait."""
    import pandas as pd

    from pipeline.canary import apply_review, review_canary

    labels = pd.concat([_latest_labels(env, b) for b in batch_ids], ignore_index=True)
    result = review_canary(env.client, env.store, env.config, env.spec, env.model, labels)
    action = apply_review(env.client, env.store, env.config, result)
    return {
        "outcome": result.outcome,
        "reason": result.reason,
        "action": action.action,
        "version": action.version,
        "champion": current_alias(env.client, env.model, CHAMPION),
        "canary": current_alias(env.client, env.model, CANARY),
    }


# ------------------------------------------------------------------------------ retrain


def _labelled_batches(env: Env) -> list[str]:
    from pipeline.layout import committed_versions
    from pipeline.storage import join_key

    prefix = join_key("datasets", env.dataset, "labels")
    ids = sorted({k[len(prefix) + 1 :].split("/", 1)[0] for k in env.store.list(prefix)})
    return [b for b in ids if committed_versions(env.store, env.dataset, b, "labels")]


def plan_retrain(env: Env, trigger: str, reasons: list[str], *, until: str | None = None) -> dict:
    """The training window (the latest labelled batches) and whether to train it.

    Requests close together coalesce: a window that a finished run already
    trained is not trained again.
    """
    import hashlib

    from pipeline.layout import committed_versions
    from pipeline.spend import check_spend

    batches = [b for b in _labelled_batches(env) if until is None or b <= until]
    window = batches[-env.config.retrain.window_batches :]
    plan: dict[str, Any] = {"trigger": trigger, "reasons": reasons, "window": window}
    if not window:
        return {**plan, "skip": True, "reason": "no labelled batch yet: nothing to train on"}
    versions = {
        b: (
            committed_versions(env.store, env.dataset, b)[-1],
            committed_versions(env.store, env.dataset, b, "labels")[-1],
        )
        for b in window
    }
    key = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:8]
    plan.update(
        versions={b: list(v) for b, v in versions.items()},
        window_key=key,
        run_name=f"retrain-{window[-1]}-{key}",
    )
    done = _finished_run(env, plan["run_name"])
    if done is not None:
        if env.client.search_model_versions(f"name = '{env.model}' and run_id = '{done}'"):
            return {**plan, "skip": True, "reason": f"window already trained by run {done}"}
        # trained, but its registration never completed (the task failed or was killed):
        # go on; training returns the finished result and registering is idempotent
        reasons = [*reasons, f"run {done} trained this window but registered no version"]
        plan["reasons"] = reasons
    canary = current_alias(env.client, env.model, CANARY)
    if canary is not None and trigger in ("drift", "quality"):
        # the drift and the quality are measured against the champion; a canary trained
        # on newer data is already the answer, and replacing it before its labels
        # arrive would leave every canary unjudged
        since = env.client.get_model_version(env.model, canary).tags.get("alias.canary.at", "?")
        return {
            **plan,
            "skip": True,
            "reason": f"canary v{canary} (serving since {since[:10]}) answers this {trigger} "
            "request; it is judged when its labels arrive",
        }
    if trigger in ("drift", "quality", "scheduled", "manual"):
        _, spend = check_spend(trigger, env.config, client=env.client, store=env.store)  # type: ignore[arg-type]
        if not spend.allowed:
            return {**plan, "skip": True, "reason": spend.reason}
    return {**plan, "skip": False, "reason": "; ".join(reasons) or trigger}


def _experiment(env: Env) -> str:
    return env.config.mlflow.experiment or env.model


def _finished_run(env: Env, run_name: str) -> str | None:
    found = env.client.search_runs(
        [e.experiment_id for e in [env.client.get_experiment_by_name(_experiment(env))] if e],
        f"attributes.run_name = '{run_name}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def _work_dir(env: Env, run_name: str) -> Path:
    return (resolve_path(env.config.home) / "work" / run_name).resolve()


def export_window(env: Env, plan: dict) -> dict:
    """Features and labels of the window as two Parquet files the training job reads
    (local files; for the Kubernetes backend they are also put in the store)."""
    import pandas as pd

    from pipeline.ingest import read_batch, read_labels
    from pipeline.layout import BatchRef
    from pipeline.storage import join_key

    folder = _work_dir(env, plan["run_name"])
    folder.mkdir(parents=True, exist_ok=True)
    features = pd.concat(
        [
            read_batch(env.store, BatchRef(env.dataset, b, v[0]))
            for b, v in plan["versions"].items()
        ],
        ignore_index=True,
    )
    labels = pd.concat(
        [read_labels(env.store, env.dataset, b, v[1]) for b, v in plan["versions"].items()],
        ignore_index=True,
    )
    out = {"features": str(folder / "features.parquet"), "labels": str(folder / "labels.parquet")}
    for frame, path in ((features, out["features"]), (labels, out["labels"])):
        tmp = Path(path + ".tmp")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    out["rows"] = len(features)
    if env.config.retrain.backend == "kubernetes":  # the pod reads them from the store
        for name in ("features", "labels"):
            key = join_key("training-data", env.dataset, plan["run_name"], f"{name}.parquet")
            if not env.store.exists(key):
                env.store.put_file(key, Path(out[name]))
            out[f"{name}_uri"] = env.store.uri(key)
    return out


def train_overrides(env: Env, plan: dict, data: dict, *, remote: bool = False) -> list[str]:
    """``--set`` overrides that point the training job at the window and MLflow."""
    from pipeline.registry import tracking_uri

    features = data["features_uri"] if remote else data["features"]
    labels = data["labels_uri"] if remote else data["labels"]
    return [
        f"run_name={plan['run_name']}",
        f"data.dataset={resolve_path(env.config.dataset_spec)}",
        "data.source=files",
        f"data.features={features}",
        f"data.labels={labels}",
        f"mlflow.tracking_uri={tracking_uri(env.config)}",
        f"mlflow.experiment={_experiment(env)}",
        f"mlflow.tags={{trigger: {plan['trigger']}, window: '{','.join(plan['window'])}'}}",
        "progress=off",
    ]


def pod_command(
    env: Env,
    plan: dict,
    data: dict,
    *,
    config_path: str = "/config/train.yaml",
    python: str = "python",
    processes: int | None = None,
) -> list[str]:
    """The training job's command line in the GPU pod (the Kubernetes backend).

    One process, or ``torchrun --standalone --nproc_per_node=N`` (DDP, NCCL on
    GPUs) when ``retrain.processes`` > 1; ``--resume-if-present`` makes a pod
    retried after preemption (exit 75) continue from its checkpoint on the volume.
    """
    n = processes or env.config.retrain.processes
    head = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    cmd = (head if n > 1 else [python]) + ["-m", "training", "train", "--config", config_path]
    cmd += ["--run-name", plan["run_name"], "--resume-if-present"]
    for item in train_overrides(env, plan, data, remote=True):
        cmd += ["--set", item]
    return cmd


def train(env: Env, plan: dict, data: dict) -> dict:
    """Run the training job in this process (the local backend).

    A retried task resumes its own run from ``last`` (or returns the finished
    result): the run name is the window's key.
    """
    from training.config import load_config as load_train_config
    from training.trainer import Trainer

    overrides = train_overrides(env, plan, data)
    overrides.append(f"output_dir={resolve_path(env.config.home).resolve() / 'runs'}")
    config = load_train_config(resolve_path(env.config.retrain.train_config), overrides)
    run_dir = config.output_dir / plan["run_name"]
    finished = run_dir / "result.json"
    if finished.exists():
        result = json.loads(finished.read_text())
    else:
        resume = (run_dir / "checkpoints" / "last.ckpt").exists()
        result = json.loads(Trainer(config).run(resume=resume).to_json())
    return _train_summary(env, result)


def _train_summary(env: Env, result: dict) -> dict:
    run_id = result.get("mlflow_run_id")
    summary = {
        "run_id": run_id,
        "run_name": result["run_name"],
        "status": result["status"],
        "stop_reason": result["stop_reason"],
        "nan_count": result["nan_count"],
        "cost_usd": result["cost_usd"],
        "cycles": [
            {k: c[k] for k in ("cycle", "step", "lr", "val_auc", "val_loss")}
            for c in result["cycles"]
            if c.get("final")
        ],
        "mlflow_run_url": mlflow_run_url(env, run_id),
    }
    if result["nan_count"]:
        safe_alert(
            env.config,
            env.store,
            "nan_detected",
            run_id or result["run_name"],
            f"training run {result['run_name']} met {result['nan_count']} non-finite steps",
            f"rollbacks: {result['rollbacks']}, peak scale {result['lr_scale']}",
            {"run": run_id, "nan_count": result["nan_count"]},
        )
    summary["health"] = _health(env, result)
    if summary["health"]:
        safe_alert(
            env.config,
            env.store,
            "training_unhealthy",
            run_id or result["run_name"],
            f"training run {result['run_name']}: "
            + ", ".join(sorted({f["kind"] for f in summary["health"]})),
            "; ".join(f["message"] for f in summary["health"]),
            {"run": run_id, "findings": summary["health"]},
        )
    if result["status"] == "budget_exhausted":
        safe_alert(
            env.config,
            env.store,
            "cost_over_budget",
            run_id or result["run_name"],
            f"training run {result['run_name']} stopped at its cost budget",
            result["stop_reason"],
            {"run": run_id, "cost_usd": result["cost_usd"]},
        )
    return summary


def _health(env: Env, result: dict) -> list[dict]:
    """Flat loss, restart spikes and regressions of a finished run (docs/runbooks.md).
    Advisory: a failure to read the history is logged, never fails the task."""
    if not result.get("mlflow_run_id") or result["status"] != "completed":
        return []
    try:
        from pipeline.health import run_health  # imports torch: only when there is a run

        return run_health(env.client, result["mlflow_run_id"], result)
    except Exception:
        log.exception("could not judge the health of run %s", result["mlflow_run_id"])
        return []


def mlflow_run_url(env: Env, run_id: str | None) -> str | None:
    """The MLflow UI page of a run (the training task's extra link in Airflow)."""
    from pipeline.registry import tracking_uri

    if not run_id:
        return None
    base = env.config.mlflow.ui_url
    if base is None:
        uri = tracking_uri(env.config)
        base = uri if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    experiment = env.client.get_run(run_id).info.experiment_id
    return f"{base.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def register(env: Env, plan: dict, trained: dict) -> dict:
    """Register the run's cycle bests; store the window's sample as the reference
    snapshot the model carries (drift is measured against it once it is champion)."""
    from pipeline.layout import BatchRef
    from pipeline.reference import create_reference_from_batches
    from pipeline.registry import register_training_run

    snapshot = plan["run_name"]
    refs = [BatchRef(env.dataset, b, v[0]) for b, v in plan["versions"].items()]
    from pipeline.reference import ReferenceNotFound, reference_manifest

    try:
        reference_manifest(env.store, env.dataset, snapshot)
    except ReferenceNotFound:
        create_reference_from_batches(
            env.store, env.spec, refs, snapshot, rows=env.config.drift.reference_rows
        )
    lineage = {
        "data_snapshot": ",".join(f"{r.batch_id}/v{r.version}" for r in refs),
        "reference_snapshot": snapshot,
        "trigger": plan["trigger"],
        "reasons": "; ".join(plan["reasons"])[:1000],
    }
    reg = register_training_run(
        env.client, env.store, env.spec, trained["run_id"], name=env.model, lineage=lineage
    )
    return {
        "versions": [asdict(v) for v in reg.versions],
        "challenger": reg.challenger.version,
        "ensemble": reg.ensemble,
        "run_id": trained["run_id"],
    }


def gate(env: Env, registration: dict) -> dict:
    """The SLO gate for the challenger on its run's holdout; raises GateFailed (after
    recording the evidence and alerting) when it refuses."""
    from pipeline.gate import gate_version
    from pipeline.registry import training_holdout

    holdout = training_holdout(env.client, registration["run_id"], env.spec, store=env.store)
    result = gate_version(
        env.client,
        env.store,
        env.config,
        env.spec,
        env.model,
        holdout,
        registration["challenger"],
    )
    return {
        "version": result.version,
        "passed": result.passed,
        "first_model": result.first_model,
        "checks": [c.describe() for c in result.checks],
        "champion": current_alias(env.client, env.model, CHAMPION),
        "canary": current_alias(env.client, env.model, CANARY),
    }


def newest_batch(env: Env) -> str:
    """The newest batch id with committed features (the scheduled monitor's default)."""
    from pipeline.layout import committed_versions
    from pipeline.storage import join_key

    prefix = join_key("datasets", env.dataset, "batches")
    ids = sorted({k[len(prefix) + 1 :].split("/", 1)[0] for k in env.store.list(prefix)})
    landed = [b for b in ids if committed_versions(env.store, env.dataset, b)]
    if not landed:
        raise ValueError(f"no batch of {env.dataset} has landed yet (run the ingest DAG)")
    return landed[-1]


def train_result_from_mlflow(env: Env, plan: dict) -> dict:
    """The result of a run trained elsewhere (the GPU pod), read back from MLflow."""
    from pipeline.registry import RegistryError

    found = env.client.search_runs(
        [e.experiment_id for e in [env.client.get_experiment_by_name(_experiment(env))] if e],
        f"attributes.run_name = '{plan['run_name']}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise RegistryError(f"no MLflow run named {plan['run_name']!r}: did the pod start?")
    run_id = found[0].info.run_id
    folder = _work_dir(env, plan["run_name"])
    folder.mkdir(parents=True, exist_ok=True)
    path = env.client.download_artifacts(run_id, "result.json", str(folder))
    return _train_summary(env, json.loads(Path(path).read_text()))
