"""Every consumed event processed: a drift monitor run that consumes several
``batch_landed`` events checks every batch they name, in batch order, and catches up
a landed batch whose event never reached it.

The parsed DAGs run with ``dag.test()`` in a fresh interpreter (its own Airflow home);
the ``ingest`` DAG lands the batches and emits the events, and the monitor's run
consumes them as the scheduler would hand them (:mod:`pipeline.apps.assets`, what the
demo does). A champion (a tiny trained run, through the flow's gate) with a reference
snapshot stands in the registry, so every batch is drift-checked against it and scored
by it. What the test checks is read from the store's files (validation and drift
reports, predictions) and recomputed from the bundled data, beside the ledger.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.base.config import load_config
from pipeline.base.ledger import read_ledger
from pipeline.flow import gate
from pipeline.flow.env import Env
from pipeline.steps.landing.ingest import flights_frames
from pipeline.steps.quality.reference import create_reference
from pipeline.steps.registry.aliases import CHAMPION, current_alias
from pipeline.steps.registry.registration import register_training_run
from tests.support import dag_test_env, logged_script

ROOT = Path(__file__).resolve().parents[2]
GATE = {"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 150, "max_auc_drop": 0.05}
FIRST = ["2013-01", "2013-02", "2013-03"]

RUN = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                   check=True, capture_output=True)
    from pipeline import flow
    from pipeline.apps.replay import Replay

    home, bad = Path(sys.argv[1]), sys.argv[2]
    replay = Replay(home, [])

    def ingest(source, batch_id=None):
        conf = {"source": source, "kind": "features", "batch_id": batch_id}
        landed = replay.run("ingest", conf)
        assert not landed.failed, landed

    def monitor():
        run = replay.run("drift_monitor")
        return {"state": run.state, "consumed": run.consumed, "results": run.results,
                "states": run.states}

    out = {}
    # three months land before the monitor runs (a backfill): one run, three events
    for month in ("2013-01", "2013-02", "2013-03"):
        ingest(month)
    out["backfill"] = monitor()
    # April lands by hand (the CLI: no event); May's file fails validation; June lands
    flow.land(replay.env, "2013-04")
    ingest(bad, "2013-05")
    ingest("2013-06")
    out["catch_up"] = monitor()
    print(json.dumps(out, default=str))
    """
)


@pytest.fixture(scope="module")
def staged(
    mlflow_server: Any, trained_runs: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Env, dict[str, Any]]:
    """A champion with a reference snapshot; then the DAG runs (their results)."""
    tmp = tmp_path_factory.mktemp("every-batch")
    home = tmp / "home"
    model = f"every_{uuid.uuid4().hex[:8]}"
    env = Env(
        load_config(
            None,
            home=home,
            mlflow={"tracking_uri": mlflow_server.url, "model_name": model},
            gate=GATE,
        )
    )
    reg = register_training_run(
        env.client, env.store, env.spec, trained_runs["a"].run_id, name=env.model
    )
    assert gate(env, reg).passed
    champion = current_alias(env.client, env.model, CHAMPION)
    # its reference: a sample of the first half year (every category the batches hold)
    half = pd.concat([flights_frames(env.spec, m)[1] for m in range(1, 7)], ignore_index=True)
    create_reference(env.store, env.spec, half, "ref-2013-h1", rows=30_000)
    env.client.set_model_version_tag(
        env.model, champion, "lineage.reference_snapshot", "ref-2013-h1"
    )
    # May as a file with 200 flights from an airport the spec does not allow
    _, may, _ = flights_frames(env.spec, 5)
    may.loc[:199, "origin"] = "XXX"
    incoming = home / "incoming"
    incoming.mkdir(parents=True)
    bad = incoming / "2013-05.parquet"
    may.to_parquet(bad, index=False)

    slos = {f"COSINE_RETRAIN_GATE__{k.upper()}": str(v) for k, v in GATE.items()}
    child = dag_test_env(
        tmp / "airflow",
        home,
        COSINE_RETRAIN_MLFLOW__TRACKING_URI=mlflow_server.url,
        COSINE_RETRAIN_MLFLOW__MODEL_NAME=model,
        **slos,
    )
    log = tmp / "dag-test.log"
    out = logged_script(RUN, str(home), str(bad), env=child, log=log)
    return env, out


def _report(env: Env, batch: str, kind: str) -> list[dict[str, Any]]:
    """The ``kind`` report summaries of the batch's v1 on disk, found without the code."""
    folder = env.home / "store" / "reports" / "flights" / batch / "v1" / kind
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*/summary.json"))]


def _predicted_rows(env: Env, batch: str) -> int:
    folder = env.home / "store" / "predictions" / "flights" / batch
    return sum(len(pd.read_parquet(p)) for p in folder.glob("*/predictions.parquet"))


def test_a_run_on_three_events_checks_all_three_in_batch_order(
    staged: tuple[Env, dict[str, Any]],
) -> None:
    env, runs = staged
    run = runs["backfill"]
    assert run["consumed"] == 3
    assert run["state"] == "success", run["states"]
    res = run["results"]
    assert res["which_batches"] == FIRST
    assert [v["batch_id"] for v in res["validate"]] == FIRST
    assert [d["batch_id"] for d in res["drift"]] == FIRST
    assert [s["batch_id"] for s in res["score"]] == FIRST
    for batch in FIRST:
        rows = len(flights_frames(env.spec, batch)[1])
        (validation,) = _report(env, batch, "validation")
        assert validation["success"] is True
        assert validation["rows"] == rows
        assert _report(env, batch, "drift"), f"{batch} was not drift-checked"
        assert _predicted_rows(env, batch) == rows, f"{batch} was not scored"
    # one after the other, in batch order: when each validation ran (its own report)
    stamps = [_report(env, b, "validation")[0]["validated_at"] for b in FIRST]
    assert stamps == sorted(stamps)
    # the ledger records each step of each batch, in the same order
    ledger = read_ledger(env.store, env.dataset)
    for step in ("validated", "drift_checked", "scored"):
        assert all(ledger[b].done(step, 1) for b in FIRST), step
        at = [ledger[b].entries[step].at for b in FIRST]
        assert at == sorted(at), step


def test_a_batch_whose_event_never_came_is_caught_up(
    staged: tuple[Env, dict[str, Any]],
) -> None:
    """April landed without an event (by hand); the next run, started by May's and
    June's events, checks April too. May fails validation: it is quarantined and the
    run fails naming it, while April and June go through."""
    env, runs = staged
    run = runs["catch_up"]
    assert run["consumed"] == 2  # May's and June's events: April sent none
    res = run["results"]
    assert res["which_batches"] == ["2013-04", "2013-05", "2013-06"]
    refused = {v["batch_id"]: v["refused"] for v in res["validate"]}
    assert refused["2013-04"] is None
    assert refused["2013-06"] is None
    assert "origin" in refused["2013-05"]
    assert [d["batch_id"] for d in res["drift"]] == ["2013-04", "2013-06"]
    assert [s["batch_id"] for s in res["score"]] == ["2013-04", "2013-06"]
    assert run["states"]["refused"] == "failed"
    assert run["state"] == "failed"
    assert (env.home / "store/datasets/flights/quarantine/2013-05/v1").is_dir()
    for batch in ("2013-04", "2013-06"):
        assert _predicted_rows(env, batch) == len(flights_frames(env.spec, batch)[1])
    ledger = read_ledger(env.store, env.dataset)
    assert ledger["2013-05"].done("quarantined", 1)
    assert not ledger["2013-05"].done("scored")
    assert ledger["2013-04"].line() == "landed v1, validated v1, drift_checked v1, scored v1"
