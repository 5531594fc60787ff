"""Model cards against a real MLflow server: a card per registered version (revision 1),
a new revision when the gate decides (the flow's own gate), the description link, the
sections filled from the records, and hostile slice values escaped in HTML and Markdown."""

from __future__ import annotations

import html
import re
import uuid
from pathlib import Path
from typing import Any

import mlflow
import pytest

from pipeline.base.config import load_config
from pipeline.base.store import get_json
from pipeline.flow.env import Env
from pipeline.flow.retrain import gate as flow_gate
from pipeline.steps.promotion.gate import GateFailed, apply_gate, evaluate_gate
from pipeline.steps.registry.holdout import training_holdout
from pipeline.steps.registry.model_card import CARD_MARK, publish_card
from pipeline.steps.registry.registration import register_training_run

PERMISSIVE = {"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 150, "max_auc_drop": 0.05}
SECTIONS = [
    "Data window and snapshot",
    "Schedule and cycle bests",
    "Holdout metrics",
    "Gate checks",
    "Shadow evidence",
    "Canary evidence",
    "Guardrails before labels",
    "Approval",
    "Alias history",
    "Known limitations",
]


def _env(url: str, home: Path, **gate: Any) -> Env:
    name = f"card_{uuid.uuid4().hex[:8]}"
    return Env(
        load_config(
            None,
            home=home,
            mlflow={"tracking_uri": url, "model_name": name},
            gate={**PERMISSIVE, **gate},
        )
    )


def _artifact(env: Env, uri: str, dest: Path) -> str:
    path = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(dest), tracking_uri=env.config.mlflow.tracking_uri
    )
    return Path(path).read_text()


@pytest.fixture(scope="module")
def flowed(mlflow_server: Any, trained_runs: Any, tmp_path_factory: Any):  # type: ignore[no-untyped-def]
    env = _env(mlflow_server.url, tmp_path_factory.mktemp("home"))
    lineage = {"data_snapshot": "datasets/flights/batches/2013-01/v1", "trigger": "drift"}
    run_id = trained_runs["a"].run_id
    reg = register_training_run(
        env.client, env.store, env.spec, run_id, name=env.model, lineage=lineage
    )
    outcome = flow_gate(env, reg)
    return env, reg, outcome


def test_every_registered_version_has_a_card_and_the_gate_adds_a_revision(
    flowed: Any, tmp_path: Path
) -> None:
    env, reg, outcome = flowed
    assert outcome.passed
    assert outcome.first_model
    for v in reg.versions:
        tags = env.client.get_model_version(env.model, v.version).tags
        expected = "2" if v.version == reg.challenger.version else "1"
        assert tags["model_card.revision"] == expected, v.version
        mv = env.client.get_model_version(env.model, v.version)
        # the description keeps its own text and links the newest revision
        assert mv.description.startswith("Best of cosine cycle") or "ensemble" in mv.description
        assert mv.description.count(CARD_MARK) == 1
        folder = f"model_card/{env.model}/v{v.version}/r{int(expected):03d}"
        assert f"{folder}/model_card.md" in mv.description
        assert tags["model_card.uri"] in mv.description
    # revision 1 is still there (nothing overwritten), and says the gate had not run yet
    champ = reg.challenger.version
    uri = f"runs:/{reg.training_run_id}/model_card/{env.model}/v{champ}/r001/model_card.md"
    first = _artifact(env, uri, tmp_path / "1")
    assert "not gated yet" in first


