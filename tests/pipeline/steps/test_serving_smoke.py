"""Issue 16: the signature comes from the spec's roles, and the gate's serving smoke test.

A data set the project has never seen (``loans``, its spec written here): a
categorical column (``region``) is empty in every training row, as a column that
a source only starts filling mid-year. Trained by the real job, registered by the
real registration step against a real MLflow server, loaded back from the
registry: the version must score a later batch in which ``region`` has values
(today's main inferred ``double (optional)`` for it from the training frame and
refused every such batch: the bricked champion). A numeric column (``bonus``) is
empty in training too (today's main refused to train: "no finite values"). A
version logged with the old, inferred signature is refused by the gate's smoke
test and moves no alias.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from pipeline.base.config import load_config
from pipeline.base.layout import BatchRef
from pipeline.base.store import LocalStore, get_json
from pipeline.base.tracking import build_client
from pipeline.steps.promotion.gate import GateFailed, gate_version
from pipeline.steps.quality.validation import validate_frame
from pipeline.steps.registry.aliases import (
    CANARY,
    CHALLENGER,
    CHAMPION,
    alias_history,
    current_alias,
    move_alias,
)
from pipeline.steps.registry.holdout import training_holdout
from pipeline.steps.registry.registration import register_training_run
from pipeline.steps.registry.scoring import describe_serving_error, load_scorer, predict_probability
from pipeline.steps.registry.smoke import UNSEEN, synthetic_batch
from pipeline.steps.registry.versions import MODEL_CODE, TRAINING_CODE
from tests.pipeline.cli_support import clear_pipeline_env
from training.data.spec import DatasetSpec, load_spec
from training.model.serving import Scorer

GRADES = ["A", "B", "C", "D", "E"]
SPEC_YAML = {
    "name": "loans",
    "model_name": "loan_default",
    "id_column": "loan_id",
    "timestamp_column": "applied_at",
    "target": "defaulted",
    "row_count_min": 50,
    "columns": {
        "loan_id": {"role": "id"},
        "applied_at": {"role": "timestamp"},
        "grade": {"role": "categorical", "allowed": GRADES, "max_null_share": 0.1},
        "purpose": {"role": "categorical", "max_unseen_share": 0.5},
        "branch": {"role": "categorical", "max_unseen_share": 0.0},
        # empty in the training window; filled later
        "region": {"role": "categorical", "max_null_share": 1.0},
        "income": {"role": "numeric", "min": 0},
        "rate": {"role": "numeric", "min": 1, "max": 40},
        "score": {"role": "numeric", "max_null_share": 0.02},
        # empty in the training window too; filled later
        "bonus": {"role": "numeric", "min": 0, "max_null_share": 1.0},
    },
}
# a small real job: 100 optimizer steps, 3 cosine cycles
TRAIN = [
    "model.hidden=[16]",
    "optim.batch_size=128",
    "schedule.lr_max=0.01",
    "schedule.lr_min=0.0001",
    "schedule.cycle_steps=20",
    "schedule.warmup_steps=5",
    "schedule.restart_warmup_steps=0",
    "schedule.cycle_mult=1.5",
    "schedule.max_cycles=3",
    "eval.every_steps=10",
    "checkpoint.every_steps=10",
    "runtime.threads=1",
    "progress=off",
]


def write_spec(folder: Path) -> Path:
    path = folder / "loans.yaml"
    path.write_text(yaml.safe_dump(SPEC_YAML, sort_keys=False))
    return path


def loans(n: int, seed: int, *, region: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features and labels; ``region`` and ``bonus`` empty unless asked (the target
    depends on grade and rate)."""
    rng = np.random.default_rng(seed)
    grade = rng.choice(GRADES, n)
    rate = rng.uniform(1, 40, n).round(2)
    logit = -2.0 + 0.6 * pd.Series(grade).map({g: i for i, g in enumerate(GRADES)}) + 0.04 * rate
    features = pd.DataFrame(
        {
            "loan_id": [f"L{seed}-{i:05d}" for i in range(n)],
            "applied_at": pd.Timestamp("2024-01-01") + pd.to_timedelta(np.arange(n), "h"),
            "grade": grade,
            "purpose": rng.choice(["car", "home", "study", "travel"], n),
            "branch": rng.choice(["north", "south"], n),
            "region": rng.choice(["R1", "R2", "R3"], n) if region else None,
            "income": rng.lognormal(10, 0.5, n).round(0),
            "rate": rate,
            "score": np.where(rng.random(n) < 0.01, np.nan, rng.normal(600, 50, n)),
            "bonus": rng.integers(0, 5000, n) if region else None,
        }
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit.to_numpy()))).astype(int)
    return features, pd.DataFrame({"loan_id": features["loan_id"], "defaulted": y})


