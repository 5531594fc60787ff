"""The replay behind ``./run demo``: batches in time order, through the real DAGs.

For each batch: the ``ingest`` DAG lands its features (the ``batch_landed`` asset)
and the previous batch's labels (``labels_landed``); then every DAG those assets
trigger runs, and whatever they trigger in turn (``drift_monitor`` may emit
``retrain_request``, so may ``canary_review``), each on the asset events it
consumed (:mod:`pipeline.apps.assets`), exactly as the scheduler would start them.
Each run is ``dag.test()`` (what ``airflow dags test`` runs) in this process, so
Great Expectations, Evidently and torch are imported once. The month summary is
read from the tasks' results; a failed task says why (the ``task_failed`` alert
its notifier recorded).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.api import PROJECT_ROOT

__all__ = ["DAGS", "BatchSource", "Month", "Replay", "RunResult"]

DAGS = PROJECT_ROOT / "dags"
MAX_RUNS_PER_BATCH = 12  # asset-triggered runs followed per batch (a cycle guard)


@dataclass(frozen=True)
class BatchSource:
    """One batch to replay: its id and what the ingest DAG lands for it."""

    batch_id: str
    features: str  # a bundled month (2013-03) or a file under <home>/incoming
    labels: str
    is_file: bool = False

    def conf(self, kind: str) -> dict[str, Any]:
        source = self.features if kind == "features" else self.labels
        return {"source": source, "kind": kind, "batch_id": self.batch_id if self.is_file else None}


@dataclass
class Month:
    batch: str
    steps: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    failed: bool = False


@dataclass(frozen=True)
class RunResult:
    dag_id: str
    state: str
    results: dict[str, Any]
    states: dict[str, str]
    errors: tuple[str, ...] = ()
    consumed: int = 0  # asset events the run consumed

    @property
    def failed(self) -> bool:
        return self.state != "success"


@contextlib.contextmanager
def _into(path: Path) -> Any:
    """Send what Airflow prints while a DAG runs (its task runner logs each failure
    with a traceback, also an expected one such as a refused gate) to ``path``:
    the replay prints its own summary of every step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


