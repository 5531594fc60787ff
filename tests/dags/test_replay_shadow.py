"""Issue 18 through the real DAGs: the shadow phase, the sequential canary review and
the model cards, on January-May replayed with ``python -m pipeline demo`` (``dag.test()``
per DAG, following the asset events), about two minutes on 2 cores.

The replay needs one override beyond ``TINY_REPLAY_ENV``, whose gate floors (min AUC
0.55, min slice AUC 0.45, a 0.05 AUC drop) already let the tiny 100-step models through
the gate: March's challenger (validation AUC about 0.655 in the run measured) is about
0.03 under the first champion's (0.69), more than a 0.01 drop allows:

- ``COSINE_RETRAIN_DRIFT__SHARE_THRESHOLD=0.1``: March drifts in 4 of 16 columns (25 %)
  against January's reference, under the default 35 %, so without it no retrain would
  follow the first model and no challenger would ever reach ``canary``.

With it the months go: January lands; February trains the first champion on January;
March drifts, retrains on January-February and the gate moves the challenger to
``canary``; April is scored by the champion and, unserved, by the canary (shadow), and
its retrain request is answered by that canary (skipped); May brings April's labels, so
the canary_review DAG judges the shadow's paired rows with the sequential test, and May
is scored in shadow again (April's labels land after May's features: no paired evidence
yet). Every assertion reads what the run left behind
(the printed summary, the store's files, MLflow, Airflow's XComs); the paired rows and
their mean are recomputed here from the predictions and labels files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts

from tests.support import run_demo, xcom_values

MODEL = "flight_delay"
SHADOW_ENV = {"COSINE_RETRAIN_DRIFT__SHARE_THRESHOLD": "0.1"}


@pytest.fixture(scope="module")
def shadow_replay(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """January-May replayed; the home and each month's block of the summary."""
    home = tmp_path_factory.mktemp("shadow-home")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in SHADOW_ENV.items():
            mp.setenv(key, value)
        proc = run_demo(home, "1-5")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    blocks = re.split(r"^-- (\d{4}-\d{2}) .*$", proc.stdout, flags=re.M)
    months = dict(zip(blocks[1::2], blocks[2::2], strict=True))
    assert list(months) == ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"], proc.stdout
    return home, months


def _line(block: str, step: str) -> str:
    found = [line.strip() for line in block.splitlines() if line.strip().startswith(step + " ")]
    assert len(found) == 1, (step, block)
    return found[0]


def _canary_version(months: dict[str, str]) -> tuple[str, str]:
    """(champion, canary) as March's gate and summary left them."""
    march = months["2013-03"]
    gate = re.fullmatch(r"gate\s+v(\d+) PASSED -> canary", _line(march, "gate"))
    assert gate, march
    champion = re.fullmatch(r"champion\s+v(\d+), canary v(\d+)", _line(march, "champion"))
    assert champion, march
    assert champion.group(2) == gate.group(1), march
    return champion.group(1), gate.group(1)


def _store(home: Path) -> Path:
    return home / "store"


def _labelled_shadow_rows(home: Path, batch: str, champion: str, canary: str) -> pd.DataFrame:
    """The batch's shadow predictions joined with its labels (rows with a label)."""
    store = _store(home)
    predictions = pd.read_parquet(
        store / "predictions" / "flights" / batch / f"champion-v{champion}_shadow-v{canary}"
        / "predictions.parquet"
    )  # fmt: skip
    labels = pd.concat(
        pd.read_parquet(p)
        for p in sorted(
            (store / "datasets" / "flights" / "labels" / batch).glob("v*/labels.parquet")
        )
    ).drop_duplicates("flight_id", keep="last")
    joined = predictions.merge(labels[["flight_id", "late"]], on="flight_id", how="inner")
    return joined.dropna(subset=["late"])


