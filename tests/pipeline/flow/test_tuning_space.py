"""What the tuner searches and what it picks, on the loans batches (not flights): the cost
drivers of the shipped space (model width, batch size, stopping patience) reach the
trials' training runs; a space whose fields a training rule ties is checked at its
tightest corner; a trial's shorter config keeps the stopping rule's choice; and the
``tune`` command prints its pick, the checks on more seeds, and the start config cut to
fewer cycles as a version of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.base.sections import TuneConfig
from pipeline.steps.tuning.pick import TrialSummary, ranked
from pipeline.steps.tuning.space import TuneError, check_space, suggest, training_updates
from pipeline.steps.tuning.study import fewest_cycles, run_study
from tests.pipeline.flow.tuning_support import SPACE, make_env, study_inputs
from training import api
from training.results import TrainResult
from training.schedule import CosineSchedule

FLIGHTS = "configs/flights.yaml"


def test_the_shipped_space_searches_width_batch_size_and_patience_on_the_shipped_config() -> None:
    """Each is a cost driver the issue asks for; each bound, alone and together, is a
    valid flights config (patience 2 needs at least 4 cycles: max_cycles starts there)."""
    base = api.load_config(FLIGHTS)
    space = TuneConfig().space
    for key in ("model.width", "optim.batch_size", "stopping.patience", "schedule.max_cycles"):
        assert key in space
    assert space["stopping.patience"].high <= space["schedule.max_cycles"].low - 2
    check_space(TuneConfig(), base)  # no error
    # model.width w: the widest hidden layer gets w units, the others keep their ratio
    assert base.model.hidden == [256, 128]
    assert training_updates({"model.width": 64}, base) == {"model.hidden": [64, 32]}
    assert training_updates({"model.width": 99}, base) == {"model.hidden": [99, 50]}
    narrow = api.updated(base, training_updates({"model.width": 1}, base))
    assert narrow.model.hidden == [1, 1]  # never a layer of 0 units


def test_a_space_whose_fewest_cycles_cannot_hold_its_patience_is_refused() -> None:
    """Patience 2 with 3 cycles can never stop a run (the training config refuses it);
    the space is refused before any trial, naming the corner, instead of a trial failing
    on it mid-study."""
    base = api.load_config(FLIGHTS)
    space = {
        **TuneConfig().space,
        "schedule.max_cycles": {"low": 3, "high": 5},
        "stopping.patience": {"low": 1, "high": 2},
    }
    with pytest.raises(TuneError, match="the fewest cycles with the most patience"):
        check_space(TuneConfig.model_validate({"space": space}), base)


def test_a_sampled_trial_trains_with_its_width_batch_size_and_patience(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real trials (TPE's random start-up draws) on the loans window: each run's resolved
    config, and what its run did, carry the trial's values."""
    import optuna

    base, updates = study_inputs(tmp_path, monkeypatch)
    space = {
        **SPACE,
        "schedule.max_cycles": {"low": 4, "high": 4},
        "stopping.patience": {"low": 1, "high": 2},
        "optim.batch_size": {"low": 64, "high": 256, "log": True},
        "model.width": {"low": 4, "high": 32, "log": True},
    }
    settings = TuneConfig.model_validate(
        {"space": space, "n_trials": 3, "startup_trials": 3, "pruner": "off", "judge_seeds": 1}
    )
    storage = f"sqlite:///{tmp_path / 's.db'}"
    summary = run_study(
        settings,
        base,
        storage=storage,
        name="cost",
        output_dir=tmp_path / "runs",
        train_updates=updates | {"stopping.enabled": True},
    )
    stored = optuna.load_study(study_name="cost", storage=storage).get_trials()
    assert len(stored) == 3
    assert base.model.hidden == [16]
    seen = set()
    for t, frozen in zip(summary.trials, stored, strict=True):
        width, batch = int(frozen.params["model.width"]), int(frozen.params["optim.batch_size"])
        patience = int(frozen.params["stopping.patience"])
        seen.add((width, batch, patience))
        run = tmp_path / "runs" / str(t.run_name)
        resolved = json.loads((run / "config.resolved.json").read_text())
        assert resolved["model"]["hidden"] == [width]  # one layer: the widest
        assert resolved["optim"]["batch_size"] == batch
        assert resolved["stopping"]["patience"] == patience
        result = TrainResult.load(run)
        train_rows = int(result.data["rows_train"])
        # the run's steps per epoch are its rows over the trial's batch
        assert result.schedule["steps_per_epoch"] == train_rows // batch
        # and patience decided where it stopped: after `patience` cycles in a row that
        # did not beat the best so far (or at the last cycle)
        finals = result.finals
        if len(finals) < 4:
            best, losers = -1.0, 0
            for c in finals:
                losers = 0 if c.val_auc > best else losers + 1
                best = max(best, c.val_auc)
            assert losers == patience
    assert len(seen) == 3  # three different draws


