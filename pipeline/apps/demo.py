"""``python -m pipeline demo``: replay 2013 month by month through the real DAGs.

What `./run demo` runs. Each month of the bundled flights goes through the
Airflow DAGs exactly as the scheduler would run them, executed in this process
with ``dag.test()`` (what ``airflow dags test`` does; one process, so Great
Expectations, Evidently and torch are imported once) on local defaults: SQLite
for Airflow and MLflow, the object store under ``.cosine-retrain/store``.

Month M: the ``ingest`` DAG lands M's features and, labels arriving a month
late, M-1's labels; ``drift_monitor`` validates M, measures drift against the
champion's reference, scores M with champion and canary and decides;
``canary_review`` judges the champion's live quality and the canary on M-1's
labels; when either asked for it, ``retrain`` trains on the latest labelled
months, registers the cycle bests and gates the challenger. Nothing is forced:
every retrain, refusal and promotion comes from the data and the shipped config.

A second run reuses what it can (landed batches, validations, drift reports,
finished training windows, registered versions) and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.atomic import atomic_write_text
from training.locations import DEFAULT_HOME, PROJECT_ROOT

ROOT = PROJECT_ROOT
DAGS = ROOT / "dags"

log = logging.getLogger("pipeline.demo")


def _say(text: str = "") -> None:
    print(text, flush=True)


def prepare_environment(home: Path) -> dict[str, str]:
    """Point Airflow and the pipeline at ``home`` (before Airflow is imported)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "COSINE_RETRAIN_HOME": str(home),
        "GIT_PYTHON_REFRESH": "quiet",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    # the DAG files import pipeline/ and training/: make them importable from any folder
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    os.environ.update(env)
    # the shipped spec and training config, unless the caller chose others
    os.environ.setdefault(
        "COSINE_RETRAIN_DATASET_SPEC", str(ROOT / "configs" / "datasets" / "flights.yaml")
    )
    os.environ.setdefault(
        "COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG", str(ROOT / "configs" / "flights.yaml")
    )
    return env


def migrate(home: Path) -> str:
    """``airflow db migrate`` unless this home already has a database."""
    if (home / "airflow" / "airflow.db").exists():
        return "reused the Airflow database"
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"airflow db migrate failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return f"created the Airflow database ({time.monotonic() - t0:.0f} s)"