# ------------------------------------------------------------------ the synthetic batch, no server


def test_the_synthetic_batch_exercises_every_columns_domain_of_a_spec_it_never_saw(
    tmp_path: Path,
) -> None:
    spec = load_spec(write_spec(tmp_path))
    batch = synthetic_batch(spec)
    assert list(batch.columns) == spec.column_names
    # 2 unseen purposes within max_unseen_share 0.5, grade's one null within 0.1 -> >= 10 rows;
    # score's null within 0.02 -> >= 50 rows; row_count_min 50
    assert len(batch) == 50
    assert batch["loan_id"].is_unique
    # every allowed category, nothing outside the closed set, one null where allowed
    assert set(batch["grade"].dropna()) == set(GRADES)
    assert batch["grade"].isna().sum() == 1
    # an open vocabulary gets categories no model can have seen, unless unseen ones are refused
    assert set(UNSEEN) <= set(batch["purpose"])
    assert not set(UNSEEN) & set(batch["branch"])
    assert batch["purpose"].notna().all()
    assert batch["branch"].notna().all()
    assert batch["region"].isna().sum() == 1
    assert batch["region"].notna().any()
    # numeric limits: both bounds where set; a one-sided bound is probed at the bound
    assert batch["rate"].min() == 1
    assert batch["rate"].max() == 40
    assert batch["income"].min() == 0
    assert batch["income"].max() > 0
    assert batch["income"].isna().sum() == 0  # max_null_share 0: never null
    assert batch["score"].isna().sum() == 1
    assert batch["score"].min() < 0 < batch["score"].max()
    # spec-valid by the pipeline's own validation (the Great Expectations suite of the spec)
    summary = validate_frame(batch, spec, ref=BatchRef("loans", "smoke", 1))
    assert summary.success, summary.message()


