"""One month through the live stack, and where its time goes.

``./run ui``'s stack (api-server, scheduler, dag-processor, triggerer; SQLite,
LocalExecutor, ``AIRFLOW__CORE__PARALLELISM=4``) on a home where the demo has
replayed January and February (a champion trained on January). Then, as in
production, only ``ingest`` is triggered (REST): March's features and February's
labels. The scheduler follows the assets: ``drift_monitor`` (validate, drift
against the champion's reference, score, decide) asks for a retrain, ``retrain``
trains January + February with the shipped ``configs/flights.yaml`` and the gate
moves ``canary``; ``canary_review`` runs on the labels.

The baseline, in the same run: the same flow steps in one warm process (every
import paid once, before the clock), on a copy of the same home. The live figure
over the baseline is what the stack costs: a process per task, its imports,
the scheduler's hops. Import costs are measured in fresh processes.

The drift threshold is 20 % (March drifts 25 % against January; the shipped 35 %
would not retrain), the gate's ``max_auc_drop`` 0.05 and ``min_slice_auc`` 0.5
(the shipped 0.60 refuses the January + February model on carriers 9E and MQ), so
that the month goes the whole way to ``canary``; everything else is shipped.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.report import write_section

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "COSINE_RETRAIN_DRIFT__SHARE_THRESHOLD": "0.2",
    "COSINE_RETRAIN_GATE__MAX_AUC_DROP": "0.05",
    "COSINE_RETRAIN_GATE__MIN_SLICE_AUC": "0.5",
}
FOLLOWED = ("drift_monitor", "retrain", "canary_review")
IMPORTS = {
    "the task runner + pipeline.flow": "import airflow.sdk, pipeline.flow",
    "Great Expectations": "import great_expectations",
    "Evidently": "import evidently.presets, evidently.core.report",
    "torch": "import torch",
    "MLflow": "import mlflow",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _t(text: str | None) -> float:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


class Api:
    def __init__(self, stack: Any) -> None:
        self.base = stack.airflow_url
        body = json.dumps({"username": stack.user, "password": stack.password}).encode()
        req = urllib.request.Request(
            f"{self.base}/auth/token", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            self.token = json.load(r)["access_token"]

    def __call__(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            f"{self.base}{path}",
            None if body is None else json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
            method=method,
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.load(r)

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=50")["dag_runs"])

    def tasks(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        quoted = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances"
        return list(self("GET", path)["task_instances"])

    def busy(self) -> bool:
        return any(
            r["state"] in ("queued", "running")
            for d in ("ingest", "drift_monitor", "retrain", "canary_review")
            for r in self.runs(d)
        )

    def settle(self, quiet: float = 20.0, timeout: float = 900.0) -> None:
        """Until no run is queued or running for ``quiet`` seconds."""
        deadline, calm = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.busy():
                calm = None
            elif calm is None:
                calm = time.monotonic()
            elif time.monotonic() - calm > quiet:
                return
            time.sleep(2)
        raise TimeoutError("the stack did not settle")


def _new_run(api: Api, dag_id: str, known: set[str], timeout: float = 1200) -> dict[str, Any]:
    """The first run of ``dag_id`` not in ``known``, once finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fresh = [r for r in api.runs(dag_id) if r["dag_run_id"] not in known]
        fresh.sort(key=lambda r: r["queued_at"] or "")
        if fresh and fresh[0]["state"] in ("success", "failed"):
            return fresh[0]
        time.sleep(2)
    raise TimeoutError(f"no new {dag_id} run finished")


def _import_costs(repeats: int = 3) -> dict[str, float]:
    costs = {}
    for name, code in IMPORTS.items():
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
            times.append(time.perf_counter() - t0)
        costs[name] = statistics.median(times)
    costs["a bare interpreter"] = statistics.median(
        _timed([sys.executable, "-c", "pass"]) for _ in range(repeats)
    )
    return costs


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


BASELINE = """
import json, sys, time
t0 = time.perf_counter()
import great_expectations, evidently.presets, evidently.core.report, torch, mlflow
from pipeline import flow
imports = time.perf_counter() - t0
env = flow.build_env()
steps = {}
def step(name, fn, *a, **k):
    t = time.perf_counter(); out = fn(*a, **k); steps[name] = time.perf_counter() - t; return out
step("ingest.land_features", flow.land, env, "2013-03")
step("ingest.land_labels", flow.land, env, "2013-02", labels=True)
step("drift_monitor.validate", flow.validate, env, "2013-03")
drifted = step("drift_monitor.drift", flow.drift, env, "2013-03")
step("drift_monitor.score", flow.score, env, "2013-03")
decision = step("drift_monitor.decide", flow.decide, env, "2013-03", drifted)
assert decision.retrain, decision
request = flow.RetrainRequest(trigger="drift", reasons=[decision.reason])
plan = step("retrain.plan", flow.plan_retrain, env, request)
window = step("retrain.export_window", flow.export_window, env, plan)
trained = step("retrain.train", flow.train, env, plan, window)
registered = step("retrain.register", flow.register, env, plan, trained)
gated = step("retrain.gate", flow.gate, env, registered)
step("canary_review.quality", flow.quality, env, "2013-02")
print(json.dumps({"imports": imports, "steps": steps, "gate": gated.to_xcom()}))
"""