@dataclass
class Month:
    batch: str
    steps: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _into(path: Path) -> Any:
    """Send what Airflow prints while a DAG runs (its task runner logs each failure
    with a traceback, also an expected one such as a refused gate) to ``path``:
    the demo prints its own summary of every step."""
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
    def __init__(self, home: Path) -> None:
        from airflow.dag_processing.dagbag import BundleDagBag

        self.home = home
        bag = BundleDagBag(DAGS, bundle_path=DAGS)
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors: {bag.import_errors}")
        self.dags = bag.dags
        from pipeline.flow import build_env

        self.env = build_env()
        self.months: list[Month] = []
        self.task_log = home / "reports" / "airflow-tasks.log"
        self.retrains: list[dict[str, Any]] = []

    # -- running one DAG -----------------------------------------------------------------

    def run(self, dag_id: str, conf: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]]:
        """(state, task results, task states) of one ``dag.test`` run."""
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        logging.disable(logging.CRITICAL)  # the demo prints its own summary of every step
        try:
            with _into(self.task_log):
                dr = self.dags[dag_id].test(run_conf=conf)
        finally:
            logging.disable(logging.NOTSET)
        with create_session() as session:
            rows = session.scalars(
                XComModel.get_many(run_id=dr.run_id, dag_ids=dag_id, key="return_value")
            ).all()
            results = {x.task_id: XComModel.deserialize_value(x) for x in rows}
            states = {ti.task_id: str(ti.state) for ti in dr.get_task_instances(session=session)}
        return str(dr.state), results, states

    # -- one month -----------------------------------------------------------------------

    def month(self, m: int) -> Month:
        from pipeline.base.alerts import list_alerts

        before = {a.alert_id for a in list_alerts(self.env.store)}
        out = self._month(m)
        new = [a for a in list_alerts(self.env.store) if a.alert_id not in before]
        if new:
            kinds = sorted({a.kind for a in new})
            out.lines.append(f"  alerts     {len(new)} sent: {', '.join(kinds)}")
            out.steps["alerts"] = kinds
        return out

    def _month(self, m: int) -> Month:
        batch, previous = f"2013-{m:02d}", f"2013-{m - 1:02d}" if m > 1 else None
        out = Month(batch)
        state, res, _ = self.run("ingest", {"source": batch, "kind": "features"})
        landed = res.get("land_features", {})
        out.steps["rows"] = landed.get("rows")
        out.lines.append(
            f"  ingest     {landed.get('rows', '?'):>6} rows"
            + (" (already landed: reused)" if landed.get("status") == "unchanged" else "")
        )
        requests: list[tuple[str, str]] = []
        if previous:
            _, res, _ = self.run("ingest", {"source": previous, "kind": "labels"})
            lab = res.get("land_labels", {})
            again = " (already landed: reused)" if lab.get("status") == "unchanged" else ""
            out.lines.append(f"  labels     {previous}: {lab.get('rows', '?')} rows arrived{again}")

        state, res, _ = self.run("drift_monitor", {"batch_id": batch})
        val = res.get("validate")
        if val is None:
            out.lines.append(f"  validation FAILED: the batch was quarantined ({state})")
            out.steps["validation"] = "failed"
            return out
        out.steps["validation"] = "passed"
        out.lines.append(
            f"  validation passed: {val['evaluated']} expectations on {val['rows']} rows"
        )
        dr = res.get("drift", {})
        if dr.get("checked"):
            out.steps["drift_share"] = dr["drift_share"]
            cols = ", ".join(dr["drifted_columns"]) or "none"
            out.lines.append(
                f"  drift      {dr['drift_share']:.0%} of columns against reference "
                f"{dr['reference']} (threshold {dr['threshold']:.0%}); drifted: {cols}"
                + (" (measured before: reused)" if dr.get("reused") else "")
            )
        else:
            out.lines.append(f"  drift      not measured: {dr.get('reason')}")
        sc = res.get("score", {})
        if sc.get("champion_version"):
            canary = (
                f", canary v{sc['canary_version']} {sc['canary_rows']}"
                if sc.get("canary_version")
                else ""
            )
            out.lines.append(
                f"  scoring    champion v{sc['champion_version']} {sc['rows'] - sc['canary_rows']}"
                f" rows{canary}"
            )
        decision = res.get("decide", {})
        if decision.get("retrain"):
            requests.append((decision["trigger"], decision["reason"]))
        out.lines.append(
            f"  decision   {'RETRAIN' if decision.get('retrain') else 'no retrain'}: "
            f"{decision.get('reason')}"
        )

        if previous:
            state, res, _ = self.run("canary_review", {"batch_id": previous})
            q = res.get("quality", {})
            if q.get("auc") is not None:
                out.steps["live_auc"] = q["auc"]
                out.lines.append(
                    f"  quality    champion v{q['model_version']} live AUC {q['auc']:.4f} on "
                    f"{q['rows']} labelled rows of {previous} (SLO {q['slo']})"
                )
            else:
                reason = (q.get("decision") or {}).get("reason", "not measured")
                out.lines.append(f"  quality    {reason}")
            decided = q.get("decision") or {}
            if decided.get("retrain"):
                requests.append(("quality", decided["reason"]))
            rv = res.get("review", {})
            if rv:
                out.steps["canary"] = rv["outcome"]
                out.lines.append(f"  canary     {rv['outcome']}: {rv['reason']} -> {rv['action']}")

        if requests:
            self._retrain(out, requests, until=previous)
        champion = self._alias("champion")
        out.steps["champion"] = champion
        canary = self._alias("canary")
        out.lines.append(
            f"  champion   {'v' + champion if champion else 'none yet'}"
            + (f", canary v{canary}" if canary else "")
        )
        return out

    def write_report(self) -> Path:
        """``<home>/reports/replay.html``: drift and live quality per batch, every run's
        curves, the registered versions and the alias history."""
        from pipeline.steps.aliases import alias_history
        from pipeline.steps.report import ReplayMonth, ReplayRun, write_report

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
        )

    def _alias(self, alias: str) -> str | None:
        from pipeline.steps.aliases import current_alias

        return current_alias(self.env.client, self.env.model, alias)

    def _retrain(self, out: Month, requests: list[tuple[str, str]], until: str | None) -> None:
        trigger = requests[0][0]
        reason = " + ".join(r for _, r in requests)
        conf = {"until": until, "reason": reason[:500], "trigger": trigger}
        state, res, _ = self.run("retrain", conf)
        plan = res.get("plan", {})
        if plan.get("skip"):
            out.lines.append(f"  retrain    skipped: {plan.get('reason')}")
            return
        trained = res.get("train", {})
        out.steps["retrain"] = reason
        out.lines.append(
            f"  retrain    {plan.get('run_name')} on {', '.join(plan.get('window', []))} "
            f"(why: {reason})"
        )
        for c in trained.get("cycles", []):
            out.lines.append(
                f"             cycle {c['cycle']} best at step {c['step']}: lr {c['lr']:.3g}, "
                f"val AUC {c['val_auc']:.4f}"
            )
        verdict = self._gate_verdict(plan.get("run_name"), res.get("gate"))
        out.steps["gate"] = verdict["text"]
        out.lines.append(f"  gate       {verdict['text']}")
        for line in verdict["failures"]:
            out.lines.append(f"               {line}")
        self.retrains.append(
            {"month": out.batch, "plan": plan, "train": trained, "gate": verdict, "state": state}
        )

    def _gate_verdict(self, run_name: str | None, result: dict[str, Any] | None) -> dict[str, Any]:
        if result is not None:
            where = "first model: champion" if result["first_model"] else "canary"
            return {
                "passed": True,
                "text": f"v{result['version']} PASSED -> {where}",
                "failures": [],
            }
        versions = self.env.client.search_model_versions(
            f"name='{self.env.model}' and tags.training_run_name='{run_name}'"
        )
        failed = [v for v in versions if v.tags.get("gate.status") == "failed"]
        if failed:
            v = failed[0]
            return {
                "passed": False,
                "text": f"v{v.version} REFUSED (nothing moved)",
                "failures": v.tags.get("gate.reasons", "").split("; "),
            }
        return {"passed": False, "text": "not reached (the run failed earlier)", "failures": []}


