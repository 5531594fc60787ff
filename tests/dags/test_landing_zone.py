"""The landing zone: files dropped under the store's ``landing/`` are landed by the
``landing`` DAG, each once, in batch order, and one event names them all.

The parsed DAGs run with ``dag.test()`` in a fresh interpreter (its own Airflow home,
local defaults: the store, MLflow and Airflow in SQLite under the home). What the
test checks is read from the store's files and recomputed from the dropped frames.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.base.config import load_config
from pipeline.base.ledger import read_ledger
from pipeline.flow.env import Env
from pipeline.steps.landing.ingest import flights_frames
from tests.support import dag_test_env, logged_script
from training.api import load_spec

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "configs" / "datasets" / "flights.yaml"

RUN = textwrap.dedent(
    """
    import json, subprocess, sys
    from pathlib import Path
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                   check=True, capture_output=True)
    from pipeline import flow
    from pipeline.apps.replay import Replay

    home, zone = Path(sys.argv[1]), Path(sys.argv[2])
    replay = Replay(home, [])

    def run(dag_id):
        r = replay.run(dag_id)
        return {"state": r.state, "consumed": r.consumed, "results": r.results,
                "states": r.states, "queued": replay.follower.queued()}

    out = {"backfill": run("landing")}
    out["monitor"] = run("drift_monitor")
    # February's labels land by hand (no event): the review of January's event catches up
    flow.land(replay.env, str(zone.parent / "feb-labels.parquet"), labels=True,
              batch_id="2013-02", trusted=True)
    out["review"] = run("canary_review")
    out["again"] = run("landing")  # nothing new
    (zone / "features" / "2013-02.parquet").write_bytes((zone / "changed.parquet").read_bytes())
    out["changed"] = run("landing")
    print(json.dumps(out, default=str))
    """
)


def _frames() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """1,500 flights of each of January to March (features, labels)."""
    spec = load_spec(SPEC)
    out = {}
    for month in (1, 2, 3):
        _, features, labels = flights_frames(spec, month)
        features = features.head(1500).reset_index(drop=True)
        ids = features[spec.id_column]
        out[f"2013-{month:02d}"] = (features, labels[labels[spec.id_column].isin(ids)])
    return out


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Env, dict[str, Any], dict]:
    tmp = tmp_path_factory.mktemp("landing-zone")
    home = tmp / "home"
    zone = home / "store" / "landing"
    (zone / "features").mkdir(parents=True)
    (zone / "labels").mkdir()
    frames = _frames()
    # a backfill: three months at once, written in reverse order; January's labels;
    # labels of a batch that never landed; a file whose name is no batch
    for batch in reversed(list(frames)):
        frames[batch][0].to_parquet(zone / "features" / f"{batch}.parquet", index=False)
    frames["2013-01"][1].to_csv(zone / "labels" / "2013-01.csv", index=False)
    frames["2013-01"][1].to_parquet(zone / "labels" / "2013-09.parquet", index=False)
    (zone / "features" / "notes.txt").write_text("not a batch")
    (zone / "features" / ".2013-04.parquet").write_text("half written")  # a dot: not listed
    frames["2013-02"][0].head(1200).to_parquet(zone / "changed.parquet", index=False)
    frames["2013-02"][1].to_parquet(zone.parent / "feb-labels.parquet", index=False)

    # unpaused: the consumers of the landing events get queued
    child = dag_test_env(tmp / "airflow", home, AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False")
    log = tmp / "dag-test.log"
    out = logged_script(RUN, str(home), str(zone), env=child, log=log)
    env = Env(load_config(None, home=home))
    return env, out, frames


def test_a_backfill_is_dropping_files(swept: tuple[Env, dict[str, Any], dict]) -> None:
    env, runs, frames = swept
    first = runs["backfill"]["results"]
    features, labels = first["sweep_features"], first["sweep_labels"]
    assert features["landed"] == ["2013-01", "2013-02", "2013-03"]  # batch order
    assert list(features["refused"]) == ["notes.txt"]
    assert labels["landed"] == ["2013-01"]
    assert list(labels["waiting"]) == ["2013-09.parquet"]  # its features never landed
    # one event each, naming every landed batch
    assert first["announce_features"] == ["2013-01", "2013-02", "2013-03"]
    assert first["announce_labels"] == ["2013-01"]
    assert runs["backfill"]["states"]["refused"] == "failed"  # notes.txt, named
    # the consumers the scheduler would start: each has its run queued
    assert {"drift_monitor", "canary_review"} <= set(runs["backfill"]["queued"])
    # each batch landed once, with the rows of the file dropped for it
    store = env.home / "store"
    for batch, (frame, _) in frames.items():
        stored = store / f"datasets/flights/batches/{batch}/v1"
        assert json.loads((stored / "manifest.json").read_text())["rows"] == len(frame)
        assert (store / f"landing/landed/features/{batch}.parquet").is_file()
        assert not (store / f"datasets/flights/batches/{batch}/v2").exists()
    assert (store / "landing/refused/features/notes.txt.json").is_file()
    assert (store / "landing/labels/2013-09.parquet").is_file()  # waits for the next sweep
    assert (store / "landing/features/.2013-04.parquet").is_file()


def test_one_monitor_run_checks_every_landed_batch(
    swept: tuple[Env, dict[str, Any], dict],
) -> None:
    env, runs, frames = swept
    monitor = runs["monitor"]
    assert monitor["consumed"] == 1  # the sweep's one event
    assert monitor["results"]["which_batches"] == list(frames)
    ledger = read_ledger(env.store, env.dataset)
    assert [b for b, s in ledger.items() if s.done("validated", 1)] == list(frames)


def test_the_review_catches_up_labels_whose_event_never_came(
    swept: tuple[Env, dict[str, Any], dict],
) -> None:
    """January's labels came through the zone (an event); February's by hand (none).
    The review run started by January's event reviews both, in batch order."""
    env, runs, _ = swept
    review = runs["review"]
    assert review["consumed"] == 1
    assert review["state"] == "success", review["states"]
    assert review["results"]["which_batches"] == ["2013-01", "2013-02"]
    assert [q["batch_id"] for q in review["results"]["quality"]] == ["2013-01", "2013-02"]
    ledger = read_ledger(env.store, env.dataset)
    assert [b for b, s in ledger.items() if s.done("reviewed", 1)] == ["2013-01", "2013-02"]


def test_a_sweep_lands_nothing_twice_and_refuses_changed_content(
    swept: tuple[Env, dict[str, Any], dict],
) -> None:
    env, runs, _ = swept
    again = runs["again"]
    assert again["results"]["sweep_features"]["landed"] == []
    assert again["states"]["announce_features"] == "skipped"  # no event: nothing to check
    assert "drift_monitor" not in again["queued"]
    changed = runs["changed"]["results"]["sweep_features"]
    assert changed["landed"] == []
    assert "BatchExists" in changed["refused"]["2013-02.parquet"]
    store = env.home / "store"
    why = json.loads((store / "landing/refused/features/2013-02.parquet.json").read_text())
    assert "2013-02" in why["refused"]
    assert not (store / "datasets/flights/batches/2013-02/v2").exists()
    assert runs["changed"]["state"] == "failed"