@pytest.mark.parametrize(
    "spec_path",
    sorted((Path(__file__).resolve().parents[3] / "configs" / "datasets").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_the_synthetic_batch_of_every_shipped_spec_passes_its_validation(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    batch = synthetic_batch(spec)
    assert len(batch) >= spec.row_count_min
    for column in spec.columns:
        values = batch[column.name]
        if column.role == "categorical" and column.allowed is not None:
            assert set(values.dropna()) == set(column.allowed), column.name
        if column.role == "numeric" and column.min is not None:
            assert values.min() == column.min, column.name
        if column.role == "numeric" and column.max is not None:
            assert values.max() == column.max, column.name
        assert values.isna().any() == (column.max_null_share > 0), column.name
    summary = validate_frame(batch, spec, ref=BatchRef(spec.name, "smoke", 1))
    assert summary.success, summary.message()


def test_the_synthetic_batch_keeps_null_shares_within_the_spec(tmp_path: Path) -> None:
    raw = {**SPEC_YAML, "row_count_min": 1}
    raw["columns"] = {**SPEC_YAML["columns"], "score": {"role": "numeric", "max_null_share": 0.004}}
    path = tmp_path / "tight.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    batch = synthetic_batch(load_spec(path))
    assert len(batch) == 250  # one null in 250 rows is 0.004
    assert batch["score"].isna().mean() <= 0.004


# ---------------------------------------------------------- trained, registered, gated: real server


class Env:
    def __init__(self, url: str, home: Path) -> None:
        self.url = url
        self.name = f"loans_{uuid.uuid4().hex[:8]}"
        self.store = LocalStore(home / "store")
        self.config = load_config(
            None,
            home=home,
            mlflow={"tracking_uri": url, "model_name": self.name},
            gate={"min_auc": 0.55, "max_auc_drop": 0.05},
        )
        self.client = build_client(self.config)


@pytest.fixture(scope="module")
def loans_run(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One training run of the real job on 3,000 loans whose ``region`` is all null."""
    from training.config.train import load_config as train_config
    from training.engine.trainer import Trainer

    folder = tmp_path_factory.mktemp("loans")
    spec_path = write_spec(folder)
    features, labels = loans(3000, 0, region=False)
    features.to_csv(folder / "features.csv", index=False)  # region: an empty CSV column
    labels.to_csv(folder / "labels.csv", index=False)
    config = train_config(
        None,
        [
            "run_name=loans",
            f"output_dir={folder / 'runs'}",
            f"mlflow.tracking_uri={mlflow_server.url}",
            "mlflow.experiment=serving-smoke-tests",
            "data.source=files",
            f"data.dataset={spec_path}",
            f"data.features={folder / 'features.csv'}",
            f"data.labels={folder / 'labels.csv'}",
            *TRAIN,
        ],
    )
    result = Trainer(config).run()
    spec = load_spec(spec_path)
    client = build_client(load_config(None, mlflow={"tracking_uri": mlflow_server.url}))
    holdout = training_holdout(client, str(result.mlflow_run_id), spec)
    return {"run_id": str(result.mlflow_run_id), "spec": spec, "holdout": holdout}


def test_a_column_empty_in_training_is_a_string_and_later_batches_with_values_are_scored(
    mlflow_server: Any, loans_run: dict[str, Any], tmp_path: Path
) -> None:
    spec: DatasetSpec = loans_run["spec"]
    holdout: pd.DataFrame = loans_run["holdout"]
    # the training window is what bricked the champion: its dtypes say region is a number
    assert holdout["region"].isna().all()
    inferred = mlflow.models.infer_signature(holdout[spec.feature_columns])
    assert inferred.inputs.input_dict()["region"].type.name == "double"

    env = Env(mlflow_server.url, tmp_path)
    reg = register_training_run(
        env.client, env.store, spec, loans_run["run_id"], name=env.name, ensemble=False
    )
    model = load_scorer(env.name, reg.challenger.version, env.url)  # from the registry
    types = {c.name: c.type.name for c in model.metadata.get_input_schema().inputs}
    assert types == {
        "grade": "string",
        "purpose": "string",
        "branch": "string",
        "region": "string",
        "income": "double",
        "rate": "double",
        "score": "double",
        "bonus": "double",
    }
    assert all(c.required for c in model.metadata.get_input_schema().inputs)

    later, _ = loans(400, 7, region=True)  # region now has values
    later["income"] = later["income"].astype("int64")  # and the source sends whole numbers
    prob = predict_probability(model, later)
    # an independent reference: the same checkpoint scored in-process, without MLflow
    assert reg.challenger.cycle is not None
    ckpt = env.client.download_artifacts(
        loans_run["run_id"],
        f"checkpoints/best-cycle-{reg.challenger.cycle:02d}.ckpt",
        str(tmp_path),
    )
    expected = Scorer.from_files([ckpt]).predict_proba(later)
    np.testing.assert_allclose(prob, expected, rtol=1e-6, atol=1e-9)
    assert np.isfinite(prob).all()
    # bonus never had a value in training: the model learned nothing from it and ignores it
    richer = later.assign(bonus=later["bonus"] * 1000)
    np.testing.assert_array_equal(predict_probability(model, richer), prob)
    # and a batch in which both are empty again (object columns of None) is scored too
    assert np.isfinite(predict_probability(model, loans(50, 8, region=False)[0])).all()


def test_the_gate_smoke_tests_a_version_from_the_registry_before_it_becomes_champion(
    mlflow_server: Any, loans_run: dict[str, Any], tmp_path: Path
) -> None:
    spec: DatasetSpec = loans_run["spec"]
    env = Env(mlflow_server.url, tmp_path)
    reg = register_training_run(env.client, env.store, spec, loans_run["run_id"], name=env.name)
    result = gate_version(env.client, env.store, env.config, spec, env.name, loans_run["holdout"])
    assert result.passed, result.describe()
    smoke = result.checks[0]
    assert smoke.name == "serving_smoke"
    assert smoke.passed
    assert smoke.value == smoke.threshold == len(synthetic_batch(spec))
    assert current_alias(env.client, env.name, CHAMPION) == reg.challenger.version


def _log_with_the_old_inferred_signature(
    env: Env, run_id: str, spec: DatasetSpec, folder: Path, holdout: pd.DataFrame
) -> str:
    """A version of the same checkpoint logged as today's main logged it (the bricked one)."""
    ckpt = env.client.download_artifacts(run_id, "checkpoints/best-cycle-00.ckpt", str(folder))
    inputs = holdout[spec.feature_columns]
    signature = mlflow.models.infer_signature(inputs)
    mlflow.set_tracking_uri(env.url)
    exp = env.client.get_run(run_id).info.experiment_id
    with mlflow.start_run(experiment_id=exp):
        info = mlflow.pyfunc.log_model(
            name="old-signature",
            python_model=str(MODEL_CODE),
            artifacts={"checkpoint_0": ckpt},
            code_paths=[str(TRAINING_CODE)],
            signature=signature,
            pip_requirements=["mlflow"],
        )
    version = env.client.create_model_version(
        env.name, info.model_uri, run_id=run_id, model_id=info.model_id
    )
    return str(version.version)


def _registered_then_bricked(
    mlflow_server: Any, loans_run: dict[str, Any], folder: Path
) -> tuple[Env, str]:
    """The loans run registered, then its checkpoint logged again with the old inferred
    signature: the Env and the bricked version."""
    spec: DatasetSpec = loans_run["spec"]
    env = Env(mlflow_server.url, folder)
    register_training_run(env.client, env.store, spec, loans_run["run_id"], name=env.name)
    bad = _log_with_the_old_inferred_signature(
        env, loans_run["run_id"], spec, folder, loans_run["holdout"]
    )
    return env, bad


def test_a_version_whose_signature_refuses_a_column_fails_the_gate_and_moves_nothing(
    mlflow_server: Any, loans_run: dict[str, Any], tmp_path: Path
) -> None:
    spec: DatasetSpec = loans_run["spec"]
    holdout: pd.DataFrame = loans_run["holdout"]
    env = Env(mlflow_server.url, tmp_path)
    reg = register_training_run(env.client, env.store, spec, loans_run["run_id"], name=env.name)
    gate_version(env.client, env.store, env.config, spec, env.name, holdout)  # champion
    champion = current_alias(env.client, env.name, CHAMPION)
    assert champion == reg.challenger.version
    bad = _log_with_the_old_inferred_signature(env, loans_run["run_id"], spec, tmp_path, holdout)
    move_alias(env.client, env.store, env.name, CHALLENGER, bad, why="test: the old signature")
    before = [(m.alias, m.to_version) for m in alias_history(env.store, env.name)]

    with pytest.raises(GateFailed) as failed:
        gate_version(env.client, env.store, env.config, spec, env.name, holdout)
    result = failed.value.result
    assert [c.name for c in result.failures] == ["serving_smoke"]
    detail = result.failures[0].detail
    # the reason first, naming the column, then MLflow's whole message (not its first line)
    reason = detail.split("\n", 1)[0]
    assert "region" in reason, reason
    assert "Failed to enforce schema" not in reason, reason
    assert "Failed to enforce schema" in detail
    assert "Error:" in detail
    assert "FAIL serving_smoke" in str(failed.value)
    assert "region" in str(failed.value)
    # nothing moved; the evidence is recorded on the version and in the store
    assert current_alias(env.client, env.name, CHAMPION) == champion
    assert current_alias(env.client, env.name, CANARY) is None
    assert current_alias(env.client, env.name, CHALLENGER) == bad
    assert [(m.alias, m.to_version) for m in alias_history(env.store, env.name)] == before
    tags = env.client.get_model_version(env.name, bad).tags
    assert tags["gate.status"] == "failed"
    assert "serving_smoke" in tags["gate.reasons"]
    report = get_json(env.store, tags["gate.report"].split("/store/", 1)[1])
    smoke = next(c for c in report["checks"] if c["name"] == "serving_smoke")
    assert smoke["detail"] == detail


def test_a_schema_error_is_described_whole_with_its_reason_first(
    mlflow_server: Any, loans_run: dict[str, Any], tmp_path: Path
) -> None:
    env, bad = _registered_then_bricked(mlflow_server, loans_run, tmp_path)
    model = load_scorer(env.name, bad, env.url)
    later, _ = loans(20, 9, region=True)
    inputs = model.metadata.get_input_schema().input_names()
    with pytest.raises(MlflowException) as refused:
        model.predict(later[inputs])  # MLflow's own error
    whole = str(refused.value)
    # MLflow's first line is the head of the refused frame: the reason is not on it
    assert whole.startswith("Failed to enforce schema of data '")
    assert "Error:" not in whole.splitlines()[0]
    text = describe_serving_error(refused.value)
    # the reason the issue quotes, first; then the whole message, not cut
    reason = "Failed to convert column region from type object to DataType.double."
    assert text.splitlines()[0] == reason
    assert whole in text
    # scoring raises it so: whoever shows a few lines of it (a task log) shows why
    with pytest.raises(MlflowException) as again:
        predict_probability(model, later)
    lines = str(again.value).splitlines()
    assert lines[0] == reason
    assert lines[1].startswith("(MLflow's whole message) Failed to enforce schema of data '")
    assert lines[-1].endswith(f"'. Error: {reason}")  # down to the schema and the reason
    assert again.value.error_code == refused.value.error_code


def test_the_command_line_prints_a_refused_batch_whole_with_the_reason_first(
    mlflow_server: Any,
    loans_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The bricked champion as a user met it: ``pipeline canary score`` on a later batch."""
    from pipeline.apps.cli import main

    env, bad = _registered_then_bricked(mlflow_server, loans_run, tmp_path)
    move_alias(env.client, env.store, env.name, CHAMPION, bad, why="test: a bricked champion")
    clear_pipeline_env(monkeypatch)
    spec_path = write_spec(tmp_path)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path))  # env.store is its store
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(spec_path))
    monkeypatch.setenv("COSINE_RETRAIN_MLFLOW__TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("COSINE_RETRAIN_MLFLOW__MODEL_NAME", env.name)
    later, _ = loans(200, 11, region=True)
    later.to_csv(tmp_path / "2024-07.csv", index=False)
    assert main(["ingest", str(tmp_path / "2024-07.csv"), "--batch-id", "2024-07"]) == 0
    capsys.readouterr()

    assert main(["canary", "score", "2024-07"]) == 2
    err = capsys.readouterr().err
    # (MLflow's download progress bar comes before it on stderr)
    lines = [line for line in err.split("\n") if line.startswith("error:")]
    assert len(lines) == 1, err
    first = lines[0]
    assert first.startswith("error: MLflow (")
    assert first.endswith("Failed to convert column region from type object to DataType.double."), (
        first
    )
    assert "Failed to enforce schema of data '" in err  # and the whole message follows
    assert "'region': double" in err  # down to the schema it refused against