def _parse_months(text: str) -> list[int]:
    months: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        months += list(range(int(lo), int(hi or lo) + 1))
    if not months or any(not 1 <= m <= 12 for m in months):
        raise ValueError(f"--months must name months 1..12, e.g. 1-7, got {text!r}")
    return sorted(set(months))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline demo", description=__doc__)
    parser.add_argument("--months", default="1-12", help="months of 2013 to replay (default 1-12)")
    parser.add_argument("--home", default=str(DEFAULT_HOME), help="local state folder")
    args = parser.parse_args(argv)
    try:
        months = _parse_months(args.months)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    home = Path(args.home).resolve()
    prepare_environment(home)
    _say(
        f"== cosine-retrain demo: replaying 2013-{months[0]:02d}..2013-{months[-1]:02d} "
        f"through the Airflow DAGs (local state in {home})"
    )
    _say(f"   {migrate(home)}")
    replay = Replay(home)
    for m in months:
        t = time.monotonic()
        month = replay.month(m)
        replay.months.append(month)
        _say(f"-- 2013-{m:02d} ({time.monotonic() - t:.0f} s)")
        for line in month.lines:
            _say(line)
    report = replay.write_report()
    _say(f"\n== done in {time.monotonic() - t0:.0f} s; report: {report}")
    _say(f"   Airflow's own task logs of the replay: {replay.task_log}")
    _say("   open the Airflow and MLflow UIs on this data: ./run ui")
    atomic_write_text(
        home / "reports" / "replay.json",
        json.dumps([{"batch": m.batch, **m.steps} for m in replay.months], indent=2, default=str),
    )
    return 0