def test_a_batch_after_the_gate_is_scored_in_shadow(
    shadow_replay: tuple[Path, dict[str, str]],
) -> None:
    home, months = shadow_replay
    champion, canary = _canary_version(months)
    april = months["2013-04"]
    rows = json.loads((home / "reports" / "replay.json").read_text())[3]["rows"]
    # the champion serves every row; the canary scores every row too, unserved
    assert _line(april, "scoring") == (
        f"scoring    champion v{champion} {rows} rows, canary v{canary} {rows} in shadow (unserved)"
    )
    assert _line(april, "retrain").startswith(f"retrain    skipped: canary v{canary} ")
    batch = _store(home) / "predictions" / "flights" / "2013-04"
    assert [p.name for p in batch.iterdir()] == [f"champion-v{champion}_shadow-v{canary}"]
    frame = pd.read_parquet(
        batch / f"champion-v{champion}_shadow-v{canary}" / "predictions.parquet"
    )
    assert len(frame) == rows
    assert set(frame["alias"]) == {"champion"}
    assert set(frame["model_version"].astype(str)) == {champion}
    assert set(frame["shadow_version"].astype(str)) == {canary}
    assert frame["shadow_score"].between(0, 1).all()
    assert frame["score"].between(0, 1).all()
    assert not np.allclose(frame["shadow_score"], frame["score"])  # two models, two scores
    # May is scored before April's labels land (features first, then the labels): no
    # paired evidence exists yet, so the canary stays in shadow for May too
    may = _line(months["2013-05"], "scoring")
    assert may.endswith(f"canary v{canary} {rows_of(home, 4)} in shadow (unserved)"), may
    batch = _store(home) / "predictions" / "flights" / "2013-05"
    assert [p.name for p in batch.iterdir()] == [f"champion-v{champion}_shadow-v{canary}"]


def rows_of(home: Path, month: int) -> int:
    return int(json.loads((home / "reports" / "replay.json").read_text())[month]["rows"])


