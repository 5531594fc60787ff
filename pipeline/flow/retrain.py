"""The retrain: plan -> export_window -> train -> register -> gate.

The training job is called through its typed API (:mod:`training.api`): on the
local backend in this process with a :class:`~training.config.train.TrainConfig` built
from the shipped one; on the Kubernetes backend as the pod's command line,
produced from the same typed config by :func:`training.api.train_argv`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.base import tracking
from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.config import resolve_path
from pipeline.base.layout import (
    BatchRef,
    committed_versions,
    merged_labels,
    read_batch,
    report_summaries,
)
from pipeline.base.store import join_key
from pipeline.flow.cards import after
from pipeline.flow.env import Env
from pipeline.flow.every import trainable_batches
from pipeline.flow.records import (
    BatchVersions,
    GateOutcome,
    Plan,
    RetrainRequest,
    Trained,
    Window,
)
from pipeline.steps.ops.spend import check_spend
from pipeline.steps.promotion.gate import gate_version
from pipeline.steps.registry.aliases import CANARY, CHAMPION, RegistryError, current_alias
from pipeline.steps.registry.holdout import download_artifact, training_holdout
from pipeline.steps.registry.registration import Registration, register_training_run
from pipeline.steps.tuning.configs import train_config_path
from training import api
from training.api import (
    BATCH_COLUMN,
    DIVERGED_TAG,
    Finding,
    ResultError,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    atomic_writer,
)

__all__ = [
    "PodCommand",
    "export_window",
    "gate",
    "mlflow_run_url",
    "plan_retrain",
    "pod_command",
    "register",
    "train",
    "train_config",
    "train_result_from_mlflow",
    "trained",
]

log = logging.getLogger(__name__)

POD_CONFIG = "/config/train.yaml"  # where the ConfigMap mounts the training config


# ------------------------------------------------------------------------------ plan


def plan_retrain(env: Env, request: RetrainRequest, *, until: str | None = None) -> Plan:
    """The training window (the latest labelled batches that passed validation) and
    whether to train it; the labelled batches it left out, and why, are in the plan.

    Requests close together coalesce: a window that a finished run already
    trained (and registered) is not trained again.
    """
    trigger, reasons = request.trigger, list(request.reasons)
    batches, excluded = trainable_batches(env, until=until)
    window = batches[-env.config.retrain.window_batches :]
    left_out = {b: why for b, why in excluded.items() if not window or b >= window[0]}
    for b, why in left_out.items():
        log.warning("batch %s left out of the training window: %s", b, why)
    if not window:
        return Plan(
            trigger=trigger,
            reasons=reasons,
            window=[],
            skip=True,
            reason="no validated labelled batch yet: nothing to train on"
            if left_out
            else "no labelled batch yet: nothing to train on",
            left_out=left_out,
        )
    versions = {
        b: BatchVersions(
            features=committed_versions(env.store, env.dataset, b)[-1],
            labels=committed_versions(env.store, env.dataset, b, "labels")[-1],
        )
        for b in window
    }
    key_source = {b: [v.features, v.labels] for b, v in versions.items()}
    key = hashlib.sha256(json.dumps(key_source, sort_keys=True).encode()).hexdigest()[:8]
    run_name = f"retrain-{window[-1]}-{key}"

    def plan(skip: bool, reason: str) -> Plan:
        window_ = {"window": window, "versions": versions, "window_key": key, "left_out": left_out}
        return Plan(
            trigger=trigger, reasons=reasons, run_name=run_name, **window_, skip=skip, reason=reason
        )

    done = _finished_run(env, run_name)
    if done is not None:
        if env.client.search_model_versions(f"name = '{env.model}' and run_id = '{done}'"):
            return plan(True, f"window already trained by run {done}")
        # trained, but its registration never completed (the task failed or was killed):
        # go on; training returns the finished result and registering is idempotent
        reasons.append(f"run {done} trained this window but registered no version")
    canary = current_alias(env.client, env.model, CANARY)
    if canary is not None and trigger in ("drift", "quality"):
        # the drift and the quality are measured against the champion; a canary trained
        # on newer data is already the answer, and replacing it before its labels
        # arrive would leave every canary unjudged
        since = env.client.get_model_version(env.model, canary).tags.get("alias.canary.at", "?")
        return plan(
            True,
            f"canary v{canary} (serving since {since[:10]}) answers this {trigger} "
            "request; it is judged when its labels arrive",
        )
    _, spend = check_spend(
        trigger, env.config, client=env.client, experiment=env.experiment, store=env.store
    )
    if not spend.allowed:
        return plan(True, spend.reason)
    return plan(False, "; ".join(reasons) or trigger)


def _finished_run(env: Env, run_name: str) -> str | None:
    found = _run_named(env, run_name, finished=True)
    return found.info.run_id if found else None


def _work_dir(env: Env, run_name: str) -> Path:
    return env.home / "work" / run_name


# ------------------------------------------------------------------------------ data


def export_window(env: Env, plan: Plan) -> Window:
    """The window as one Parquet file per batch, each row with its label and batch, that
    the training job streams (``data.labels`` unset, ``data.batch_column``): a folder of
    local files; for the Kubernetes backend also under one prefix in the store.

    Features and labels are joined here, a batch at a time (the worker holds one batch,
    never the window, and the ids' hashes), so the job needs no join; rows not labelled
    yet are left out.
    The files are written in row groups of ``ROW_GROUP_ROWS`` rows, what the job reads
    at a time. With ``data.engine: spark`` in local mode Spark joins and writes each
    file (:mod:`pipeline.flow.spark_window`); on a cluster master the worker writes
    them, a batch at a time, as here."""
    import pandas as pd  # here, not above: the plan task reads no frames
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_name = plan.require_run()
    folder = _work_dir(env, run_name) / "window"
    folder.mkdir(parents=True, exist_ok=True)
    files, rows, ids = [], 0, api.WindowIds(env.spec)
    # data.engine spark (local mode: the files land on this machine): Spark joins and writes
    spark = env.config.data.engine == "spark" and env.config.data.spark.master.startswith("local")
    for i, (b, v) in enumerate(plan.versions.items()):
        path = folder / f"{i:04d}-{re.sub(r'[^A-Za-z0-9._-]', '_', b)}.parquet"
        if spark:
            from pipeline.flow.spark_window import write_batch

            rows += write_batch(env, b, v, path, BATCH_COLUMN)
            if env.spec.id_scope == "global":  # only then are ids checked across batches
                ids.add(pd.read_parquet(path, columns=[env.spec.id_column]))
            files.append(path)
            continue
        features = read_batch(env.store, BatchRef(env.dataset, b, v.features))
        labels = merged_labels(env.store, env.dataset, b, env.spec.id_column, upto=v.labels)
        # one batch: ids are unique within it whatever the spec's id_scope
        frame = api.join_labels(features, labels, env.spec).assign(**{BATCH_COLUMN: b})
        with atomic_writer(path) as fh:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            pq.write_table(table, fh, row_group_size=api.ROW_GROUP_ROWS)
        files.append(path)
        rows += len(frame)
        ids.add(frame)
    ids.check(files, BATCH_COLUMN)  # id_scope global: an id in two batches is refused
    for stale in set(folder.glob("*.parquet")) - set(files):  # a re-run's older window
        stale.unlink()
    uri = None
    if env.config.retrain.backend == "kubernetes":  # the pod reads them from the store
        prefix = join_key("training-data", env.dataset, run_name, "window")
        for path in files:
            key = join_key(prefix, path.name)
            if not env.store.exists(key):
                env.store.put_file(key, path)
        uri = env.store.uri(prefix) + "/"
    return Window(features=str(folder), labels=None, rows=rows, features_uri=uri)


# ------------------------------------------------------------------------------ train


def train_config(env: Env, plan: Plan, window: Window, *, remote: bool = False) -> TrainConfig:
    """The training job's config for this window: the shipped ``retrain.train_config``
    with the window's data, the run name and MLflow set (typed, validated); a tuned
    version of it once one won its held-out verdict (pipeline/steps/tuning/configs.py)."""
    shipped = resolve_path(env.config.retrain.train_config)
    base = api.load_config(train_config_path(env.store, env.dataset, shipped, env.home))
    run_name = plan.require_run()
    if remote and not (window.features_uri and (window.labels is None or window.labels_uri)):
        raise ValueError("the Kubernetes backend needs the window in the store (export_window)")
    updates: dict[str, Any] = {
        "run_name": run_name,
        "progress": "off",
        "data.dataset": str(resolve_path(env.config.dataset_spec)),
        "data.source": "files",
        "data.batch_column": BATCH_COLUMN,
        "data.features": window.features_uri if remote else window.features,
        "data.labels": window.labels_uri if remote else window.labels,
        "mlflow.tracking_uri": tracking.tracking_uri(env.config),
        "mlflow.experiment": env.experiment,
        "mlflow.tags": {
            **base.mlflow.tags,
            "trigger": plan.trigger,
            "window": ",".join(plan.window),
        },
    }
    location = tracking.artifact_location(env.config)
    if location is not None:
        updates["mlflow.artifact_location"] = location
    if not remote:
        updates["output_dir"] = str(env.home / "runs")
    return api.updated(base, updates)


@dataclass(frozen=True)
class PodCommand:
    """The GPU pod's container entry: ``cmds`` (replaces the image's entrypoint) and
    ``arguments`` (replace the pod template's ``args``: KubernetesPodOperator keeps
    the template's ``args`` unless it is given its own)."""

    cmds: list[str]
    arguments: list[str]

    @property
    def argv(self) -> list[str]:
        return [*self.cmds, *self.arguments]


def pod_command(
    env: Env,
    plan: Plan,
    window: Window,
    *,
    config_path: str = POD_CONFIG,
    python: str = "python",
    processes: int | None = None,
) -> PodCommand:
    """The training job's entry in the GPU pod (the Kubernetes backend).

    One process, or ``torchrun --standalone --nproc_per_node=N`` (DDP, NCCL on GPUs)
    when ``retrain.processes`` > 1. The arguments are produced from the same typed
    config as a local run (:func:`train_config`), as ``--set`` differences from the
    shipped config the pod mounts at ``config_path``; ``--resume-if-present`` makes
    a pod retried after preemption (exit 75) continue from its checkpoint.
    """
    n = processes or env.config.retrain.processes
    config = train_config(env, plan, window, remote=True)
    base = api.load_config(resolve_path(env.config.retrain.train_config))
    head = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    cmds = (head if n > 1 else [python]) + ["-m", "training"]
    return PodCommand(cmds, api.train_argv(config, base, config_path=config_path))


def train(env: Env, plan: Plan, window: Window) -> Trained:
    """Run the training job in this process (the local backend).

    A retried task resumes its own run from ``last`` (or returns the finished
    result): the run name is the window's key.
    """
    config = train_config(env, plan, window)
    try:
        result = api.finished(config) or api.train(config, resume="if_present")
    except TrainingDiverged as exc:
        diverged(env, plan.require_run(), str(exc))
        raise
    return trained(env, result)


def diverged(env: Env, run_name: str, reason: str, details: dict[str, Any] | None = None) -> None:
    """The ``nan_detected`` alert of a run that diverged (once per run: its key is the
    run name, which a retried task keeps)."""
    raise_alert(
        env.config,
        env.store,
        AlertKind.NAN,
        run_name,
        f"training run {run_name} diverged",
        f"{reason}; nothing was registered (docs/runbooks.md#nan_detected)",
        {"run_name": run_name, "diverged": True, **(details or {})},
    )


def alert_if_diverged(env: Env, plan: Plan) -> bool:
    """After the GPU pod failed: when its MLflow run says it diverged (the trainer tags
    it), send the ``nan_detected`` alert; whether it did."""
    run = _run_named(env, plan.require_run())
    if run is None or run.data.tags.get(DIVERGED_TAG) != "diverged":
        return False
    tags = run.data.tags
    details = {k.removeprefix("failure."): v for k, v in tags.items() if k.startswith("failure.")}
    diverged(env, plan.require_run(), tags.get("failure.reason", "diverged"), details)
    return True


def _run_named(env: Env, run_name: str, *, finished: bool = False) -> Any:
    """The newest MLflow run of the experiment with this name (``finished``: that
    ended FINISHED), or None."""
    experiment = env.client.get_experiment_by_name(env.experiment)
    if experiment is None:
        return None
    query = f"attributes.run_name = '{run_name}'"
    if finished:
        query += " and attributes.status = 'FINISHED'"
    found = env.client.search_runs(
        [experiment.experiment_id],
        query,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def train_result_from_mlflow(env: Env, plan: Plan) -> Trained:
    """The result of a run trained elsewhere (the GPU pod), read back from MLflow."""
    run_name = plan.require_run()
    found = _run_named(env, run_name)
    if found is None:
        raise RegistryError(f"no MLflow run named {run_name!r}: did the pod start?")
    run_id = found.info.run_id
    path = download_artifact(env.client, run_id, "result.json", _work_dir(env, run_name))
    try:
        result = TrainResult.load(path)
    except ResultError as exc:
        raise RegistryError(f"training run {run_id}: {exc}") from None
    return trained(env, result)


def trained(env: Env, result: TrainResult) -> Trained:
    """The finished run as the retrain passes it on (its result, MLflow page, health);
    alerts for NaNs, an unhealthy run and a spent budget go out here (once per run)."""
    name, run = result.run_name, result.mlflow_run_id
    health = _health(env, result)
    alerts: list[tuple[AlertKind, str, str, dict[str, Any]]] = []
    if result.nan_count:
        alerts.append(
            (
                AlertKind.NAN,
                f"training run {name} met {result.nan_count} non-finite steps",
                f"rollbacks: {result.rollbacks}, peak scale {result.lr_scale}",
                {"run": run, "nan_count": result.nan_count},
            )
        )
    if health:
        kinds = ", ".join(sorted({f.kind for f in health}))
        findings = [f.to_dict() for f in health]
        text = "; ".join(f.message for f in health)
        alerts.append(
            (
                AlertKind.TRAINING,
                f"training run {name}: {kinds}",
                text,
                {"run": run, "findings": findings},
            )
        )
    if result.status == "budget_exhausted":
        title = f"training run {name} stopped at its cost budget"
        details = {"run": run, "cost_usd": result.cost_usd}
        alerts.append((AlertKind.COST, title, result.stop_reason, details))
    for kind, title, text, details in alerts:  # each once per run (kind, run key)
        raise_alert(env.config, env.store, kind, run or name, title, text, details)
    return Trained(result=result, mlflow_run_url=mlflow_run_url(env, run), health=health)


def _health(env: Env, result: TrainResult) -> list[Finding]:
    """Flat loss, restart spikes and regressions of a finished run (docs/runbooks.md).
    Advisory: a failure to read the history is logged, never fails the task."""
    if not result.mlflow_run_id or result.status != "completed":
        return []
    try:
        # here, not above: it imports MLflow and torch, needed only when there is a run
        from pipeline.steps.registry.health import run_health

        return run_health(env.client, result.mlflow_run_id, result)
    except Exception:
        log.exception("could not judge the health of run %s", result.mlflow_run_id)
        return []


def mlflow_run_url(env: Env, run_id: str | None) -> str | None:
    """The MLflow UI page of a run (the training task's extra link in Airflow)."""
    if not run_id:
        return None
    experiment = env.client.get_run(run_id).info.experiment_id
    return f"{tracking.ui_url(env.config)}/#/experiments/{experiment}/runs/{run_id}"


# ------------------------------------------------------------------------------ register, gate


def register(env: Env, plan: Plan, run: Trained) -> Registration:
    """Register the run's cycle bests; store the window's sample as the reference
    snapshot the model carries (drift is measured against it once it is champion)."""
    # here, not above: the references read frames (pandas), which no other task needs
    from pipeline.steps.quality.reference import (
        ReferenceNotFound,
        create_reference_from_batches,
        reference_manifest,
    )

    snapshot = plan.require_run()
    refs = [BatchRef(env.dataset, b, v.features) for b, v in plan.versions.items()]
    try:
        reference_manifest(env.store, env.dataset, snapshot)
    except ReferenceNotFound:
        create_reference_from_batches(
            env.store, env.spec, refs, snapshot, rows=env.config.drift.reference_rows
        )
    lineage = {
        "data_snapshot": plan.snapshot,
        "reference_snapshot": snapshot,
        "trigger": plan.trigger,
        "reasons": "; ".join(plan.reasons)[:1000],
        **(
            {"left_out": "; ".join(f"{b}: {w}" for b, w in plan.left_out.items())[:1000]}
            if plan.left_out
            else {}
        ),
        **report_lineage(env, refs),
    }
    return register_training_run(
        env.client,
        env.store,
        env.spec,
        run.require_run_id(),
        name=env.model,
        lineage=lineage,
    )


def report_lineage(env: Env, refs: list[BatchRef]) -> dict[str, str]:
    """``validation.<batch>`` and ``drift.<batch>``: where the reports of each batch of
    the window are (``summary.json`` URIs, comma-separated; the HTML beside each).
    A batch measured against no reference yet says so instead of a URI."""
    tags = {}
    for ref in refs:
        for kind in ("validation", "drift"):
            keys = report_summaries(env.store, ref, kind)
            tags[f"{kind}.{ref.batch_id}"] = (
                ",".join(env.store.uri(k) for k in keys) if keys else "none: not measured"
            )
    return tags


def gate(env: Env, registration: Registration) -> GateOutcome:
    """The SLO gate for the challenger on its run's holdout; raises GateFailed (after
    recording the evidence and alerting) when it refuses."""
    run_id, challenger = registration.training_run_id, registration.challenger.version
    holdout = training_holdout(env.client, run_id, env.spec, store=env.store)
    with after(env, challenger, "gate decided"):  # its card, pass or fail
        result = gate_version(
            env.client, env.store, env.config, env.spec, env.model, holdout, challenger
        )
    return GateOutcome(
        version=result.version,
        passed=result.passed,
        first_model=result.first_model,
        checks=[c.describe() for c in result.checks],
        champion=current_alias(env.client, env.model, CHAMPION),
        canary=current_alias(env.client, env.model, CANARY),
    )