def _baseline(home: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", BASELINE],
        cwd=ROOT,
        env={**env, "COSINE_RETRAIN_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _live(home: Path, preload: bool = True) -> dict[str, Any]:
    from pipeline.apps.preload import ENV
    from pipeline.apps.ui import start_stack

    stack = start_stack(
        home,
        airflow_port=free_port(),
        mlflow_port=free_port(),
        extra_env={
            **SETTINGS,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            **({} if preload else {ENV: ""}),  # the scheduler imports nothing before forking
        },
    )
    try:
        api = Api(stack)
        # the cron ticks an unpaused DAG runs at once (catchup off), then quiet
        api.settle()
        known = {
            d: {r["dag_run_id"] for r in api.runs(d)}
            for d in ("ingest", "drift_monitor", "retrain", "canary_review")
        }
        t0 = time.time()
        for conf in (
            {"source": "2013-03", "kind": "features"},
            {"source": "2013-02", "kind": "labels"},
        ):
            api("POST", "/api/v2/dags/ingest/dagRuns", {"logical_date": None, "conf": conf})
        runs = {
            d: _new_run(api, d, known[d]) for d in ("drift_monitor", "retrain", "canary_review")
        }
        ingests = sorted(
            (r for r in api.runs("ingest") if r["dag_run_id"] not in known["ingest"]),
            key=lambda r: r["queued_at"],
        )
        api.settle(quiet=5)
        tasks = {
            d: {t["task_id"]: t for t in api.tasks(d, r["dag_run_id"])} for d, r in runs.items()
        }
        tasks["ingest"] = {}
        for r in ingests:
            for t in api.tasks("ingest", r["dag_run_id"]):
                if t["state"] == "success" and t["task_id"] != "route":
                    tasks["ingest"][t["task_id"]] = t
                elif t["task_id"] == "route":
                    tasks["ingest"].setdefault("route", t)
        return {"t0": t0, "runs": runs, "ingests": ingests, "tasks": tasks}
    finally:
        stack.stop(grace=10)


def _row(name: str, live: float, base: float | None) -> str:
    # a ratio over a step of a few milliseconds says nothing but the clock's grain
    ratio = f"{live / base:.1f}" if base is not None and base >= 0.05 else "-"
    b = f"{base:.1f}" if base is not None else "-"
    return f"| {name} | {live:.1f} | {b} | {ratio} |"


def main() -> None:
    os.environ.update(SETTINGS)
    work = Path(tempfile.mkdtemp(prefix="live-month-"))
    home = work / "home"
    t = time.monotonic()
    demo = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--months", "1-2", "--home", str(home)],
        cwd=ROOT,
        env={**os.environ, **SETTINGS},
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    print(f"demo months 1-2: {time.monotonic() - t:.0f} s", flush=True)
    shutil.copytree(home, work / "baseline-home", symlinks=True)
    shutil.copytree(home, work / "unloaded-home", symlinks=True)

    print("importing in fresh processes...", flush=True)
    imports = _import_costs()
    print("the live month, the scheduler preloading nothing (as before)...", flush=True)
    unloaded = _live(work / "unloaded-home", preload=False)
    print("the live month, the scheduler preloading (pipeline.apps.preload)...", flush=True)
    live = _live(home)
    print("the baseline (one warm process)...", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base_home = work / "baseline-home"
    env["AIRFLOW_HOME"] = str(base_home / "airflow")
    base = _baseline(base_home, env)

    runs, tasks = live["runs"], live["tasks"]
    monitor, retrain = runs["drift_monitor"], runs["retrain"]
    assert monitor["state"] == retrain["state"] == "success", runs
    gate = tasks["retrain"]["gate"]
    landed = max(_t(t["end_date"]) for t in tasks["ingest"].values())
    feature_land = _t(tasks["ingest"]["land_features"]["end_date"])
    decided = _t(tasks["drift_monitor"]["decide"]["end_date"])
    canary = _t(gate["end_date"])
    hop_monitor = _t(monitor["queued_at"]) - feature_land
    retrain_queued = _t(retrain["queued_at"])
    # the retrain run follows the first retrain_request event: drift_monitor's, or
    # canary_review's when the labels' review asked first (the events queue into one run)
    requests = {
        dag: _t(tasks[dag]["request_retrain"]["end_date"])
        for dag in ("drift_monitor", "canary_review")
        if tasks[dag].get("request_retrain", {}).get("state") == "success"
    }
    first_request = min(requests, key=requests.__getitem__)
    request_end = requests[first_request]
    steps = base["steps"]
    base_decision = sum(
        steps[f"drift_monitor.{s}"] for s in ("validate", "drift", "score", "decide")
    )
    base_retrain = sum(
        steps[f"retrain.{s}"] for s in ("plan", "export_window", "train", "register", "gate")
    )

    to_decision, to_canary = decided - feature_land, canary - request_end
    before = unloaded["tasks"]
    unloaded_decision = _t(before["drift_monitor"]["decide"]["end_date"]) - _t(
        before["ingest"]["land_features"]["end_date"]
    )
    unloaded_tasks = sum(
        float(ti["duration"]) for d in before.values() for ti in d.values() if ti["duration"]
    )
    everything = max(_t(r["end_date"]) for r in runs.values()) - live["t0"]
    warm_total = sum(steps.values())
    rows = []
    for dag in ("ingest", "drift_monitor", "retrain", "canary_review"):
        for task_id, ti in sorted(tasks[dag].items(), key=lambda kv: kv[1]["start_date"] or ""):
            if ti["state"] != "success" or ti["duration"] is None:
                continue
            rows.append(
                _row(f"`{dag}.{task_id}`", float(ti["duration"]), steps.get(f"{dag}.{task_id}"))
            )
    task_sum = sum(
        float(ti["duration"]) for d in tasks.values() for ti in d.values() if ti["duration"]
    )
    n_tasks = sum(1 for d in tasks.values() for ti in d.values() if ti["duration"])
    preload_rows = "\n".join(
        [
            f"| features landed -> retrain decision | {unloaded_decision:.1f} | "
            f"{to_decision:.1f} | {to_decision / unloaded_decision:.2f} |",
            f"| the task processes' durations, summed | {unloaded_tasks:.0f} | "
            f"{task_sum:.0f} | {task_sum / unloaded_tasks:.2f} |",
        ]
    )
    body = f"""
{__doc__.split(chr(10) + chr(10), 1)[1].strip()}

| span | live stack (s) | one warm process (s) | ratio |
|---|---:|---:|---:|
{_row("features landed -> retrain decision (`decide` done)", to_decision, base_decision)}
{_row("retrain requested -> `canary` moved (`gate` done)", to_canary, base_retrain)}
{_row("first ingest triggered -> everything done", everything, sum(steps.values()))}

Hops the scheduler adds: `batch_landed` -> `drift_monitor` queued {hop_monitor:.1f} s after
`land_features` ended; `retrain_request` -> `retrain` queued {retrain_queued - request_end:.1f} s
after `{first_request}.request_retrain` ended (the first request; {len(requests)} in all).
Both ingests done {landed - live["t0"]:.1f} s after the first
trigger. The gate's verdict: {gate["state"]} (canary moved).

Per task (the live task's own duration, from start to end; the warm step alone):

| task | live (s) | warm step (s) | ratio |
|---|---:|---:|---:|
{chr(10).join(rows)}

{n_tasks} task processes ran {task_sum:.0f} s in all; the warm steps took {warm_total:.0f} s
after {base["imports"]:.1f} s of imports paid once.

What a task process pays before its work (fresh process, median of 3):

| import | seconds |
|---|---:|
{chr(10).join(f"| {k} | {v:.1f} |" for k, v in imports.items())}

**The imports paid once.** Every task process of Airflow 3's LocalExecutor is forked
(Linux) from a worker the scheduler forked: what the scheduler imported before is in
every task for free. `./run ui` and the compose stack start the scheduler through
`python -m pipeline.apps.preload airflow scheduler`, which imports Great Expectations,
Evidently, torch, MLflow and the flow first (the Celery profile's workers are not
started through it yet). The same
month on a copy of the same home, in the same run, with the scheduler preloading
nothing (`COSINE_RETRAIN_PRELOAD=` empty), as before:

| span | preloading nothing (s) | preloading (s) | ratio |
|---|---:|---:|---:|
{preload_rows}
"""
    path = write_section("live_month", "One month through the live stack", body)
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