class Replay:
    def __init__(
        self, home: Path, batches: list[BatchSource], before: BatchSource | None = None
    ) -> None:
        """``before``: the batch whose labels land with the first one (the replay of
        March lands February's labels), when the replay does not start at the start."""
        from airflow.dag_processing.dagbag import BundleDagBag

        from pipeline.apps.assets import AssetFollower
        from pipeline.flow import build_env

        self.home = home
        self.batches = batches
        self.before = before
        bag = BundleDagBag(DAGS, bundle_path=DAGS)
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        self.dags = bag.dags
        self.env = build_env()
        self.follower = AssetFollower()
        self.months: list[Month] = []
        self.task_log = home / "reports" / "airflow-tasks.log"
        self.retrains: list[dict[str, Any]] = []

    # -- running DAGs ----------------------------------------------------------------------

    def run(self, dag_id: str, conf: dict[str, Any] | None = None) -> RunResult:
        """One ``dag.test`` run: a manual run with ``conf``, or (conf None) the run the
        scheduler would start for the DAG's queued asset events."""
        consumed: list[int] = []
        logging.disable(logging.CRITICAL)  # the replay prints its own summary
        try:
            with _into(self.task_log):
                if conf is None:
                    with self.follower.consuming(dag_id) as consumed:
                        dr = self.dags[dag_id].test()
                else:
                    dr = self.dags[dag_id].test(run_conf=conf)
        finally:
            logging.disable(logging.NOTSET)
        return self._result(dag_id, dr, len(consumed))

    def follow(self) -> dict[str, RunResult]:
        """Run every DAG the latest asset events trigger, then those their events
        trigger, until none is queued; the last run of each DAG."""
        runs: dict[str, RunResult] = {}
        for _ in range(MAX_RUNS_PER_BATCH):
            queued = self.follower.queued()
            if not queued:
                break
            runs[queued[0]] = self.run(queued[0])
        return runs

    def _result(self, dag_id: str, dr: Any, consumed: int) -> RunResult:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.scalars(
                XComModel.get_many(run_id=dr.run_id, dag_ids=dag_id, key="return_value")
            ).all()
            results = {x.task_id: XComModel.deserialize_value(x) for x in rows}
            states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}
        errors = self._errors(dag_id, dr.run_id) if str(dr.state) != "success" else ()
        return RunResult(dag_id, str(dr.state), results, states, errors, consumed)

    def _errors(self, dag_id: str, run_id: str) -> tuple[str, ...]:
        """Why the run's tasks failed: the task_failed alerts their notifier recorded."""
        from pipeline.base.alerts import list_alerts
        from pipeline.base.store import get_json, join_key

        out = []
        for status in list_alerts(self.env.store):
            if status.kind == "task_failed" and status.run_key.startswith(f"{dag_id}/{run_id}/"):
                details = get_json(self.env.store, join_key(status.prefix, "alert.json"))["details"]
                task, text = details.get("task_id", "?"), str(details.get("exception") or "")
                out.append(f"{task}: {text}")
        return tuple(out) or (f"see {self.task_log}",)

    # -- one batch -------------------------------------------------------------------------

    def batch(self, i: int) -> Month:
        from pipeline.base.alerts import list_alerts

        before = {a.alert_id for a in list_alerts(self.env.store)}
        out = self._batch(i)
        new = [a for a in list_alerts(self.env.store) if a.alert_id not in before]
        if new:
            kinds = sorted({a.kind for a in new})
            out.lines.append(f"  alerts     {len(new)} sent: {', '.join(kinds)}")
            out.steps["alerts"] = kinds
        return out

    def failure(self, out: Month, what: str, run: RunResult) -> None:
        out.failed = True
        out.lines.append(f"  {what:<10} FAILED ({run.dag_id} {run.state}):")
        for error in run.errors:
            for line in error.splitlines()[:6]:
                out.lines.append(f"             {line}")

    def _batch(self, i: int) -> Month:
        from pipeline.apps.summary import (
            canary_lines,
            champion_line,
            ingest_line,
            monitor_lines,
            retrain_lines,
        )

        source = self.batches[i]
        previous = self.batches[i - 1] if i else self.before
        out = Month(source.batch_id)
        landed = self.run("ingest", source.conf("features"))
        if landed.failed:
            self.failure(out, "ingest", landed)
        else:
            ingest_line(out, landed.results.get("land_features", {}), "features")
        if previous is not None:
            labels = self.run("ingest", previous.conf("labels"))
            if labels.failed:
                self.failure(out, "labels", labels)
            else:
                ingest_line(out, labels.results.get("land_labels", {}), previous.batch_id)
        runs = self.follow()
        if "drift_monitor" in runs:
            monitor_lines(out, runs["drift_monitor"], self.failure)
        if "canary_review" in runs:
            canary_lines(out, runs["canary_review"], previous, self.failure)
        if "retrain" in runs:
            retrain_lines(self, out, runs["retrain"])
        champion_line(self, out)
        return out

    def alias(self, alias: str) -> str | None:
        from pipeline.steps.registry.aliases import current_alias

        return current_alias(self.env.client, self.env.model, alias)

    def write_report(self, title: str) -> Path:
        """``<home>/reports/replay.html``: drift and live quality per batch, every run's
        curves, the registered versions and the alias history."""
        from pipeline.steps.ops.report import ReplayMonth, ReplayRun, write_report
        from pipeline.steps.registry.aliases import alias_history

        months = [
            ReplayMonth(
                m.batch, tuple(m.lines), m.steps.get("drift_share"), m.steps.get("live_auc")
            )
            for m in self.months
        ]
        runs = [
            ReplayRun(
                r["month"],
                r["plan"].get("run_name", ""),
                r["gate"]["text"],
                self.env.home / "runs" / r["plan"].get("run_name", "") / "curves.png",
            )
            for r in self.retrains
        ]
        config = self.env.config
        return write_report(
            self.home / "reports" / "replay.html",
            months,
            runs,
            versions=self.env.client.search_model_versions(f"name='{self.env.model}'"),
            moves=alias_history(self.env.store, self.env.model),
            drift_threshold=config.drift.share_threshold,
            slo=config.quality.slo,
            title=title,
        )