def test_a_trials_shorter_config_keeps_the_stopping_rules_choice() -> None:
    """With cycle-aware stopping on (min_cycles 2), a trial's first 1 or 2 cycles are a
    fixed length the rule can no longer extend: never a candidate (flights: one cycle
    was picked on months 1-3 and lost 0.0197 on months 4-6, seed 0). Its first 3 are."""
    base = api.load_config(FLIGHTS)
    assert (base.stopping.enabled, base.stopping.min_cycles) == (True, 2)
    assert fewest_cycles(1, base) == 3
    assert fewest_cycles(4, base) == 4
    off = api.updated(base, {"stopping.enabled": False})
    assert fewest_cycles(1, off) == 1
    params = {"schedule.max_cycles": 5, "schedule.lr_max": 0.003}
    ran = [(430, 0.7181), (900, 0.7190), (1500, 0.7192), (2300, 0.7192)]
    trial = TrialSummary(
        number=0, state="COMPLETE", value=0.7192, params=params, steps=2300,
        cost_usd=None, run_name=None, cycles=ran,
    )  # fmt: skip
    cuts = [c.cycles for c in ranked([trial], 0.003, 512, fewest_cycles(1, base))]
    assert cuts == [3, None]  # 1 and 2 were the cheapest; 4 is the run as it ran
    assert [c.cycles for c in ranked([trial], 0.003, 512, 1)] == [1, 2, 3, None]


def test_the_start_config_cut_to_fewer_cycles_is_a_version_and_the_command_prints_the_pick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One trial, the start config itself (3 cycles, stopping off): with a tolerance no
    cycle falls outside, its first cycle is the cheapest config, checked on a second
    seed beside the whole run (the highest). The pick is the incumbent cut to one cycle: not 'the
    start config stayed the best', but a version of its own (max_cycles 1) judged held
    out; the command says which trial, which cut and how the check went."""
    from pipeline.apps.cli import main
    from pipeline.steps.tuning.configs import read_verdict, read_version

    space = {**SPACE, "schedule.max_cycles": {"low": 1, "high": 3}}
    # any loss is within the tolerance (AUC gains lie in [-1, 1]) and a 50 % interval on
    # two seeds is about one spread wide: the cheapest cut holds, whatever it learned
    loose = {"adopt_max_loss": 1.0, "adopt_confidence": 0.5, "judge_seeds": 2}
    env = make_env(tmp_path, monkeypatch, space=space, **loose)
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(yaml.safe_dump(json.loads(env.config.model_dump_json())))
    assert main(["tune", "--config", str(cfg), "--trials", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    study = out["study"]
    (trial,) = study["trials"]
    assert trial["incumbent"] is True
    run = TrainResult.load(env.home / "runs" / "tuning" / trial["run_name"])
    schedule = CosineSchedule(**run.schedule)
    assert len(run.finals) == 3
    assert (study["best_trial"], study["best_cycles"]) == (0, 1)
    assert study["best_steps"] == schedule.cycle_end_step(0) + 1
    assert study["best_value"] == run.finals[0].val_auc
    (check,) = study["checks"]
    assert (check["trial"], check["cycles"], check["confirmed"]) == (0, 1, True)
    # the version: the start config with one cycle, judged on the held-out window
    assert out["version"] == 1
    version = read_version(env.store, env.dataset, 1)
    assert version.params["schedule.max_cycles"] == 1
    tuned = yaml.safe_load((env.home / "tuning" / env.dataset / "v1.yaml").read_text())
    assert tuned["schedule"]["max_cycles"] == 1
    assert tuned["schedule"]["lr_max"] == write_train_yaml_lr(tmp_path)
    verdict = read_verdict(env.store, env.dataset, 1)
    assert verdict is not None
    judged = env.home / "runs" / "tuning" / "judge-loans-v1-tuned-s0"
    assert len(TrainResult.load(judged).finals) == 1
    # the text form of the same finished study
    assert main(["tune", "--config", str(cfg), "--trials", "1"]) == 0
    text = capsys.readouterr().out
    steps = schedule.cycle_end_step(0) + 1
    assert f"pick: trial 0 its first 1 cycle(s), {steps} steps, val AUC " in text
    assert "checked trial 0 (first 1 cycle(s)) on 2 seeds beside the highest: gain " in text
    assert f"interval [{check['low']:+.4f}, {check['high']:+.4f}]: kept" in text
    assert "stayed the best" not in text
    assert f"tuned v1: {verdict.reason}" in text


def write_train_yaml_lr(tmp_path: Path) -> float:
    """The start config's peak, as ``make_env`` wrote it."""
    return float(yaml.safe_load((tmp_path / "train.yaml").read_text())["schedule"]["lr_max"])


def test_suggest_draws_integers_for_the_integer_fields() -> None:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    values = suggest(study.ask(), TuneConfig())
    for key in ("model.width", "optim.batch_size", "stopping.patience", "schedule.max_cycles"):
        assert isinstance(values[key], int)
    assert 64 <= values["model.width"] <= 256
