"""The typed seam to the training job: a config survives the command line unchanged,
updates are validated, results load strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import api
from training.config.train import ConfigError, parse_override
from training.results import ResultError, TrainResult

ROOT = Path(__file__).resolve().parents[2]
FLIGHTS = ROOT / "configs" / "flights.yaml"


def _roundtrip(config: api.TrainConfig, base: api.TrainConfig) -> api.TrainConfig:
    return api.load_config(FLIGHTS, api.cli_overrides(config, base))


def test_a_pipeline_shaped_config_crosses_the_command_line_unchanged(tmp_path: Path) -> None:
    base = api.load_config(FLIGHTS)
    config = api.updated(
        base,
        {
            "run_name": "retrain-2013-04-6ce39100",
            "progress": "off",
            "data.source": "files",
            "data.features": "s3://bucket/training-data/flights/r/features.parquet",
            "data.labels": str(tmp_path / "labels with spaces.parquet"),
            "mlflow.tracking_uri": "http://mlflow:5000",
            "mlflow.experiment": "flight_delay",
            "mlflow.tags": {"trigger": "drift", "window": "2013-02,2013-03,2013-04"},
            "mlflow.artifact_location": "s3://bucket/mlflow",
        },
    )
    items = api.cli_overrides(config, base)
    assert 'progress="off"' in items  # JSON: the word stays a word (YAML reads off as False)
    assert _roundtrip(config, base) == config
    # nothing differs: no items
    assert api.cli_overrides(base, base) == []


def test_train_argv_is_what_the_training_cli_parses() -> None:
    from training.cli.main import build_parser, config_from_args

    base = api.load_config(FLIGHTS)
    config = api.updated(base, {"run_name": "r7", "schedule.lr_max": 0.001, "data.months": [4]})
    argv = api.train_argv(config, base, config_path=str(FLIGHTS))
    assert argv[:5] == ["train", "--config", str(FLIGHTS), "--run-name", "r7"]
    assert "--resume-if-present" in argv
    args = build_parser().parse_args(argv)
    assert config_from_args(args) == config


@settings(max_examples=40, deadline=None)
@given(
    lr=st.floats(1e-4, 1.0, allow_nan=False),  # above the default lr_min (3e-5)
    mult=st.floats(1.0, 4.0, allow_nan=False),
    cycles=st.integers(1, 9),
    tags=st.dictionaries(
        st.text("abcdefghij_", min_size=1, max_size=8),
        st.text(min_size=0, max_size=12).filter(lambda t: "\x00" not in t),
        max_size=3,
    ),
    months=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    word=st.sampled_from(["on", "off", "yes", "no", "null", "1e-3", "[1]", "a: b", "", "true"]),
)
def test_any_config_round_trips(
    lr: float, mult: float, cycles: int, tags: dict, months: list, word: str
) -> None:
    base = api.load_config(FLIGHTS)
    config = api.updated(
        base,
        {
            "schedule.lr_max": lr,
            "schedule.cycle_mult": mult,
            "schedule.max_cycles": cycles,
            "mlflow.tags": {**tags, "w": word},
            "data.months": months,
            "run_name": "r1",
        },
    )
    assert _roundtrip(config, base) == config


def test_updates_are_validated_and_name_the_field() -> None:
    base = api.load_config(FLIGHTS)
    with pytest.raises(ConfigError, match=r"schedule.cycle_mult"):
        api.updated(base, {"schedule.cycle_mult": "fast"})
    with pytest.raises(ConfigError, match=r"unknown field 'schedule.cycle_len'"):
        api.updated(base, {"schedule.cycle_len": 3})
    with pytest.raises(ConfigError, match=r"unknown training config field 'sched.lr_max'"):
        api.updated(base, {"sched.lr_max": 0.1})
    with pytest.raises(ConfigError, match=r"data.source 'files' needs data.features"):
        api.updated(base, {"data.source": "files"})


def test_the_one_parser_reads_json_first_then_yaml() -> None:
    assert parse_override('a.b="off"') == ("a.b", "off")
    assert parse_override("a.b=off") == ("a.b", "off")  # YAML 1.1 would say False
    assert parse_override("a.b=1e-3") == ("a.b", 0.001)  # PyYAML would say "1e-3"
    assert parse_override("a.b=[4, 5]") == ("a.b", [4, 5])
    assert parse_override("a.b={x: y}") == ("a.b", {"x": "y"})
    assert parse_override("a.b=") == ("a.b", "")
    with pytest.raises(ConfigError, match=r"--set expects key\.sub=value"):
        parse_override("nothing")


def _result(**extra: object) -> dict:
    return {
        "status": "completed",
        "stop_reason": "completed 10 steps",
        "run_name": "r",
        "run_dir": "/x/r",
        "steps_done": 10,
        "total_steps": 10,
        "cycles": [
            {
                "cycle": 0,
                "step": 9,
                "lr": 0.001,
                "val_auc": 0.7,
                "val_loss": 0.5,
                "path": "checkpoints/best-cycle-00.ckpt",
                "sha256": "ab",
                "final": True,
            }
        ],
        "best_cycle": 0,
        "nan_count": 0,
        "rollbacks": 0,
        "lr_scale": 1.0,
        "restarts": [],
        "cost_usd": 0.0,
        "device_seconds": 1.0,
        "device": "cpu",
        "amp": "off",
        "world_size": 1,
        "mlflow_run_id": None,
        "data": {},
        "schedule": {},
        "schedule_fingerprint": "f",
        "config_hash": "c",
        "definition_hash": "d",
        "finished_at": "2026-12-04T00:00:00+00:00",
        **extra,
    }


def test_results_load_strictly(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(_result()))
    result = TrainResult.load(tmp_path)  # a run folder works too
    assert result.finals[0].val_auc == 0.7
    assert result.code_revision == "unknown"  # written before the field existed
    assert TrainResult.from_json(result.to_json()) == result
    path.write_text(json.dumps(_result(surprise=1)))
    with pytest.raises(ResultError, match=r"unknown field\(s\) \['surprise'\]"):
        TrainResult.load(path)
    bad = _result()
    del bad["nan_count"]
    path.write_text(json.dumps(bad))
    with pytest.raises(ResultError, match=r"missing field\(s\) \['nan_count'\]"):
        TrainResult.load(path)
    path.write_text("{not json")
    with pytest.raises(ResultError, match="is not JSON"):
        TrainResult.load(path)
    with pytest.raises(ResultError, match="does not exist"):
        TrainResult.load(tmp_path / "nowhere")
