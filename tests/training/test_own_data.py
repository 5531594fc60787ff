"""Training on a data set the project has never seen, described only by its spec.

The data set is made here (customer churn, monthly batches, string ids, a
numeric column with nulls): nothing of flights is used. Driven through the
real command line (``training.cli.main``), as a user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.spec_support import churn_fields
from tests.training.preview_support import train_then_preview
from training.cli.main import main

SPEC = churn_fields(
    model_name="churn_model",
    features={
        "plan": {"role": "categorical", "allowed": ["basic", "pro", "team"]},
        "region": "categorical",
        "tenure_months": {"role": "numeric", "min": 0, "max": 120},
        "monthly_spend": {"role": "numeric", "min": 0, "max": 500, "max_null_share": 0.3},
    },
)
FAST = ["model.hidden=[16]", "optim.batch_size=128", "schedule.max_cycles=1", "progress=off"]
ROWS = 1500  # per month


def month(i: int, rows: int = ROWS, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One month of the churn data: features (no target) and labels (id, target)."""
    rng = np.random.default_rng(seed + i)
    plan = rng.choice(["basic", "pro", "team"], size=rows, p=[0.5, 0.3, 0.2])
    tenure = rng.integers(0, 120, size=rows)
    spend = np.where(rng.random(rows) < 0.1, np.nan, rng.gamma(2.0, 30.0, size=rows))
    logit = -1.0 + 1.2 * (plan == "basic") - 0.02 * tenure
    features = pd.DataFrame(
        {
            "customer_id": [f"m{i}-c{j:05d}" for j in range(rows)],
            "observed_at": pd.Timestamp(f"2024-{i:02d}-01")
            + pd.to_timedelta(rng.integers(0, 27 * 24, size=rows), unit="h"),
            "plan": plan,
            "region": rng.choice(["north", "south", "east", "west"], size=rows),
            "tenure_months": tenure,
            "monthly_spend": np.clip(spend, 0, 500),
        }
    )
    churned = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return features, pd.DataFrame({"customer_id": features["customer_id"], "churned": churned})


@pytest.fixture
def churn(tmp_path: Path) -> Path:
    """A spec and three monthly batches: features as CSV and Parquet in one folder,
    labels as one file per month."""
    (tmp_path / "features").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "churn.yaml").write_text(yaml.safe_dump(SPEC))
    for i in (1, 2, 3):
        features, labels = month(i)
        if i == 2:
            features.to_parquet(tmp_path / "features" / f"2024-{i:02d}.parquet", index=False)
        else:
            features.to_csv(tmp_path / "features" / f"2024-{i:02d}.csv", index=False)
        labels.to_csv(tmp_path / "labels" / f"2024-{i:02d}.csv", index=False)
    (tmp_path / "features" / "README.txt").write_text("not a batch: ignored")
    return tmp_path


def _train(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[int, str, str]:
    argv = ["train", "--output-dir", str(root / "runs"), "--no-mlflow"]
    argv += ["--dataset", str(root / "churn.yaml")]
    for item in FAST:
        argv += ["--set", item]
    rc = main([*argv, *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_a_folder_and_a_list_of_files_train(
    churn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = [str(churn / "labels" / f"2024-0{i}.csv") for i in (1, 2, 3)]
    rc, _, err = _train(
        capsys,
        churn,
        "--run-name",
        "window",
        "--features",
        str(churn / "features"),
        "--labels",
        *labels,
    )
    assert rc == 0, err
    result = json.loads((churn / "runs" / "window" / "result.json").read_text())
    # all three months, 20 % of the latest held out
    assert result["data"]["rows_train"] + result["data"]["rows_valid"] == 3 * ROWS
    assert result["data"]["rows_valid"] == round(3 * ROWS * 0.2)
    assert result["data"]["first_valid_time"].startswith("2024-03")
    # the schedule was planned in epochs of this window: 3 epochs of 3600 rows / 128
    spe = 3600 // 128
    assert result["schedule"]["steps_per_epoch"] == spe
    assert result["schedule"]["cycle_steps"] == round(3.0 * spe)
    assert result["schedule"]["warmup_steps"] == round(0.75 * spe)


def test_a_training_configs_preview_has_the_runs_fingerprint(
    churn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = churn / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "dataset": str(churn / "churn.yaml"),
                    "source": "files",
                    "features": str(churn / "features"),
                    "labels": [str(p) for p in sorted((churn / "labels").iterdir())],
                },
                "model": {"hidden": [16]},
                "optim": {"batch_size": 128},
                "schedule": {"cycle_epochs": 2.0, "warmup_epochs": 0.5, "max_cycles": 1},
                "progress": "off",
            }
        )
    )
    result, err = train_then_preview(config, churn / "runs", capsys)
    assert "steps per epoch: 28 (3600 training rows / batch 128)" in err
    assert result["schedule"]["cycle_steps"] == 56


def test_a_flat_schedule_file_in_epochs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump({"lr_max": 0.01, "cycle_epochs": 2, "warmup_epochs": 0.5}))
    base = ["schedule", "--config", str(flat), "--no-png", "--json"]
    assert main([*base, "--steps-per-epoch", "40"]) == 0
    shown = json.loads(capsys.readouterr().out)["schedule"]
    assert (shown["cycle_steps"], shown["warmup_steps"], shown["steps_per_epoch"]) == (80, 20, 40)
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "epoch forms (cycle_epochs, warmup_epochs) need --steps-per-epoch N" in err
    # flags give epochs too, and the bounds apply
    assert main(["schedule", "--lr-max", "0.1", "--cycle-epochs", "3", "--steps-per-epoch", "2"]
                + ["--min-cycle-steps", "30", "--no-png", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["schedule"]["cycle_steps"] == 30


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            lambda r: ["--features", str(r / "nothing.csv")],
            "features file {r}/nothing.csv does not",
        ),
        (lambda r: (r / "empty").mkdir() or ["--features", str(r / "empty")], "holds no .csv or"),
        (
            # a month with other columns in the folder
            lambda r: (
                month(4)[0]
                .drop(columns=["region"])
                .to_csv(r / "features" / "2024-04.csv", index=False)
                or ["--features", str(r / "features")]
            ),
            "features file {r}/features/2024-04.csv does not have the columns of",
        ),
        (
            # the same customers in two months: duplicate ids (validation refuses them too)
            lambda r: (
                month(1)[0].to_csv(r / "features" / "2024-04.csv", index=False)
                or ["--features", str(r / "features")]
            ),
            "features: id column 'customer_id' holds duplicate ids (3000 rows share 1500 id(s)), "
            "e.g. ['m1-c00000', 'm1-c00001', 'm1-c00002']",
        ),
        (
            lambda r: (
                pd.DataFrame({"customer_id": ["m9-c00000"], "churned": [2]}).to_csv(
                    r / "labels" / "2024-09.csv", index=False
                )
                or ["--features", str(r / "features")]
            ),
            "labels: target 'churned' must be 0 or 1 (never null) but 1 row(s) hold ['2'], "
            "e.g. ids ['m9-c00000']",
        ),
    ],
    ids=["missing", "empty-folder", "other-columns", "duplicate-ids", "bad-target"],
)
def test_input_mistakes_are_one_clear_message_and_exit_2(
    churn: Path, capsys: pytest.CaptureFixture[str], setup: object, message: str
) -> None:
    args = setup(churn)  # type: ignore[operator]
    if "--labels" not in args:
        args += ["--labels", str(churn / "labels")]
    rc, _, err = _train(capsys, churn, "--run-name", "bad", *args)
    assert rc == 2, err
    assert err.startswith("error: ")
    assert message.format(r=churn) in err, err
    assert not (churn / "runs" / "bad").exists()