def test_the_card_holds_the_records_it_summarises(flowed: Any, tmp_path: Path) -> None:
    env, reg, _ = flowed
    version = reg.challenger.version
    tags = env.client.get_model_version(env.model, version).tags
    text = _artifact(env, tags["model_card.uri"], tmp_path)
    page = _artifact(env, tags["model_card.uri"].replace(".md", ".html"), tmp_path / "h")
    for title in SECTIONS:
        assert f"## {title}" in text
        assert f"<h2>{title}</h2>" in page
    assert "| data snapshot | datasets/flights/batches/2013-01/v1 |" in text
    assert f"AUC {tags['val_auc']}" in text
    # every cycle best of the run's own result.json, with its step
    result = flowed[1]  # Registration
    for v in result.versions:
        if v.cycle is not None:
            assert re.search(rf"\| {v.cycle} \| {v.step} \|", text), v.cycle
    # the gate report in the store, check by check, with the same verdicts
    keys = [k for k in env.store.list(f"reports/gate/{env.model}") if f"/v{version}-" in k]
    report = get_json(env.store, sorted(keys)[-1])
    assert report["passed"]
    for check in report["checks"]:
        name = check["name"].replace("[", "\\[").replace("]", "\\]")
        assert name in text, check["name"]
    assert "first model: never compared with a champion" in text  # a known limitation
    assert "champion" in text
    assert "first model: passed the absolute SLOs" in text


def test_hostile_slice_values_are_escaped_and_slices_under_their_slo_are_limitations(
    mlflow_server: Any, trained_runs: Any, tmp_path: Path
) -> None:
    env = _env(mlflow_server.url, tmp_path / "home", min_slice_auc=0.99)
    run_id = trained_runs["b"].run_id
    reg = register_training_run(env.client, env.store, env.spec, run_id, name=env.model)
    holdout = training_holdout(env.client, run_id, env.spec)
    hostile = '<img src=x onerror="alert(1)">|**bold**'
    holdout = holdout.astype({"carrier": object})
    holdout.loc[holdout.index[:600], "carrier"] = hostile
    version = reg.challenger.version
    result = evaluate_gate(env.client, env.config, env.spec, env.model, version, holdout)
    with pytest.raises(GateFailed):
        apply_gate(env.client, env.store, env.config, result)
    hostile_check = next(c for c in result.checks if c.name == f"auc[carrier={hostile}]")
    assert not hostile_check.passed  # judged, and under the 0.99 SLO

    ref = publish_card(env.client, env.store, env.model, version, reason="test")
    assert ref.revision == 2
    page = _artifact(env, ref.html_uri, tmp_path / "h")
    text = _artifact(env, ref.markdown_uri, tmp_path / "m")
    assert "<img" not in page
    assert 'onerror="' not in page
    assert html.escape(hostile) in page
    assert "<script" not in page
    assert "<link" not in page
    assert "<img" not in text
    assert "\\|\\*\\*bold\\*\\*" in text
    # each table row of the Markdown keeps its column count despite the '|' in the value
    row = next(line for line in text.splitlines() if "onerror" in line and "UNDER SLO" in line)
    assert len(re.findall(r"(?<!\\)\|", row)) == 7
    limits = text.split("## Known limitations", 1)[1]
    escaped = 'carrier=&lt;img src=x onerror="alert(1)"&gt;\\|\\*\\*bold\\*\\*'
    assert f"- slice {escaped} under its SLO" in limits


def test_the_canary_review_record_renders_with_its_intervals() -> None:
    """Pure rendering: a review as the store keeps it (JSON: intervals are lists)."""
    from pipeline.steps.registry.model_card import ModelCard, render_markdown

    review = {
        "model": "m",
        "outcome": "success",
        "reason": "non-inferior",
        "canary": {"version": "7", "rows": 1200, "mean_loss": 0.61, "auc": 0.7},
        "champion": {"version": "6", "rows": 4800, "mean_loss": 0.63, "auc": 0.68},
        "difference": -0.02,
        "interval": [-0.031, -0.009],
        "shadow_interval": [-0.0325, 0.0088],
        "shadow_rows": 1337,
    }
    tags = {"shadow.verdict": "non_inferior", "canary.status": "serving"}
    card = ModelCard("m", "7", "test", "now", "run", tags, "", None, None, review)
    text = render_markdown(card)
    assert "| interval | \\[-0.031, -0.009\\] |" in text
    assert "| shadow_interval | \\[-0.0325, 0.0088\\] |" in text
    assert "| canary.rows | 1200 |" in text
    assert "| champion.mean_loss | 0.63 |" in text
    assert "| shadow.verdict | non_inferior |" in text.split("## Canary evidence")[0]