def test_the_sequential_review_holds_the_shadows_paired_rows(
    shadow_replay: tuple[Path, dict[str, str]],
) -> None:
    home, months = shadow_replay
    champion, canary = _canary_version(months)
    rows = _labelled_shadow_rows(home, "2013-04", champion, canary)
    assert len(rows) > 20_000
    y = rows["late"].to_numpy(dtype=np.float64)

    def loss(p: pd.Series) -> np.ndarray:
        q = np.clip(p.to_numpy(dtype=np.float64), 1e-7, 1 - 1e-7)
        return -(y * np.log(q) + (1 - y) * np.log(1 - q))

    diffs = loss(rows["shadow_score"]) - loss(rows["score"])
    evidence_file = _store(home) / "reports" / "canary" / MODEL / f"v{canary}" / "evidence.json"
    evidence = json.loads(evidence_file.read_text())
    assert evidence["model"] == MODEL
    assert evidence["version"] == canary
    assert list(evidence["shadow"]) == ["2013-04"]  # April was the only batch in shadow
    paired = evidence["shadow"]["2013-04"]
    assert paired["n"] == len(rows)  # every labelled row the champion scored, paired
    assert paired["total"] == pytest.approx(diffs.sum(), rel=1e-9, abs=1e-6)
    assert paired["total_sq"] == pytest.approx((diffs * diffs).sum(), rel=1e-9)
    assert evidence["canary"] == {}  # it has served no row yet

    # May's canary_review line: the sequential test's paired confidence sequence on them
    review = _line(months["2013-05"], "canary")
    match = re.search(
        r"shadow: log loss difference ([-+]\d\.\d{4}) \((\d+)% paired CS "
        r"\[([-+]\d\.\d{4}), ([-+]\d\.\d{4})\] on ([\d,]+) rows\) against a margin of ([\d.]+)",
        review,
    )
    assert match, review
    assert int(match.group(5).replace(",", "")) == len(rows)
    assert float(match.group(1)) == pytest.approx(diffs.mean(), abs=6e-5)
    lower, upper = float(match.group(3)), float(match.group(4))
    assert lower < diffs.mean() < upper
    assert match.group(2) == "98"  # alpha / 2 each: the shadow's and the canary's sequence
    # the shadow showed non-inferiority: the canary serves next, the promotion waits for it
    assert upper < float(match.group(6))
    assert review.startswith("canary     inconclusive: non-inferior in shadow")
    assert review.endswith("the canary serves from the next batch scored -> kept")
    # April's own review came before any of the canary's rows had labels
    assert "none of these labelled rows was scored" in _line(months["2013-04"], "canary")

    # what the canary_review DAG's review task returned names the method and the evidence
    values = xcom_values(home, "canary_review", "review")
    reviewed = [v for v in values if v.get("shadow_rows")]
    assert len(reviewed) == 1, values
    assert reviewed[0]["method"] == "sequential"
    assert reviewed[0]["canary"] == canary
    assert reviewed[0]["champion"] == champion
    assert reviewed[0]["shadow_rows"] == len(rows)
    assert reviewed[0]["evidence_uri"] == evidence_file.as_uri()
    assert reviewed[0]["shadow_interval"][1] == pytest.approx(upper, abs=6e-5)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    """Largest gap between the two empirical CDFs, at every observed value."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    gap = np.searchsorted(a, grid, side="right") / a.size
    gap -= np.searchsorted(b, grid, side="right") / b.size
    return float(np.abs(gap).max())


def test_the_healthy_canary_passes_every_guardrail_before_labels(
    shadow_replay: tuple[Path, dict[str, str]],
) -> None:
    """April and May (both in shadow) were checked as they were scored, before their
    labels: every guardrail held, and the KS distance and rank correlation are the ones on
    the stored scores."""
    home, months = shadow_replay
    champion, canary = _canary_version(months)
    folder = _store(home) / "reports" / "canary" / MODEL / f"v{canary}" / "guardrails"
    april = json.loads((folder / "2013-04.json").read_text())
    may = json.loads((folder / "2013-05.json").read_text())
    assert (april["phase"], may["phase"]) == ("shadow", "shadow")
    for report in (april, may):
        assert report["champion_version"] == champion
        judged = {c["name"]: c["passed"] for c in report["checks"] if c["name"] != "srm"}
        assert judged == dict.fromkeys(("finite", "constant", "ks", "rank"), True)
        assert next(c for c in report["checks"] if c["name"] == "srm")["passed"] is None
    frame = pd.read_parquet(
        _store(home) / "predictions" / "flights" / "2013-04"
        / f"champion-v{champion}_shadow-v{canary}" / "predictions.parquet"
    )  # fmt: skip
    ks = next(c for c in april["checks"] if c["name"] == "ks")
    expected = _ks(frame["shadow_score"].to_numpy(), frame["score"].to_numpy())
    assert ks["value"] == pytest.approx(expected, abs=1e-12)
    rank = next(c for c in april["checks"] if c["name"] == "rank")
    ranks = frame[["shadow_score", "score"]].rank()  # Spearman: Pearson of the ranks
    assert rank["value"] == pytest.approx(ranks.corr().iloc[0, 1], abs=1e-9)
    print("guardrails of the healthy canary:", {c["name"]: c["value"] for c in april["checks"]},
          {c["name"]: c["value"] for c in may["checks"]})  # fmt: skip
    assert current_alias_of(home, "canary") == canary  # still serving: nothing breached


def current_alias_of(home: Path, alias: str) -> str | None:
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    aliases = client.get_registered_model(MODEL).aliases
    return str(aliases[alias]) if alias in aliases else None


def test_every_registered_version_has_a_linked_model_card(
    shadow_replay: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, months = shadow_replay
    _, canary = _canary_version(months)
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert canary in {str(v.version) for v in versions}
    assert len(versions) >= 2  # the first champion's run and March's retrain
    for v in versions:
        version = str(v.version)  # an int from this MLflow's search
        run_id = v.tags["training_run_id"]
        folder = f"model_card/{MODEL}/v{version}"
        revisions = sorted(a.path for a in client.list_artifacts(run_id, folder) if a.is_dir)
        assert revisions, f"v{version} has no model card in run {run_id}"
        newest = revisions[-1]
        assert re.fullmatch(rf"{folder}/r\d{{3}}", newest), revisions
        files = {Path(a.path).name for a in client.list_artifacts(run_id, newest)}
        assert files == {"model_card.md", "model_card.html"}, (version, files)
        uri = f"runs:/{run_id}/{newest}/model_card.md"
        markdown = Path(
            download_artifacts(
                artifact_uri=uri,
                dst_path=str(tmp_path / f"v{version}"),
                tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            )
        ).read_text()
        assert markdown.splitlines()[0] == f"# Model card: {MODEL} v{version}", markdown[:200]
        # the description keeps its own text and ends with the link to the newest revision
        last = v.description.rsplit("\n\n", 1)[-1]
        assert last.startswith("Model card (revision "), v.description
        assert f": {uri} (HTML: runs:/{run_id}/{newest}/model_card.html;" in last
        assert v.tags["model_card.uri"] == uri
        assert v.tags["model_card.revision"] == str(int(newest.rsplit("/r", 1)[1]))
    # the canary's newest card records its gate (it passed to canary)
    card = next(v for v in versions if str(v.version) == canary)
    assert "gate decided" in card.description