def test_resuming_after_the_specs_bounds_changed_is_refused(
    churn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The spec's bounds change the steps, not the config's hash: the schedule's
    fingerprint in the checkpoint still refuses to stretch a run."""
    data = ["--features", str(churn / "features"), "--labels", str(churn / "labels")]
    rc, _, err = _train(capsys, churn, "--run-name", "r", *data)
    assert rc == 0, err
    first = json.loads((churn / "runs" / "r" / "result.json").read_text())
    assert first["schedule"]["cycle_steps"] == 84  # 3 epochs of 28 steps: within the bounds
    spec = yaml.safe_load((churn / "churn.yaml").read_text())
    spec["schedule"] = {"min_cycle_steps": 120}
    (churn / "churn.yaml").write_text(yaml.safe_dump(spec))
    rc, _, err = _train(capsys, churn, "--run-name", "r", "--resume", *data)
    assert rc == 2, err
    assert "checkpoint belongs to another schedule" in err
    assert "cycle_steps: saved 84, now 120" in err


def test_the_retrain_settings_are_documented() -> None:
    """Issue 16: retrain.train_config and retrain.window_batches appeared in no doc."""
    root = Path(__file__).resolve().parents[2]
    training_md = (root / "docs" / "training.md").read_text()
    reference = (root / "docs" / "configuration.md").read_text()
    for field in ("train_config", "window_batches"):
        assert f"`retrain.{field}`" in training_md
        row = next(line for line in reference.splitlines() if line.startswith(f"| `{field}` |"))
        assert len(row.rsplit("|", 2)[1].strip()) > 80, row  # a description, not a label


def test_schedule_takes_sets_without_a_config_file_as_train_does(
    churn: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = [
        f"data.dataset={churn / 'churn.yaml'}",
        "data.source=files",
        f"data.features={churn / 'features'}",
        f"data.labels={churn / 'labels'}",
        "schedule.cycle_epochs=1.5",
        *FAST,
    ]
    argv = [arg for item in sets for arg in ("--set", item)]
    out = ["--output-dir", str(churn / "runs"), "--no-mlflow"]
    assert main(["train", *argv, "--run-name", "noconf", *out]) == 0
    result = json.loads((churn / "runs" / "noconf" / "result.json").read_text())
    capsys.readouterr()
    assert main(["schedule", *argv, "--no-png", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schedule"] == result["schedule"]
    assert result["schedule"]["cycle_steps"] == 42  # 1.5 epochs of 28 steps
    # an epoch flag alone is an override of the same defaults, with the steps per epoch given
    assert main(["schedule", "--cycle-epochs", "2", "--steps-per-epoch", "40", "--no-png"]) == 0
    # W = 0.75 x 40 = 30, then cycles of 80, 120, 180 steps (their last steps)
    assert "cycle ends (best-per-cycle checkpoints): [109, 229, 409]" in capsys.readouterr().out
